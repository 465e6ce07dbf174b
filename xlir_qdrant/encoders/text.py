"""Frozen multilingual text encoders for the paper's recipe: mUSE (bundled) or a Hugging Face
encoder by hub name or local folder. `xlir train` caches their outputs; checkpoints run them."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from ..errors import ModelUnavailable
from .base import normalise
from .lang import MUSE_LANGUAGES

MUSE = "muse"


class TextSide(Protocol):
    key: str  # identifies the encoder and its weights (cache keys, checkpoints)
    dim: int
    languages: tuple[str, ...]

    def features(self, texts: Sequence[str]) -> NDArray[np.float32]: ...


class HFText:
    """A Hugging Face encoder by hub name or local folder, mean-pooled over real tokens.

    Mean pooling (Reimers & Gurevych 2019) is what multilingual sentence encoders such as
    paraphrase-multilingual-* and LaBSE-style models are trained or commonly used with; the
    [CLS] vector of a plain masked-LM encoder is not a sentence embedding.
    """

    def __init__(self, name: str, device: str = "cpu", *, max_length: int = 128, batch_size: int = 64) -> None:
        try:
            from transformers import AutoModel, AutoTokenizer
        except ImportError as exc:
            raise ModelUnavailable("a Hugging Face text encoder needs the package transformers") from exc
        try:
            self._tokenizer = AutoTokenizer.from_pretrained(name)
            self._model = AutoModel.from_pretrained(name).eval().to(device)
        except (OSError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelUnavailable(
                f"text encoder {name!r} could not be loaded ({first[:160]}); give a local folder "
                f"or a Hugging Face model name, or --text-encoder muse for the bundled one"
            ) from exc
        self.key = f"hf:{name}"
        self.dim = int(self._model.config.hidden_size)
        self.languages = ("en",)  # at least English; the encoder's own card lists the rest
        self.device = device
        self.max_length = max_length
        self.batch_size = batch_size

    def features(self, texts: Sequence[str]) -> NDArray[np.float32]:
        import torch

        chunks = []
        for start in range(0, len(texts), self.batch_size):
            batch = self._tokenizer(list(texts[start : start + self.batch_size]), padding=True, truncation=True,
                                    max_length=self.max_length, return_tensors="pt").to(self.device)
            with torch.inference_mode():
                hidden = self._model(**batch).last_hidden_state.float()
            mask = batch["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
            chunks.append(pooled.cpu().numpy())
        if not chunks:
            return np.zeros((0, self.dim), np.float32)
        return normalise(np.concatenate(chunks))


@functools.lru_cache(maxsize=4)
def text_side(name: str, device: str = "cpu") -> TextSide:
    """``muse`` for the bundled mUSE, anything else is a Hugging Face name or folder."""
    if name == MUSE:
        from .bundled import MuseText

        return MuseText(MUSE_LANGUAGES)
    path = Path(name).expanduser()
    return HFText(str(path.resolve()) if path.is_dir() else name, device)
