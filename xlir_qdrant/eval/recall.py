"""Recall@K for text->image and image->text retrieval, with several captions per image.

Ranks are 0-based and count ties against the model: a query's rank is the number of
*non-matching* candidates scoring at least as high as its best matching one. A degenerate model
that scores everything equally therefore gets R@K = K/N, not 100%. Recall@K is the percentage of
queries with rank < K. For text->image each caption matches its one image; for image->text an
image matches all of its captions and the best-ranked one counts (the standard COCO protocol).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

KS: tuple[int, ...] = (1, 5, 10)
_CHUNK = 1024  # query rows per block: a 25k x 5k similarity matrix never sits in memory at once


def query_ranks(sim: NDArray[np.floating], positive: NDArray[np.bool_]) -> NDArray[np.int64]:
    """Rank of each query's best positive; ``sim`` and ``positive`` are (queries, candidates)."""
    if not positive.any(axis=1).all():
        raise ValueError("every query needs at least one matching candidate")
    best = np.where(positive, sim, -np.inf).max(axis=1, keepdims=True)
    return ((sim >= best) & ~positive).sum(axis=1).astype(np.int64)


def text_to_image_ranks(sim: NDArray[np.floating], caption_image: NDArray[np.integer]) -> NDArray[np.int64]:
    """``sim`` is (captions, images); ``caption_image[i]`` the image caption i describes."""
    owners = np.asarray(caption_image)
    positive = owners[:, None] == np.arange(sim.shape[1])[None, :]
    return query_ranks(np.asarray(sim), positive)


def recall_at(ranks: NDArray[np.integer], ks: Sequence[int] = KS) -> dict[int, float]:
    """{K: percentage of ranks below K}."""
    ranks = np.asarray(ranks)
    if ranks.size == 0:
        return {k: float("nan") for k in ks}
    return {k: float((ranks < k).mean() * 100.0) for k in ks}


def retrieval_recall(
    text: NDArray[np.floating], image: NDArray[np.floating], caption_image: NDArray[np.integer],
    ks: Sequence[int] = KS,
) -> dict[str, float]:
    """Recall of both directions from embeddings, in row blocks; keys like ``t2i_r10``.

    ``text`` (captions, d) and ``image`` (images, d) are unit vectors, so dot = cosine.
    """
    text = np.asarray(text, np.float32)
    image = np.asarray(image, np.float32)
    owners = np.asarray(caption_image)
    t2i = [text_to_image_ranks(text[s : s + _CHUNK] @ image.T, owners[s : s + _CHUNK])
           for s in range(0, len(text), _CHUNK)]
    queries = np.unique(owners)
    i2t = []
    for s in range(0, len(queries), _CHUNK):
        block = queries[s : s + _CHUNK]
        positive = block[:, None] == owners[None, :]
        i2t.append(query_ranks(image[block] @ text.T, positive))
    out: dict[str, float] = {}
    for name, parts in (("t2i", t2i), ("i2t", i2t)):
        ranks = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        out.update({f"{name}_r{k}": v for k, v in recall_at(ranks, ks).items()})
    return out
