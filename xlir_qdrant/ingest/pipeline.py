"""scan -> decide (stat, hash) -> decode on worker threads -> embed in batches -> upsert.

Incremental by construction: a file whose size and mtime match its stored point is skipped
without being opened; a new or changed file is hashed, and if another point already holds the
same content (a move or a copy) its vector is reused instead of decoding; points of files that
vanished from a scanned root are deleted at the end, and only when that root was walked fully.
Each batch is upserted as soon as it is embedded (on a writer thread, so the model does not
wait), and an interrupted run stores what it embedded before it stops.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..encoders.base import Encoder, PixelSpec, embed_batch
from ..errors import XlirError
from ..records import Filter, IngestReport, Point
from ..store.base import Store
from . import device as on_device
from .decode import DEFAULT_MAX_MEGAPIXELS, DecodeError, Decoded, decode, decode_side, probe, sha256_file
from .scan import FileInfo, ancestors, scan
from .workers import bounded_map, default_workers

POINT_NAMESPACE = uuid.NAMESPACE_URL


def point_id(path: str) -> str:
    return str(uuid.uuid5(POINT_NAMESPACE, os.path.abspath(path)))


@dataclass(frozen=True, slots=True)
class Event:
    """Progress for the CLI: kind is 'found' (n files to embed), 'loading'/'loaded' (the model,
    only when something needs embedding; reason says when it is prepared, not just loaded),
    'done' (n embedded or reused), 'skipped' (path, reason), 'removed' (n), 'optimizing',
    'optimized'."""

    kind: str
    n: int = 0
    path: str = ""
    reason: str = ""


@dataclass
class IngestOptions:
    batch_size: int = 32
    workers: int = field(default_factory=default_workers)
    include_hidden: bool = False
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS
    prune: bool = True  # delete points of files that vanished from a scanned root
    optimize: bool = True
    # Decode JPEGs on the encoder's device (nvjpeg): None means exactly when it is a CUDA GPU.
    device_decode: bool | None = None


Progress = Callable[[Event], None]
# Extra payload per embedded image, computed from its vector (e.g. the image's tags). Its
# dicts carry ANNOTATION_KEY: an unchanged file whose stored key differs (an index made before
# tagging existed, or with another vocabulary) is re-annotated from its stored vector.
Annotate = Callable[[np.ndarray], list[dict[str, Any]]]
ANNOTATION_KEY = "annotation"


def _payload(info: FileInfo, sha: str, width: int, height: int, taken_at: str | None) -> dict[str, Any]:
    return {
        "path": info.path,
        "dirs": ancestors(info.path),
        "size": info.size,
        "mtime_ns": info.mtime_ns,
        "sha256": sha,
        "width": width,
        "height": height,
        "taken_at": taken_at,
    }


def ingest(
    roots: Sequence[Path],
    encoder: Encoder,
    store: Store,
    options: IngestOptions | None = None,
    progress: Progress | None = None,
    annotate: Annotate | None = None,
    annotation: str | None = None,
) -> IngestReport:
    """Index ``roots`` incrementally; ``annotation`` identifies what ``annotate`` computes."""
    opts = options or IngestOptions()
    emit = progress or (lambda _e: None)
    model_ready = False

    def ensure_model() -> None:
        # The model loads (seconds) only when a decoded image is about to be embedded: a
        # re-scan of an unchanged library, or one whose only news is unreadable files, stays
        # a stat walk.
        nonlocal model_ready
        if not model_ready:
            emit(Event("loading", reason=getattr(encoder, "first_use_note", str)()))
            getattr(encoder, "warm_up", lambda: None)()
            model_ready = True
            emit(Event("loaded"))
    start = time.perf_counter()
    counts = dict(scanned=0, added=0, updated=0, unchanged=0, reused=0, removed=0, failed=0)

    def skip(path: str, reason: str) -> None:
        counts["failed"] += 1
        emit(Event("skipped", path=path, reason=reason))

    for root in roots:
        root = Path(os.path.abspath(root))
        if not root.exists():
            # Never prune on a missing root: an unmounted drive must not empty the index.
            skip(str(root), "no such file or folder")
            continue
        known = {p.payload["path"]: p.payload for p in store.scroll(filter=Filter(under=(str(root),)))}
        if root.is_file():
            known = {k: v for k, v in known.items() if k == str(root)}
        walk_errors: list[str] = []

        def walk_error(path: str, reason: str) -> None:
            walk_errors.append(path)
            skip(path, f"cannot read folder: {reason}")

        seen: set[str] = set()
        todo: list[FileInfo] = []
        stale: list[str] = []
        for info in scan(root, include_hidden=opts.include_hidden, on_error=walk_error):
            counts["scanned"] += 1
            seen.add(info.path)
            old = known.get(info.path)
            if old is not None and old.get("size") == info.size and old.get("mtime_ns") == info.mtime_ns:
                counts["unchanged"] += 1
                if annotate is not None and old.get(ANNOTATION_KEY) != annotation:
                    stale.append(info.path)
            else:
                todo.append(info)
        emit(Event("found", n=len(todo)))
        if stale:
            _reannotate(stale, store, annotate, opts.batch_size)
        if todo:
            _embed_and_store(todo, known, encoder, store, opts, emit, skip, counts, annotate, ensure_model)

        gone = [path for path in known if path not in seen and not os.path.exists(path)]
        if opts.prune and gone and not walk_errors:
            store.delete([point_id(p) for p in gone])
            counts["removed"] += len(gone)
            emit(Event("removed", n=len(gone)))

    if opts.optimize and store.needs_optimize():
        emit(Event("optimizing"))
        store.optimize()
        emit(Event("optimized"))
    return IngestReport(**counts, seconds=time.perf_counter() - start)


def _embed_and_store(
    todo: list[FileInfo],
    known: dict[str, dict[str, Any]],
    encoder: Encoder,
    store: Store,
    opts: IngestOptions,
    emit: Progress,
    skip: Callable[[str, str], None],
    counts: dict[str, int],
    annotate: Annotate | None,
    ensure_model: Callable[[], None],
) -> None:
    min_side = decode_side(encoder)
    preprocess = getattr(encoder, "preprocess", None)
    # Workers look up hashes while the writer upserts: one at a time, unless the store (a
    # Qdrant server over HTTP) takes concurrent calls.
    store_lock: Any = contextlib.nullcontext() if getattr(store, "thread_safe", False) else threading.Lock()
    spec = _device_spec(encoder, opts)
    writer = _Writer(store, store_lock, emit, streams=getattr(store, "write_streams", 1))

    def prepare(info: FileInfo) -> tuple[FileInfo, str, Decoded | None, Any, Point | None]:
        if spec is not None:  # read once: the bytes are hashed here and decoded on the GPU
            data = Path(info.path).read_bytes()
            sha = hashlib.sha256(data).hexdigest()
        else:
            sha = sha256_file(info.path)
        with store_lock:
            source = _stored_with_hash(sha, store)
        if source is not None:
            return info, sha, None, None, source
        if spec is not None:
            head = probe(data, max_megapixels=opts.max_megapixels)
            if head.format == "JPEG":
                raw = on_device.raw_jpeg(data, head.orientation, str(encoder.device))
                return info, sha, Decoded(None, head.width, head.height, head.taken_at), raw, None
        decoded = decode(info.path, min_side=min_side, max_megapixels=opts.max_megapixels)
        # Preprocessing on the worker keeps the main thread free for the model.
        pixels = preprocess(decoded.image) if preprocess is not None else None
        return info, sha, decoded, pixels, None

    lookahead = max(2 * opts.batch_size, 8)
    batch: list[tuple[FileInfo, str, Decoded, Any]] = []
    # Copies within one run: a worker's store lookup cannot see an image still in flight, so
    # the main thread remembers the images of the open batch and of the last `lookahead`
    # embedded ones (bounded), and copies of those reuse the vector instead of the model.
    waiting: dict[str, list[FileInfo]] = {}
    recent: OrderedDict[str, Point] = OrderedDict()

    def reuse(info: FileInfo, sha: str, source: Point) -> None:
        counts["reused"] += 1
        _count_change(info, known, counts, reused=True)
        payload = _payload(info, sha, source.payload.get("width"), source.payload.get("height"),
                           source.payload.get("taken_at"))
        writer.put([Point(point_id(info.path), source.vector, {**source.payload, **payload})])

    def flush() -> None:
        ensure_model()
        if spec is not None:
            kept, pixels, failed = _device_pixels(batch, encoder, spec, min_side, opts.max_megapixels)
            for (info, sha, _, _), reason in failed:
                for path in [info.path, *(c.path for c in waiting.pop(sha, []))]:
                    skip(path, reason)
            batch[:] = kept
            vectors = encoder.embed_pixels(pixels) if batch else None
        else:
            vectors = _embed(batch, encoder)
        stored = _points(batch, vectors, known, counts, annotate) if batch else []
        writer.put(stored)
        for (_, sha, _, _), point in zip(batch, stored, strict=True):
            recent[sha] = point
            for copy in waiting.pop(sha, []):
                reuse(copy, sha, point)
        while len(recent) > lookahead:
            recent.popitem(last=False)
        batch.clear()

    try:
        for info, result in bounded_map(prepare, todo, opts.workers, lookahead=lookahead, name="xlir-decode"):
            if isinstance(result, BaseException):
                reason = str(result) if isinstance(result, DecodeError) else _reason(result)
                skip(info.path, reason)
                continue
            info, sha, decoded, pixels, source = result
            source = source or recent.get(sha)
            if source is not None:  # same bytes already stored (a move or a copy): no model run
                reuse(info, sha, source)
            elif sha in waiting:  # same bytes as an image in the open batch
                waiting[sha].append(info)
            else:
                waiting[sha] = []
                batch.append((info, sha, decoded, pixels))
                if len(batch) >= opts.batch_size:
                    flush()
        if batch:
            flush()
    finally:
        writer.close()  # also on Ctrl-C: what was embedded is stored before the run ends


# Batches that queued up while the store was busy are sent together, up to this many points
# (Qdrant suggests 64-256 per request to a server; the embedded engine upserts ~8k points/s
# whatever the batch, so there it makes no difference).
UPSERT_POINTS = 256


class _Writer:
    """Upserts on background threads, so the model never waits for the store.

    Points are queued in batches (at most two per stream wait); a store with several
    ``write_streams`` (a Qdrant server) gets that many concurrent uploads. A failed upsert
    stops the run at the next put() or at close(), with the store's own error.
    """

    def __init__(self, store: Store, lock: Any, emit: Progress, *, streams: int = 1) -> None:
        self._store, self._lock, self._emit = store, lock, emit
        self._queue: queue.Queue[list[Point] | None] = queue.Queue(maxsize=2 * max(1, streams))
        self._error: BaseException | None = None
        self._threads = [threading.Thread(target=self._run, name=f"xlir-upsert-{i}", daemon=True)
                         for i in range(max(1, streams))]
        for thread in self._threads:
            thread.start()

    def put(self, points: list[Point]) -> None:
        self._check()
        if points:
            self._queue.put(points)

    def close(self) -> None:
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join()
        self._check()

    def _run(self) -> None:
        while (points := self._queue.get()) is not None:
            last = False
            while len(points) < UPSERT_POINTS:  # batches that waited go up as one request
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:  # this stream's end: write what it holds, then stop
                    last = True
                    break
                points = points + more
            if self._error is None:  # else drain: the run is stopping
                try:
                    with self._lock:
                        self._store.upsert(points)
                    self._emit(Event("done", n=len(points)))
                except BaseException as exc:  # noqa: BLE001 - handed to the main thread
                    self._error = exc
            if last:
                return

    def _check(self) -> None:
        if self._error is not None:
            raise self._error


def _reannotate(paths: list[str], store: Store, annotate: Annotate, batch: int) -> None:
    """Refresh the annotations of unchanged images from their stored vectors: no decoding."""
    for i in range(0, len(paths), max(batch, 64)):
        points = [p for p in store.retrieve([point_id(x) for x in paths[i : i + max(batch, 64)]], with_vectors=True)
                  if p.vector is not None]
        if points:
            extras = annotate(np.stack([p.vector for p in points]))
            store.upsert([Point(p.id, p.vector, {**p.payload, **extra}) for p, extra in zip(points, extras, strict=True)])


def _stored_with_hash(sha: str, store: Store) -> Point | None:
    """A stored point with this content, with its vector, or None."""
    for point in store.scroll(filter=Filter(sha256=sha), with_vectors=True, batch=1):
        if point.vector is not None:
            return point
    return None


def _device_spec(encoder: Encoder, opts: IngestOptions) -> PixelSpec | None:
    """The encoder's preprocessing when JPEGs are to be decoded on its device, else None."""
    if opts.device_decode is False or not hasattr(encoder, "embed_pixels"):
        return None
    if opts.device_decode is None and not str(encoder.device).startswith("cuda"):
        return None
    return on_device.pixel_spec(encoder)


