"""A deterministic fake encoder: images embed by colour, words name colours in a few languages.

Fast enough for wiring tests of ingest, search and the CLI, and still meaningful: a search for
"red" (or "rot", "rojo", "赤") must rank the red photo first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from xlir_qdrant.encoders.base import ModelSpec, normalise, register

COLOURS = {
    "red": (1.0, 0.0, 0.0), "rot": (1.0, 0.0, 0.0), "rojo": (1.0, 0.0, 0.0), "赤": (1.0, 0.0, 0.0),
    "green": (0.0, 1.0, 0.0), "grün": (0.0, 1.0, 0.0), "verde": (0.0, 1.0, 0.0), "緑": (0.0, 1.0, 0.0),
    "blue": (0.0, 0.0, 1.0), "blau": (0.0, 0.0, 1.0), "azul": (0.0, 0.0, 1.0), "青": (0.0, 0.0, 1.0),
    "white": (1.0, 1.0, 1.0), "black": (0.0, 0.0, 0.0),
}
DIM = 8
FAKE = ModelSpec(id="fake-colour", dim=DIM, languages=("en", "de", "es", "ja"), licence="test", size_mb=0,
                 bundled=True, needs_lang=False, loader="fakes:load", description="colour fake for tests")
FAKE_OTHER = ModelSpec(id="fake-colour-wide", dim=16, languages=("en",), licence="test", size_mb=0,
                       bundled=True, needs_lang=False, loader="fakes:load", description="other dimension")


def _vec(rgb: Sequence[float], dim: int) -> np.ndarray:
    v = np.full(dim, 0.05, np.float32)
    v[:3] = rgb
    return v


@dataclass
class FakeEncoder:
    spec: ModelSpec
    device: str = "cpu"
    precision: str = "fp32"
    calls: int = 0
    input_size: int = 32

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        self.calls += len(images)
        out = [_vec(np.asarray(im.convert("RGB"), np.float32).reshape(-1, 3).mean(0) / 255.0, self.spec.dim)
               for im in images]
        return normalise(np.stack(out)) if out else np.zeros((0, self.spec.dim), np.float32)

    def embed_texts(self, texts: Sequence[str], *, lang: str | None = None) -> np.ndarray:
        out = []
        for text in texts:
            rgb = np.zeros(3, np.float32)
            for word in text.lower().split():
                rgb += COLOURS.get(word, (0.0, 0.0, 0.0))
            out.append(_vec(rgb, self.spec.dim))
        return normalise(np.stack(out))


def load(spec: ModelSpec, device: str) -> FakeEncoder:
    return FakeEncoder(spec=spec, device=device)


def register_fakes() -> None:
    register(FAKE)
    register(FAKE_OTHER)
