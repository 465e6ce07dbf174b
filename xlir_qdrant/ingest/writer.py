"""Upserts on background threads, so the model never waits for the store.

Durability: a batch the progress bar counts has been handed to the store; the writer flushes
the store (msync + fsync on the embedded engine) at least every FLUSH_SECONDS and when the run
ends, so a power cut loses at most the last FLUSH_SECONDS of work, and a killed process loses
nothing it stored (the page cache outlives it). bench/ingest.py measures what flushing costs.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

from ..records import Point
from ..store import Collection

# Batches that queued up while the store was busy are sent together, up to this many points
# (Qdrant suggests 64-256 per request to a server; the embedded engine upserts ~8k points/s
# whatever the batch, so there it makes no difference).
UPSERT_POINTS = 256
FLUSH_SECONDS = 5.0


def store_lock(collection: Collection) -> AbstractContextManager[object]:
    """What the writer threads and their caller hold around each call to ``collection``: nothing
    when it takes calls from many threads at once, else one lock."""
    return nullcontext() if collection.thread_safe else threading.Lock()


class Writer:
    """Points are queued in batches (at most two per stream wait); a collection with several
    ``write_streams`` (a Qdrant server) gets that many concurrent uploads. A failed upsert
    stops the run at the next put() or at close(), with the store's own error.
    """

    def __init__(self, collection: Collection, lock: AbstractContextManager[object],
                 stored: Callable[[int], None], *, flush_every: float = FLUSH_SECONDS) -> None:
        streams = max(1, collection.write_streams)
        self._collection, self._lock, self._stored = collection, lock, stored
        self._flush_every = flush_every
        self._flushed = time.monotonic()
        self._queue: queue.Queue[list[Point] | None] = queue.Queue(maxsize=2 * streams)
        self._error: BaseException | None = None
        self._threads = [threading.Thread(target=self._run, name=f"xlir-upsert-{i}", daemon=True)
                         for i in range(streams)]
        for thread in self._threads:
            thread.start()

    def put(self, points: list[Point]) -> None:
        self._check()
        if points:
            self._queue.put(points)

    def close(self) -> None:
        """Write what is queued, then stop (also on Ctrl-C: what was embedded is kept)."""
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join()
        self._check()
        with self._lock:
            self._collection.flush()

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
                        self._collection.upsert(points)
                        if time.monotonic() - self._flushed >= self._flush_every:
                            self._collection.flush()
                            self._flushed = time.monotonic()
                    self._stored(len(points))
                except BaseException as exc:  # noqa: BLE001 - handed to the main thread
                    self._error = exc
            if last:
                return

    def _check(self) -> None:
        if self._error is not None:
            raise self._error
