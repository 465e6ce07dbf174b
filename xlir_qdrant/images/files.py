"""Walk folders for image files: stat only, nothing is opened here."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

BASE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})


@functools.cache
def image_extensions() -> frozenset[str]:
    """The base formats plus HEIC/HEIF/AVIF when a Pillow plugin for them is registered."""
    extra = {ext for ext in Image.registered_extensions() if ext in {".heic", ".heif", ".avif"}}
    try:  # pillow-heif registers itself only when asked
        from pillow_heif import register_heif_opener  # type: ignore[import-not-found]

        register_heif_opener()
        extra |= {".heic", ".heif"}
    except ImportError:
        pass
    return BASE_EXTENSIONS | extra


@dataclass(frozen=True, slots=True)
class FileInfo:
    path: str  # absolute, normalised
    size: int
    mtime_ns: int  # integer nanoseconds: floats lose digits on a JSON round trip


def scan(
    root: Path,
    *,
    include_hidden: bool = False,
    on_error: Callable[[str, str], None] | None = None,
) -> Iterator[FileInfo]:
    """Yield image files below ``root`` (or ``root`` itself if it is a file), sorted per folder.

    Unreadable folders are reported through ``on_error(path, reason)`` and skipped; symlinked
    folders are not followed, so a link loop cannot make the walk endless.
    """
    exts = image_extensions()
    root = Path(os.path.abspath(root))
    if root.is_file():
        if root.suffix.lower() in exts:
            st = root.stat()
            yield FileInfo(str(root), st.st_size, st.st_mtime_ns)
        return
    stack = [str(root)]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            if on_error:
                on_error(folder, exc.strerror or type(exc).__name__)
            continue
        subdirs = []
        for entry in entries:
            if not include_hidden and entry.name.startswith("."):
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    subdirs.append(entry.path)
                elif entry.is_file() and os.path.splitext(entry.name)[1].lower() in exts:
                    st = entry.stat()
                    yield FileInfo(entry.path, st.st_size, st.st_mtime_ns)
            except OSError as exc:
                if on_error:
                    on_error(entry.path, exc.strerror or type(exc).__name__)
        stack.extend(reversed(subdirs))


def files_by_name(root: Path) -> dict[str, str]:
    """File name -> path for every file below ``root`` (first one wins on duplicates): how
    caption sets that name images by file name find them."""
    out: dict[str, str] = {}
    for folder, _dirs, files in os.walk(root):
        for name in files:
            out.setdefault(name, os.path.join(folder, name))
    return out


def resolve_path(base: Path, name: str) -> str:
    """``name`` as an absolute path, relative ones taken from ``base``."""
    p = Path(name).expanduser()
    return str(p if p.is_absolute() else (base / p).resolve())
