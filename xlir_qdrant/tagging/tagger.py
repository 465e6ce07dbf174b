"""Zero-shot multilingual tagging: score a vocabulary's tags against an image's vector.

Two paths, both measured in bench/tagging.py:

* aligned vocabulary (the shipped one): every concept has a name in every language, so tags
  are scored in English — the language the image side was bridged with — and then rendered
  in the asked language. Precision is then the same in every language.
* free vocabulary (a user's list in any language, no alignment): the paper's combination.
  Each candidate t gets  lam * cos(image, t) + (1 - lam) * sum_k w_k cos(t, e_k), where e_k
  are the image's top-K English tags from the aligned vocabulary and w_k their softmax
  weights: a target tag scores high when it looks like the image *and* means what the best
  English tags mean.

Tag embeddings are averaged over per-language prompt templates and cached on disk per model,
language and vocabulary.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from ..cache import cached_array
from ..encoders.base import Encoder, normalise
from ..records import Tag
from ..vocab import Concept, ancestors

# "{}" alone is always included: short prompts embed closest to short queries.
TEMPLATES: dict[str, tuple[str, ...]] = {
    "en": ("a photo of a {}.", "{}"),
    "de": ("ein Foto von {}", "{}"),
    "fr": ("une photo de {}", "{}"),
    "es": ("una foto de {}", "{}"),
    "it": ("una foto di {}", "{}"),
    "ja": ("{}の写真", "{}"),
    "ko": ("{} 사진", "{}"),
    "pl": ("zdjęcie: {}", "{}"),
    "ru": ("фотография: {}", "{}"),
    "tr": ("{} fotoğrafı", "{}"),
    "zh": ("{}的照片", "{}"),
}
DEFAULT_TEMPLATES = ("{}",)


@dataclass(frozen=True, slots=True)
class TagDefaults:
    """Per-model defaults, calibrated on bench/photos' labelled photos (bench/tagging.py)."""

    top_k: int = 5
    min_score: float = 0.15  # uncalibrated models: CLIP-style cosines run 0.1-0.35
    free_lambda: float = 0.5
    free_top_english: int = 5


# Calibrated per model id with bench/tagging.py (the F1-best threshold over the top 5 tags of
# hand-labelled photos: 161 for sight-lite0-ssd-muse, the first 80 for the conse models);
# models not listed use TagDefaults().
CALIBRATED: dict[str, TagDefaults] = {
    "sight-lite0-ssd-muse": TagDefaults(top_k=5, min_score=0.58),
    "conse-lite0-muse": TagDefaults(top_k=5, min_score=0.54),
    "conse-lite2-muse": TagDefaults(top_k=5, min_score=0.54),
}


def defaults_for(model_id: str) -> TagDefaults:
    return CALIBRATED.get(model_id, TagDefaults())


# How tag texts become a matrix (prompts, Encoder.embed_labels): part of the cache key of the
# matrices and of the stored tags' key, so a change here never reuses what the old way made.
# Raise it with any change to that path.
TAG_FORMAT = "2"  # 2: names embedded as they are (embed_labels), not query-expanded


def tag_matrix(encoder: Encoder, concepts: Sequence[Concept], lang: str) -> NDArray[np.float32]:
    """(len(concepts), dim) tag embeddings in ``lang``, prompt-averaged and cached on disk."""
    templates = TEMPLATES.get(lang, DEFAULT_TEMPLATES)
    names = [c.name(lang) for c in concepts]
    digest = hashlib.sha256("\x1f".join([TAG_FORMAT, encoder.spec.id, lang, *templates, *names]).encode()
                            ).hexdigest()[:16]

    def compute() -> NDArray[np.float32]:
        sentences = [t.format(n) for n in names for t in templates]
        emb = encoder.embed_labels(sentences, lang=lang if lang != "*" else None)
        return normalise(emb.reshape(len(names), len(templates), -1).mean(axis=1))

    return cached_array(f"tags-{encoder.spec.vector_name}-{lang}-{digest}.npz",
                        (len(concepts), encoder.spec.dim), compute)


