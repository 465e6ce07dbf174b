"""The small real run: the paper's recipe on the 80 bench photos, k-fold cross-validated by photo.

For each fold a checkpoint is trained (``xlir_qdrant.train.run``, the same call `xlir train`
makes) on ENGLISH captions of the training photos only: the English query of queries.tsv plus
the hand-written captions of bench/photos/captions_en.tsv. It is then loaded back as an
Encoder (``load_encoder(<checkpoint folder>)``, as `xlir search --model` would) and asked to
find each held-out photo among the held-out photos from its query in all 11 languages of
queries.tsv. No non-English text is ever trained on.

Compared, on exactly the same held-out photos and queries:
  PATR       checkpoint trained with --loss patr
  M3         checkpoint trained with --loss m3
  untrained  the head before any step (the "epoch 0" of `xlir train`'s validation): mUSE
             text (identity head) against a randomly initialised image projection
  default    the bundled conse-lite0-muse, its image vectors restricted to the held-out photos

Metrics: text->image R@1 (%) and MRR, ties counted against the model (eval/recall.py), per
language, averaged over folds (equal fold sizes, so this is also the mean over all queries).

    python bench/small_run.py                       # 5 folds, seed 0, ~2-4 min on 2 CPU cores

Frozen features are cached (XLIR cache dir), so only the first run pays for Lite0 and mUSE.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from xlir_qdrant.encoders.head import HeadConfig, JointModel
from xlir_qdrant.encoders.registry import DEFAULT_MODEL, load_encoder
from xlir_qdrant.encoders.text import MUSE
from xlir_qdrant.eval.recall import text_to_image_ranks
from xlir_qdrant.eval.run import embed_image_files
from xlir_qdrant.train.config import TrainConfig
from xlir_qdrant.train.data import from_pairs
from xlir_qdrant.train.features import image_features, image_tower, text_features, text_tower
from xlir_qdrant.train.loop import FeatureSet, embed_features, run, seed_everything

HERE = Path(__file__).parent
LANGS = ("en", "de", "fr", "es", "it", "ja", "ko", "pl", "ru", "tr", "zh")
MODELS = ("PATR", "M3", "untrained", "default")


def load_photos(folder: Path, queries_tsv: Path) -> tuple[list[str], dict[str, str], list[tuple[str, str, str]]]:
    """(photo ids, id -> file, [(photo_id, lang, query)]) for the photos present on disk."""
    files = {p.stem: str(p.resolve()) for p in folder.iterdir() if p.is_file()}
    rows = list(csv.DictReader(queries_tsv.open(encoding="utf-8"), delimiter="\t"))
    ids = sorted({r["photo_id"] for r in rows if r["photo_id"] in files})
    missing = sorted({r["photo_id"] for r in rows} - set(ids))
    if missing:
        print(f"missing photos (run bench/photos/fetch.py): {', '.join(missing)}", file=sys.stderr)
    queries = [(r["photo_id"], r["lang"], r["query"]) for r in rows if r["photo_id"] in files]
    return ids, files, queries


def english_pairs(photo_ids: list[str], files: dict[str, str], queries: list[tuple[str, str, str]],
                  captions_tsv: Path) -> list[tuple[str, str]]:
    """(image path, English caption) for the given photos: the English query plus the extra captions."""
    keep = set(photo_ids)
    pairs = [(files[pid], q) for pid, lang, q in queries if lang == "en" and pid in keep]
    for r in csv.DictReader(captions_tsv.open(encoding="utf-8"), delimiter="\t"):
        if r["photo_id"] in keep:
            pairs.append((files[r["photo_id"]], r["caption"]))
    return pairs


def ranks_by_lang(text: np.ndarray, image: np.ndarray, owners: np.ndarray, langs: list[str]) -> dict[str, np.ndarray]:
    ranks = text_to_image_ranks(text @ image.T, owners)
    out: dict[str, list[int]] = defaultdict(list)
    for lang, r in zip(langs, ranks, strict=True):
        out[lang].append(int(r))
    return {k: np.asarray(v) for k, v in out.items()}


def metrics(ranks: np.ndarray) -> tuple[float, float]:
    """(R@1 in %, MRR) from 0-based ranks."""
    return float((ranks < 1).mean() * 100.0), float((1.0 / (ranks + 1)).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=Path, default=HERE / "photos" / "cache")
    ap.add_argument("--queries", type=Path, default=HERE / "photos" / "queries.tsv")
    ap.add_argument("--captions", type=Path, default=HERE / "photos" / "captions_en.tsv")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--out", type=Path, default=None, help="keep the fold checkpoints here (default: a temp dir)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    start = time.perf_counter()

    ids, files, queries = load_photos(args.photos, args.queries)
    index = {pid: i for i, pid in enumerate(ids)}
    q_text = [q for _, _, q in queries]
    q_lang = [lang for _, lang, _ in queries]
    q_owner = np.asarray([index[pid] for pid, _, _ in queries], np.int64)
    langs = [lang for lang in LANGS if lang in set(q_lang)]
    n_train_caps = len(english_pairs(ids, files, queries, args.captions))
    print(f"{len(ids)} photos, {len(queries)} queries in {len(langs)} languages; "
          f"{n_train_caps} English training captions in all; {args.folds} folds by photo, seed {args.seed}")

    # Frozen features of every photo and query, once (the checkpoints' own towers, cached on disk).
    img_tower = image_tower(DEFAULT_MODEL, "cpu")
    txt_tower = text_tower(MUSE, "cpu")
    img_feats, ok = image_features([files[i] for i in ids], img_tower)
    if not ok.all():
        sys.exit("some photos could not be read")
    q_feats = text_features(q_text, txt_tower)

    # The bundled default: every photo and every query embedded once, restricted per fold below.
    default = load_encoder(DEFAULT_MODEL, device="cpu")
    d_img = embed_image_files(default, [files[i] for i in ids])
    d_txt = np.zeros((len(queries), default.spec.dim), np.float32)
    for lang in langs:
        rows = [k for k, lg in enumerate(q_lang) if lg == lang]
        d_txt[rows] = default.embed_texts([q_text[k] for k in rows], lang=lang)
    print(f"features ready in {time.perf_counter() - start:.0f}s")

    order = np.random.default_rng(args.seed).permutation(len(ids))
    folds = [np.sort(f) for f in np.array_split(order, args.folds)]
    # fold -> model -> lang -> (R@1, MRR)
    results: list[dict[str, dict[str, tuple[float, float]]]] = []
    tmp = tempfile.TemporaryDirectory(prefix="xlir-small-run-")
    out_root = args.out or Path(tmp.name)

    for f, held in enumerate(folds):
        t0 = time.perf_counter()
        held_set = set(held.tolist())
        train_ids = [ids[i] for i in range(len(ids)) if i not in held_set]
        pairs = from_pairs(english_pairs(train_ids, files, queries, args.captions))
        rows = np.flatnonzero(np.isin(q_owner, held))
        renumber = {int(old): new for new, old in enumerate(held)}
        owners = np.asarray([renumber[int(o)] for o in q_owner[rows]], np.int64)
        row_langs = [q_lang[k] for k in rows]
        held_paths = [files[ids[i]] for i in held]
        fold: dict[str, dict[str, tuple[float, float]]] = {}

        for loss in ("patr", "m3"):
            config = TrainConfig(loss=loss, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                                 seed=args.seed, val_fraction=0.0)
            ckpt = out_root / f"fold{f}-{loss}"
            report = run(pairs, ckpt, config, image_model=DEFAULT_MODEL, text_encoder=MUSE, device="cpu")
            enc = load_encoder(str(ckpt), device="cpu")  # the saved checkpoint, as `--model` loads it
            image = embed_image_files(enc, held_paths)
            text = enc.embed_texts([q_text[k] for k in rows])
            ranks = ranks_by_lang(text, image, owners, row_langs)
            fold[loss.upper()] = {lang: metrics(ranks[lang]) for lang in langs}
            last = report.history[-1]["loss"] if report.history else float("nan")
            print(f"fold {f}: {loss} trained on {report.train_images} photos / {report.train_captions} English "
                  f"captions in {report.seconds:.1f}s" + (f" (final loss {last:.3f})" if not math.isnan(last) else ""))

        # The untrained head: the same initialisation train() starts from (its epoch-0 validation).
        seed_everything(args.seed)
        head = JointModel(HeadConfig(text_in=q_feats.shape[1], image_in=img_feats.shape[1]))
        text, image = embed_features(head, FeatureSet(q_feats[rows], img_feats[held], owners), "cpu")
        ranks = ranks_by_lang(text, image, owners, row_langs)
        fold["untrained"] = {lang: metrics(ranks[lang]) for lang in langs}

        ranks = ranks_by_lang(d_txt[rows], d_img[held], owners, row_langs)
        fold["default"] = {lang: metrics(ranks[lang]) for lang in langs}
        results.append(fold)
        summary = "  ".join(f"{m} {np.mean([fold[m][lg][1] for lg in langs]):.3f}" for m in MODELS)
        print(f"fold {f}: {len(held)} held-out photos, {len(rows)} queries; MRR over languages: {summary}  "
              f"({time.perf_counter() - t0:.0f}s)")

    def mean(model: str, lang: str, k: int) -> float:
        return float(np.mean([fold[model][lang][k] for fold in results]))

    n_held = len(ids) / args.folds
    chance_mrr = float(np.mean(1.0 / np.arange(1, round(n_held) + 1)))
    print(f"\nText->image among the ~{n_held:.0f} held-out photos of each fold, mean over {args.folds} folds "
          f"(chance: R@1 {100 / n_held:.1f}%, MRR {chance_mrr:.3f}).")
    print("R@1 in %, MRR; ratio = trained / bundled default.\n")
    header = f"| lang | {' | '.join(f'{m} R@1' for m in MODELS)} | {' | '.join(f'{m} MRR' for m in MODELS)} " \
             f"| PATR/def MRR | M3/def MRR |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    groups = {"avg (11)": langs, "avg non-en (10)": [lg for lg in langs if lg != "en"]}
    for name in [*langs, *groups]:
        picked = groups.get(name, [name])
        r1 = {m: float(np.mean([mean(m, lg, 0) for lg in picked])) for m in MODELS}
        mrr = {m: float(np.mean([mean(m, lg, 1) for lg in picked])) for m in MODELS}
        ratio = [f"{mrr[m] / mrr['default']:.2f}" if mrr["default"] > 0 else "n/a" for m in ("PATR", "M3")]
        print(f"| {name} | {' | '.join(f'{r1[m]:.1f}' for m in MODELS)} | "
              f"{' | '.join(f'{mrr[m]:.3f}' for m in MODELS)} | {' | '.join(ratio)} |")

    print("\nPer fold, MRR averaged over the 11 languages:")
    for m in MODELS:
        per = [np.mean([fold[m][lg][1] for lg in langs]) for fold in results]
        print(f"  {m:9} " + "  ".join(f"{v:.3f}" for v in per) + f"   mean {np.mean(per):.3f} sd {np.std(per):.3f}")
    # Zero-shot transfer relative to what English itself reaches.
    print("\nNon-English MRR as a share of English MRR (mean over the 10 other languages):")
    for m in MODELS:
        en = mean(m, "en", 1)
        other = np.mean([mean(m, lg, 1) for lg in langs if lg != "en"])
        print(f"  {m:9} en {en:.3f}  others {other:.3f}  share {other / en:.2f}")
    print(f"\ntotal {time.perf_counter() - start:.0f}s")
    tmp.cleanup()


if __name__ == "__main__":
    main()
