"""open_clip multilingual models (XLM-RoBERTa and NLLB text towers) behind the Encoder seam.

Weights come from the Hugging Face hub on first use and stay in its cache (HF_HOME). Loading
looks in the cache first with the hub switched offline, and goes online only for what is
missing: left alone, huggingface_hub revalidates every file online and, with no network,
retries each one for about 20 s before falling back to the cache, so a cached model would
take minutes to open on an offline laptop and an uncached one minutes to fail.

NLLB text towers read a FLORES-200 language token in front of the query; ``embed_texts``
sets it from ``lang`` or from detecting each text's language (see ``lang.py``).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from PIL import Image

from ..errors import ModelUnavailable
from ..records import ModelSpec
from .base import EncoderBase, PixelSpec, normalise
from .lang import UnknownLanguage, canonical, detect_language, to_flores

_LOG = logging.getLogger(__name__)

_HUB_PROBE_TIMEOUT_S = 3.0
# open_clip's defaults when a model's config names no mean/std (OpenAI CLIP's statistics)
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
# The hub's offline switch is process-wide; loads that flip it take turns.
_HUB_SWITCH = threading.Lock()


class OpenClipEncoder(EncoderBase):
    """One open_clip model on one device.

    Embed calls may run concurrently (``last_languages`` then tells of whichever finished
    last). On CUDA the weights stay fp32 and matmuls run under bf16 (fp16 on older GPUs)
    autocast; outputs are always float32.
    """

    takes_pixels = True

    def __init__(
        self,
        spec: ModelSpec,
        model: torch.nn.Module,
        preprocess: Callable[[Image.Image], torch.Tensor],
        tokenizer: Any,
        device: str,
        *,
        batch_size: int | None = None,
    ) -> None:
        self.spec = spec
        self.device = device
        self.precision = _precision(device)
        self.batch_size = batch_size or (128 if device.startswith("cuda") else 16)
        # ISO codes the last embed_texts call conditioned on, one per text; empty for
        # models whose text tower takes no language.
        self.last_languages: list[str] = []
        self._model = model.eval()
        self._preprocess = preprocess
        self._tokenizer = tokenizer
        # NLLB tokenizers keep the source language as state; tokenising under one language
        # must not interleave with another thread switching it.
        self._language_lock = threading.Lock()
        self.input_size = self._input_size()

    def _input_size(self) -> int:
        cfg = getattr(self._model.visual, "preprocess_cfg", None) or {}
        size = cfg.get("size", 224)
        return int(size if isinstance(size, int) else max(size))

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """The model's own resize/crop/normalise; pure, so ingest workers may call it."""
        return self._preprocess(image)

    def pixel_spec(self) -> PixelSpec | None:
        """``preprocess`` as tensor operations, for decoding on a GPU; None for the resize
        modes other than open_clip's default (short side, then centre crop)."""
        cfg = getattr(self._model.visual, "preprocess_cfg", None) or {}
        size = cfg.get("size", 224)
        size = size if isinstance(size, int) else size[0] if len(set(size)) == 1 else None
        if size is None or cfg.get("resize_mode", "shortest") != "shortest" or cfg.get("interpolation", "bicubic") != "bicubic":
            return None
        mean = tuple(255.0 * m for m in cfg.get("mean", OPENAI_MEAN))
        std = tuple(255.0 * s for s in cfg.get("std", OPENAI_STD))
        return PixelSpec(resize=size, crop=size, mean=mean, std=std)

    def embed_pixels(self, pixels: torch.Tensor | NDArray[np.float32]) -> NDArray[np.float32]:
        """Embed a batch of already preprocessed images, shape (n, 3, H, W), in one pass: a
        tensor (on any device) or an array (ingest workers stack theirs with numpy)."""
        if len(pixels) == 0:
            return self.empty()
        with torch.inference_mode(), self._autocast():
            features = self._model.encode_image(torch.as_tensor(pixels).to(self.device, non_blocking=True))
        return normalise(features.float().cpu().numpy())

    def embed_images(self, images: Sequence[Image.Image]) -> NDArray[np.float32]:
        chunks = []
        for start in range(0, len(images), self.batch_size):
            batch = images[start : start + self.batch_size]
            chunks.append(self.embed_pixels(torch.stack([self.preprocess(img) for img in batch])))
        return np.concatenate(chunks) if chunks else self.empty()

    def embed_texts(self, texts: Sequence[str], *, lang: str | None = None) -> NDArray[np.float32]:
        texts = list(texts)
        languages: list[str] = []
        if self.spec.needs_lang:
            languages = [canonical(lang)] * len(texts) if lang else list(map(detect_language, texts))
        self.last_languages = languages
        if not texts:
            return self.empty()
        tokens = self._tokenize(texts, languages) if languages else self._tokenizer(texts)
        chunks = []
        with torch.inference_mode(), self._autocast():
            for start in range(0, len(tokens), self.batch_size):
                batch = tokens[start : start + self.batch_size].to(self.device, non_blocking=True)
                chunks.append(self._model.encode_text(batch).float().cpu().numpy())
        return normalise(np.concatenate(chunks))

    def _tokenize(self, texts: list[str], languages: list[str]) -> torch.Tensor:
        """Tokenise each text under its own language token, one tokenizer call per language."""
        flores = [to_flores(iso) for iso in languages]
        rows: list[torch.Tensor] = [torch.empty(0)] * len(texts)
        with self._language_lock:
            for code in dict.fromkeys(flores):
                self._set_language(code)
                indices = [i for i, f in enumerate(flores) if f == code]
                for i, row in zip(indices, self._tokenizer([texts[i] for i in indices])):
                    rows[i] = row
        return torch.stack(rows)

    def _set_language(self, flores: str) -> None:
        hf = getattr(self._tokenizer, "tokenizer", None)
        if hf is None or not hasattr(hf, "src_lang"):
            raise ModelUnavailable(
                f"model {self.spec.id!r} is marked needs_lang but its tokenizer takes no language"
            )
        if hf.convert_tokens_to_ids(flores) in {None, hf.unk_token_id}:
            raise UnknownLanguage(
                f"model {self.spec.id!r} has no language token {flores!r}; pass --lang with "
                f"a language it knows (ISO 639-1 such as de, or FLORES-200 such as deu_Latn)"
            )
        # Set src_lang rather than calling open_clip's HFTokenizer.set_language: transformers
        # re-applies src_lang on every call, which silently undoes set_language.
        hf.src_lang = flores

    def _autocast(self) -> contextlib.AbstractContextManager[object]:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.split(":")[0], dtype=dtype)