def _device_pixels(batch: list, encoder: Encoder, spec: PixelSpec, min_side: int,
                   max_megapixels: float) -> tuple[list, Any, list]:
    """Decode a batch's JPEGs on the device; a file nvjpeg refuses is decoded on the CPU.

    Returns the entries that have pixels, their (n, 3, S, S) batch on the device, and
    (entry, reason) for files no decoder could read.
    """
    device = str(encoder.device)
    raw_at = [i for i, b in enumerate(batch) if isinstance(b[3], on_device.RawJpeg)]
    images = on_device.decode_jpegs([batch[i][3] for i in raw_at], device)
    good = [i for i, im in zip(raw_at, images, strict=True) if im is not None]
    resized = on_device.to_pixels([im for im in images if im is not None], spec, device) if good else None
    row = {i: k for k, i in enumerate(good)}
    kept, parts, failed = [], [], []
    for i, entry in enumerate(batch):
        info, sha, decoded, pixels = entry
        if i in row:
            parts.append(resized[row[i] : row[i] + 1])
        elif isinstance(pixels, on_device.RawJpeg):
            try:
                decoded = decode(info.path, min_side=min_side, max_megapixels=max_megapixels)
            except DecodeError as exc:
                failed.append((entry, str(exc)))
                continue
            parts.append(encoder.preprocess(decoded.image))
            entry = (info, sha, decoded, None)
        else:
            parts.append(pixels)
        kept.append(entry)
    return kept, on_device.stack_pixels(parts, device), failed


def _embed(batch: list, encoder: Encoder) -> np.ndarray:
    pixels = [b[3] for b in batch]
    if all(p is not None for p in pixels) and hasattr(encoder, "embed_pixels"):
        return embed_batch(encoder, pixels, pixels=True)
    return embed_batch(encoder, [b[2].image for b in batch], pixels=False)


def _points(batch: list, vectors: np.ndarray, known: dict[str, Any], counts: dict[str, int],
            annotate: Annotate | None) -> list[Point]:
    """The points of one embedded batch (in batch order), counted as added or updated."""
    extras = annotate(vectors) if annotate is not None else [{} for _ in batch]
    points = []
    for (info, sha, decoded, _), vec, extra in zip(batch, vectors, extras, strict=True):
        _count_change(info, known, counts, reused=False)
        payload = _payload(info, sha, decoded.width, decoded.height, decoded.taken_at)
        points.append(Point(point_id(info.path), vec, {**payload, **extra}))
    return points


def _count_change(info: FileInfo, known: dict[str, Any], counts: dict[str, int], *, reused: bool) -> None:
    if info.path in known:
        counts["updated"] += 1
    elif not reused:
        counts["added"] += 1


def _reason(exc: BaseException) -> str:
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    if isinstance(exc, XlirError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
