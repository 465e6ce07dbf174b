"""Copy one collection between two Qdrants: `xlir push` (the embedded engine to a server or
cluster) and `xlir pull` (back), or any store to any other.

The source is scrolled in id order with vectors and payload, and upserted into the destination
in batches, on as many concurrent streams as the destination takes (ingest's writer). The
destination collection is made for the same model, the same named vector with the same
dimension, so the binding travels with the points; one made for another model is refused
(ModelMismatch). No model is loaded: a copy needs only the vector's name and width.

Resumable: upserts carry the points' ids, so repeating one is harmless. Before sending a batch
the destination is asked which of its ids it already holds, and those with the same payload are
skipped, so a copy that was interrupted (Ctrl-C, a lost connection) is simply run again and
sends only what is missing. At the end the destination's points are counted: fewer than the
source's is an error that says to run it again; more means it held other points already (a copy
never deletes).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from .encoders.registry import spec_for_vector
from .errors import EmptyIndex, ModelMismatch, TransferIncomplete
from .ingest.writer import Writer, store_lock
from .records import CollectionOptions, ModelSpec, Point, TransferEvent, TransferReport
from .store import Collection, Store
from .store.base import missing_message

TransferProgress = Callable[[TransferEvent], None]
BATCH = 256  # points per request: Qdrant's advice for upserts to a server


def bound_spec(store: Store, name: str) -> ModelSpec:
    """The model collection ``name`` is bound to: the registered spec of its vector, else a
    stand-in with the same vector name and dimension (a checkpoint's, say), which is all a
    copy needs."""
    vectors = store.vectors(name)
    if not vectors:
        raise EmptyIndex(missing_message(name, store.location))
    if len(vectors) != 1 or "" in vectors:
        found = ", ".join(f"{v or '<unnamed>'} ({d}-d)" for v, d in vectors.items())
        raise ModelMismatch(f"collection {name!r} at {store.location} was not made by xlir (vectors: {found}); "
                            f"xlir copies only its own collections")
    (vector, dim), = vectors.items()
    known = spec_for_vector(vector)
    return known if known is not None and known.dim == dim else _stand_in(vector, dim)


def _stand_in(vector: str, dim: int) -> ModelSpec:
    return ModelSpec(id=vector, family="copy", dim=dim, languages=(), licence="", size_mb=0, bundled=False,
                     needs_lang=False)


def transfer(source: Collection, destination: Store, *, name: str, spec: ModelSpec,
             options: CollectionOptions | None = None, progress: TransferProgress | None = None,
             batch: int = BATCH) -> TransferReport:
    """Copy every point of ``source`` into collection ``name`` of ``destination`` (made for
    ``spec`` and laid out for the source's size unless ``options`` say otherwise)."""
    return _Copy(source, destination, name, spec, options, progress or (lambda _e: None), batch).run()


class _Copy:
    """One copy: its two collections, its writer, and what it has counted so far."""

    def __init__(self, source: Collection, destination: Store, name: str, spec: ModelSpec,
                 options: CollectionOptions | None, emit: TransferProgress, batch: int) -> None:
        self.source, self.destination, self.name, self.spec = source, destination, name, spec
        self.options, self.emit, self.batch = options or CollectionOptions(), emit, max(1, batch)
        self.copied = self.present = 0
        self._counting = threading.Lock()  # the writer's streams report on their own threads

    def run(self) -> TransferReport:
        start = time.perf_counter()
        total = self.source.count()
        if self.options.expected_points is None:
            self.options = replace(self.options, expected_points=total)
        try:
            dest = self.destination.collection(self.name, self.spec, create=True, options=self.options)
        except ModelMismatch:
            found = ", ".join(f"{v} ({d}-d)" for v, d in self.destination.vectors(self.name).items())
            raise ModelMismatch(
                f"{self.destination.location} already has a collection {self.name!r}, made for {found}; this index "
                f"is {self.spec.vector_name} ({self.spec.dim}-d): copy it under another name with "
                f"--remote-collection NAME") from None
        self.emit(TransferEvent("total", n=total))
        lock = store_lock(dest)
        writer = Writer(dest, lock, self._stored)
        try:
            page: list[Point] = []
            for point in self.source.scroll(with_vectors=True, batch=self.batch):
                page.append(point)
                if len(page) >= self.batch:
                    self._send(page, dest, lock, writer)
                    page = []
            self._send(page, dest, lock, writer)
        finally:
            writer.close()  # also on Ctrl-C: what was handed over is written; the rerun skips it
        if dest.needs_optimize():
            self.emit(TransferEvent("optimizing"))
            dest.optimize()
            self.emit(TransferEvent("optimized"))
        self.emit(TransferEvent("verifying"))
        held = dest.count()
        if held < total:
            raise TransferIncomplete(
                f"{dest.location} holds {held} of the {total} points of collection {self.name!r} after the copy; "
                f"run the same command again: it sends only the missing ones")
        return TransferReport(source=self.source.location, destination=dest.location, collection=self.name,
                              model=self.spec.vector_name, points=total, copied=self.copied, present=self.present,
                              destination_points=held, seconds=time.perf_counter() - start)

    def _send(self, page: list[Point], dest: Collection, lock: Any, writer: Writer) -> None:
        if not page:
            return
        with lock:
            held = {p.id: p.payload for p in dest.retrieve([p.id for p in page])}
        todo = [p for p in page if held.get(p.id) != p.payload]
        if len(todo) < len(page):
            self.present += len(page) - len(todo)
            self.emit(TransferEvent("present", n=len(page) - len(todo)))
        writer.put(todo)

    def _stored(self, n: int) -> None:
        with self._counting:
            self.copied += n
        self.emit(TransferEvent("copied", n=n))
