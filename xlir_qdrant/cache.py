"""Where xlir keeps derived files (label matrices, exported models): XLIR_CACHE, else
XLIR_HOME/cache, else the platform's user cache dir."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
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


def save_array(path: Path, arr: NDArray[np.float32]) -> None:
    """Write-then-rename, so a concurrent reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npy.tmp")
    with os.fdopen(fd, "wb") as fh:
        np.save(fh, arr)
    os.replace(tmp, path)


def cached_array(name: str, shape: tuple[int, ...],
                 compute: Callable[[], NDArray[np.float32]]) -> NDArray[np.float32]:
    """``cache_dir()/name`` if it holds an array of ``shape``, else ``compute()`` saved there."""
    path = cache_dir() / name
    arr = load_array(path, shape)
    if arr is None:
        arr = compute()
        save_array(path, arr)
    return arr
