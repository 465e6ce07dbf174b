"""Open one image file safely: size limits, EXIF orientation, alpha on white, capture date.

Formats: whatever Pillow reads (JPEG, PNG, WebP, GIF, BMP, TIFF, AVIF), HEIC/HEIF through
pillow-heif, and camera RAW files through the preview the camera embedded in them (rawpy,
i.e. LibRaw): a RAW file's own sensor data is never developed, the preview is what the camera
showed. A file of a kind xlir cannot read at all raises Unsupported, which callers count per
kind instead of reporting file by file.

Memory: a picture is held at full size only while it decodes. Right after that it is
box-reduced to a few times the size the model needs (JPEGs are decoded that small to begin
with), and a DecodeBudget, when given, caps how much full-size decoding runs at once.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import os
import re
import stat
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..config import DEFAULT_MAX_MEGAPIXELS
from ..errors import XlirError
from .budget import DecodeBudget

# Camera RAW files LibRaw reads; each is indexed through its embedded preview.
RAW_EXTENSIONS = frozenset({".dng", ".cr2", ".cr3", ".nef", ".nrw", ".arw", ".raf", ".orf", ".rw2", ".pef",
                            ".srw"})
# A decoded picture is box-reduced to at least this many times the model's short side: the
# model's own resize (bicubic, reducing_gap=3) then starts from the same pixels as before.
REDUCE_MARGIN = 3
# Box-reducing a picture with alpha premultiplies it into a copy first; strip by strip, that
# copy stays this many rows high instead of the whole picture.
_STRIP_ROWS = 512
# Bytes held per decoded pixel while decoding, measured on 40 MP files: Pillow keeps RGB as
# 4 bytes; pillow-heif and Pillow's AVIF plugin hold the decoder's own buffer beside it.
# Pillow's WebP decoder goes through libwebp's animation decoder, which keeps two canvases and
# hands over a third copy.
_DECODE_BYTES = {"HEIF": 8, "AVIF": 10, "WEBP": 16}
# So a WebP to be reduced is decoded by OpenCV instead (libwebp's still-image decoder, one
# canvas of 3 or 4 bytes a pixel): a 100 MP WebP indexed at a 1.6 GB peak that way went to
# about 0.7 GB. Its EXIF orientation is still read (and applied) through Pillow.
_WEBP_CV2_BYTES = 5
_ORIENT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
           5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
           8: Image.Transpose.ROTATE_90}
# LibRaw's ``flip`` as the EXIF orientation it stands for.
_RAW_FLIP = {0: 1, 1: 2, 3: 3, 2: 4, 4: 5, 6: 6, 7: 7, 5: 8}
_EXIF_IFD = 0x8769
_DATETIME_ORIGINAL = 0x9003
_DATETIME = 0x0132


class DecodeError(Exception):
    """Why a file was skipped, phrased for a one-line message (reason + flag)."""


class Unsupported(DecodeError):
    """A file of a kind xlir does not read (a RAW file without a preview): reported once per
    kind and reason, with a count, rather than once per file."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


@functools.cache
def register_formats() -> None:
    """HEIC/HEIF through pillow-heif (it registers only when asked); AVIF is Pillow's own.

    Also sets Pillow's image block size (PILLOW_BLOCK_SIZE) above glibc's largest mmap
    threshold (32 MB): big pictures are then allocated in blocks that go back to the system
    when freed. With Pillow's default 16 MB blocks, each decode thread's malloc arena kept the
    blocks of the largest picture it had decoded, and 8 threads held 1.3 GB for a mix whose
    decoding never had more than 512 MB at once (bench/ingest.py --mix).
    """
    from pillow_heif import register_heif_opener

    register_heif_opener()
    Image.core.set_block_size(64 * 2**20)


@dataclass(frozen=True, slots=True)
class Decoded:
    image: Image.Image | None  # RGB, upright, maybe reduced by JPEG draft mode; None: decoded on a GPU
    width: int  # of the original file, upright
    height: int
    taken_at: str | None
    text: str | None = None  # the text read in the photo, when it was asked for (ocr.py)


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


def decode(path: str, *, min_side: int = 0, max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
           budget: DecodeBudget | None = None) -> Decoded:
    """Decode ``path`` for a model that needs at least ``min_side`` pixels on the short side.

    JPEGs are decoded in draft mode (DCT scaling) at the smallest scale that still covers
    ``min_side``: a 12 MP photo then decodes at 1/8 size, several times faster. Other formats
    are box-reduced right after decoding to about REDUCE_MARGIN times ``min_side``. With a
    ``budget``, the full-size decoding waits until the budget has room for it.
    """
    if Path(path).suffix.lower() in RAW_EXTENSIONS:
        return _decode_raw(path, min_side, max_megapixels, budget)
    im, probe = _open(Path(path), max_megapixels)
    rgb = _pixels(im, probe.orientation, min_side, budget)
    return Decoded(rgb, probe.width, probe.height, probe.taken_at)


