"""Evaluation sets: XTD10 (fetched, never shipped) and any TSV of (image, language, caption).

XTD10 (Aggarwal & Kale 2020) is 1000 MSCOCO-2014 images with one caption each in 11 languages,
from adobe-research/Cross-lingual-Test-Dataset-XTD10 on GitHub: ``XTD10/test_image_names.txt``
lists the images, and line i of every ``test_1kcaptions_{code}.txt`` describes image i. The
seven crowd-sourced languages live in ``XTD10/``; English, German and French come from the MIC
set (``MIC/``) and Japanese from STAIR captions (``STAIR/``, file code ``jp``). Their licence
forbids redistribution, so xlir downloads them into the user's cache on first use (or reads them
from a folder the user points at) and never ships them.

The caption files use CRLF line ends and no final newline, and some editors add a UTF-8 BOM;
``read_lines`` handles all three so that line i stays line i.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from ..cache import cache_dir
from ..errors import XlirError
from ..images.files import files_by_name, resolve_path

BASE_URL = "https://raw.githubusercontent.com/adobe-research/Cross-lingual-Test-Dataset-XTD10/main"
IMAGE_LIST = "XTD10/test_image_names.txt"
COCO_IMAGE_URL = "http://images.cocodataset.org/{split}/{name}"

# ISO 639-1 code -> (the repository's file code, folders to try in order). The XTD10/ fallback
# covers layouts where every language sat in one folder.
LANGUAGES: dict[str, tuple[str, tuple[str, ...]]] = {
    "en": ("en", ("MIC", "XTD10")),
    "de": ("de", ("MIC", "XTD10")),
    "fr": ("fr", ("MIC", "XTD10")),
    "es": ("es", ("XTD10",)),
    "it": ("it", ("XTD10",)),
    "ja": ("jp", ("STAIR", "XTD10")),
    "ko": ("ko", ("XTD10",)),
    "pl": ("pl", ("XTD10",)),
    "ru": ("ru", ("XTD10",)),
    "tr": ("tr", ("XTD10",)),
    "zh": ("zh", ("XTD10",)),
}
_ALIASES = {"jp": "ja"}

Advance = Callable[[int], None]


class DatasetError(XlirError):
    """An evaluation set that cannot be fetched, read or completed."""


@dataclass(frozen=True)
class LangCaptions:
    """Captions in one language; ``image_index[i]`` is the image caption i describes."""

    texts: tuple[str, ...]
    image_index: NDArray[np.int64]


@dataclass(frozen=True)
class EvalSet:
    name: str
    images: tuple[str, ...]
    langs: dict[str, LangCaptions]


def canonical_lang(code: str) -> str:
    code = code.strip().lower()
    return _ALIASES.get(code, code)


def _xtd10_langs(langs: Iterable[str] | None) -> list[str]:
    """``langs`` (default: all eleven) as canonical codes, each one XTD10 has."""
    wanted = [canonical_lang(code) for code in (langs or LANGUAGES)]
    unknown = [c for c in wanted if c not in LANGUAGES]
    if unknown:
        raise DatasetError(f"XTD10 has no language {unknown[0]!r}; it has {', '.join(LANGUAGES)}")
    return wanted


def caption_file(lang: str) -> str:
    return f"test_1kcaptions_{LANGUAGES[lang][0]}.txt"


def read_lines(data: bytes | str) -> list[str]:
    """Lines of a caption file: BOM dropped, CRLF/CR/LF all ends, a missing final newline fine.

    Only \\r and \\n end lines: str.splitlines would also split on characters such as U+2028
    or U+0085 inside a caption and shift every later line onto the wrong image.
    """
    text = data.decode("utf-8-sig") if isinstance(data, bytes) else data.removeprefix("\ufeff")
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if text.endswith("\n"):
        text = text[:-1]
    return [line.strip() for line in text.split("\n")] if text else []


def _client(client: object | None) -> object:
    if client is not None:
        return client
    import httpx

    return httpx.Client(follow_redirects=True, timeout=httpx.Timeout(30.0, connect=10.0))


def fetch_captions(
    langs: Iterable[str] | None = None, *, dest: Path | None = None, client: object | None = None,
    base_url: str = BASE_URL, refresh: bool = False,
) -> Path:
    """Download the image list and caption files into ``dest`` (default: the cache); files
    already there are kept unless ``refresh``. Returns ``dest``."""
    import httpx

    dest = Path(dest) if dest is not None else cache_dir() / "xtd10"
    dest.mkdir(parents=True, exist_ok=True)
    wanted = _xtd10_langs(langs)
    jobs = [("test_image_names.txt", (IMAGE_LIST,))]
    jobs += [(caption_file(lang), tuple(f"{d}/{caption_file(lang)}" for d in LANGUAGES[lang][1])) for lang in wanted]
    http = _client(client)
    try:
        for name, candidates in jobs:
            target = dest / name
            if target.is_file() and not refresh:
                continue
            tried = []
            for rel in candidates:
                url = f"{base_url.rstrip('/')}/{rel}"
                try:
                    response = http.get(url)  # type: ignore[attr-defined]
                except httpx.HTTPError as exc:
                    raise DatasetError(
                        f"cannot fetch {url} ({type(exc).__name__}: {exc}); with no network, download the "
                        f"XTD10 files elsewhere and pass their folder with --xtd10-captions"
                    ) from None
                if response.status_code == 200:
                    _write_atomic(target, response.content)
                    break
                tried.append(f"{url} (HTTP {response.status_code})")
            else:
                raise DatasetError(f"XTD10 file {name} not found at " + ", ".join(tried))
    finally:
        if client is None:
            http.close()  # type: ignore[attr-defined]
    return dest


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".part")
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def coco_url(name: str) -> str:
    """Per-image URL on the COCO server: the split is part of a 2014 file name."""
    split = "train2014" if "train2014" in name else "val2014"
    return COCO_IMAGE_URL.format(split=split, name=name)


def locate_images(names: Sequence[str], root: Path) -> dict[str, str]:
    """Where each file name is below ``root`` (searched recursively: train2014/, val2014/, flat)."""
    everything = files_by_name(root)
    return {name: everything[name] for name in names if name in everything}


def download_images(
    names: Sequence[str], dest: Path, *, client: object | None = None, workers: int = 8,
    on_advance: Advance | None = None,
) -> dict[str, str]:
    """Fetch COCO images one by one into ``dest``; returns name -> path for those fetched."""
    import httpx

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    http = _client(client)

    def one(name: str) -> tuple[str, str | None]:
        target = dest / name
        if not target.is_file():
            try:
                response = http.get(coco_url(name))  # type: ignore[attr-defined]
            except httpx.HTTPError as exc:
                raise DatasetError(f"cannot fetch {coco_url(name)} ({type(exc).__name__}: {exc})") from None
            if response.status_code != 200:
                raise DatasetError(f"cannot fetch {coco_url(name)} (HTTP {response.status_code})")
            _write_atomic(target, response.content)
        return name, str(target)

    try:
        out: dict[str, str] = {}
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="xlir-coco") as pool:
            for name, path in pool.map(one, names):
                out[name] = path
                if on_advance:
                    on_advance(1)
        return out
    finally:
        if client is None:
            http.close()  # type: ignore[attr-defined]


def load_xtd10(
    images_root: Path, *, langs: Iterable[str] | None = None, captions_dir: Path | None = None,
    client: object | None = None, fetch_missing_images: bool = False, on_advance: Advance | None = None,
) -> EvalSet:
    """XTD10 with images from ``images_root``; captions from ``captions_dir`` or fetched.

    Images missing below ``images_root`` are downloaded into it when ``fetch_missing_images``,
    else the run stops: recall over a partial set is not comparable with the paper.
    """
    wanted = _xtd10_langs(langs)
    folder = Path(captions_dir) if captions_dir is not None else fetch_captions(wanted, client=client)
    names = _read(folder / "test_image_names.txt")
    captions: dict[str, LangCaptions] = {}
    for lang in wanted:
        lines = _read(folder / caption_file(lang))
        if len(lines) != len(names):
            raise DatasetError(f"{folder / caption_file(lang)} has {len(lines)} lines for {len(names)} images; "
                               f"re-fetch it (delete the file)")
        captions[lang] = LangCaptions(tuple(lines), np.arange(len(names), dtype=np.int64))
    root = Path(images_root)
    found = locate_images(names, root) if root.is_dir() else {}
    missing = [n for n in names if n not in found]
    if missing and fetch_missing_images:
        found.update(download_images(missing, root, client=client, on_advance=on_advance))
        missing = [n for n in names if n not in found]
    if missing:
        raise DatasetError(
            f"{len(missing)} of {len(names)} XTD10 images (MSCOCO 2014, e.g. {missing[0]}) are not under {root}; "
            f"point --xtd10 at your COCO train2014/val2014 folder, or add --download-images"
        )
    return EvalSet("xtd10", tuple(found[n] for n in names), captions)


def _read(path: Path) -> list[str]:
    try:
        return read_lines(path.read_bytes())
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise DatasetError(f"{path}: not UTF-8 text") from None


def load_tsv(path: Path, *, name: str | None = None) -> EvalSet:
    """An evaluation set from ``image<TAB>language<TAB>caption`` lines (optional header row).

    Image paths are relative to the TSV's folder unless absolute; an image may carry captions
    in any number of languages, and several per language.
    """
    path = Path(path)
    rows = _read(path)
    images: dict[str, int] = {}
    per_lang: dict[str, tuple[list[str], list[int]]] = {}
    for number, line in enumerate(rows, 1):
        if not line:
            continue
        parts = line.split("\t", 2)
        if len(parts) != 3:
            raise DatasetError(f"{path}:{number}: expected image<TAB>language<TAB>caption")
        image, lang, caption = (p.strip() for p in parts)
        if number == 1 and image.lower() in {"image", "path", "file"}:
            continue
        full = resolve_path(path.parent, image)
        texts, owners = per_lang.setdefault(canonical_lang(lang), ([], []))
        texts.append(caption)
        owners.append(images.setdefault(full, len(images)))
    missing = [p for p in images if not os.path.isfile(p)]
    if missing:
        raise DatasetError(f"{path}: image {missing[0]} not found ({len(missing)} missing); "
                           f"paths are relative to the TSV file")
    if not images:
        raise DatasetError(f"{path}: no rows")
    langs = {lang: LangCaptions(tuple(t), np.asarray(o, np.int64)) for lang, (t, o) in per_lang.items()}
    return EvalSet(name or path.stem, tuple(images), langs)