def load(spec: ModelSpec, device: str) -> OpenClipEncoder:
    """Build the open_clip model named by ``spec.options`` ("arch", "pretrained") on ``device``.

    An empty "pretrained" means random weights (tests, or a tower loaded by other means).
    """
    open_clip = _import_open_clip(spec)
    arch = spec.options.get("arch", spec.id)
    tag = spec.options.get("pretrained", "")
    _check_config(spec, open_clip, arch, tag)

    def build() -> tuple[torch.nn.Module, Callable[..., torch.Tensor], Any]:
        if tag:
            # Fetching the weights alone first keeps a cache miss quiet: create_model reports
            # one through logging.error, which also installs a root log handler as a side effect.
            open_clip.download_pretrained(open_clip.get_pretrained_cfg(arch, tag))
        model, _, preprocess = open_clip.create_model_and_transforms(
            arch, pretrained=tag or None, device=device
        )
        return model, preprocess, open_clip.get_tokenizer(arch)

    model, preprocess, tokenizer = _cache_first(spec, arch, tag, build)
    encoder = OpenClipEncoder(spec, model, preprocess, tokenizer, device)
    _LOG.info("loaded %s on %s %s", spec.id, encoder.device, encoder.precision)
    return encoder


def _import_open_clip(spec: ModelSpec) -> Any:
    try:
        import open_clip
    except ImportError as exc:
        raise ModelUnavailable(
            f"model {spec.id!r} needs the package open_clip_torch, which is not installed; "
            f"install it, or omit --model to use the bundled default model"
        ) from exc
    return open_clip


def _check_config(spec: ModelSpec, open_clip: Any, arch: str, tag: str) -> None:
    # Everything here is known before a byte is downloaded; catching it now saves a user
    # from fetching gigabytes only to learn the spec and the library disagree.
    config = open_clip.get_model_config(arch)
    if config is None:
        raise ModelUnavailable(
            f"model {spec.id!r}: open_clip {open_clip.__version__} has no architecture "
            f"{arch!r}; upgrade open_clip_torch or pick another --model"
        )
    if tag and tag not in open_clip.list_pretrained_tags_by_model(arch):
        raise ModelUnavailable(
            f"model {spec.id!r}: open_clip {open_clip.__version__} has no weights {tag!r} "
            f"for {arch!r}; upgrade open_clip_torch or pick another --model"
        )
    if config["embed_dim"] != spec.dim:
        raise ModelUnavailable(
            f"model {spec.id!r} is registered with dim {spec.dim}, but {arch!r} embeds "
            f"into {config['embed_dim']} dimensions; fix its ModelSpec"
        )
    if "hf_model_name" in config.get("text_cfg", {}):
        try:
            import transformers  # noqa: F401
        except ImportError as exc:
            raise ModelUnavailable(
                f"model {spec.id!r} needs the package transformers, which is not installed; "
                f"install it, or omit --model to use the bundled default model"
            ) from exc