class Tagger:
    """Tags for image vectors of one encoder, over the shipped vocabulary or a user's."""

    def __init__(self, encoder: Encoder, vocabulary: Sequence[Concept]) -> None:
        self.encoder = encoder
        self.vocabulary = list(vocabulary)
        self._by_id = {c.id: c for c in self.vocabulary}
        self.defaults = defaults_for(encoder.spec.id)
        self._english: NDArray[np.float32] | None = None
        self.key = self._key()

    @property
    def english(self) -> NDArray[np.float32]:
        if self._english is None:
            self._english = tag_matrix(self.encoder, self.vocabulary, "en")
        return self._english

    def scores(self, vectors: NDArray[np.float32], lang: str = "en",
               *, free: Sequence[Concept] | None = None) -> NDArray[np.float32]:
        """(n_images, n_tags) scores. With ``free``, score that unaligned vocabulary instead."""
        if free is None:
            return vectors @ self.english.T
        d = self.defaults
        target = tag_matrix(self.encoder, free, lang)
        direct = vectors @ target.T
        eng = vectors @ self.english.T
        k = min(d.free_top_english, eng.shape[1])
        top = np.argpartition(-eng, k - 1, axis=1)[:, :k]
        top_scores = np.take_along_axis(eng, top, axis=1)
        weights = np.exp((top_scores - top_scores.max(axis=1, keepdims=True)) / 0.05)
        weights /= weights.sum(axis=1, keepdims=True)
        # agreement of each target tag with the image's best English tags
        agree = np.einsum("nk,nkt->nt", weights, self.english[top] @ target.T)
        return (d.free_lambda * direct + (1 - d.free_lambda) * agree).astype(np.float32)

    def tag(self, vectors: NDArray[np.float32], lang: str = "en", *, top_k: int | None = None,
            min_score: float | None = None, free: Sequence[Concept] | None = None) -> list[list[Tag]]:
        top_k = self.defaults.top_k if top_k is None else top_k
        min_score = self.defaults.min_score if min_score is None else min_score
        concepts = self.vocabulary if free is None else list(free)
        scores = self.scores(np.atleast_2d(vectors), lang, free=free)
        out = []
        for row in scores:
            # stable: equal scores keep vocabulary order, whatever sort the CPU gets
            order = np.argsort(-row, kind="stable")[: max(top_k, 0)]
            tags = [Tag(rank=r + 1, id=concepts[i].id, name=concepts[i].name(lang), lang=lang,
                        score=round(float(row[i]), 4))
                    for r, i in enumerate(order) if row[i] >= min_score]
            out.append(tags if free is not None else self._with_ancestors(tags, lang))
        return out

    def _with_ancestors(self, tags: list[Tag], lang: str) -> list[Tag]:
        """The tags, then each one's more general concepts not already there (a daisy is also a
        flower and a plant), at the score of the specific tag that brought them."""
        have = {t.id for t in tags}
        extra: list[Tag] = []
        for tag in tags:
            for parent in ancestors(tag.id):
                concept = self._by_id.get(parent)
                if concept is None or parent in have:
                    continue
                have.add(parent)
                extra.append(Tag(rank=len(tags) + len(extra) + 1, id=parent, name=concept.name(lang), lang=lang,
                                 score=tag.score, via=tag.id))
        return tags + extra

    def _key(self) -> str:
        """Identifies what top_ids() computes: stored tags made under another key are stale."""
        d = self.defaults
        blob = "\x1f".join([TAG_FORMAT, self.encoder.spec.id, str(d.top_k), str(d.min_score), *TEMPLATES["en"],
                             "ancestors",
                             *(f"{c.id}={c.name('en')}" for c in self.vocabulary)])
        return "tags-" + hashlib.sha256(blob.encode()).hexdigest()[:12]

    def top_ids(self, vectors: NDArray[np.float32]) -> list[list[str]]:
        """Concept ids to store in the payload at index time (language-independent)."""
        return [[t.id for t in tags] for tags in self.tag(vectors, "en")]
