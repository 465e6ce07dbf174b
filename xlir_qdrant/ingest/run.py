"""One index run: scan -> decide (stat, hash) -> embed in batches -> upsert.

Incremental by construction: a file whose size and mtime match its stored point is skipped
without being opened; a new or changed file is hashed, and if another point already holds the
same content (a move or a copy) its vector is reused instead of decoding; points of files that
vanished from a scanned root are deleted at the end, and only when that root was walked fully.
Each batch is upserted as soon as it is embedded (on a writer thread, so the model does not
wait), and an interrupted run stores what it embedded before it stops.

Every root is walked before anything is embedded (a stat walk: cheap), so the progress total
is known from the start, and each file found lands in exactly one of the report's counts:
new, changed, reused, unchanged or skipped.
"""

from __future__ import annotations

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
from ..errors import Cancelled
from ..images.batches import Batch, BatchEmbedder, Copy, Known, Outcome, Skipped
from ..images.decode import Decoded
from ..images.files import FileInfo, Kind, WalkErrors, scan
from ..images.ocr import TextReader
from ..records import Filter, IngestEvent, IngestReport, Point
from ..store import Collection
from ..store.schema import TEXT_KEY, damaged_rows, file_path, image_payload, point_id, shown, sound_vector
from .writer import FLUSH_SECONDS, Writer, store_lock

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
    read_text: bool = False  # read the text in each photo (OCR, images/ocr.py) into the payload


# (options, a lookup of stored points by content hash, progress) -> a run's embedding step
EmbeddingFactory = Callable[[IngestOptions, Callable[[str], Point | None], Progress], Embedding]


@dataclass
class _Scan:
    """What walking one root found."""

    known: dict[str, dict[str, Any]]  # stored payloads under the root, by path
    todo: list[FileInfo] = field(default_factory=list)  # new or changed: to hash and embed
    stale: list[str] = field(default_factory=list)  # unchanged, but their tags are out of date
    seen: set[str] = field(default_factory=set)
    errors: WalkErrors = field(default_factory=WalkErrors)  # what could not be read protects itself


