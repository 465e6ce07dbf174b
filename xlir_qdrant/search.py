"""Text, image, negative and filtered queries -> Hit records."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from .encoders.base import CROP_MARGIN, Encoder
from .errors import BadQuery, BadValue
from .images.decode import DecodeError, decode
from .records import Filter, Hit, ScoredPoint
from .store import Collection
from .store.schema import photo_date


# The default cut-off of calibrated scores: bench/quality.py --calibrate places the models'
# calibration so that 0.5 keeps most right answers (README, "Calibrated scores").
DEFAULT_MIN_RELEVANCE = 0.5
TEXT_MATCH = 0.95  # the score of a photo whose read text holds every word of the query


@dataclass(frozen=True, slots=True)
class SearchResult:
    hits: list[Hit]
    model: str
    lang: str | None = None  # the query language a language-aware model was given
    calibrated: bool = False  # scores are calibrated relevance in 0..1, not cosines
    min_score: float | None = None  # the cut-off that was applied (a default one included)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (the web API's answer), hits as their own to_dict()."""
        return {"hits": [h.to_dict() for h in self.hits], "model": self.model, "lang": self.lang,
                "calibrated": self.calibrated, "min_score": self.min_score}


def query_language(encoder: Encoder, text: str, lang: str | None) -> str | None:
    """Models that need the query language get ``lang`` or a detected one; others get None."""
    if lang or not encoder.spec.needs_lang:
        return lang
    from .encoders.lang import detect_language

    return detect_language(text)


def search(
    encoder: Encoder,
    collection: Collection,
    *,
    query: str | None = None,
    image: Path | None = None,
    negatives: tuple[str, ...] = (),
    top_k: int = 10,
    min_score: float | None = None,
    lang: str | None = None,
    under: tuple[Path, ...] = (),
    tags: tuple[str, ...] = (),
    after: datetime | None = None,
    before: datetime | None = None,
) -> SearchResult:
    text = validate(query, image, top_k)
    negatives = tuple(n.strip() for n in negatives if n and n.strip())
    flt = photo_filter(under, tags, after, before)
    used_lang = query_language(encoder, text, lang) if text else lang

    positives = []
    if text:
        positives.append(encoder.embed_texts([text], lang=used_lang)[0])
    if image is not None:
        positives.append(encoder.embed_images([_load_query_image(image, encoder)])[0])
    if negatives:
        neg_lang = query_language(encoder, negatives[0], lang)
        neg = list(encoder.embed_texts(list(negatives), lang=neg_lang))
        scored = collection.recommend(positives, neg, limit=top_k, filter=flt, min_score=min_score)
    elif len(positives) == 1:
        if text and image is None:  # a description: calibrated when the model can, text in photos first
            return _by_text(encoder, collection, positives[0], text, top_k, flt, min_score, used_lang)
        scored = collection.query(positives[0], limit=top_k, filter=flt, min_score=min_score)
    else:
        scored = collection.recommend(positives, [], limit=top_k, filter=flt, min_score=min_score)
    return SearchResult(hits=to_hits(scored), model=encoder.spec.id, lang=used_lang, min_score=min_score)


def _by_text(encoder: Encoder, collection: Collection, vector: NDArray[np.float32], text: str, top_k: int,
             flt: Filter | None, min_score: float | None, lang: str | None) -> SearchResult:
    """A text query. With a calibrated model the probability cut-off becomes this query's cosine
    cut-off, so the store drops what is not there, and scores come back as probabilities. Photos
    whose read text (`xlir index --read-text`) holds every word of the query come first: a sign
    that says what was asked for is the surest match there is."""
    relevance = encoder.relevance(vector[None, :])
    floor = (DEFAULT_MIN_RELEVANCE if min_score is None else min_score) if relevance is not None else min_score
    if relevance is None:
        cosine = min_score
    else:
        cosine = relevance.cosine_at(0, floor) if floor else None
    in_text = collection.query(vector, limit=top_k, filter=dataclasses.replace(flt or Filter(), text=text))
    seen = {sp.id for sp in in_text}
    scored = in_text + [sp for sp in collection.query(vector, limit=top_k, filter=flt, min_score=cosine)
                        if sp.id not in seen]
    hits = to_hits(scored[:top_k])
    if relevance is not None:
        probs = relevance.probability(0, np.array([sp.score for sp in scored[:top_k]]))
        hits = [dataclasses.replace(hit, score=round(max(float(p), TEXT_MATCH) if i < len(in_text) else float(p), 4),
                                    cosine=hit.score) for i, (hit, p) in enumerate(zip(hits, probs, strict=True))]
    return SearchResult(hits=hits, model=encoder.spec.id, lang=lang, calibrated=relevance is not None,
                        min_score=floor)


def validate(query: str | None, image: Path | None, top_k: int) -> str:
    """The query text, stripped; refuses a query with nothing to search for."""
    text = (query or "").strip()
    if not text and image is None:
        raise BadQuery("empty query: give words to search for, or --image FILE to find similar photos")
    if top_k < 1:
        raise BadValue(f"--top-k must be at least 1, not {top_k}")
    return text


def to_hits(scored: list[ScoredPoint]) -> list[Hit]:
    hits = []
    for rank, sp in enumerate(scored, start=1):
        p = sp.payload
        hits.append(Hit(rank=rank, score=round(float(sp.score), 4), path=p.get("path", ""), date=photo_date(p),
                        size=int(p.get("size", 0)), width=p.get("width"), height=p.get("height"),
                        id=sp.id, taken_at=p.get("taken_at"), tags=tuple(p.get("tags") or ()),
                        text=p.get("text") or None))
    return hits


SORTS = ("score", "date")


def sort_hits(hits: list[Hit], by: str = "score") -> list[Hit]:
    """``hits`` as ranked (by score), or by date, newest first, undated ones last. Each keeps its
    rank, which stays the rank by score."""
    if by == "score":
        return hits
    dated = sorted((h for h in hits if h.date), key=lambda h: h.date or "", reverse=True)
    return dated + [h for h in hits if not h.date]


def photo_filter(under: Sequence[str | os.PathLike[str]] = (), tags: tuple[str, ...] = (),
                 after: datetime | None = None, before: datetime | None = None) -> Filter | None:
    """The payload filter for folders (made absolute), tag ids and a date range; None for none."""
    if not under and not tags and after is None and before is None:
        return None
    return Filter(under=tuple(os.path.abspath(os.path.expanduser(p)) for p in under), tags=tags, after=after,
                  before=before)


def _load_query_image(path: Path, encoder: Encoder) -> Image.Image:
    try:
        decoded = decode(str(path), min_side=encoder.input_size + CROP_MARGIN)
    except DecodeError as exc:
        raise BadQuery(f"cannot use {path} as a query image: {exc}") from None
    except FileNotFoundError:
        raise BadQuery(f"query image {path} does not exist") from None
    assert decoded.image is not None  # decoded on the CPU
    return decoded.image
