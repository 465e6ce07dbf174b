"""Synthetic images for calibrating int8 activation ranges: colour gradients, shapes, blur
and sensor-like noise. Deterministic, made on the spot, and no photo of any test set."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


def synthetic_photos(n: int = 64, size: int = 288, seed: int = 0) -> list[Image.Image]:
    return [_one(np.random.default_rng([seed, i]), size) for i in range(n)]


def _one(rng: np.random.Generator, size: int) -> Image.Image:
    y, x = np.mgrid[0:size, 0:size] / size
    angle = rng.uniform(0, 2 * np.pi)
    t = (np.cos(angle) * x + np.sin(angle) * y)[..., None]
    t = (t - t.min()) / (np.ptp(t) + 1e-6)
    start, end = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    im = Image.fromarray((start * (1 - t) + end * t).astype(np.uint8))
    draw = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(3, 12))):
        x0, y0 = (int(v) for v in rng.integers(-40, size, 2))
        w, h = (int(v) for v in rng.integers(10, size // 2, 2))
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x0, y0, x0 + w, y0 + h], fill=fill)
    im = im.filter(ImageFilter.GaussianBlur(float(rng.uniform(0, 3))))
    noise = rng.normal(0, rng.uniform(2, 25), (size, size, 3))
    return Image.fromarray(np.clip(np.asarray(im, np.float32) + noise, 0, 255).astype(np.uint8))
