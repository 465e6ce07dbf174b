"""A perceptual signature of a photo: what it looks like, in 63 bits.

The 8 x 8 lowest frequencies of the 2-D DCT of a 32 x 32 grey thumbnail, each bit saying
whether that frequency is above the median (the DC term, the mean brightness, left out): the
"pHash" of Zauner's thesis (2010). Resizing and recompressing a photo leave it almost
unchanged, a brightness edit changes a few bits, a 5 % crop ten or so; two different photos
differ in about half. `xlir duplicates` uses it to confirm that two photos whose vectors are
close are the same picture, not two pictures of the same thing.
"""

from __future__ import annotations

import functools

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from .decode import DecodeError, decode

BITS = 63
_SIDE = 32


@functools.cache
def _dct_matrix(n: int) -> NDArray[np.float64]:
    k, i = np.arange(n)[:, None], np.arange(n)[None, :]
    m = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2 / n)
    m[0] /= np.sqrt(2)
    return m


def signature_of(image: Image.Image) -> NDArray[np.bool_]:
    grey = np.asarray(image.convert("L").resize((_SIDE, _SIDE), Image.Resampling.BOX), np.float64)
    d = _dct_matrix(_SIDE)
    low = (d @ grey @ d.T)[:8, :8].reshape(-1)[1:]
    return low > np.median(low)


def signature(path: str) -> NDArray[np.bool_] | None:
    """The signature of the photo at ``path`` (upright, as indexed), or None if it cannot be read."""
    try:
        decoded = decode(path, min_side=4 * _SIDE)  # JPEGs decode at 1/8 scale: fast
    except (DecodeError, OSError):
        return None
    assert decoded.image is not None  # decoded on the CPU
    return signature_of(decoded.image)


def distance(a: NDArray[np.bool_], b: NDArray[np.bool_]) -> int:
    """How many of the BITS differ."""
    return int(np.count_nonzero(a != b))