def _cache_first(spec: ModelSpec, arch: str, tag: str, build: Callable[[], Any]) -> Any:
    from huggingface_hub import constants

    try:
        with _hub_offline():
            return build()
    except (OSError, RuntimeError, ValueError) as exc:
        if not _missing_from_cache(exc):
            raise ModelUnavailable(
                f"model {spec.id!r} could not be built ({_short(exc)}); omit --model to use "
                f"the bundled default model"
            ) from exc
        miss = exc
    if constants.HF_HUB_OFFLINE:
        reason = "its weights are not in the Hugging Face cache and HF_HUB_OFFLINE is set"
        raise ModelUnavailable(_unavailable(spec, arch, tag, reason)) from miss
    if not _hub_reachable():
        reason = (
            f"its weights are not in the Hugging Face cache and {constants.ENDPOINT} "
            f"cannot be reached"
        )
        raise ModelUnavailable(_unavailable(spec, arch, tag, reason)) from miss
    _LOG.info("downloading %s from %s into %s", spec.id, constants.ENDPOINT, constants.HF_HOME)
    _enable_progress_bars()
    try:
        return build()
    except (OSError, RuntimeError, ValueError) as exc:
        reason = f"download failed ({_short(exc)})"
        raise ModelUnavailable(_unavailable(spec, arch, tag, reason)) from exc


@contextlib.contextmanager
def _hub_offline() -> Iterator[None]:
    # huggingface_hub and transformers both read this flag at call time (is_offline_mode).
    from huggingface_hub import constants

    with _HUB_SWITCH:
        saved = constants.HF_HUB_OFFLINE
        constants.HF_HUB_OFFLINE = True
        try:
            yield
        finally:
            constants.HF_HUB_OFFLINE = saved


def _missing_from_cache(exc: BaseException) -> bool:
    """True when the failure (under any wrapping) is a file absent from the offline cache."""
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, (LocalEntryNotFoundError, OfflineModeIsEnabled)):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def _hub_reachable() -> bool:
    # One quick request through the hub's own session (so proxies apply), no retries.
    from huggingface_hub import constants, get_session

    try:
        get_session().head(constants.ENDPOINT, timeout=_HUB_PROBE_TIMEOUT_S)
    except Exception:  # noqa: BLE001  (any failure means "not reachable now")
        return False
    return True


def _enable_progress_bars() -> None:
    from huggingface_hub import constants
    from huggingface_hub.utils import enable_progress_bars

    if not constants.HF_HUB_DISABLE_PROGRESS_BARS:  # respect a user who turned them off
        enable_progress_bars()


def _unavailable(spec: ModelSpec, arch: str, tag: str, reason: str) -> str:
    fetch = (
        f"python -c \"import open_clip; open_clip.create_model_and_transforms('{arch}', "
        f"pretrained='{tag}'); open_clip.get_tokenizer('{arch}')\""
    )
    return (
        f"model {spec.id!r} is unavailable: {reason}; omit --model to use the bundled default "
        f"model, or on a connected machine run {fetch} and copy its Hugging Face cache "
        f"(~/.cache/huggingface, or set HF_HOME) here"
    )


def _short(exc: BaseException) -> str:
    """The first line of an error, clipped: library messages run to paragraphs."""
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def _precision(device: str) -> str:
    if not device.startswith("cuda"):
        return "fp32"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def available_offline(spec: ModelSpec) -> tuple[bool, str]:
    """Whether the weights are in the Hugging Face cache already (for `xlir models`)."""
    try:
        import open_clip
        from huggingface_hub import try_to_load_from_cache
    except ImportError as exc:
        return False, f"package {exc.name} missing"
    arch = spec.options.get("arch", spec.id)
    tag = spec.options.get("pretrained", "")
    if not tag:
        return True, "random weights"
    cfg = open_clip.get_pretrained_cfg(arch, tag) or {}
    hub = cfg.get("hf_hub", "")
    if not hub:
        return False, "no hub location"
    repo_id = hub.rstrip("/") if hub.endswith("/") else "/".join(hub.split("/")[:2])
    for name in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
        hit = try_to_load_from_cache(repo_id, name)
        if isinstance(hit, str):
            return True, "in the Hugging Face cache"
    return False, "not downloaded yet"
