"""Walk folders for image files: stat only, nothing is opened here."""

from __future__ import annotations

import functools
import os
import stat
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .decode import RAW_EXTENSIONS

BASE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".heic", ".heif",
                             ".avif"})

# Files found beside photos that xlir does not read: counted, and reported once per kind.
_VECTOR = "not a raster format xlir reads"
_VIDEO = "videos are not indexed"
UNREAD_EXTENSIONS = {
    ".svg": _VECTOR, ".svgz": _VECTOR, ".eps": _VECTOR, ".ai": _VECTOR,
    ".psd": "layered documents are not read", ".psb": "layered documents are not read",
    ".xcf": "layered documents are not read", ".jxl": "JPEG XL is not read",
    ".mov": _VIDEO, ".mp4": _VIDEO, ".m4v": _VIDEO, ".avi": _VIDEO, ".mkv": _VIDEO, ".mts": _VIDEO, ".3gp": _VIDEO,
}


@functools.cache
def image_extensions() -> frozenset[str]:
    """What the walk yields: Pillow's formats, HEIC/HEIF (pillow-heif), AVIF and camera RAW."""
    return BASE_EXTENSIONS | RAW_EXTENSIONS


@dataclass(frozen=True, slots=True)
class Kind:
    """A kind of file a run did not read, and why, e.g. SVG, 'not a raster format xlir reads'."""

    name: str
    reason: str


def kind_of(path: str) -> str:
    """A file's kind as shown to people: its extension in capitals."""
    return os.path.splitext(path)[1].lstrip(".").upper() or "extensionless"


@dataclass(frozen=True, slots=True)
class FileInfo:
    path: str  # absolute, normalised
    size: int
    mtime_ns: int  # integer nanoseconds: floats lose digits on a JSON round trip


class WalkErrors:
    """What a walk could not read: folders (nothing under them can be judged gone) and single
    entries (that one file cannot); ``report(path, reason)`` hears of each as it happens
    (``report_folder``, when given, of the folders). Files of a kind xlir does not read are
    counted in ``unread``."""

    def __init__(self, report: Callable[[str, str], None] | None = None,
                 report_folder: Callable[[str, str], None] | None = None) -> None:
        self.folders: list[str] = []
        self.entries: list[str] = []
        self.unread: Counter[Kind] = Counter()  # files of a kind xlir does not read, by kind
        self._report = report
        self._report_folder = report_folder

    def folder(self, path: str, reason: str) -> None:
        self.folders.append(path)
        if self._report_folder:
            self._report_folder(path, f"cannot read folder: {reason}")
        elif self._report:
            self._report(path, f"cannot read folder: {reason}")

    def entry(self, path: str, reason: str) -> None:
        self.entries.append(path)
        if self._report:
            self._report(path, reason)

    def protects(self, path: str) -> bool:
        """Whether ``path`` lies in a folder the walk could not read, or is an entry it could
        not stat: such a file may well still exist."""
        return path in self.entries or any(path.startswith(f.rstrip(os.sep) + os.sep) for f in self.folders)


def scan(root: Path, *, include_hidden: bool = False, errors: WalkErrors | None = None) -> Iterator[FileInfo]:
    """Yield the image files below ``root`` (or ``root`` itself if it is one), sorted per folder.

    Only regular files are yielded: a FIFO or a device is never opened, a symlinked folder is
    not followed (a link loop cannot make the walk endless), a broken link or an entry whose
    stat fails is reported once, and an unreadable folder is reported and skipped.
    """
    errors = errors or WalkErrors()
    exts = image_extensions()
    root = Path(os.path.abspath(root))
    try:
        st = root.stat()
    except OSError as exc:
        errors.entry(str(root), exc.strerror or type(exc).__name__)
        return
    if not stat.S_ISDIR(st.st_mode):
        if not stat.S_ISREG(st.st_mode):
            errors.entry(str(root), "not a regular file (a FIFO, socket or device is never read)")
        elif root.suffix.lower() in exts:
            yield FileInfo(str(root), st.st_size, st.st_mtime_ns)
        elif root.suffix.lower() in UNREAD_EXTENSIONS:
            errors.unread[Kind(kind_of(root.name), UNREAD_EXTENSIONS[root.suffix.lower()])] += 1
        return
    stack = [str(root)]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            errors.folder(folder, exc.strerror or type(exc).__name__)
            continue
        subdirs = []
        for entry in entries:
            if not include_hidden and entry.name.startswith("."):
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    subdirs.append(entry.path)
                    continue
                ext = os.path.splitext(entry.name)[1].lower()
                if ext not in exts:
                    if ext in UNREAD_EXTENSIONS and entry.is_file():
                        errors.unread[Kind(kind_of(entry.name), UNREAD_EXTENSIONS[ext])] += 1
                    continue
                st = entry.stat()  # follows a link to its target
                if stat.S_ISREG(st.st_mode):
                    yield FileInfo(entry.path, st.st_size, st.st_mtime_ns)
            except FileNotFoundError:
                gone = "broken link: its target does not exist" if entry.is_symlink() else "vanished during the scan"
                errors.entry(entry.path, gone)
            except OSError as exc:
                errors.entry(entry.path, exc.strerror or type(exc).__name__)
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
