"""Where xlir keeps derived files (label matrices, exported models, feature caches): XLIR_CACHE,
else XLIR_HOME/cache, else the platform's user cache dir.

Nothing here is trusted blindly. An array is stored with the SHA-256 of its contents and read
back only if that digest, its shape, its dtype and its values (all finite) check out; other
files get a ``.sha256`` seal beside them. A file that fails is rebuilt, with one warning. No
format that can run code (pickle) is ever loaded. The cache is an optimisation: a full disk
means a warning and a run that goes on without it, never a failed command.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import platformdirs
from numpy.typing import NDArray

log = logging.getLogger(__name__)

# Temporary files older than this in the cache are leftovers of a killed run (an export takes
# ~15 s), and are removed.
STALE_TMP_SECONDS = 600


def cache_dir() -> Path:
    if env := os.environ.get("XLIR_CACHE"):
        path = Path(env).expanduser()
    elif home := os.environ.get("XLIR_HOME"):
        path = Path(home).expanduser() / "cache"
    else:
        path = Path(platformdirs.user_cache_dir("xlir"))
    path.mkdir(parents=True, exist_ok=True)
    _sweep(str(path))
    return path


@functools.cache
def _sweep(path: str) -> None:
    """Remove temporaries left behind by killed runs (once per process and folder)."""
    cutoff = time.time() - STALE_TMP_SECONDS
    try:
        entries = list(os.scandir(path))
    except OSError:
        return
    for entry in entries:
        if not (entry.name.startswith("tmp") or entry.name.endswith(".tmp")):
            continue
        with contextlib.suppress(OSError):
            if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                shutil.rmtree(entry.path) if entry.is_dir(follow_symlinks=False) else os.unlink(entry.path)


def _digest(arr: NDArray[np.float32]) -> str:
    h = hashlib.sha256(f"{arr.dtype.str}{arr.shape}".encode())
    h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def load_array(path: Path, shape: tuple[int, ...]) -> NDArray[np.float32] | None:
    """A cached array of this shape, or None when it is missing or fails a check (then it is
    rebuilt by the caller; a damaged file gets one warning line)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as stored:
            arr, digest = stored["data"], str(stored["sha256"])
    except Exception as exc:  # noqa: BLE001 - torn, foreign or truncated: rebuilt
        return _rejected(path, f"unreadable: {type(exc).__name__}")
    if arr.dtype != np.float32 or arr.shape != shape:
        return _rejected(path, f"{arr.dtype} {arr.shape}, expected float32 {shape}")
    if digest != _digest(arr):
        return _rejected(path, "its checksum does not match")
    if not np.isfinite(arr).all():
        return _rejected(path, "it holds values that are not finite")
    return arr


def _rejected(path: Path, why: str) -> None:
    log.warning("cache file %s is damaged (%s); rebuilding it", path, why)
    return None


def save_array(path: Path, arr: NDArray[np.float32]) -> bool:
    """Store ``arr`` with its digest (write-then-rename); False, with a warning, when the disk
    cannot take it."""
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, data=arr, sha256=np.array(_digest(arr)))
    except OSError as exc:
        cannot_write(path, exc)
        return False
    return True


_unwritable: set[Path] = set()


def cannot_write(path: Path, exc: OSError) -> None:
    """Say that the cache could not take ``path``: once per process and folder as a warning (a
    full disk would otherwise be a warning for every file a command tries to keep), after that
    only in the log."""
    first = path.parent not in _unwritable
    _unwritable.add(path.parent)
    log.log(logging.WARNING if first else logging.INFO, "cannot write cache file %s (%s); going on without it",
            path, disk_reason(exc, path))


def cached_array(name: str, shape: tuple[int, ...],
                 compute: Callable[[], NDArray[np.float32]]) -> NDArray[np.float32]:
    """``cache_dir()/name`` if it holds a sound array of ``shape``, else ``compute()`` saved there."""
    path = cache_dir() / name
    arr = load_array(path, shape)
    if arr is None:
        arr = np.asarray(compute(), dtype=np.float32)
        save_array(path, arr)
    return arr


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


def seal(path: Path) -> None:
    """Record the SHA-256 of a finished file beside it (``path.sha256``)."""
    with atomic_path(_seal_of(path)) as tmp:
        tmp.write_text(_file_digest(path))


def sealed(path: Path) -> bool:
    """Whether ``path`` exists and still has the digest its seal recorded."""
    try:
        return _seal_of(path).read_text().strip() == _file_digest(path)
    except OSError:
        return False


def _seal_of(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _file_digest(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def disk_reason(exc: OSError, path: Path) -> str:
    """An OSError in words; for a full disk, how much space is left where."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"disk full: {free_mb(path):.0f} MB free at {path.parent}"
    return exc.strerror or str(exc)


def free_mb(path: Path) -> float:
    """Free megabytes on the filesystem holding ``path`` (or its nearest existing parent)."""
    probe = Path(path)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        return shutil.disk_usage(probe).free / 1e6
    except OSError:
        return float("inf")
