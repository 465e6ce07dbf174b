"""The encoder seam: the Encoder protocol, the base every encoder builds on, and the image side a
batch loop drives.

An encoder's promise is two methods and a spec: ``embed_images`` and ``embed_texts`` return
L2-normalised float32 arrays of shape (n, spec.dim). Everything else is declared, never probed:
EncoderBase supplies a default for each optional part (no warm-up, no first-use note, PIL images
in, uncalibrated scores), and an encoder that preprocesses on worker threads says so with ``takes_pixels = True`` and
implements the PixelEncoder methods. Callers decide once, through ``image_side()``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from ..errors import ModelUnavailable
from ..records import ModelSpec

# Files are decoded to the model's input side plus the margin its centre crop cuts.
CROP_MARGIN = 32


@dataclass(frozen=True, slots=True)
class PixelSpec:
    """How an encoder turns an upright 0..255 RGB image into its input tensor: resize the short
    side to ``resize`` (bicubic, antialiased), centre-crop ``crop`` x ``crop``, then
    ``(x - mean) / std`` per channel, in 0..255 units."""

    resize: int
    crop: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


@dataclass(frozen=True, slots=True)
class Relevance:
    """Calibrated scores for a batch of queries: a photo at cosine ``s`` to query i scores
    ``sigmoid(slope[i] * s + offset[i])``, fitted on right and wrong answers so that one
    threshold (0.5 by default) means the same for every query. Monotone in ``s`` (slope > 0):
    a score threshold is a cosine threshold per query, which the store can apply."""

    slope: NDArray[np.float32]
    offset: NDArray[np.float32]

    def probability(self, i: int, cosine: NDArray[np.floating] | float) -> NDArray[np.float64]:
        z = np.asarray(cosine, np.float64) * float(self.slope[i]) + float(self.offset[i])
        return 1.0 / (1.0 + np.exp(-z))

    def cosine_at(self, i: int, probability: float) -> float:
        """The cosine at which query i reaches ``probability`` (0 < p < 1)."""
        p = min(max(probability, 1e-6), 1 - 1e-6)
        return float((np.log(p / (1 - p)) - float(self.offset[i])) / max(float(self.slope[i]), 1e-6))


class ImageSide(Protocol):
    """An image model as a batch loop drives it: decode each file to ``min_side``, run
    ``preprocess`` on worker threads, ``embed`` batches on the calling thread."""

    key: str  # identifies the model and its weights (cache keys, checkpoints)
    dim: int
    device: str
    min_side: int  # the short side decoding must keep
    pixels: bool  # preprocess gives arrays that stack into one batch; else PIL images pass through
    pixel_spec: PixelSpec | None  # preprocess as tensor operations (GPU decoding), when it has one

    def warm_up(self) -> None: ...

    def preprocess(self, image: Image.Image) -> Any: ...

    def embed(self, batch: Any) -> NDArray[np.float32]:
        """A stacked batch of preprocessed images when ``pixels``, else a list of PIL images."""


class Encoder(Protocol):
    """What the rest of xlir may use of an encoder (EncoderBase supplies the optional parts)."""

    spec: ModelSpec
    device: str
    precision: str
    input_size: int  # the model's square input side
    takes_pixels: bool  # implements PixelEncoder

    def embed_images(self, images: Sequence[Image.Image]) -> NDArray[np.float32]: ...

    def embed_texts(self, texts: Sequence[str], *, lang: str | None = None) -> NDArray[np.float32]: ...

    def warm_up(self) -> None: ...

    def first_use_note(self) -> str: ...

    def image_side(self) -> ImageSide: ...

    def feature_side(self) -> ImageSide: ...

    def relevance(self, queries: NDArray[np.float32]) -> Relevance | None: ...

    def embed_labels(self, texts: Sequence[str], *, lang: str | None = None) -> NDArray[np.float32]: ...


class PixelEncoder(Encoder, Protocol):
    """An encoder whose preprocessing is a pure function that may run on worker threads."""

    def preprocess(self, image: Image.Image) -> Any: ...

    def embed_pixels(self, pixels: Any) -> NDArray[np.float32]:
        """A (n, 3, H, W) batch of ``preprocess`` outputs: a numpy array or a torch tensor."""

    def pixel_spec(self) -> PixelSpec | None:
        """``preprocess`` as tensor operations, for decoding on a GPU; None when it has none."""


class EncoderBase:
    """Defaults for everything but the two embed methods and the spec."""

    spec: ModelSpec
    device: str = "cpu"
    precision: str = "fp32"
    input_size: int = 224
    takes_pixels: bool = False

    def embed_images(self, images: Sequence[Image.Image]) -> NDArray[np.float32]:
        raise NotImplementedError

    def embed_texts(self, texts: Sequence[str], *, lang: str | None = None) -> NDArray[np.float32]:
        raise NotImplementedError

    def warm_up(self) -> None:
        """Load the weights now (a model that loads lazily); the default has nothing to load."""

    def first_use_note(self) -> str:
        """Non-empty when warm_up() will prepare files (seconds, once per machine), not just load."""
        return ""

    def image_side(self) -> ImageSide:
        """This encoder's image embedding, as a batch loop drives it."""
        return EmbeddingSide(self)

    def feature_side(self) -> ImageSide:
        """The frozen image representation a trained head reads (`xlir train`): by default the
        encoder's own embedding."""
        return self.image_side()

    def embed_labels(self, texts: Sequence[str], *, lang: str | None = None) -> NDArray[np.float32]:
        """Names to score images against (tags), where embed_texts embeds what someone searches
        for; the same for most models."""
        return self.embed_texts(texts, lang=lang)

    def relevance(self, queries: NDArray[np.float32]) -> Relevance | None:
        """Calibrated scores for these embedded text queries, or None: the model's scores are
        cosines, with no meaning shared across queries."""
        return None

    def empty(self) -> NDArray[np.float32]:
        return np.zeros((0, self.spec.dim), np.float32)


class EmbeddingSide:
    """An encoder's own image embedding as an ImageSide; whether it takes pixels is read once."""

    def __init__(self, encoder: Encoder) -> None:
        self.encoder = encoder
        self.key = f"{encoder.spec.id}:embedding"
        self.dim = encoder.spec.dim
        self.device = encoder.device
        self.min_side = encoder.input_size + CROP_MARGIN
        self.pixels = encoder.takes_pixels
        self._pixel: PixelEncoder | None = encoder if encoder.takes_pixels else None  # type: ignore[assignment]
        self.pixel_spec = self._pixel.pixel_spec() if self._pixel is not None else None

    def warm_up(self) -> None:
        self.encoder.warm_up()

    def preprocess(self, image: Image.Image) -> Any:
        return self._pixel.preprocess(image) if self._pixel is not None else image

    def embed(self, batch: Any) -> NDArray[np.float32]:
        if self._pixel is not None:
            return self._pixel.embed_pixels(batch)
        return self.encoder.embed_images(list(batch))


def normalise(x: NDArray[np.floating]) -> NDArray[np.float32]:
    """Row-wise L2 normalisation; zero rows stay zero instead of becoming NaN."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)


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
