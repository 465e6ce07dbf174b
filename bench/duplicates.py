#!/usr/bin/env python3
"""How well `xlir duplicates` finds copies: precision and recall on real photos with made copies.

Every source photo (bench/photos, materialised by bench/photos/fetch.py, and the photographs in
scikit-image's data folder) gets four near-copies: half the size, recompressed as JPEG quality
35, 5 % cropped (off one corner, a different one each photo), and 25 % brighter; every fifth
also gets an exact byte copy. The set is indexed with the model into a fresh store, then
Index.duplicates runs at each threshold, and, as the baseline, the store's nearest neighbours
alone (no look at the files) at two thresholds.

A pair of distinct files counts as found when both are in one group. Precision: of the pairs
found, the share that are the same source; recall: of the same-source pairs, the share found.
Exact copies are scored apart (they are found by their content hash). The sources include
hard negatives: motorcycle_left/right (a stereo pair), textures (brick, grass, gravel),
several photos of cats, dogs and cups.

    python bench/duplicates.py [--model MODEL] [--thresholds 0.9 0.95 ...]
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageEnhance, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from xlir_qdrant import Index  # noqa: E402
from xlir_qdrant.duplicates import find_duplicates  # noqa: E402
from xlir_qdrant.images.signature import BITS  # noqa: E402
from xlir_qdrant.encoders.registry import DEFAULT_MODEL  # noqa: E402

HERE = Path(__file__).resolve().parent
PHOTOS = HERE / "photos" / "cache"
SKIMAGE_PHOTOS = ("astronaut.png", "brick.png", "camera.png", "chelsea.png", "coffee.png", "coins.png", "grass.png",
                  "gravel.png", "hubble_deep_field.jpg", "moon.png", "motorcycle_left.png", "motorcycle_right.png",
                  "retina.jpg", "rocket.jpg")
VARIANTS = ("half", "q35", "crop5", "bright")


def sources() -> list[Path]:
    found = sorted(p for p in PHOTOS.glob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png", ".webp"})
    try:
        import skimage.data

        folder = Path(skimage.data.__file__).parent
        found += [folder / name for name in SKIMAGE_PHOTOS if (folder / name).exists()]
    except ImportError:
        pass
    seen, unique = set(), []
    for path in found:  # bench/photos already holds some of scikit-image's
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest not in seen:
            seen.add(digest)
            unique.append(path)
    return unique


def variant(im: Image.Image, kind: str, i: int) -> tuple[Image.Image, dict[str, int]]:
    w, h = im.size
    if kind == "half":
        return im.resize((max(1, w // 2), max(1, h // 2)), Image.Resampling.LANCZOS), {}
    if kind == "q35":
        return im, {"quality": 35}
    if kind == "crop5":
        dx, dy = round(w * 0.05), round(h * 0.05)
        left, top = (dx if i % 2 else 0), (dy if (i // 2) % 2 else 0)
        return im.crop((left, top, left + w - dx, top + h - dy)), {}
    return ImageEnhance.Brightness(im).enhance(1.25), {}


def make_set(root: Path) -> dict[str, str]:
    """Writes the set under ``root``; returns file path -> source id."""
    truth: dict[str, str] = {}
    for i, src in enumerate(sources()):
        sid = f"{i:03d}-{src.stem}"
        folder = root / sid
        folder.mkdir(parents=True)
        original = folder / f"original{src.suffix.lower()}"
        shutil.copyfile(src, original)
        truth[str(original)] = sid
        im = ImageOps.exif_transpose(Image.open(src)).convert("RGB")
        for kind in VARIANTS:
            out, options = variant(im, kind, i)
            path = folder / f"{kind}.jpg"
            out.save(path, quality=options.get("quality", 92))
            truth[str(path)] = sid
        if i % 5 == 0:
            copy = root / "copies" / f"{sid}{src.suffix.lower()}"
            copy.parent.mkdir(exist_ok=True)
            shutil.copyfile(src, copy)
            truth[str(copy)] = sid
    return truth


def groups_of(report: object) -> tuple[list[list[str]], list[list[str]]]:
    """Near and exact groups as lists of paths. A near group names each distinct photo once,
    by one of its files; its exact copies are the same photo, so they join it here."""
    exact = [[m.path for m in g.members] for g in report.groups if g.kind == "exact"]
    copies = {path: group for group in exact for path in group}
    near = [[p for m in g.members for p in copies.get(m.path, [m.path])] for g in report.groups if g.kind == "near"]
    return near, exact


def score(groups: list[list[str]], truth: dict[str, str], pool: set[str]) -> tuple[float, float, int, int]:
    """Pairwise precision and recall over the files in ``pool``."""
    found = {frozenset(p) for g in groups for p in itertools.combinations(sorted(set(g) & pool), 2)}
    by_source: dict[str, list[str]] = {}
    for path in pool:
        by_source.setdefault(truth[path], []).append(path)
    true = {frozenset(p) for files in by_source.values() for p in itertools.combinations(sorted(files), 2)}
    hit = len(found & true)
    return (hit / len(found) if found else 1.0), (hit / len(true) if true else 1.0), len(found), len(true)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--thresholds", type=float, nargs="+",
                    default=[0.85, 0.90, 0.93, 0.95, 0.97, 0.98, 0.99])
    ap.add_argument("--keep", type=Path, help="build the set and the store here, and keep them")
    args = ap.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="xlir-dups-"))
    try:
        photos, store = work / "photos", work / "store"
        if photos.exists():
            shutil.rmtree(photos)
        truth = make_set(photos)
        n_sources = len(set(truth.values()))
        print(f"{n_sources} source photos, {len(truth)} files ({len(VARIANTS)} near-copies each, "
              f"{sum('copies' in p for p in truth)} exact copies)", flush=True)
        with Index.open(store=store, model=args.model) as idx:
            start = time.perf_counter()
            report = idx.index([photos])
            print(f"indexed {report.added + report.reused} in {time.perf_counter() - start:.0f}s with {args.model}")
            distinct = {p for p in truth if "/copies/" not in p}
            rows = []
            for threshold in args.thresholds:
                found = idx.duplicates(threshold=threshold)
                near, exact = groups_of(found)
                p, r, n_found, n_true = score(near, truth, distinct)
                wrong_exact = sum(len({truth[x] for x in g}) > 1 for g in exact)
                rows.append({"threshold": threshold, "precision": round(p, 3), "recall": round(r, 3),
                             "pairs_found": n_found, "pairs_true": n_true, "near_groups": len(near),
                             "exact_groups": len(exact), "exact_groups_wrong": wrong_exact,
                             "seconds": round(found.seconds, 2)})
                print(f"threshold {threshold:.3f}: near-copy pairs precision {p:.3f} recall {r:.3f} "
                      f"({n_found} found, {n_true} true; {len(near)} groups), exact groups {len(exact)} "
                      f"({wrong_exact} wrong), {found.seconds:.1f}s", flush=True)
            # The baseline: the store's nearest neighbours alone, no look at the files.
            for threshold in (0.97, 0.99):
                alone = find_duplicates(idx.collection, threshold=threshold, max_bits=BITS)
                p, r, n_found, n_true = score(groups_of(alone)[0], truth, distinct)
                rows.append({"threshold": threshold, "vectors_alone": True, "precision": round(p, 3),
                             "recall": round(r, 3), "pairs_found": n_found, "seconds": round(alone.seconds, 2)})
                print(f"vectors alone at {threshold:.2f}: precision {p:.3f} recall {r:.3f} ({n_found} pairs found)")
            by_kind = {}
            default = idx.duplicates()
            near, _ = groups_of(default)
            for kind in VARIANTS:  # recall of each kind of copy at the default threshold
                pool = {p for p in distinct if p.endswith(f"/{kind}.jpg") or "/original" in p}
                by_kind[kind] = round(score(near, truth, pool)[1], 3)
            print(f"recall by kind of copy at the default threshold {default.threshold}: "
                  + ", ".join(f"{k} {v:.3f}" for k, v in by_kind.items()))
            print(json.dumps({"model": args.model, "sources": n_sources, "files": len(truth), "rows": rows,
                              "recall_by_kind": by_kind}))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
