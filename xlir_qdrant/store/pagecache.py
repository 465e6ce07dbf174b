"""Keeping a shard's small files in the OS page cache while the embedded engine opens it.

Qdrant Edge drops every file it opens from the page cache (``posix_fadvise(DONTNEED)``) and then
reads the small ones, each payload index's 1 MB null and value bitmaps among them, a 4 KB page at
a time (``MADV_RANDOM``). So every new process re-read them from disk: 20-30 ms a file, 0.3-0.4 s
of each cold `xlir search` on a collection with xlir's eight payload indexes, however few its
points. The kernel never drops a page that some process has mapped, so for the length of the load
this process maps those files and touches each page: what the last process left in the cache
costs a page-table walk (a few ms in all), and what it did not is read once, ahead.

Linux only, where the engine advises so; elsewhere a no-op. Only files up to ``SMALL`` are
touched: the large ones (vectors, payload pages) are read, or not, as the engine chooses.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

SMALL = 2 << 20  # bytes: the bitmaps and trackers (1 MB each); not vector or payload pages (32 MB+)


@contextlib.contextmanager
def kept_in_cache(shard: Path) -> Iterator[None]:
    """While the block runs, the small files under ``shard/segments`` stay in the page cache."""
    maps: list[mmap.mmap] = []
    if sys.platform == "linux":
        for root, _dirs, files in os.walk(shard / "segments"):
            for name in files:
                with contextlib.suppress(OSError, ValueError):
                    maps.append(_touched(os.path.join(root, name)))
    try:
        yield
    finally:
        for m in maps:
            m.close()


def _touched(path: str) -> mmap.mmap:
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if not 0 < size <= SMALL:
            raise ValueError(path)
        m = mmap.mmap(fh.fileno(), 0, prot=mmap.PROT_READ)
    view = np.frombuffer(m, np.uint8)
    view[:: mmap.PAGESIZE].max()  # reading a byte of each page maps it into this process
    del view  # the map can only be closed once no array looks into it
    return m
