"""The paper's ranking losses over in-batch negatives: PATR and M3 (see docs/training.md).

A batch is B (caption, image) pairs: row i of ``text`` was written for row i of ``image``, and
``image_ids`` says which image each row shows, so rows that share an image (several captions of
one photo) are positives of each other and never negatives. Both embeddings are L2-normalised;
distances are cosine distances, d = 1 - cos, in [0, 2].

PATR, anchored on caption t with its image v+ and negatives v- from the batch:
    L = d(t, v+) + max(0, m - d(t, v-))
M3 adds a text-text hinge that pushes t away from captions of *other* images:
    L = PATR + w * max(0, m_t - d(t, t-))
Which v- (and t-) enters the hinge is the mining mode: the hardest (closest) negative, the
semi-hard one (the closest that is still farther than the positive), or the mean over all
negatives that violate the margin.
"""

from __future__ import annotations

import torch

from .config import LOSSES, MINING_MODES


def cosine_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(n, d) x (m, d) -> (n, m) of 1 - cos; both sides must already be unit length."""
    return 1.0 - a @ b.T


def negative_hinge(
    dist: torch.Tensor, negative: torch.Tensor, d_pos: torch.Tensor, margin: float, mining: str
) -> torch.Tensor:
    """Per-anchor max(0, margin - d(anchor, negative)) for the negatives picked by ``mining``.

    ``dist`` (B, N) distances from each anchor, ``negative`` (B, N) which entries may be used,
    ``d_pos`` (B,) each anchor's distance to its positive (semi-hard mining needs it). Anchors
    with no negative in the batch contribute 0.
    """
    if mining not in MINING_MODES:
        raise ValueError(f"unknown mining {mining!r}; use one of {', '.join(MINING_MODES)}")
    has_negative = negative.any(dim=1)
    inf = torch.finfo(dist.dtype).max
    if mining == "all":
        hinge = torch.relu(margin - dist) * negative
        # Averaging over the violators only keeps the signal from fading as most negatives
        # become easy (the "batch all" convention); zero violators means zero loss.
        violators = (hinge > 0).sum(dim=1).clamp(min=1)
        return hinge.sum(dim=1) / violators
    closest = dist.masked_fill(~negative, inf).min(dim=1).values
    if mining == "hardest":
        chosen = closest
    else:
        # Semi-hard (Schroff et al. 2015): the closest negative that is still farther than the
        # positive. Where every negative is closer than the positive, take the farthest one
        # (as TensorFlow's triplet_semihard_loss does): the hardest would dominate early
        # training with noisy gradients and can collapse the embedding.
        beyond = negative & (dist > d_pos[:, None])
        semihard = dist.masked_fill(~beyond, inf).min(dim=1).values
        farthest = dist.masked_fill(~negative, -inf).max(dim=1).values
        chosen = torch.where(beyond.any(dim=1), semihard, farthest)
    return torch.where(has_negative, torch.relu(margin - chosen), torch.zeros_like(chosen))


def patr_terms(
    text: torch.Tensor, image: torch.Tensor, image_ids: torch.Tensor, *, margin: float, mining: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-anchor (positive pull d(t, v+), negative hinge) of PATR; both shaped (B,)."""
    same = image_ids[:, None] == image_ids[None, :]
    dist = cosine_distance(text, image)
    d_pos = dist.diagonal()
    return d_pos, negative_hinge(dist, ~same, d_pos, margin, mining)


def patr_loss(
    text: torch.Tensor, image: torch.Tensor, image_ids: torch.Tensor, *, margin: float = 0.4,
    mining: str = "hardest",
) -> torch.Tensor:
    """Positive-aware triplet ranking loss, mean over the batch's caption anchors."""
    pos, neg = patr_terms(text.float(), image.float(), image_ids, margin=margin, mining=mining)
    return (pos + neg).mean()


def text_negative_hinge(
    text: torch.Tensor, image: torch.Tensor, image_ids: torch.Tensor, *, text_margin: float, mining: str
) -> torch.Tensor:
    """Per-anchor max(0, m_t - d(t, t-)) over captions of other images in the batch."""
    same = image_ids[:, None] == image_ids[None, :]
    # Semi-hard needs a positive distance; the caption's own image is the one it is aligned to.
    d_pos = (1.0 - (text * image).sum(dim=1))
    return negative_hinge(cosine_distance(text, text), ~same, d_pos, text_margin, mining)


def m3_loss(
    text: torch.Tensor, image: torch.Tensor, image_ids: torch.Tensor, *, margin: float = 0.4,
    text_margin: float = 0.6, weight: float = 0.5, mining: str = "hardest",
) -> torch.Tensor:
    """PATR plus ``weight`` times the text-text hinge (captions of other images pushed apart)."""
    text, image = text.float(), image.float()
    pos, neg = patr_terms(text, image, image_ids, margin=margin, mining=mining)
    tneg = text_negative_hinge(text, image, image_ids, text_margin=text_margin, mining=mining)
    return (pos + neg + weight * tneg).mean()


def ranking_loss(
    name: str, text: torch.Tensor, image: torch.Tensor, image_ids: torch.Tensor, *, margin: float,
    text_margin: float, weight: float, mining: str,
) -> torch.Tensor:
    """Dispatch by the name the CLI takes (``patr`` or ``m3``)."""
    if name == "patr":
        return patr_loss(text, image, image_ids, margin=margin, mining=mining)
    if name == "m3":
        return m3_loss(text, image, image_ids, margin=margin, text_margin=text_margin, weight=weight,
                       mining=mining)
    raise ValueError(f"unknown loss {name!r}; use one of {', '.join(LOSSES)}")
