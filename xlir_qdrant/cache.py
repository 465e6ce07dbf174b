"""Where xlir keeps derived files (label matrices, exported models): XLIR_CACHE, else
XLIR_HOME/cache, else the platform's user cache dir."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import platformdirs
from numpy.typing import NDArray


def cache_dir() -> Path:
    if env := os.environ.get("XLIR_CACHE"):
        path = Path(env).expanduser()
    elif home := os.environ.get("XLIR_HOME"):
        path = Path(home).expanduser() / "cache"
    else:
        path = Path(platformdirs.user_cache_dir("xlir"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def load_array(path: Path, shape: tuple[int, ...]) -> NDArray[np.float32] | None:
    """A cached array of this shape, or None when it is missing, torn or from something else."""
    if not path.is_file():
        return None
    try:
        arr = np.load(path)
    except (OSError, ValueError):
        return None
    return arr if arr.shape == shape and arr.dtype == np.float32 else None


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; it becomes ``path`` when the block ends
    without error (write-then-rename: a concurrent reader never sees half a file) and is
    removed when it fails."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=path.suffix + ".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_array(path: Path, arr: NDArray[np.float32]) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, arr)


def cached_array(name: str, shape: tuple[int, ...],
                 compute: Callable[[], NDArray[np.float32]]) -> NDArray[np.float32]:
    """``cache_dir()/name`` if it holds an array of ``shape``, else ``compute()`` saved there."""
    path = cache_dir() / name
    arr = load_array(path, shape)
    if arr is None:
        arr = compute()
        save_array(path, arr)
    return arr
