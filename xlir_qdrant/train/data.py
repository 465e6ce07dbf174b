"""English (image, caption) pairs for training, and the held-out split by image.

Sources: an MSCOCO captions JSON (``images: [{id, file_name}]``, ``annotations: [{image_id,
caption}]``) with its image folder, or a pairs file: TSV (``path<TAB>caption``) or JSONL
(``{"image": path, "caption": text}``), relative paths resolved against the file's folder.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from ..errors import XlirError
from ..images.files import files_by_name, resolve_path


class DataError(XlirError):
    """Training or evaluation data that cannot be used as given."""


@dataclass(frozen=True)
class PairSet:
    """Captions and the images they describe; several captions may share one image.

    ``caption_image[i]`` is the index in ``images`` of the image caption ``i`` describes.
    """

    images: tuple[str, ...]
    captions: tuple[str, ...]
    caption_image: NDArray[np.int64]

    def __post_init__(self) -> None:
        if len(self.captions) != len(self.caption_image):
            raise ValueError("captions and caption_image differ in length")

    def __len__(self) -> int:
        return len(self.captions)


def from_pairs(pairs: Iterable[tuple[str, str]]) -> PairSet:
    """Group (image path, caption) pairs by image, keeping first-seen order; drop empty captions."""
    index: dict[str, int] = {}
    captions: list[str] = []
    owners: list[int] = []
    for image, caption in pairs:
        text = clean_caption(caption)
        if not text:
            continue
        captions.append(text)
        owners.append(index.setdefault(image, len(index)))
    return PairSet(tuple(index), tuple(captions), np.asarray(owners, np.int64))


def clean_caption(text: str) -> str:
    # COCO captions carry stray newlines and double spaces; the text encoders do not care, but
    # the text-feature cache is keyed by the exact strings.
    return re.sub(r"\s+", " ", text).strip()


def load_coco(captions_json: Path, images_root: Path) -> PairSet:
    """Pairs from an MSCOCO captions file; images missing from ``images_root`` are left out.

    File names are looked up at ``images_root/file_name`` first, then anywhere below it (COCO
    zips unpack into train2014/ and val2014/ folders).
    """
    try:
        data = json.loads(Path(captions_json).read_text(encoding="utf-8-sig"))
        names = {int(im["id"]): im["file_name"] for im in data["images"]}
        annotations = [(int(a["image_id"]), a["caption"]) for a in data["annotations"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{captions_json}: not an MSCOCO captions file ({exc}); pass --pairs for TSV/JSONL") from None
    root = Path(images_root)
    found: dict[str, str] = {}
    deep: dict[str, str] | None = None
    for name in set(names.values()):
        direct = root / name
        if direct.is_file():
            found[name] = str(direct)
            continue
        if deep is None:
            deep = files_by_name(root)
        if Path(name).name in deep:
            found[name] = deep[Path(name).name]
    pairs = [(found[names[i]], cap) for i, cap in annotations if i in names and names[i] in found]
    if not pairs:
        raise DataError(f"none of the {len(names)} images of {captions_json} are under {root}; check --images")
    return from_pairs(pairs)


def load_pairs(path: Path) -> PairSet:
    """Pairs from a TSV (``path<TAB>caption``, optional header) or a JSONL file (by suffix)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    base = path.parent
    rows: list[tuple[str, str]] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if path.suffix.lower() in {".jsonl", ".ndjson", ".json"}:
            try:
                obj = json.loads(line)
                image, caption = obj["image"], obj["caption"]
            except (ValueError, KeyError, TypeError):
                raise DataError(f"{path}:{number}: expected one {{\"image\": ..., \"caption\": ...}} object per line "
                                f"(for an MSCOCO captions file use --coco-json)") from None
        else:
            parts = line.split("\t", 1)
            if len(parts) != 2:
                raise DataError(f"{path}:{number}: expected path<TAB>caption")
            image, caption = parts
            if number == 1 and image.strip().lower() in {"image", "path", "file"}:
                continue  # a header row
        rows.append((resolve_path(base, image.strip()), caption))
    missing = [p for p in dict.fromkeys(p for p, _ in rows) if not os.path.isfile(p)]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise DataError(f"{path}: image {missing[0]} not found{more}; paths are relative to the pairs file")
    pairs = from_pairs(rows)
    if not len(pairs):
        raise DataError(f"{path}: no (image, caption) pairs")
    return pairs


def split_images(n_images: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train, validation) image indices: a seeded draw of ``val_fraction`` of the images (at
    least one, and never all, when the fraction is positive)."""
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"validation fraction {val_fraction} must be in [0, 1)")
    n_val = int(round(n_images * val_fraction))
    if val_fraction > 0 and n_images >= 2:
        n_val = min(max(n_val, 1), n_images - 1)
    order = np.random.default_rng(seed).permutation(n_images)
    return sorted(order[n_val:].tolist()), sorted(order[:n_val].tolist())
