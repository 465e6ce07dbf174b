"""The bundled default model: what two offline vision models see, put into mUSE space.

Image side, two concept sources (concepts.py), mixed in mUSE's 512-d space:

* EfficientNet-Lite0's ImageNet classes, bridged by ConSE (bundled.py): the probability-weighted
  sum of the top-T class vectors. A class vector is its templated English labels plus the mean of
  its names in all eleven vocabulary languages, so it sits as near a Japanese query as an
  English one.
* SSD-MobileNet-v2's COCO detections: each object found adds its concept vector, weighted by
  confidence; people are counted, so "a person", "two people", "a group", "a crowd" and "a
  portrait" (one person filling the frame) exist, which ImageNet has no class for.

Text side: mUSE, then query expansion. A query is matched against every concept name in every
language (ImageNet classes, COCO objects, people phrases, the tag vocabulary); the soft top
matches pull it towards their concepts' multilingual centroids, the points the image side is
built from. That is what lifts queries in other languages to the level of English ones.

Scores: a query's cosine becomes a calibrated probability of being a right answer through
``relevance()``: a logistic fit of the cosine against how far the query sits from the concept
bank (bench/quality.py --calibrate fitted it on bench/photos' queries and absent-concept
queries), so a threshold of 0.5 means the same for every query.

Every knob was chosen by measuring on bench/photos (README, "The bundled default").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from ..records import ModelSpec
from ..vocab import ancestors
from .base import EncoderBase, PixelSpec, Relevance, normalise
from .bundled import OnImageNetTower, tf_preprocess, top_t_weights
from .concepts import CocoSource, bank_ready, concept_bank, load_bank, vocabulary_concepts
from .muse import muse_embed
from .ort import softmax


@dataclass(frozen=True, slots=True)
class SightParams:
    """The mix, chosen on bench/photos (1771 queries in 11 languages over 161 photos; a split
    half chose the same values): a softer ImageNet distribution than ConSE alone (temperature
    3), detections at 0.3 of the ImageNet part's weight, and a query pulled by its ten nearest
    concept names with a sharp softmax."""

    variant: str = "lite0"
    top_t: int = 20
    temperature: float = 3.0
    detection_weight: float = 0.3
    ssd_size: int = 128  # 160 px: MRR +0.003 for 1.6x the time; 300 px: none for 4x (bench/photos)
    expand_k: int = 10
    expand_tau: float = 0.05
    expand_weight: float = 1.0
    people_pull: float = 1.5  # 1-2 measure the same (MRR -0.004 against none); it finds astronauts
    # relevance: sigmoid(a*s + b*(s - mean)/std + c*(s - max) + d), mean/std/max of the query's
    # cosines to the concept centroids; fitted by bench/quality.py --calibrate
    calibration: tuple[float, float, float, float] = (5.2714, 0.3351, 0.0, -3.7416)


@dataclass(frozen=True, slots=True)
class TextBank:
    """What query expansion and relevance read: ``names`` (n, 512) is every concept name in
    every language, ``owner`` (n,) the row of ``pull`` each name pulls a query towards (its
    concept's centroid; for a kind of person, also towards "person"), and ``centroids`` the
    concepts' plain centroids, in ``pull``'s order."""

    names: NDArray[np.float32]
    owner: NDArray[np.intp]
    pull: NDArray[np.float32]
    centroids: NDArray[np.float32]


# The tag concepts the detector sees directly (vocabulary ids); kinds of them pull towards them.
PEOPLE_CONCEPTS = ("person", "people")


# One structured row per image: both models' inputs, stacked into one batch by the batch loop.
def _row_dtype(size: int, ssd: int) -> np.dtype:
    return np.dtype([("imagenet", np.float32, (3, size, size)), ("coco", np.uint8, (ssd, ssd, 3))])


class SightEncoder(OnImageNetTower, EncoderBase):
    """The Encoder for the bundled multi-source model; see the module docstring."""

    takes_pixels = True

    def __init__(self, spec: ModelSpec, device: str, params: SightParams | None = None) -> None:
        self.spec = spec
        self.device = device
        self.params = params or SightParams()
        self.input_size = 224  # the Lite0 tower's crop
        self._row = _row_dtype(self.input_size, self.params.ssd_size)
        self._coco: CocoSource | None = None
        self._sides: tuple[NDArray[np.float32], NDArray[np.float32]] | None = None
        self._text: TextBank | None = None

    # -- the parts, loaded on first use ---------------------------------------------------------

    @property
    def coco(self) -> CocoSource:
        if self._coco is None:
            self._coco = CocoSource(self.params.ssd_size)
        return self._coco

    def image_matrices(self) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """(1000, 512) ImageNet class vectors and (85, 512) COCO/people concept vectors."""
        if self._sides is None:
            bank = load_bank()  # not held: an index run needs only these rows of it
            imagenet = normalise(bank.english + bank.centroid["imagenet"])
            coco = np.concatenate([bank.centroid["coco"], bank.centroid["people"]])
            self._sides = imagenet, coco
        return self._sides

    def text_bank(self) -> TextBank:
        """Every concept name per language, which concept each pulls towards, and the concepts'
        centroids; views of the bank and a few small arrays, built once per process."""
        if self._text is None:
            bank = concept_bank()
            sets = tuple(bank.centroid)  # the bank's order, which its ``names`` rows follow
            starts = np.cumsum([0] + [len(bank.centroid[k]) for k in sets])
            owner = np.concatenate([np.tile(np.arange(starts[i], starts[i + 1]), len(bank.per_lang[k]))
                                    for i, k in enumerate(sets)])
            pull = [self._with_ancestors(bank.centroid[k]) if k == "vocabulary" else bank.centroid[k] for k in sets]
            self._text = TextBank(bank.names, owner, np.concatenate(pull),
                                  np.concatenate([bank.centroid[k] for k in sets]))
        return self._text

    def _with_ancestors(self, centroids: NDArray[np.float32]) -> NDArray[np.float32]:
        """A kind of person pulls towards "person" (or "people") too, which is all the detector
        can put into a photo of one: "an astronaut" then finds people, not only rockets."""
        ids = {c.key: i for i, c in enumerate(vocabulary_concepts())}
        out = centroids.copy()
        for cid, i in ids.items():
            for parent in ancestors(cid):
                if parent in PEOPLE_CONCEPTS:
                    out[i] += self.params.people_pull * centroids[ids[parent]]
        return normalise(out)

    def first_use_note(self) -> str:
        todo = not bank_ready() or self.int8_pending()
        return "first use: preparing the model once (~30 s)" if todo else ""

    def warm_up(self) -> None:
        # The image side only: an index run never holds the whole concept bank (41 MB), and
        # the first text query loads it (`xlir serve` warms up with one).
        _ = self.tower, self.image_matrices()
        self.coco.warm_up()

    # -- images ---------------------------------------------------------------------------------

    def preprocess(self, image: Image.Image) -> NDArray[np.void]:
        row = np.zeros((), self._row)
        row["imagenet"] = tf_preprocess(image, self.input_size)
        row["coco"] = self.coco.prepare(image)
        return row

    def pixel_spec(self) -> PixelSpec | None:
        return None  # two inputs per image: preprocessed on CPU workers, also next to a GPU

    def embed_pixels(self, pixels: Any) -> NDArray[np.float32]:
        """A stacked batch of ``preprocess`` rows (a structured array)."""
        batch = np.asarray(pixels)
        logits = self.tower.logits(np.ascontiguousarray(batch["imagenet"]))
        return self.mix(logits, self.coco.weights(np.ascontiguousarray(batch["coco"])))

    def mix(self, logits: NDArray[np.float32], detections: NDArray[np.float32]) -> NDArray[np.float32]:
        """Image vectors from the two sources' outputs: ImageNet logits (n, 1000) and COCO/people
        concept weights (n, 85)."""
        imagenet, coco = self.image_matrices()
        p = self.params
        weights = top_t_weights(softmax(logits, p.temperature), p.top_t)
        return normalise(normalise(weights @ imagenet) + p.detection_weight * (detections @ coco))

    # -- texts ----------------------------------------------------------------------------------

    def embed_texts(self, texts: Sequence[str], *, lang: str | None = None) -> NDArray[np.float32]:
        # mUSE is language-agnostic, and so is the expansion: ``lang`` is not needed.
        if not texts:
            return self.empty()
        return self.expand(muse_embed(list(texts)))

    def embed_labels(self, texts: Sequence[str], *, lang: str | None = None) -> NDArray[np.float32]:
        # Tags are scored unexpanded: pulling every tag towards its nearest concepts makes
        # neighbours alike (bench/tagging.py: P@1 0.42 unexpanded, 0.23 expanded).
        return muse_embed(list(texts)) if texts else self.empty()

    def expand(self, queries: NDArray[np.float32]) -> NDArray[np.float32]:
        """Pull each query towards the centroids of the concept names it is nearest to."""
        bank = self.text_bank()
        p = self.params
        sims = queries @ bank.names.T
        k = min(p.expand_k, sims.shape[1])
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        near = np.take_along_axis(sims, top, axis=1)
        w = np.exp((near - near.max(axis=1, keepdims=True)) / p.expand_tau)
        w /= w.sum(axis=1, keepdims=True)
        pull = np.einsum("nk,nkd->nd", w, bank.pull[bank.owner[top]])
        return normalise(queries + p.expand_weight * pull)

    def relevance(self, queries: NDArray[np.float32]) -> Relevance | None:
        a, b, c, d = self.params.calibration
        if not any((a, b, c)):
            return None
        r = queries @ self.text_bank().centroids.T
        mean, std, top = r.mean(axis=1), r.std(axis=1) + 1e-6, r.max(axis=1)
        # a*s + b*(s - mean)/std + c*(s - top) + d, as slope*s + offset per query
        return Relevance(slope=a + b / std + c, offset=d - b * mean / std - c * top)


def load(spec: ModelSpec, device: str) -> SightEncoder:
    return SightEncoder(spec, device, SightParams(variant=spec.options.get("variant", "lite0")))


def available_offline(spec: ModelSpec) -> tuple[bool, str]:
    """Whether the bundled weights are installed (for `xlir models`)."""
    from . import bundled, concepts

    ok, why = bundled.available_offline(spec)
    return (ok, why) if not ok else concepts.available()
