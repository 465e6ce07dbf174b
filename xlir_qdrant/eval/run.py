"""Evaluate any list of models on an evaluation set: one row per (model, language).

Each model embeds the set's images once and each language's captions once; recall of both
directions comes from the full caption x image similarity (recall.py). The paper's published
XTD10 numbers come along as reference rows, so a run prints its own result beside them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from numpy.typing import NDArray

from ..encoders.base import Encoder
from ..encoders.registry import load_encoder
from ..images.batches import Batch, BatchEmbedder, Skipped
from ..records import RECALL_METRICS as METRICS
from .recall import retrieval_recall
from .xtd10 import DatasetError, EvalSet, canonical_lang

PAPER = "Aggarwal, Tambi, Kale 2021"
# The paper's average is over these eight XTD10 languages; "avg" rows here use the same eight.
PAPER_AVG_LANGS: tuple[str, ...] = ("en", "es", "fr", "zh", "it", "ko", "ru", "ja")
# Text->image Recall@10 on XTD10 as published (mUSE text encoder, English-only training).
PAPER_T2I_R10: dict[str, dict[str, float]] = {
    "paper: mUSE+PATR": {"en": 83.6, "avg": 74.1},
    "paper: mUSE+M3": {"en": 85.3, "es": 78.9, "fr": 78.9, "zh": 76.7, "it": 73.6, "ko": 67.8, "ru": 76.1,
                       "ja": 70.7, "avg": 76.0},
}


@dataclass(frozen=True, slots=True)
class EvalRow:
    """One model on one language (or "avg"); recalls in percent, None where not measured."""

    model: str
    dataset: str
    lang: str
    captions: int = 0
    images: int = 0
    t2i_r1: float | None = None
    t2i_r5: float | None = None
    t2i_r10: float | None = None
    i2t_r1: float | None = None
    i2t_r5: float | None = None
    i2t_r10: float | None = None
    reference: bool = False  # a published number, not measured here
    source: str = ""

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class EvalEvent:
    """Progress: kind 'stage' (model, stage, total) or 'advance' (n)."""

    kind: str
    model: str = ""
    stage: str = ""
    total: int = 0
    n: int = 0


Progress = Callable[[EvalEvent], None]


def evaluate(
    dataset: EvalSet, models: Sequence[str], *, langs: Iterable[str] | None = None, device: str = "auto",
    batch_size: int = 32, workers: int | None = None, progress: Progress | None = None,
) -> list[EvalRow]:
    """Rows per model and language (dataset order), plus an "avg" row per model when the eight
    languages of the paper's average were all evaluated."""
    emit = progress or (lambda _e: None)
    chosen = _choose(dataset, langs)
    rows: list[EvalRow] = []
    for model_id in models:
        encoder = load_encoder(model_id, device=device)
        name = encoder.spec.id
        emit(EvalEvent("stage", model=name, stage="images", total=len(dataset.images)))
        images = embed_image_files(encoder, dataset.images, batch_size=batch_size, workers=workers,
                                   on_advance=lambda k: emit(EvalEvent("advance", n=k)))
        measured = []
        for lang in chosen:
            caps = dataset.langs[lang]
            emit(EvalEvent("stage", model=name, stage=f"captions {lang}", total=len(caps.texts)))
            text = _embed_texts(encoder, caps.texts, lang, on_advance=lambda k: emit(EvalEvent("advance", n=k)))
            scores = retrieval_recall(text, images, caps.image_index)
            row = EvalRow(model=name, dataset=dataset.name, lang=lang, captions=len(caps.texts),
                          images=int(len(np.unique(caps.image_index))), **scores)
            measured.append(row)
        rows.extend(measured)
        if (avg := average_row(measured)) is not None:
            rows.append(avg)
    return rows


def _choose(dataset: EvalSet, langs: Iterable[str] | None) -> list[str]:
    if langs is None:
        return list(dataset.langs)
    chosen = [canonical_lang(code) for code in langs]
    missing = [c for c in chosen if c not in dataset.langs]
    if missing:
        raise DatasetError(f"{dataset.name} has no captions in {missing[0]!r}; it has {', '.join(dataset.langs)}")
    return chosen


def average_row(rows: Sequence[EvalRow], langs: Sequence[str] = PAPER_AVG_LANGS) -> EvalRow | None:
    """Mean of each metric over ``langs``, only when every one of them was measured."""
    by_lang = {r.lang: r for r in rows}
    if not rows or not all(lang in by_lang for lang in langs):
        return None
    picked = [by_lang[lang] for lang in langs]
    means = {m: float(np.mean([getattr(r, m) for r in picked])) for m in METRICS}
    first = picked[0]
    return EvalRow(model=first.model, dataset=first.dataset, lang="avg", captions=sum(r.captions for r in picked),
                   images=first.images, **means)


def reference_rows(dataset: str, langs: Iterable[str] | None = None) -> list[EvalRow]:
    """The paper's XTD10 text->image R@10 rows for ``langs`` (and "avg"); none for other sets."""
    if dataset != "xtd10":
        return []
    keep = None if langs is None else {canonical_lang(c) for c in langs} | {"avg"}
    out = []
    for model, scores in PAPER_T2I_R10.items():
        for lang, r10 in scores.items():
            if keep is None or lang in keep:
                out.append(EvalRow(model=model, dataset=dataset, lang=lang, captions=1000, images=1000,
                                   t2i_r10=r10, reference=True, source=PAPER))
    return out


def embed_image_files(
    encoder: Encoder, paths: Sequence[str], *, batch_size: int = 32, workers: int | None = None,
    on_advance: Callable[[int], None] | None = None,
) -> NDArray[np.float32]:
    """Embed image files in order, decoding ahead on threads; any unreadable file stops the run
    (recall over a set with holes would not be comparable)."""
    side = encoder.image_side()
    side.warm_up()
    parts: list[NDArray[np.float32]] = []
    embedder: BatchEmbedder[str, None] = BatchEmbedder(side, batch_size=batch_size, workers=workers)
    for outcome in embedder.run(paths, lambda path: path):
        if isinstance(outcome, Skipped):
            raise DatasetError(f"{outcome.job}: {outcome.reason}; evaluation needs every image of the set")
        if isinstance(outcome, Batch):
            parts.append(np.stack([item.vector for item in outcome.items]))
            if on_advance:
                on_advance(len(outcome.items))
    return np.concatenate(parts) if parts else np.zeros((0, encoder.spec.dim), np.float32)


def _embed_texts(encoder: Encoder, texts: Sequence[str], lang: str, *, batch: int = 256,
                 on_advance: Callable[[int], None] | None = None) -> NDArray[np.float32]:
    parts = []
    for start in range(0, len(texts), batch):
        parts.append(encoder.embed_texts(list(texts[start : start + batch]), lang=lang))
        if on_advance:
            on_advance(len(parts[-1]))
    return np.concatenate(parts) if parts else np.zeros((0, encoder.spec.dim), np.float32)


__all__ = ["EvalEvent", "EvalRow", "PAPER_T2I_R10", "average_row", "embed_image_files", "evaluate", "reference_rows"]
