"""Frozen-tower features, cached: the parts of the model that training never changes.

Both towers are frozen, so their outputs are computed once and kept on disk under the cache
dir: image features per file (keyed by tower, absolute path, mtime and size, so an edited photo
is recomputed and nothing else is), text features per caption list. Training then runs on
arrays alone and an epoch costs milliseconds to seconds instead of a pass through two networks.
The towers themselves are encoders (``Encoder.feature_side()``, encoders/text.py).
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from ..cache import cache_dir, load_array, save_array
from ..encoders.base import ImageSide
from ..encoders.registry import load_encoder
from ..encoders.text import TextSide, text_side
from ..images.batches import Batch, BatchEmbedder, Skipped

Advance = Callable[[int], None]
Skip = Callable[[str, str], None]


@functools.lru_cache(maxsize=4)
def image_tower(model_id: str, device: str = "cpu") -> ImageSide:
    """The frozen image side for ``model_id`` (a registry id), loaded once per process: the
    bundled model's penultimate ImageNet features, any other encoder's own embedding."""
    return load_encoder(model_id, device=device).feature_side()


def text_tower(name: str, device: str = "cpu") -> TextSide:
    """``muse`` for the bundled mUSE, anything else is a Hugging Face name or folder."""
    return text_side(name, device)


def text_features(
    texts: Sequence[str], tower: TextSide, *, chunk: int = 4096, use_cache: bool = True,
    on_advance: Advance | None = None,
) -> NDArray[np.float32]:
    """(len(texts), dim) features, cached on disk in chunks of ``chunk`` captions.

    Chunks, not one file: mUSE on a CPU needs ~35 min for COCO's 414k captions, and an
    interrupted run should resume where it stopped rather than start over.
    """
    parts = []
    root = _feature_dir(tower.key)
    for start in range(0, len(texts), chunk):
        block = list(texts[start : start + chunk])
        digest = hashlib.sha256("\n".join([tower.key, *block]).encode()).hexdigest()[:32]
        path = root / f"texts-{digest}.npz"
        cached = load_array(path, (len(block), tower.dim)) if use_cache else None
        if cached is None:
            cached = np.asarray(tower.features(block), np.float32)
            if use_cache:
                save_array(path, cached)
        parts.append(cached)
        if on_advance:
            on_advance(len(block))
    return np.concatenate(parts) if parts else np.zeros((0, tower.dim), np.float32)


def image_features(
    paths: Sequence[str], tower: ImageSide, *, batch_size: int = 64, workers: int | None = None,
    use_cache: bool = True, on_advance: Advance | None = None, on_skip: Skip | None = None,
) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
    """Features of every image, and which ones could be read (failed rows are zeros).

    Cached files are read back without decoding; the rest go through the shared batch loop.
    """
    out = np.zeros((len(paths), tower.dim), np.float32)
    ok = np.zeros(len(paths), bool)
    todo: list[tuple[int, Path]] = []
    root = _feature_dir(tower.key)  # (resolving it makes folders: once, not per image)
    for i, p in enumerate(paths):
        try:
            st = os.stat(p)
        except OSError as exc:
            if on_skip:
                on_skip(p, exc.strerror or str(exc))
            continue
        key = f"{tower.key}|{os.path.abspath(p)}|{st.st_mtime_ns}|{st.st_size}"
        digest = hashlib.sha256(key.encode()).hexdigest()
        cache = root / digest[:2] / f"{digest}.npz"
        if use_cache and (row := load_array(cache, (tower.dim,))) is not None:
            out[i], ok[i] = row, True
            if on_advance:
                on_advance(1)
        else:
            todo.append((i, cache))

    embedder: BatchEmbedder[tuple[int, Path], None] = BatchEmbedder(tower, batch_size=batch_size, workers=workers)
    for outcome in embedder.run(todo, lambda job: paths[job[0]]):
        if isinstance(outcome, Skipped):
            if on_skip:
                on_skip(paths[outcome.job[0]], outcome.reason)
        elif isinstance(outcome, Batch):
            for item in outcome.items:
                (i, cache) = item.job
                out[i], ok[i] = item.vector, True
                if use_cache:
                    save_array(cache, np.asarray(item.vector, np.float32))
            if on_advance:
                on_advance(len(outcome.items))
    return out, ok


def _feature_dir(key: str) -> Path:
    path = cache_dir() / "features" / re.sub(r"[^A-Za-z0-9_.-]+", "_", key)[:120]
    path.mkdir(parents=True, exist_ok=True)
    return path
