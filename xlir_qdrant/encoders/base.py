"""The encoder seam: ModelSpec (data), the Encoder protocol, and the model registry.

Adding a model is adding a ModelSpec with a loader; nothing else branches on model ids.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from ..errors import ModelUnavailable
from ..records import ModelSpec


@dataclass(frozen=True, slots=True)
class PixelSpec:
    """How an encoder turns an upright 0..255 RGB image into its input tensor: resize the short
    side to ``resize`` (bicubic, antialiased), centre-crop ``crop`` x ``crop``, then
    ``(x - mean) / std`` per channel, in 0..255 units."""

    resize: int
    crop: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


@runtime_checkable
class Encoder(Protocol):
    """Everything returns L2-normalised float32 arrays of shape (n, spec.dim)."""

    spec: ModelSpec
    device: str
    precision: str

    def embed_images(self, images: Sequence[Image.Image]) -> NDArray[np.float32]: ...

    def embed_texts(
        self, texts: Sequence[str], *, lang: str | None = None
    ) -> NDArray[np.float32]: ...


_REGISTRY: dict[str, ModelSpec] = {}
_ALIASES: dict[str, str] = {}


def register(spec: ModelSpec, *aliases: str) -> ModelSpec:
    _REGISTRY[spec.id] = spec
    for alias in aliases:
        _ALIASES[alias] = spec.id
    return spec


def unregister(model_id: str) -> None:
    _REGISTRY.pop(model_id, None)
    for alias, target in list(_ALIASES.items()):
        if target == model_id:
            del _ALIASES[alias]


def registry() -> list[ModelSpec]:
    _load_builtin_specs()
    return list(_REGISTRY.values())


def get_spec(model_id: str) -> ModelSpec:
    _load_builtin_specs()
    key = _ALIASES.get(model_id, model_id)
    if key in _REGISTRY:
        return _REGISTRY[key]
    path = Path(model_id).expanduser()
    if path.is_dir() and (path / "xlir-model.json").is_file():
        return _checkpoint_spec(path)
    known = ", ".join(sorted(_REGISTRY))
    raise ModelUnavailable(f"unknown model {model_id!r}; known models: {known} (see `xlir models`)")


def load_encoder(model: str | ModelSpec, *, device: str = "auto") -> Encoder:
    """Build the encoder of ``model`` (an id, alias or checkpoint folder, or a resolved spec)."""
    spec = model if isinstance(model, ModelSpec) else get_spec(model)
    module_name, func_name = spec.loader.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:  # an optional family whose package is missing
        raise ModelUnavailable(
            f"model {spec.id!r} needs the package {exc.name!r}, which is not installed; "
            f"install it or use the bundled default model"
        ) from exc
    factory: Callable[[ModelSpec, str], Encoder] = getattr(module, func_name)
    return factory(spec, resolve_device(device))


def resolve_device(device: str) -> str:
    """'auto' picks cuda:0 when torch sees a GPU, else cpu; an explicit cuda without one fails."""
    if device not in {"auto", "cpu"} and not device.startswith("cuda"):
        raise ModelUnavailable(f"unknown device {device!r}; use auto, cpu or cuda")
    if device == "cpu" or (device == "auto" and not _may_have_cuda()):
        return "cpu"
    import torch

    if torch.cuda.is_available():
        return "cuda:0" if device in {"auto", "cuda"} else device
    if device == "auto":
        return "cpu"
    raise ModelUnavailable(f"--device {device} asked for, but torch sees no CUDA GPU; use --device cpu")


def _may_have_cuda() -> bool:
    """Cheap check before importing torch (~2 s): no NVIDIA driver visible means no CUDA."""
    import glob
    import sys

    if sys.platform != "linux":
        return sys.platform == "win32"
    return os.path.exists("/proc/driver/nvidia") or bool(glob.glob("/dev/nvidia[0-9]*"))


def device_summary() -> str:
    """The compute device in words, for `xlir info`; imports torch only if a GPU may exist."""
    if not _may_have_cuda():
        return "cpu (no CUDA GPU visible)"
    import torch

    if torch.cuda.is_available():
        return f"cuda:0 ({torch.cuda.get_device_name(0)})"
    return "cpu (no CUDA GPU visible)"


def takes_pixels(encoder: object) -> bool:
    """Whether ``encoder`` preprocesses images on its own (on ingest's worker threads) and
    embeds the resulting pixel batches; otherwise it is handed PIL images."""
    return callable(getattr(encoder, "preprocess", None)) and hasattr(encoder, "embed_pixels")


def embed_batch(encoder: Encoder, rows: Sequence[object], *, pixels: bool) -> NDArray[np.float32]:
    """One batch: ``preprocess`` outputs (numpy or torch) through embed_pixels when ``pixels``,
    else PIL images through embed_images."""
    if pixels:
        return encoder.embed_pixels(np.stack([np.asarray(r) for r in rows]))  # type: ignore[attr-defined]
    return encoder.embed_images(list(rows))  # type: ignore[arg-type]


def normalise(x: NDArray[np.floating]) -> NDArray[np.float32]:
    """Row-wise L2 normalisation; zero rows stay zero instead of becoming NaN."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)


def _checkpoint_spec(path: Path) -> ModelSpec:
    # Checkpoints written by `xlir train` carry their own spec; their loader lives with them.
    import json

    data = json.loads((path / "xlir-model.json").read_text())
    return ModelSpec(
        id=data["id"],
        dim=int(data["dim"]),
        languages=tuple(data.get("languages", ())),
        licence=data.get("licence", "see checkpoint"),
        size_mb=int(data.get("size_mb", 0)),
        bundled=False,
        needs_lang=bool(data.get("needs_lang", False)),
        loader=data["loader"],
        description=data.get("description", ""),
        options={"path": str(path)},
    )


_BUILTINS_LOADED = False


def _load_builtin_specs() -> None:
    global _BUILTINS_LOADED
    if _BUILTINS_LOADED:
        return
    _BUILTINS_LOADED = True
    from . import specs  # noqa: F401  (registers the built-in models)


def offline_ready(spec: ModelSpec) -> tuple[bool, str]:
    """Whether ``spec`` can be loaded right now without a network, and why not."""
    module_name = spec.loader.split(":")[0]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        return False, f"package {exc.name} missing"
    check = getattr(module, "available_offline", None)
    if check is None:
        return True, "ready"
    return check(spec)
