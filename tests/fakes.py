"""A deterministic fake encoder: images embed by colour, words name colours in a few languages.

Fast enough for wiring tests of ingest, search and the CLI, and still meaningful: a search for
"red" (or "rot", "rojo", "赤") must rank the red photo first. It is a model family of its own
("fake"), added to the registry for the test session (conftest.py).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
from PIL import Image

from xlir_qdrant.encoders.base import EncoderBase, normalise
from xlir_qdrant.encoders.registry import Family
from xlir_qdrant.records import ModelSpec

COLOURS = {
    "red": (1.0, 0.0, 0.0), "rot": (1.0, 0.0, 0.0), "rojo": (1.0, 0.0, 0.0), "赤": (1.0, 0.0, 0.0),
    "green": (0.0, 1.0, 0.0), "grün": (0.0, 1.0, 0.0), "verde": (0.0, 1.0, 0.0), "緑": (0.0, 1.0, 0.0),
    "blue": (0.0, 0.0, 1.0), "blau": (0.0, 0.0, 1.0), "azul": (0.0, 0.0, 1.0), "青": (0.0, 0.0, 1.0),
    "white": (1.0, 1.0, 1.0), "black": (0.0, 0.0, 0.0),
}
DIM = 8
FAKE = ModelSpec(id="fake-colour", family="fake", dim=DIM, languages=("en", "de", "es", "ja"), licence="test",
                 size_mb=0, bundled=True, needs_lang=False, description="colour fake for tests")
FAKE_OTHER = ModelSpec(id="fake-colour-wide", family="fake", dim=16, languages=("en",), licence="test", size_mb=0,
                       bundled=True, needs_lang=False, description="other dimension")
SPECS = (FAKE, FAKE_OTHER)


def _vec(rgb: Sequence[float], dim: int) -> np.ndarray:
    v = np.full(dim, 0.05, np.float32)
    v[:3] = rgb
    return v


class FakeEncoder(EncoderBase):
    """Takes PIL images as they are (no ``takes_pixels``), so it also covers that path."""

    input_size = 32

    def __init__(self, spec: ModelSpec, device: str = "cpu") -> None:
        self.spec = spec
        self.device = device
        self.calls = 0

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        self.calls += len(images)
        out = [_vec(np.asarray(im.convert("RGB"), np.float32).reshape(-1, 3).mean(0) / 255.0, self.spec.dim)
               for im in images]
        return normalise(np.stack(out)) if out else self.empty()

    def embed_texts(self, texts: Sequence[str], *, lang: str | None = None) -> np.ndarray:
        out = []
        for text in texts:
            rgb = np.zeros(3, np.float32)
            for word in text.lower().split():
                rgb += COLOURS.get(word, (0.0, 0.0, 0.0))
            out.append(_vec(rgb, self.spec.dim))
        return normalise(np.stack(out)) if out else self.empty()


class SlowFake(FakeEncoder):
    """The colour fake taking DELAY seconds a batch, so a Ray actor is still busy with one when
    a test kills it."""

    DELAY = 0.25

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        time.sleep(self.DELAY)
        return super().embed_images(images)


def load(spec: ModelSpec, device: str) -> FakeEncoder:
    return FakeEncoder(spec, device)


def load_slow(spec: ModelSpec, device: str) -> FakeEncoder:
    return SlowFake(spec, device)


FAMILY = Family(load=load, status=lambda spec: (True, "test fake"))
SLOW_FAMILY = Family(load=load_slow, status=lambda spec: (True, "test fake, slow"))
