"""Keeping a shard's small files in the OS page cache while the embedded engine opens it.

Qdrant Edge drops every file it opens from the page cache (``posix_fadvise(DONTNEED)``) and then
reads the small ones, each payload index's 1 MB null and value bitmaps among them, a 4 KB page at
a time (``MADV_RANDOM``). So every new process re-read them from disk: 20-30 ms a file, 0.3-0.4 s
of each cold `xlir search` on a collection with xlir's eight payload indexes, however few its
points. The kernel never drops a page that some process has mapped, so for the length of the load
this process maps those files and touches each page: what the last process left in the cache
costs a page-table walk (a few ms in all), and what it did not is read once, ahead.

Linux only, where the engine advises so; elsewhere a no-op. Only regular files up to ``SMALL``
are touched (the large ones, vectors and payload pages, are read or not as the engine chooses),
and each map holds a file descriptor, so at most half of the descriptors this process has left
(and ``MAX_HELD``) are used: the engine needs its own.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

SMALL = 2 << 20  # bytes: the bitmaps and trackers (1 MB each); not vector or payload pages (32 MB+)
MAX_HELD = 512  # files: about six segments' worth; a shard has one or two after optimize()


@contextlib.contextmanager
def kept_in_cache(shard: Path) -> Iterator[None]:
    """While the block runs, the small files under ``shard/segments`` stay in the page cache."""
    maps: list[mmap.mmap] = []
    try:
        budget = _descriptors_to_spare() if sys.platform == "linux" else 0
        if budget:
            for path in _files(shard / "segments"):  # the walk stops with the budget
                with contextlib.suppress(OSError, ValueError):
                    maps.append(_touched(path))
                if len(maps) >= budget:
                    break
        yield
    finally:
        for m in maps:
            m.close()


def _files(folder: Path) -> Iterator[str]:
    for root, _dirs, files in os.walk(folder):
        for name in files:
            yield os.path.join(root, name)


def _descriptors_to_spare() -> int:
    try:
        import resource

        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        used = len(os.listdir("/proc/self/fd"))
    except (ImportError, OSError, ValueError):
        return 0
    if soft == resource.RLIM_INFINITY:
        return MAX_HELD
    return max(0, min(MAX_HELD, (soft - used) // 2))


def _touched(path: str) -> mmap.mmap:
    st = os.stat(path, follow_symlinks=False)
    if not stat.S_ISREG(st.st_mode) or not 0 < st.st_size <= SMALL:
        raise ValueError(path)
    with open(path, "rb") as fh:
        m = mmap.mmap(fh.fileno(), 0, prot=mmap.PROT_READ)
    view = np.frombuffer(m, np.uint8)
    view[:: mmap.PAGESIZE].max()  # reading a byte of each page maps it into this process
    del view  # the map can only be closed once no array looks into it
    return m