def _pixels(im: Image.Image, orientation: int, min_side: int, budget: DecodeBudget | None) -> Image.Image:
    """Load an opened image, reduce it for ``min_side``, turn it upright RGB; closes ``im``
    unless it is itself the result (a small upright RGB picture is not copied)."""
    rgb = None
    try:
        if im.format == "JPEG" and min_side:
            im.draft("RGB", (min_side, min_side))
        factor = _factor(im, min_side)
        webp = (im.format == "WEBP" and factor >= 2 and bool(getattr(im, "filename", ""))
                and not getattr(im, "is_animated", False))  # a file on disk, one frame
        per_pixel = _WEBP_CV2_BYTES if webp else _DECODE_BYTES.get(im.format or "", 4)
        with budget.hold(im.width * im.height * per_pixel) if budget is not None else contextlib.nullcontext():
            small = _webp_reduced(im.filename, factor) if webp else None
            if small is None:
                im.load()
                small = _reduce(im, min_side)
            if orientation != 1:
                small = small.transpose(_ORIENT[orientation])
            rgb = _to_rgb(small)
            return rgb
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DecodeError(_decode_reason(exc)) from None
    finally:
        if rgb is not im:  # the file and its full-size pixels
            im.close()


def _factor(im: Image.Image, min_side: int) -> int:
    """The largest whole factor that keeps REDUCE_MARGIN * ``min_side`` on the short side."""
    return min(im.size) // (REDUCE_MARGIN * min_side) if min_side else 0


def _webp_reduced(path: str | os.PathLike[str], factor: int) -> Image.Image | None:
    """A still WebP decoded by OpenCV and area-reduced by ``factor``; None where OpenCV cannot
    decode it (Pillow then does)."""
    import cv2

    pixels = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_UNCHANGED)  # EXIF orientation ignored
    if pixels is None:
        return None
    height, width = pixels.shape[:2]
    pixels = cv2.resize(pixels, (-(-width // factor), -(-height // factor)), interpolation=cv2.INTER_AREA)
    if pixels.ndim == 2:
        return Image.fromarray(pixels, "L")
    if pixels.shape[2] == 4:
        return Image.fromarray(cv2.cvtColor(pixels, cv2.COLOR_BGRA2RGBA), "RGBA")
    return Image.fromarray(cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB), "RGB")


def _reduce(im: Image.Image, min_side: int) -> Image.Image:
    """``im`` box-reduced by the largest whole factor that keeps REDUCE_MARGIN * ``min_side`` on
    its short side (``im`` itself when there is nothing to reduce)."""
    factor = _factor(im, min_side)
    if factor < 2:
        return im
    if im.mode in ("P", "PA"):  # box-reducing needs colours, not palette indices
        im = im.convert("RGBA" if im.mode == "PA" or "transparency" in im.info else "RGB")
    elif im.mode in ("1", "I;16", "I;16B", "I;16L", "I;16N"):
        im = im.convert("L" if im.mode == "1" else "I")
    if im.mode not in ("RGBA", "LA"):
        return im.reduce(factor)
    rows = max(1, _STRIP_ROWS // factor) * factor
    out = Image.new(im.mode, (-(-im.width // factor), -(-im.height // factor)))
    for top in range(0, im.height, rows):
        out.paste(im.crop((0, top, im.width, min(im.height, top + rows))).reduce(factor), (0, top // factor))
    return out


def _decode_raw(path: str, min_side: int, max_megapixels: float, budget: DecodeBudget | None) -> Decoded:
    """A camera RAW file through the preview embedded in it (JPEG, or a bitmap)."""
    import rawpy

    _check_regular(Path(path))
    kind = Path(path).suffix.lstrip(".").upper()
    try:
        with rawpy.imread(path) as raw:
            flip = _RAW_FLIP.get(raw.sizes.flip, 1)
            width, height = raw.sizes.width, raw.sizes.height
            stamp = raw.other.timestamp
            thumb = raw.extract_thumb()
    except (rawpy.LibRawNoThumbnailError, rawpy.LibRawUnsupportedThumbnailError):
        raise Unsupported(kind, "no embedded preview xlir can read (RAW data itself is not developed)") from None
    except rawpy.LibRawFileUnsupportedError:
        raise DecodeError(f"not a {kind} file LibRaw can read") from None
    except (rawpy.LibRawError, OSError) as exc:
        raise DecodeError(f"unreadable {kind} file: {_raw_reason(exc)}") from None
    if thumb.format == rawpy.ThumbFormat.JPEG:
        im, head = _open(io.BytesIO(thumb.data), max_megapixels)
        orientation, taken_at = (head.orientation if head.orientation != 1 else flip), head.taken_at
    else:
        im = Image.fromarray(np.ascontiguousarray(thumb.data, dtype=np.uint8))
        orientation, taken_at = flip, None
    if taken_at is None and stamp is not None and stamp.year > 1970:
        taken_at = stamp.isoformat()
    rgb = _pixels(im, orientation, min_side, budget)
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    return Decoded(rgb, width, height, taken_at)


def _raw_reason(exc: BaseException) -> str:
    reason = exc.args[0] if exc.args else exc
    return (reason.decode(errors="replace") if isinstance(reason, bytes) else str(reason)) or type(exc).__name__
def thumbnail(path: str, size: int, *, max_megapixels: float = DEFAULT_MAX_MEGAPIXELS, quality: int = 82) -> bytes:
    """A JPEG of ``path``: upright, transparency on white, no side over ``size`` pixels. JPEGs
    are decoded in draft mode at the smallest scale that still covers ``size``."""
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
    register_formats()
    try:
        if isinstance(source, Path):
            _check_regular(source)
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


def _check_regular(path: Path) -> None:
    try:
        st = path.stat()
    except PermissionError:
        raise DecodeError("permission denied") from None
    except OSError as exc:
        raise DecodeError(exc.strerror or _decode_reason(exc)) from None
    if not stat.S_ISREG(st.st_mode):
        raise DecodeError("not a regular file (a FIFO, socket or device is never read)")
    if st.st_size == 0:
        raise DecodeError("empty file (0 bytes)")


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
