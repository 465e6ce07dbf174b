"""One index run: scan -> decide (stat, hash) -> embed in batches -> upsert.

Incremental by construction: a file whose size and mtime match its stored point is skipped
without being opened; a new or changed file is hashed, and if another point already holds the
same content (a move or a copy) its vector is reused instead of decoding; points of files that
vanished from a scanned root are deleted at the end, and only when that root was walked fully.
Each batch is upserted as soon as it is embedded (on a writer thread, so the model does not
wait), and an interrupted run stores what it embedded before it stops.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from ..config import DEFAULT_MAX_MEGAPIXELS
from ..encoders.base import Encoder
from ..images.batches import Batch, BatchEmbedder, Copy, Known, Outcome, Skipped
from ..images.decode import Decoded
from ..images.files import FileInfo, WalkErrors, scan
from ..records import Filter, IngestEvent, IngestReport, Point
from ..store import Collection
from ..store.schema import damaged_rows, file_path, image_payload, point_id, shown, sound_vector
from .writer import FLUSH_SECONDS, Writer

Progress = Callable[[IngestEvent], None]
TAGS_KEY = "tags_key"  # the payload field naming what computed a point's tags


class Tagging(Protocol):
    """Tags stored beside each vector; ``key`` names what computes them, so tags made under
    another key (an index made before tagging existed, another vocabulary) are recomputed
    from the stored vectors."""

    key: str

    def top_ids(self, vectors: NDArray[np.float32]) -> list[list[str]]: ...


class Embedding(Protocol):
    """Where new and changed files get their vectors: this process's decode workers and model
    (BatchEmbedder), or a Ray cluster's actors (distributed.py). Outcomes as BatchEmbedder's."""

    def run(self, jobs: Iterable[FileInfo], path: Callable[[FileInfo], str]) -> Iterator[Outcome[FileInfo]]: ...


@dataclass(frozen=True, slots=True)
class IngestOptions:
    batch_size: int = 32
    workers: int = 0  # 0: one decode thread per core, at most 8
    include_hidden: bool = False
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS
    prune: bool = True  # delete points of files that vanished from a scanned root
    optimize: bool = True
    # Decode JPEGs on the encoder's device (nvjpeg): None means exactly when it is a CUDA GPU.
    gpu_decode: bool | None = None
    flush_every: float = FLUSH_SECONDS  # seconds between durable flushes of the store (writer.py)


# (options, a lookup of stored points by content hash, progress) -> a run's embedding step
EmbeddingFactory = Callable[[IngestOptions, Callable[[str], Point | None], Progress], Embedding]


@dataclass
class _Scan:
    """What walking one root found."""

    todo: list[FileInfo] = field(default_factory=list)  # new or changed: to hash and embed
    stale: list[str] = field(default_factory=list)  # unchanged, but their tags are out of date
    seen: set[str] = field(default_factory=set)
    errors: WalkErrors = field(default_factory=WalkErrors)  # what could not be read protects itself


class IngestRun:
    """Index some roots into one collection; ``run()`` returns the IngestReport."""

    def __init__(self, encoder: Encoder, collection: Collection, options: IngestOptions | None = None,
                 progress: Progress | None = None, tags: Tagging | None = None,
                 embedding: EmbeddingFactory | None = None) -> None:
        self.encoder = encoder
        # Everything but the embedding step runs here whatever ``embedding`` says (distributed.py).
        self._embedding = embedding
        self.collection = collection
        self.options = options or IngestOptions()
        self.tags = tags
        self._emit: Progress = progress or (lambda _e: None)
        self._counts: Counter[str] = Counter()  # IngestReport's fields, counted as the run goes
        # Workers look up hashes while the writer upserts: one call at a time, unless the
        # store (a Qdrant server over HTTP) takes concurrent calls.
        self._lock: Any = contextlib.nullcontext() if collection.thread_safe else threading.Lock()

    def run(self, roots: Sequence[Path]) -> IngestReport:
        start = time.perf_counter()
        self._verified = 0  # points whose stored vectors were read and checked (damaged ones redone)
        for root in roots:
            self._index_root(Path(os.path.abspath(root)))
        if not self.collection.trusted and self._verified >= self.collection.count():
            self.collection.mark_verified()  # every point was checked: trusted from the next run
        if self.options.optimize and self.collection.needs_optimize():
            self._emit(IngestEvent("optimizing"))
            self.collection.optimize()
            self._emit(IngestEvent("optimized"))
        return IngestReport(**self._counts, seconds=time.perf_counter() - start)

    # -- one root -----------------------------------------------------------------------------

    def _index_root(self, root: Path) -> None:
        if not root.exists():
            # Never prune on a missing root: an unmounted drive must not empty the index.
            self._skip(str(root), "no such file or folder")
            return
        known, damaged = self._stored_under(root)
        found = self._scan(root, known, damaged)
        self._emit(IngestEvent("found", n=len(found.todo)))
        if found.stale:
            self._refresh_tags(found.stale)
        if found.todo:
            self._embed(found.todo, known)
        gone = [path for path in known
                if path not in found.seen and not found.errors.protects(path) and not os.path.exists(path)]
        if self.options.prune and gone:
            self.collection.delete([point_id(p) for p in gone])
            self._counts["removed"] += len(gone)
            self._emit(IngestEvent("removed", n=len(gone)))

    def _stored_under(self, root: Path) -> tuple[dict[str, dict[str, Any]], set[str]]:
        """The payloads stored under ``root`` by file path, and the paths whose stored vector is
        damaged (not finite, not unit length): those are embedded again like changed files."""
        known: dict[str, dict[str, Any]] = {}
        damaged: set[str] = set()
        dim = self.encoder.spec.dim
        page: list[tuple[str, Any]] = []

        def check_page() -> None:  # one numpy pass per page: a rescan of 10k points stays a stat walk
            bad = damaged_rows([v for _, v in page], dim)
            damaged.update(path for (path, _), b in zip(page, bad, strict=True) if b)
            page.clear()

        # Vectors are read (10k of them cost a rescan ~0.3 s) only from a store that is not as its
        # last clean close left it: a run was killed, or its files changed from outside.
        verify = not self.collection.trusted
        for point in self.collection.scroll(filter=Filter(under=(str(root),)), with_vectors=verify):
            path = file_path(point.payload)
            if root.is_file() and path != str(root):
                continue
            known[path] = point.payload
            if verify:
                self._verified += 1
                page.append((path, point.vector))
                if len(page) >= 1024:
                    check_page()
        check_page()
        return known, damaged

    def _scan(self, root: Path, known: dict[str, dict[str, Any]], damaged: set[str]) -> _Scan:
        found = _Scan(errors=WalkErrors(report=self._skip))
        for info in scan(root, include_hidden=self.options.include_hidden, errors=found.errors):
            self._counts["scanned"] += 1
            found.seen.add(info.path)
            old = known.get(info.path)
            if old is not None and info.path not in damaged and old.get("size") == info.size \
                    and old.get("mtime_ns") == info.mtime_ns:
                self._counts["unchanged"] += 1
                if self.tags is not None and old.get(TAGS_KEY) != self.tags.key:
                    found.stale.append(info.path)
            else:
                found.todo.append(info)
        return found

    # -- new and changed files ------------------------------------------------------------------

    def _embedder(self) -> Embedding:
        opts = self.options
        if self._embedding is not None:
            return self._embedding(opts, self._stored_copy, self._emit)
        return BatchEmbedder(
            self.encoder.image_side(), batch_size=opts.batch_size, workers=opts.workers or None,
            max_megapixels=opts.max_megapixels, gpu_decode=opts.gpu_decode, lookup=self._stored_copy,
            before_first_batch=self._load_model,
        )

    def _embed(self, todo: list[FileInfo], known: dict[str, dict[str, Any]]) -> None:
        opts = self.options
        embedder = self._embedder()
        writer = Writer(self.collection, self._lock, lambda n: self._emit(IngestEvent("done", n=n)),
                        flush_every=opts.flush_every)
        try:
            for outcome in embedder.run(todo, lambda info: info.path):
                if isinstance(outcome, Skipped):
                    self._skip(outcome.job.path, outcome.reason)
                elif isinstance(outcome, Batch):
                    vectors = np.stack([item.vector for item in outcome.items])
                    tags = self._tag_payloads(vectors)
                    points = []
                    for item, extra in zip(outcome.items, tags, strict=True):
                        self._count_change(item.job, known, reused=False)
                        points.append(self._point(item.job, item.sha256 or "", item.decoded, item.vector, extra))
                    writer.put(points)
                elif isinstance(outcome, Known):  # same bytes already stored: a move or a copy
                    source: Point = outcome.found
                    payload = image_payload(outcome.job.path, size=outcome.job.size, mtime_ns=outcome.job.mtime_ns,
                                            sha256=outcome.sha256, width=source.payload.get("width"),
                                            height=source.payload.get("height"),
                                            taken_at=source.payload.get("taken_at"))
                    self._count_change(outcome.job, known, reused=True)
                    writer.put([Point(point_id(outcome.job.path), source.vector, {**source.payload, **payload})])
                elif isinstance(outcome, Copy):  # same bytes as an image embedded in this run
                    self._count_change(outcome.job, known, reused=True)
                    extra = self._tag_payloads(outcome.of.vector[None])[0]
                    writer.put([self._point(outcome.job, outcome.sha256, outcome.of.decoded, outcome.of.vector, extra)])
        finally:
            writer.close()  # also on Ctrl-C: what was embedded is stored before the run ends

    def _point(self, info: FileInfo, sha: str, decoded: Decoded, vector: NDArray[np.float32],
               extra: dict[str, Any]) -> Point:
        payload = image_payload(info.path, size=info.size, mtime_ns=info.mtime_ns, sha256=sha,
                                width=decoded.width, height=decoded.height, taken_at=decoded.taken_at)
        return Point(point_id(info.path), vector, {**payload, **extra})

    def _stored_copy(self, sha: str) -> Point | None:
        """A stored point with this content, with its vector, or None (on worker threads)."""
        with self._lock:
            for point in self.collection.scroll(filter=Filter(sha256=sha), with_vectors=True, batch=4):
                if sound_vector(point.vector, self.encoder.spec.dim):
                    return point
        return None

    def _load_model(self) -> None:
        # The model loads (seconds) only when a decoded image is about to be embedded: a
        # re-scan of an unchanged library, or one whose only news is unreadable files, stays
        # a stat walk.
        self._emit(IngestEvent("loading", reason=self.encoder.first_use_note()))
        self.encoder.warm_up()
        self._emit(IngestEvent("loaded"))

    def _count_change(self, info: FileInfo, known: dict[str, Any], *, reused: bool) -> None:
        if reused:
            self._counts["reused"] += 1
        if info.path in known:
            self._counts["updated"] += 1
        elif not reused:
            self._counts["added"] += 1

    def _skip(self, path: str, reason: str) -> None:
        self._counts["skipped"] += 1
        self._emit(IngestEvent("skipped", path=shown(path), reason=reason))

    # -- tags -----------------------------------------------------------------------------------

    def _tag_payloads(self, vectors: NDArray[np.float32]) -> list[dict[str, Any]]:
        if self.tags is None:
            return [{} for _ in vectors]
        return [{"tags": ids, TAGS_KEY: self.tags.key} for ids in self.tags.top_ids(vectors)]

    def _refresh_tags(self, paths: list[str]) -> None:
        """Recompute the tags of unchanged images from their stored vectors: no decoding."""
        step = max(self.options.batch_size, 64)
        for i in range(0, len(paths), step):
            points = [p for p in self.collection.retrieve([point_id(x) for x in paths[i : i + step]], with_vectors=True)
                      if p.vector is not None]
            if points:
                extras = self._tag_payloads(np.stack([p.vector for p in points]))
                self.collection.upsert([Point(p.id, p.vector, {**p.payload, **extra})
                                        for p, extra in zip(points, extras, strict=True)])
