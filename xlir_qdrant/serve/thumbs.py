"""Thumbnails: EXIF-oriented JPEGs made on demand and kept on disk, within a size bound.

A thumbnail is named after the file's real path, size, modification time and the asked
size, so a changed photo gets a new one and a stale one is never shown. Reading one touches
it; when the folder outgrows its bound, the least recently used are removed until it is back
under 80% of it. They are made by the decoder indexing uses (images/decode.py: draft-mode
JPEGs, EXIF orientation, transparency on white, the pixel limit, regular files only).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from pathlib import Path

from ..errors import BadQuery, XlirError
from ..images.decode import DecodeError, thumbnail

MIN_SIZE, MAX_SIZE = 32, 1024


class Unreadable(XlirError):
    """The photo's file cannot be made into a thumbnail (gone, not an image, too large)."""


class Thumbnails:
    def __init__(self, folder: Path, *, max_bytes: int = 512 * 2**20, max_megapixels: float = 150.0) -> None:
        self.folder = Path(folder)
        self.max_bytes = max_bytes
        self.max_megapixels = max_megapixels
        self._total: int | None = None  # bytes in the folder: counted once, then kept up to date
        self._lock = threading.Lock()

    def get(self, file: str, size: int) -> Path:
        """The thumbnail of ``file`` (a real path the caller has checked), at most ``size`` px."""
        if not MIN_SIZE <= size <= MAX_SIZE:
            raise BadQuery(f"size must be between {MIN_SIZE} and {MAX_SIZE} pixels, not {size}")
        try:
            st = os.stat(file)
        except OSError as exc:
            raise Unreadable(f"the photo's file cannot be read ({exc.strerror or exc})") from None
        key = hashlib.sha256(os.fsencode(file) + f"\0{st.st_size}\0{st.st_mtime_ns}\0{size}".encode()).hexdigest()
        target = self.folder / key[:2] / f"{key[:40]}.jpg"
        if target.is_file():
            with contextlib.suppress(OSError):
                os.utime(target)  # recently used: evicted last
            return target
        try:
            data = thumbnail(file, size, max_megapixels=self.max_megapixels)
        except DecodeError as exc:
            raise Unreadable(f"the photo's file cannot be shown: {exc}") from None
        except OSError as exc:
            raise Unreadable(f"the photo's file cannot be read ({exc.strerror or exc})") from None
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f"{target.name}.{threading.get_ident()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, target)
        self._added(len(data), target)
        return target

    def total_bytes(self) -> int:
        with self._lock:
            return sum(size for _, size, _ in self._entries())

    def _added(self, n: int, new: Path) -> None:
        with self._lock:
            if self._total is None:
                self._total = sum(size for _, size, _ in self._entries())
            else:
                self._total += n
            if self._total > self.max_bytes:
                self._evict(keep=new)

    def _entries(self) -> list[tuple[float, int, Path]]:
        found = []
        for sub in self.folder.iterdir() if self.folder.is_dir() else ():
            for entry in os.scandir(sub) if sub.is_dir() else ():
                if not entry.name.endswith(".jpg"):  # not one being written
                    continue
                with contextlib.suppress(OSError):
                    st = entry.stat()
                    found.append((st.st_mtime, st.st_size, Path(entry.path)))
        return found

    def _evict(self, keep: Path) -> None:
        entries = sorted(self._entries())  # least recently used first
        total = sum(size for _, size, _ in entries)
        for _, size, path in entries:
            if total <= 0.8 * self.max_bytes:
                break
            if path == keep:  # the one about to be sent
                continue
            with contextlib.suppress(OSError):
                path.unlink()
                total -= size
        self._total = total
