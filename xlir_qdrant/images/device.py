"""Decode and preprocess JPEGs on the GPU (nvjpeg) for encoders that run on CUDA.

With a GPU, a CPU core decodes ~14 twelve-megapixel JPEGs a second even in draft mode, while
nvjpeg decodes hundreds and the model embeds thousands: decoding is the limit. So for
`--device cuda` the decode workers only read, hash and probe each file's header, and the
pixels are decoded, oriented, resized and normalised on the GPU in batches. Anything nvjpeg
cannot take (PNG, HEIC, CMYK JPEGs, damaged files) goes the CPU way, one file at a time, and
ends in the same batch.

Everything here also runs on a CPU device (torchvision decodes there too), which is how the
tests check it; on a CPU it is slower than Pillow's draft mode, so ingest uses it only on CUDA.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..encoders.base import PixelSpec

# Per-image resize on the GPU needs the full-size float copy of one image at a time; nvjpeg
# gets this many files per call (the batch size it was measured at).
DECODE_CHUNK = 32


@dataclass(frozen=True, slots=True)
class RawJpeg:
    """A JPEG's bytes as read by a worker (pinned for the copy when the target is a GPU)."""

    data: Any  # uint8 torch tensor, one-dimensional
    orientation: int


def raw_jpeg(data: bytes, orientation: int, device: str) -> RawJpeg:
    import torch

    tensor = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    if device.startswith("cuda"):
        tensor = tensor.pin_memory()
    return RawJpeg(tensor, orientation)


def decode_jpegs(raws: Sequence[RawJpeg], device: str) -> list[Any]:
    """Decode to upright uint8 (3, H, W) tensors on ``device``; None where a file failed."""
    from torchvision.io import ImageReadMode, decode_jpeg

    out: list[Any] = []
    for start in range(0, len(raws), DECODE_CHUNK):
        chunk = raws[start : start + DECODE_CHUNK]
        datas = [r.data for r in chunk]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torchvision's notice that its decoders will move
            try:
                images: list[Any] = list(decode_jpeg(datas, mode=ImageReadMode.RGB, device=device))
            except RuntimeError:
                # One bad file fails the whole call: retry one by one to find it.
                images = [_decode_one(d, device) for d in datas]
        out.extend(None if im is None else orient(im, r.orientation) for im, r in zip(images, chunk, strict=True))
    return out


def _decode_one(data: Any, device: str) -> Any:
    from torchvision.io import ImageReadMode, decode_jpeg

    try:
        return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
    except RuntimeError:
        return None


def orient(image: Any, orientation: int) -> Any:
    """Apply an EXIF orientation (1..8) to a (C, H, W) tensor, as ImageOps.exif_transpose does."""
    if orientation == 2:
        return image.flip(2)
    if orientation == 3:
        return image.flip(1).flip(2)
    if orientation == 4:
        return image.flip(1)
    if orientation in (5, 6, 7, 8):
        t = image.transpose(1, 2)
        return {5: t, 6: t.flip(2), 7: t.flip(1).flip(2), 8: t.flip(1)}[orientation]
    return image


def to_pixels(images: Sequence[Any], spec: PixelSpec, device: str) -> Any:
    """Upright uint8 (3, H, W) tensors -> one float32 (n, 3, crop, crop) batch on ``device``."""
    import torch
    import torch.nn.functional as F

    mean = torch.tensor(spec.mean, device=device, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, device=device, dtype=torch.float32).view(1, 3, 1, 1)
    out = torch.empty((len(images), 3, spec.crop, spec.crop), device=device, dtype=torch.float32)
    for i, image in enumerate(images):
        x = image.to(device, non_blocking=True)[None].float()
        h, w = x.shape[-2:]
        scale = spec.resize / min(h, w)
        size = (max(spec.resize, round(h * scale)), max(spec.resize, round(w * scale)))
        x = F.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False)
        top, left = (size[0] - spec.crop) // 2, (size[1] - spec.crop) // 2
        out[i] = x[0, :, top : top + spec.crop, left : left + spec.crop].clamp_(0, 255)
    return (out - mean) / std


def stack_pixels(parts: Sequence[Any], device: str) -> Any:
    """One batch on ``device`` from device rows (1, 3, S, S) and CPU-preprocessed images
    (3, S, S, numpy or torch), in order."""
    import torch

    rows = []
    for part in parts:
        if part.ndim == 3:
            t = torch.as_tensor(np.asarray(part, dtype=np.float32) if isinstance(part, np.ndarray) else part)
            if device.startswith("cuda"):
                t = t.pin_memory()
            part = t.to(device, non_blocking=True)[None]
        rows.append(part)
    return torch.cat(rows)
