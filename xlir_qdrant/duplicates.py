"""Copies and near-copies of the same photo in one collection.

Exact copies share their bytes, so they share the payload's content hash (sha256): grouping
the payloads by it finds them without reading a file. Near-copies (resized, recompressed,
lightly cropped or edited) are found in two steps:

1. candidates, through the store's own nearest-neighbour search: each distinct photo's stored
   vector asks the store for its closest photos at or above a cosine ``threshold``;
2. confirmation, by how the two files look: their perceptual signatures (images/signature.py)
   may differ in at most MAX_BITS of 63 bits.

Step 2 is needed because a vector says what is in a picture more than how it looks: for the
bundled ConSE model two different photos of tabby cats are as close as a photo and its copy,
and on bench/photos vectors alone reach a precision of 0.76 where the two steps reach 0.99
(`python bench/duplicates.py`; figures in the README). Confirmed pairs join one group
(connected components). A candidate whose file cannot be read (gone, an unplugged drive)
cannot be confirmed; the report counts those.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .images.signature import BITS, distance, signature
from .records import CheckEvent, DuplicateGroup, DuplicateMember, DuplicatesReport, Filter, Point
from .store import Collection
from .store.schema import file_path, photo_date

# Measured by bench/duplicates.py on bench/photos with made copies (see the README).
DEFAULT_THRESHOLD = 0.9
MAX_BITS = 16
NEIGHBOURS = 16  # closest photos asked of the store per photo: a group larger than this still
#                  joins up through its members' own answers
Progress = Callable[[CheckEvent], None]


@dataclass
class _Photo:
    """One distinct content: the first point seen with its hash, and its byte-identical copies."""

    id: str
    payload: dict[str, Any]
    copies: list[dict[str, Any]] = field(default_factory=list)


class _Groups:
    """Union-find over photo ids, remembering the best similarity that linked each one."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}
        self.best: dict[str, float] = {}

    def root(self, x: str) -> str:
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def link(self, a: str, b: str, score: float) -> None:
        for x in (a, b):
            self.best[x] = max(self.best.get(x, 0.0), score)
        ra, rb = self.root(a), self.root(b)
        if ra != rb:
            self.parent[rb] = ra

    def components(self) -> list[list[str]]:
        out: dict[str, list[str]] = {}
        for x in list(self.parent):
            out.setdefault(self.root(x), []).append(x)
        return [members for members in out.values() if len(members) > 1]


def find_duplicates(collection: Collection, *, under: Iterable[str] = (), threshold: float = DEFAULT_THRESHOLD,
                    max_bits: int = MAX_BITS, progress: Progress | None = None) -> DuplicatesReport:
    """Exact copies (same sha256) and near-copy groups (stored vectors at or above ``threshold``
    cosine, whose files' signatures differ in at most ``max_bits``; BITS takes the vectors'
    word alone) among the photos of ``collection``, or of those under the ``under`` folders."""
    emit = progress or (lambda _e: None)
    start = time.perf_counter()
    flt = Filter(under=tuple(under)) if under else None
    emit(CheckEvent("total", n=collection.count(flt)))
    photos: dict[str, _Photo] = {}  # by sha256
    candidates: dict[tuple[str, str], float] = {}
    scanned = 0
    pending: list[Point] = []

    def ask(batch: list[Point]) -> None:
        for point in batch:
            own = str(point.payload.get("sha256") or point.id)
            for hit in collection.query(point.vector, limit=NEIGHBOURS + 1, filter=flt, min_score=threshold):
                other = str(hit.payload.get("sha256") or hit.id)
                if other != own:
                    pair = (min(own, other), max(own, other))
                    candidates[pair] = max(candidates.get(pair, 0.0), float(hit.score))
        emit(CheckEvent("checked", n=len(batch)))

    for point in collection.scroll(filter=flt, with_vectors=True, batch=256):
        scanned += 1
        sha = str(point.payload.get("sha256") or point.id)
        if sha in photos:  # a copy: its vector is the same, asking again would add nothing
            photos[sha].copies.append(point.payload)
            emit(CheckEvent("checked", n=1))
            continue
        photos[sha] = _Photo(point.id, point.payload)
        if point.vector is not None:
            pending.append(point)
        if len(pending) >= 256:
            ask(pending)
            pending = []
    ask(pending)

    emit(CheckEvent("stage", reason=f"comparing {len(candidates)} close pairs"))
    groups, unconfirmed = _Groups(), 0
    looks = _Signatures(photos)
    for (a, b), score in sorted(candidates.items(), key=lambda kv: -kv[1]):
        if max_bits >= BITS:
            groups.link(a, b, score)
            continue
        sa, sb = looks.of(a), looks.of(b)
        if sa is None or sb is None:
            unconfirmed += 1
        elif distance(sa, sb) <= max_bits:
            groups.link(a, b, score)
    exact = [_group("exact", [(payload, 1.0) for payload in (photo.payload, *photo.copies)])
             for photo in photos.values() if photo.copies]
    near = [_group("near", [(photos[sha].payload, groups.best[sha]) for sha in members if sha in photos])
            for members in groups.components()]
    ordered = sorted(exact, key=_group_key) + sorted((g for g in near if len(g.members) > 1), key=_group_key)
    return DuplicatesReport(collection=collection.name, scanned=scanned, threshold=threshold, groups=tuple(ordered),
                            candidates=len(candidates), unconfirmed=unconfirmed,
                            seconds=time.perf_counter() - start)


class _Signatures:
    """Each distinct photo's signature, read from its file (or a copy's) once, when first asked."""

    def __init__(self, photos: dict[str, _Photo]) -> None:
        self.photos = photos
        self.known: dict[str, Any] = {}

    def of(self, sha: str) -> Any:
        if sha not in self.known:
            photo = self.photos.get(sha)
            found = None
            for payload in ([photo.payload, *photo.copies] if photo else []):
                found = signature(file_path(payload))
                if found is not None:
                    break
            self.known[sha] = found
        return self.known[sha]


def _group(kind: str, members: list[tuple[dict[str, Any], float]]) -> DuplicateGroup:
    """Members best first: most pixels, then the biggest file (the least recompressed), then
    the oldest, then by path, so that the first is the one most worth keeping. ``similarity``
    is the closest cosine that tied each member into the group (1.0 for exact copies)."""
    out = [DuplicateMember(path=str(p.get("path", "")), size=int(p.get("size") or 0), width=p.get("width"),
                           height=p.get("height"), date=photo_date(p), similarity=round(score, 4))
           for p, score in members]
    out.sort(key=lambda m: (-(m.width or 0) * (m.height or 0), -m.size, m.date or "9999", m.path))
    return DuplicateGroup(kind=kind, members=tuple(out))


def _group_key(group: DuplicateGroup) -> tuple[int, str]:
    return (-len(group.members), group.members[0].path)