class IngestRun:
    """Index some roots into one collection; ``run()`` returns the IngestReport."""

    def __init__(self, encoder: Encoder, collection: Collection, options: IngestOptions | None = None,
                 progress: Progress | None = None, tags: Tagging | None = None,
                 cancel: threading.Event | None = None, embedding: EmbeddingFactory | None = None) -> None:
        self.encoder = encoder
        # Everything but the embedding step runs here whatever ``embedding`` says (distributed.py).
        self._embedding = embedding
        self.collection = collection
        self.options = options or IngestOptions()
        self.tags = tags
        # Set by another thread to stop the run between two files or batches; what was embedded
        # until then is still stored (the writer drains on the way out).
        self._cancel = cancel or threading.Event()
        self._emit: Progress = progress or (lambda _e: None)
        self._counts: Counter[str] = Counter()  # IngestReport's fields, counted as the run goes
        # Workers look up hashes while the writer upserts: one call at a time, unless the
        # store (a Qdrant server over HTTP) takes concurrent calls.
        self._lock = store_lock(collection)

    def run(self, roots: Sequence[Path]) -> IngestReport:
        start = time.perf_counter()
        self._verified = 0  # points whose stored vectors were read and checked (damaged ones redone)
        self._planned: set[str] = set()  # files already taken by an earlier root (roots may overlap)
        self._unread: Counter[Kind] = Counter()  # files skipped as a kind xlir does not read
        self._removed: set[str] = set()
        scans = [found for root in roots if (found := self._walk(Path(os.path.abspath(root)))) is not None]
        for found in scans:
            self._unread.update(found.errors.unread)
        unread = sum(self._unread.values())
        self._counts["scanned"] += unread
        self._emit(IngestEvent("found", n=self._counts["scanned"]))
        if self._counts["unchanged"] + unread:
            self._emit(IngestEvent("passed", n=self._counts["unchanged"] + unread))
        self._report_unread()
        for found in scans:
            self._check_cancel()
            self._index_root(found)
        self._report_unread()
        if not self.collection.trusted and self._verified >= self.collection.count():
            self.collection.mark_verified()  # every point was checked: trusted from the next run
        if self.options.optimize and self.collection.needs_optimize():
            self._emit(IngestEvent("optimizing"))
            self.collection.optimize()
            self._emit(IngestEvent("optimized"))
        return IngestReport(**self._counts, seconds=time.perf_counter() - start)

    # -- one root -----------------------------------------------------------------------------

    def _walk(self, root: Path) -> _Scan | None:
        if not root.exists():
            # Never prune on a missing root: an unmounted drive must not empty the index.
            self._counts["missing"] += 1
            self._emit(IngestEvent("missing", path=shown(str(root)), reason="no such file or folder"))
            return None
        self._emit(IngestEvent("scanning", path=shown(str(root))))
        known, damaged = self._stored_under(root)
        return self._scan(root, known, damaged)

    def _index_root(self, found: _Scan) -> None:
        if found.stale:
            self._emit(IngestEvent("tagging", n=len(found.stale)))
            self._refresh_tags(found.stale)
        if found.todo:
            self._embed(found.todo, found.known)
        gone = [path for path in found.known if path not in found.seen and path not in self._removed
                and not found.errors.protects(path) and not os.path.exists(path)]
        if self.options.prune and gone:
            self._emit(IngestEvent("removing", n=len(gone)))
            self.collection.delete([point_id(p) for p in gone])
            self._removed.update(gone)
            self._counts["removed"] += len(gone)
            self._emit(IngestEvent("removed", n=len(gone)))

    def _report_unread(self) -> None:
        """One line per kind of file not read, with its count; each such file counts as skipped."""
        for kind, n in sorted(self._unread.items(), key=lambda item: item[0].name):
            self._counts["skipped"] += n
            self._emit(IngestEvent("unread", n=n, path=kind.name, reason=kind.reason))
        self._unread.clear()

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
        found = _Scan(known, errors=WalkErrors(report=self._skip_entry, report_folder=self._unreadable_folder))
        for info in scan(root, include_hidden=self.options.include_hidden, errors=found.errors):
            self._check_cancel()
            found.seen.add(info.path)
            if info.path in self._planned:
                continue
            self._planned.add(info.path)
            self._counts["scanned"] += 1
            old = known.get(info.path)
            if old is not None and info.path not in damaged and old.get("size") == info.size \
                    and old.get("mtime_ns") == info.mtime_ns and not self._needs_text(old):
                self._counts["unchanged"] += 1
                if self.tags is not None and old.get(TAGS_KEY) != self.tags.key:
                    found.stale.append(info.path)
            else:
                found.todo.append(info)
        return found

    def _needs_text(self, payload: dict[str, Any]) -> bool:
        """Asked to read text, and this point was stored without reading it: decoded again."""
        return self.options.read_text and TEXT_KEY not in payload

    # -- new and changed files ------------------------------------------------------------------

    def _embedder(self) -> Embedding:
        opts = self.options
        if self._embedding is not None:
            return self._embedding(opts, self._stored_copy, self._emit)
        return BatchEmbedder(
            self.encoder.image_side(), batch_size=opts.batch_size, workers=opts.workers or None,
            max_megapixels=opts.max_megapixels, gpu_decode=opts.gpu_decode, lookup=self._stored_copy,
            before_first_batch=self._load_model, read_text=TextReader().read if opts.read_text else None,
        )

    def _embed(self, todo: list[FileInfo], known: dict[str, dict[str, Any]]) -> None:
        opts = self.options
        embedder = self._embedder()
        writer = Writer(self.collection, self._lock, lambda n: self._emit(IngestEvent("done", n=n)),
                        flush_every=opts.flush_every)
        try:
            for outcome in embedder.run(todo, lambda info: info.path):
                self._check_cancel()
                if isinstance(outcome, Skipped) and outcome.kind is not None:
                    self._unread[outcome.kind] += 1
                    self._emit(IngestEvent("passed", n=1))
                elif isinstance(outcome, Skipped):
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
        if decoded.text is not None:
            payload[TEXT_KEY] = decoded.text
        return Point(point_id(info.path), vector, {**payload, **extra})

    def _stored_copy(self, sha: str) -> Point | None:
        """A stored point with this content, with its vector, or None (on worker threads)."""
        with self._lock:
            for point in self.collection.scroll(filter=Filter(sha256=sha), with_vectors=True, batch=4):
                if sound_vector(point.vector, self.encoder.spec.dim) and not self._needs_text(point.payload):
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
        # One count per file, so the report's counts add up to the files found.
        self._counts["reused" if reused else "updated" if info.path in known else "added"] += 1

    def _check_cancel(self) -> None:
        if self._cancel.is_set():
            raise Cancelled("the index run was stopped; everything it stored is kept, and the next run resumes")

    def _skip(self, path: str, reason: str) -> None:
        self._counts["skipped"] += 1
        self._emit(IngestEvent("skipped", path=shown(path), reason=reason))

    def _skip_entry(self, path: str, reason: str) -> None:
        """A walk's entry that could not be judged (stat failed, a broken link): a file found."""
        self._counts["scanned"] += 1
        self._skip(path, reason)

    def _unreadable_folder(self, path: str, reason: str) -> None:
        self._emit(IngestEvent("unreadable", path=shown(path), reason=reason))

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
