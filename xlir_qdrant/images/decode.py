"""Open one image file safely: size limits, EXIF orientation, alpha on white, capture date."""

from __future__ import annotations

import hashlib
import io
import os
import re
import stat
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from ..config import DEFAULT_MAX_MEGAPIXELS
from ..errors import XlirError
from .files import image_extensions

_EXIF_IFD = 0x8769
_DATETIME_ORIGINAL = 0x9003
_DATETIME = 0x0132


class DecodeError(Exception):
    """Why a file was skipped, phrased for a one-line message (reason + flag)."""


@dataclass(frozen=True, slots=True)
class Decoded:
    image: Image.Image | None  # RGB, upright, maybe reduced by JPEG draft mode; None: decoded on a GPU
    width: int  # of the original file, upright
    height: int
    taken_at: str | None


def open_regular(path: str) -> io.BufferedReader:
    """``path`` opened for reading, if it is a regular file. Opening a FIFO would wait for a
    writer forever, so the file is opened without blocking and checked before it is read."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise DecodeError("not a regular file (a FIFO, socket or device is never read)")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def sha256_file(path: str) -> str:
    with open_regular(path) as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def read_file(path: str) -> bytes:
    with open_regular(path) as fh:
        return fh.read()


@dataclass(frozen=True, slots=True)
class Probe:
    """What the header says: enough to store a point without decoding the pixels here."""

    format: str | None
    width: int  # upright
    height: int
    orientation: int  # EXIF 1..8
    taken_at: str | None


def decode(path: str, *, min_side: int = 0, max_megapixels: float = DEFAULT_MAX_MEGAPIXELS) -> Decoded:
    """Decode ``path`` for a model that needs at least ``min_side`` pixels on the short side.

    JPEGs are decoded in draft mode (DCT scaling) at the smallest scale that still covers
    ``min_side``: a 12 MP photo then decodes at 1/8 size, several times faster.
    """
    im, probe = _open(Path(path), max_megapixels)
    rgb = None
    try:
        if im.format == "JPEG" and min_side:
            im.draft("RGB", (min_side, min_side))
        im.load()
        # Neither step copies an image that is already upright RGB (12 MP: 36 MB each time).
        rgb = _to_rgb(ImageOps.exif_transpose(im) if probe.orientation != 1 else im)
        return Decoded(rgb, probe.width, probe.height, probe.taken_at)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DecodeError(_decode_reason(exc)) from None
    finally:
        if rgb is not im:  # the file itself; the pixels returned may be this very image
            im.close()


def thumbnail(path: str, size: int, *, max_megapixels: float = DEFAULT_MAX_MEGAPIXELS, quality: int = 82) -> bytes:
    """A JPEG of ``path``: upright, transparency on white, no side over ``size`` pixels. JPEGs
    are decoded in draft mode at the smallest scale that still covers ``size``."""
    image_extensions()  # registers HEIC/HEIF when pillow-heif is installed
    im, probe = _open(Path(path), max_megapixels)
    try:
        if im.format == "JPEG":
            im.draft("RGB", (size, size))
        im.load()
        rgb = _to_rgb(ImageOps.exif_transpose(im) if probe.orientation != 1 else im)
        rgb.thumbnail((size, size), Image.Resampling.LANCZOS, reducing_gap=2.0)
        out = io.BytesIO()
        rgb.save(out, "JPEG", quality=quality, optimize=True)
        return out.getvalue()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DecodeError(_decode_reason(exc)) from None
    finally:
        im.close()


def probe(source: str | bytes, *, max_megapixels: float = DEFAULT_MAX_MEGAPIXELS) -> Probe:
    """Read only the header of a file (a path) or of its bytes, with decode()'s checks."""
    im, info = _open(Path(source) if isinstance(source, str) else io.BytesIO(source), max_megapixels)
    im.close()
    return info


def _open(source: Path | io.BytesIO, max_megapixels: float) -> tuple[Image.Image, Probe]:
    # The pixel limit is --max-megapixels, checked below from the header before any pixel is
    # decoded. Pillow's own bomb check (89 MP, a process-wide setting) would refuse a valid
    # 100 MP panorama whatever the flag says, and its warning filter is not thread-safe.
    Image.MAX_IMAGE_PIXELS = None
    try:
        if isinstance(source, Path):
            st = source.stat()
            if not stat.S_ISREG(st.st_mode):
                raise DecodeError("not a regular file (a FIFO, socket or device is never read)")
            if st.st_size == 0:
                raise DecodeError("empty file (0 bytes)")
        if isinstance(source, io.BytesIO) and not source.getbuffer().nbytes:
            raise DecodeError("empty file (0 bytes)")
        im = Image.open(source)
    except DecodeError:
        raise
    except PermissionError:
        raise DecodeError("permission denied") from None
    except Image.DecompressionBombError as exc:
        raise DecodeError(_over_limit(exc, max_megapixels)) from None
    except UnidentifiedImageError:
        raise DecodeError("not an image Pillow can read") from None
    except OSError as exc:
        raise DecodeError(exc.strerror or _decode_reason(exc)) from None
    try:
        w, h = im.size
        if w * h > max_megapixels * 1_000_000:
            raise DecodeError(f"{w}x{h} is {w * h / 1e6:.0f} MP, over the {max_megapixels:g} MP limit "
                              f"(raise --max-megapixels)")
        exif = im.getexif()
        orientation = exif.get(0x0112, 1)
        orientation = orientation if isinstance(orientation, int) and 1 <= orientation <= 8 else 1
        if orientation in (5, 6, 7, 8):
            w, h = h, w
        return im, Probe(im.format, w, h, orientation, _taken_at(exif))
    except DecodeError:
        im.close()
        raise
    except (OSError, SyntaxError, ValueError) as exc:
        im.close()
        raise DecodeError(_decode_reason(exc)) from None


def _over_limit(exc: BaseException, max_megapixels: float) -> str:
    pixels = re.search(r"\((\d+) pixels\)", str(exc))
    size = f"{int(pixels.group(1)) / 1e6:.0f} MP, " if pixels else ""
    return f"{size}over the {max_megapixels:g} MP limit (raise --max-megapixels)"


def describe_failure(exc: BaseException) -> str:
    """Why one file could not be used, in one line: whatever went wrong reading or decoding it."""
    if isinstance(exc, DecodeError):
        return str(exc)
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc) or type(exc).__name__
    if isinstance(exc, XlirError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _decode_reason(exc: BaseException) -> str:
    reason = str(exc) or type(exc).__name__
    if "truncated" in reason.lower() or "broken data stream" in reason.lower():
        reason = "truncated or corrupt image data"
    return reason


def _to_rgb(im: Image.Image) -> Image.Image:
    """Composite any transparency on white: black backgrounds would read as 'night' to a model."""
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA"):
        im = im.convert("RGBA")
        white = Image.new("RGBA", im.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, im).convert("RGB")
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        im = ImageOps.autocontrast(im.convert("I").point(lambda v: v / 256).convert("L"))
    return im if im.mode == "RGB" else im.convert("RGB")


def _taken_at(exif: Image.Exif) -> str | None:
    raw = None
    try:
        raw = exif.get_ifd(_EXIF_IFD).get(_DATETIME_ORIGINAL) or exif.get(_DATETIME)
    except (KeyError, ValueError, TypeError, OSError):
        raw = exif.get(_DATETIME)
    if not raw or not isinstance(raw, str):
        return None
    try:
        return datetime.strptime(raw.strip("\x00 ")[:19], "%Y:%m:%d %H:%M:%S").isoformat()
    except ValueError:
        return None
