"""Small frozen records that cross the seams (store <-> features <-> facade <-> CLI and web).

The CLI renders these and nothing else: the same record becomes a table row for people and a
JSON object for scripts (``to_dict``).
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True, slots=True)
class Point:
    """One image as the store sees it: id, the model's vector, and its payload."""

    id: str
    vector: NDArray[np.float32] | None
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ScoredPoint:
    id: str
    score: float
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Filter:
    """The payload filters xlir uses; each store translates it to its own API.

    ``under``: keep images at or below one of these directories, or that are one of these files.
    ``sha256``: keep images with this content hash. ``tags``: keep images tagged with any of
    these concept ids. ``text``: keep images whose text (read at index time) has all these words.
    ``after`` / ``before``: keep images whose date (``Hit.date``: taken_at from EXIF, else the
    file's modification time) is at or after / strictly before this local time (naive
    datetimes are wall-clock times, as EXIF dates are). Non-empty fields combine with AND.
    """

    under: tuple[str, ...] = ()
    sha256: str | None = None
    tags: tuple[str, ...] = ()
    text: str | None = None  # keep images whose read text holds every word of this
    after: datetime | None = None
    before: datetime | None = None

    def is_empty(self) -> bool:
        return not (self.under or self.sha256 or self.tags or self.text or self.after or self.before)


@dataclass(frozen=True, slots=True)
class Hit:
    """One search result, rendered the same way as a table row and as a JSON line."""

    rank: int
    score: float
    path: str
    date: str | None  # when the photo was taken (EXIF), else the file's modification time
    size: int
    width: int | None = None
    height: int | None = None
    cosine: float | None = None  # the raw similarity, when ``score`` is a calibrated probability
    text: str | None = None  # the text read in the photo (`xlir index --read-text`), if any
    id: str = ""  # the point's id: what "more like this", thumbnails and tags of one photo take
    taken_at: str | None = None  # the EXIF capture time alone (None when the file has none)
    tags: tuple[str, ...] = ()  # concept ids stored at index time

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Tag:
    """One tag for one image: a concept id, its name in the asked language, and a score."""

    rank: int
    id: str
    name: str
    lang: str
    score: float
    via: str | None = None  # a more general tag, added for this more specific one (flower, via daisy)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class TagResult:
    """The tags of one file; ``source`` is "index" (its stored vector) or "file" (embedded now)."""

    path: str
    source: str
    tags: tuple[Tag, ...] = ()

    def to_dicts(self) -> list[dict[str, Any]]:
        """One JSON object per tag (what `xlir tag --json` prints)."""
        return [{"path": self.path, "source": self.source, **t.to_dict()} for t in self.tags]

    def to_dict(self) -> dict[str, Any]:
        """The whole result as one object (what the web API answers)."""
        return {"path": self.path, "source": self.source, "tags": [t.to_dict() for t in self.tags]}


@dataclass(frozen=True, slots=True)
class IngestReport:
    """What one `index` run did. Each file found counts once: scanned = added + updated +
    reused + unchanged + skipped. ``removed`` counts points of files that are gone, ``missing``
    the roots that do not exist (neither is a file found)."""

    scanned: int = 0
    added: int = 0  # new files, embedded
    updated: int = 0  # changed files, embedded again
    unchanged: int = 0
    reused: int = 0  # new or changed files whose content was already stored: its vector reused
    removed: int = 0
    skipped: int = 0  # unreadable, or of a kind xlir does not read
    missing: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class IngestEvent:
    """Progress of an index run, for a front end.

    kind: 'scanning' (path: a root being walked), 'found' (n: every file found under all roots,
    known before anything is embedded), 'passed' (n files settled without being stored:
    unchanged, or of a kind xlir does not read), 'tagging' (n unchanged files get new tags),
    'loading' (the model; ``reason`` says when it is being prepared, not just loaded),
    'loaded', 'done' (n embedded or reused, and stored), 'skipped' (one file: path, reason),
    'unread' (n files of one kind xlir does not read: path is the kind, e.g. SVG, and reason
    why), 'missing' (a root that does not exist), 'unreadable' (a folder), 'removing' and
    'removed' (n points of vanished files), 'optimizing', 'optimized', 'retried' (n files sent
    again after the Ray actor embedding them died; ``reason`` says why). The files found are
    accounted for by passed + done + skipped.
    """

    kind: str
    n: int = 0
    path: str = ""
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class TransferEvent:
    """Progress of a push or pull: 'total' (n points in the source), 'copied' (n written),
    'present' (n already in the destination, skipped), 'optimizing', 'optimized', 'verifying'."""

    kind: str
    n: int = 0


@dataclass(frozen=True, slots=True)
class TransferReport:
    """What one `push` or `pull` did: the source's points, and where each one went."""

    source: str
    destination: str
    collection: str
    model: str  # the collection's vector name: the model both copies are bound to
    points: int = 0  # in the source
    copied: int = 0  # written to the destination by this run
    present: int = 0  # already there with the same payload (a resumed copy skips them)
    destination_points: int = 0  # counted at the end
    seconds: float = 0.0

    @property
    def extra(self) -> int:
        """Points the destination holds that the source does not (a copy never deletes)."""
        return max(0, self.destination_points - self.points)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "extra": self.extra}


