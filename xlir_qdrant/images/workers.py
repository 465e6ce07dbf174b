"""An ordered map on a thread pool with bounded look-ahead, shared by ingest and training.

Decoding releases the GIL inside Pillow, so threads overlap it with the model; the look-ahead
bound keeps a 100k-image folder from ever sitting decoded in memory at once.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def default_workers() -> int:
    """Decode threads when not told: one per core, at most 8 (past that the model is the limit)."""
    return max(1, min(8, os.cpu_count() or 1))


def bounded_map(fn: Callable[[T], R], items: Iterable[T], workers: int, *, lookahead: int,
                name: str = "xlir-worker") -> Iterator[tuple[T, R | BaseException]]:
    """(item, result or exception) in input order, at most ``lookahead`` items in flight.

    Exceptions come back as values so one bad file cannot stop the run.
    """
    pending: deque[tuple[T, Future[R]]] = deque()
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix=name) as pool:
        try:
            for item in items:
                pending.append((item, pool.submit(fn, item)))
                if len(pending) >= lookahead:
                    yield _settle(*pending.popleft())
            while pending:
                yield _settle(*pending.popleft())
        finally:
            for _, fut in pending:  # an abandoned run (Ctrl-C) stops queued work
                fut.cancel()


def _settle(item: T, future: Future[R]) -> tuple[T, R | BaseException]:
    try:
        return item, future.result()
    except Exception as exc:  # noqa: BLE001 - reported per item by the caller
        return item, exc