@dataclass(frozen=True, slots=True)
class CheckReport:
    """What `xlir check` found in one collection, and what --repair did about it."""

    collection: str
    points: int = 0  # points examined
    sound: int = 0
    bad_vector: int = 0  # not finite, not unit length, or the wrong width
    bad_payload: int = 0  # no path, size, mtime or hash that can be read
    wrong_id: int = 0  # stored under an id that is not its path's
    missing_file: int = 0  # its file is gone
    changed_file: int = 0  # its file's size or mtime differ from the stored ones
    repaired: int = 0  # points embedded again from their files
    removed: int = 0  # points deleted (file gone, or nothing usable left)
    problem: str = ""  # why the collection could not be opened or read, when it could not
    set_aside: str = ""  # where --repair moved a damaged collection or log (never deleted)
    rebuilt: bool = False  # --repair built the collection again from the indexed folders
    resolved: bool = False  # --repair dealt with ``problem``
    seconds: float = 0.0

    @property
    def faults(self) -> int:
        return self.bad_vector + self.bad_payload + self.wrong_id + self.missing_file + self.changed_file

    @property
    def healthy(self) -> bool:
        """Nothing left to repair: sound when checked, or repaired."""
        return (not self.problem or self.resolved) and self.repaired + self.removed >= self.faults

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "faults": self.faults, "healthy": self.healthy}


@dataclass(frozen=True, slots=True)
class CheckEvent:
    """Progress of a check: 'total' (n points), 'checked' (n), 'fault' (path, reason), 'stage'
    (reason: what --repair is doing now)."""

    kind: str
    n: int = 0
    path: str = ""
    reason: str = ""


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """What a model is, independent of whether it is loaded.

    ``family`` names the code that builds it (see encoders/registry.py), so the registry can
    be listed without importing torch or open_clip; ``options`` are that family's settings.
    """

    id: str
    family: str
    dim: int
    languages: tuple[str, ...]
    licence: str
    size_mb: int
    bundled: bool
    needs_lang: bool
    description: str = ""
    options: dict[str, str] = field(default_factory=dict)

    @property
    def vector_name(self) -> str:
        """The name of this model's vector in a Qdrant collection (safe characters only)."""
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", self.id)


@dataclass(frozen=True, slots=True)
class ModelRow:
    """One line of `xlir models`: a registered model and whether it can run here, offline."""

    id: str
    dim: int
    languages: int
    licence: str
    size_mb: int
    bundled: bool
    needs_lang: bool
    offline_ready: bool
    status: str
    description: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Runtime:
    """The model a command runs, and where: printed once per run ("cpu int8", "cuda:0 bf16")."""

    model: str
    device: str
    precision: str


@dataclass(frozen=True, slots=True)
class CollectionOptions:
    """How a new collection is laid out, as asked (flags); None means "choose by size"
    (store/layout.py). Ignored for a collection that already exists."""

    expected_points: int | None = None  # how many points it will hold, when known (a push knows)
    shards: int | None = None
    replicas: int | None = None
    write_consistency: int | None = None  # replicas that must acknowledge a write
    quantization: str | None = None  # "int8" or "none"
    on_disk: bool | None = None  # original vectors (and payload) memory-mapped from disk
    hnsw_m: int | None = None
    hnsw_ef_construct: int | None = None


@dataclass(frozen=True, slots=True)
class CollectionInfo:
    name: str
    model: str  # the vector name, i.e. ModelSpec.vector_name of the model that built it
    dim: int
    points: int
    indexed_vectors: int | None = None  # HNSW-indexed points, where the backend tells
    problem: str = ""  # why it cannot be opened (then points is 0)
    last_indexed: str | None = None  # when `xlir index` last ran into it (local time, ISO-8601)


@dataclass(frozen=True, slots=True)
class IndexStats:
    """What `xlir info` shows: the store, its collections, the compute device."""

    store: str  # "embedded (Qdrant Edge)" or "qdrant-server"
    location: str
    device: str
    collections: tuple[CollectionInfo, ...] = ()
    disk_bytes: int | None = None  # what the embedded store takes on disk; None for a server

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class TagInfo:
    """What `xlir tag` works with: the shipped vocabulary's size and languages, and the default
    number of tags and threshold (``calibrated``: model id -> (top_k, min_score) measured for it)."""

    concepts: int
    languages: tuple[str, ...]
    top_k: int
    min_score: float
    calibrated: dict[str, tuple[int, float]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DuplicateMember:
    """One photo of a duplicate group. ``similarity``: the closest cosine between its stored
    vector and another member's (1.0 in a group of exact copies)."""

    path: str
    size: int
    width: int | None
    height: int | None
    date: str | None
    similarity: float


@dataclass(frozen=True, slots=True)
class DuplicateGroup:
    """Photos that are one picture: ``kind`` "exact" (the same bytes) or "near" (resized,
    recompressed, lightly cropped or edited copies). Members come best first: most pixels,
    then the biggest file."""

    kind: str
    members: tuple[DuplicateMember, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "members": [asdict(m) for m in self.members]}


@dataclass(frozen=True, slots=True)
class DuplicatesReport:
    """What `xlir duplicates` found among ``scanned`` photos: candidates at cosine ``threshold``,
    confirmed by the files' signatures."""

    collection: str
    scanned: int
    threshold: float
    groups: tuple[DuplicateGroup, ...] = ()
    candidates: int = 0  # pairs whose vectors were close enough to compare their files
    unconfirmed: int = 0  # of those, pairs with a file that could not be read (gone, unplugged)
    seconds: float = 0.0

    @property
    def exact(self) -> int:
        return sum(g.kind == "exact" for g in self.groups)

    @property
    def near(self) -> int:
        return sum(g.kind == "near" for g in self.groups)


# The recall figures of an evaluation row (eval/run.py), in percent.
RECALL_METRICS: tuple[str, ...] = ("t2i_r1", "t2i_r5", "t2i_r10", "i2t_r1", "i2t_r5", "i2t_r10")


def jsonable(value: Any) -> Any:
    """``value`` with every NaN float (an unmeasured recall, the untrained epoch's loss) as None,
    through dicts, lists and tuples: NaN is not JSON, null is."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value
