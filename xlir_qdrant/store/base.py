"""The store seam. Every backend passes the same test suite (tests/test_store.py).

A Store is one Qdrant (an embedded directory or a server); ``store.collection(name, spec)``
gives a handle bound to one collection, through which everything else happens. A collection
holds one model's vectors: its single named vector is called after the model
(``ModelSpec.vector_name``) and has the model's dimension, so the collection itself records
which model built it, and opening it for another model raises ModelMismatch. The payload is
described in schema.py.

CollectionBase holds what both backends share (result order, paging, the recommend vector,
the payload filter); a backend supplies the few calls its client spells differently.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, Self

import numpy as np
from numpy.typing import NDArray

from ..errors import BadQuery
from ..records import CollectionInfo, CollectionOptions, Filter, ModelSpec, Point, ScoredPoint
from .schema import TEXT_KEY, shown


class Collection(Protocol):
    """One collection of one store, holding one model's image vectors."""

    name: str
    location: str  # the store's directory or URL, for messages
    thread_safe: bool  # calls may overlap from several threads (else the caller serialises them)
    write_streams: int  # concurrent upserts worth running during ingest
    trusted: bool  # its files are as the last clean close left them (else callers verify vectors)

    def upsert(self, points: Sequence[Point]) -> None: ...

    def query(self, vector: NDArray[np.float32], *, limit: int, filter: Filter | None = None,
              min_score: float | None = None) -> list[ScoredPoint]: ...

    def recommend(self, positive: Sequence[NDArray[np.float32]], negative: Sequence[NDArray[np.float32]],
                  *, limit: int, filter: Filter | None = None, min_score: float | None = None) -> list[ScoredPoint]:
        """Qdrant's recommend query (average-vector strategy) over raw vectors."""

    def retrieve(self, ids: Sequence[str], *, with_vectors: bool = False) -> list[Point]: ...

    def scroll(self, *, filter: Filter | None = None, with_vectors: bool = False,
               batch: int = 512) -> Iterator[Point]: ...

    def count(self, filter: Filter | None = None) -> int: ...

    def delete(self, ids: Sequence[str]) -> None: ...

    def delete_where(self, filter: Filter) -> None: ...

    def needs_optimize(self) -> bool:
        """True when enough points are not in the HNSW index that optimize() pays off."""

    def optimize(self) -> None:
        """Build indexes now (blocking). A no-op where the backend does it by itself."""

    def flush(self) -> None:
        """Make everything written so far durable (the embedded engine msyncs and fsyncs)."""

    def mark_verified(self) -> None:
        """Every vector was read and found sound: the collection is ``trusted`` from now on."""


class Store(Protocol):
    """A Qdrant: the embedded engine in a directory, or a server."""

    kind: str  # "embedded (Qdrant Edge)" or "qdrant-server", for `xlir info`
    location: str  # a directory or a URL

    def vectors(self, name: str) -> dict[str, int]:
        """Collection ``name``'s vectors as {vector name: dim}, {} if it does not exist.

        Cheap (no collection is opened), so callers can learn which model built an index
        before deciding how to open it.
        """

    def collection(self, name: str, spec: ModelSpec, *, create: bool = False,
                   options: CollectionOptions | None = None) -> Collection:
        """A handle on collection ``name`` for ``spec`` (made first when ``create``, laid out for
        ``options`` by layout.plan; an existing collection keeps its layout).

        Raises ModelMismatch when the collection holds another model's vectors or dimension,
        EmptyIndex when it does not exist and ``create`` is false.
        """

    def collections(self) -> list[CollectionInfo]:
        """Every xlir collection with its point counts (opens each one: for `xlir info`)."""

    def disk_bytes(self) -> int | None:
        """What the collections take on this machine's disk (None for a server, whose disk is
        its own)."""

    def damage(self, name: str) -> str:
        """Why collection ``name`` cannot be opened safely, or "" when it can."""

    def set_aside(self, name: str, part: str = "") -> Path:
        """Move a damaged collection (or one part of it, e.g. "wal") aside; nothing is deleted."""

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc: object) -> None: ...


class ClosesOnExit:
    """``with store:`` closes it on the way out (both backends)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()  # type: ignore[attr-defined]


class CollectionBase:
    """The shared half of a collection handle; subclasses implement the ``_`` calls."""

    thread_safe = False
    write_streams = 1
    trusted = True

    def mark_verified(self) -> None:
        self.trusted = True

    def __init__(self, name: str, vector: str, location: str) -> None:
        self.name = name
        self.location = location
        self._vector = vector  # the named vector this collection holds

    # -- reads ------------------------------------------------------------------------------

    def query(self, vector: NDArray[np.float32], *, limit: int, filter: Filter | None = None,
              min_score: float | None = None) -> list[ScoredPoint]:
        if limit <= 0:
            return []
        return self._nearest(as_floats(vector), limit, self._filter(filter), min_score)

    def recommend(self, positive: Sequence[NDArray[np.float32]], negative: Sequence[NDArray[np.float32]],
                  *, limit: int, filter: Filter | None = None, min_score: float | None = None) -> list[ScoredPoint]:
        return self.query(average_vector(positive, negative), limit=limit, filter=filter, min_score=min_score)

    def retrieve(self, ids: Sequence[str], *, with_vectors: bool = False) -> list[Point]:
        if not ids:
            return []
        found = {p.id: p for p in self._fetch(list(ids), with_vectors)}
        return [found[i] for i in ids if i in found]  # the caller's order, missing ids skipped

    def scroll(self, *, filter: Filter | None = None, with_vectors: bool = False,
               batch: int = 512) -> Iterator[Point]:
        offset: Any = None
        flt = self._filter(filter)
        while True:
            points, offset = self._page(flt, offset, batch, with_vectors)
            yield from points
            if offset is None:
                return

    def count(self, filter: Filter | None = None) -> int:
        return self._count(self._filter(filter))

    # -- writes -----------------------------------------------------------------------------

    def delete_where(self, filter: Filter) -> None:
        if filter.is_empty():  # an empty filter matches everything; never what a caller means
            raise ValueError("delete_where needs a non-empty filter")
        self._delete_matching(self._filter(filter))

    # -- the payload filter, built from each client's own condition types -------------------

    def _filter(self, filter: Filter | None) -> Any:
        if filter is None or filter.is_empty():
            return None
        must: list[Any] = []
        # dirs lists every ancestor directory, so "/a/photos" never matches a sibling "/a/photos2"
        if filter.under:  # a folder (any ancestor) or the file itself, as the payload spells it
            under = [shown(u) for u in filter.under]
            must.append(self._any_of([self._match_any("dirs", under), self._match_any("path", under)]))
        if filter.sha256:
            must.append(self._match_value("sha256", filter.sha256))
        if filter.tags:
            must.append(self._match_any("tags", list(filter.tags)))
        if filter.text:
            must.append(self._match_text(TEXT_KEY, filter.text))
        if filter.after or filter.before:
            # A photo's date is its EXIF taken_at, else its file's mtime (what Hit.date shows):
            # the range on taken_at, or no taken_at and the range on mtime_ns.
            after, before = filter.after, filter.before
            must.append(self._any_of([
                self._datetime_range("taken_at", wall_clock(after), wall_clock(before)),
                self._all_of([self._is_empty("taken_at"),
                              self._number_range("mtime_ns", epoch_ns(after), epoch_ns(before))]),
            ]))
        return self._all_of(must)

    def _point(self, point_id: Any, payload: dict[str, Any] | None, vectors: Any) -> Point:
        vector = None
        if vectors and not isinstance(vectors, list) and self._vector in vectors:
            vector = np.asarray(vectors[self._vector], dtype=np.float32)
        return Point(str(point_id), vector, payload or {})

    # -- what each backend supplies ---------------------------------------------------------

    def _nearest(self, vector: list[float], limit: int, flt: Any, min_score: float | None) -> list[ScoredPoint]:
        raise NotImplementedError

    def _fetch(self, ids: list[str], with_vectors: bool) -> list[Point]:
        raise NotImplementedError

    def _page(self, flt: Any, offset: Any, limit: int, with_vectors: bool) -> tuple[list[Point], Any]:
        raise NotImplementedError

    def _count(self, flt: Any) -> int:
        raise NotImplementedError

    def _delete_matching(self, flt: Any) -> None:
        raise NotImplementedError

    def _match_any(self, key: str, values: list[str]) -> Any:
        raise NotImplementedError

    def _match_value(self, key: str, value: str) -> Any:
        raise NotImplementedError

    def _match_text(self, key: str, text: str) -> Any:
        raise NotImplementedError

    def _any_of(self, conditions: list[Any]) -> Any:
        raise NotImplementedError

    def _all_of(self, conditions: list[Any]) -> Any:
        raise NotImplementedError

    def _datetime_range(self, key: str, gte: str | None, lt: str | None) -> Any:
        """``gte <= key < lt`` on an ISO-8601 payload field (either bound may be None)."""
        raise NotImplementedError

    def _number_range(self, key: str, gte: float | None, lt: float | None) -> Any:
        raise NotImplementedError

    def _is_empty(self, key: str) -> Any:
        """The field is missing, null or an empty list."""
        raise NotImplementedError


def wall_clock(when: datetime | None) -> str | None:
    """A bound for taken_at, which is EXIF's wall-clock time with no zone: compared as such."""
    if when is None:
        return None
    if when.tzinfo is not None:
        when = when.astimezone().replace(tzinfo=None)  # the same instant on this machine's clock
    return when.isoformat(timespec="seconds")


def epoch_ns(when: datetime | None) -> float | None:
    """A bound for mtime_ns: a naive time is this machine's local time, as Hit.date shows it."""
    return None if when is None else when.astimezone().timestamp() * 1e9



class Serialised:
    """A collection that takes one call at a time, for a backend that does not (the embedded
    engine): each call holds ``lock`` for its own length only, so an index run's upserts and
    other threads' searches interleave between calls. A scroll holds it per page.
    """

    thread_safe = True

    def __init__(self, inner: Collection, lock: Any = None) -> None:
        self._inner = inner
        self._lock = lock if lock is not None else threading.RLock()
        self.name = inner.name
        self.location = inner.location
        self.write_streams = inner.write_streams

    @property
    def trusted(self) -> bool:
        return self._inner.trusted

    def upsert(self, points: Sequence[Point]) -> None:
        with self._lock:
            self._inner.upsert(points)

    def query(self, vector: NDArray[np.float32], *, limit: int, filter: Filter | None = None,
              min_score: float | None = None) -> list[ScoredPoint]:
        with self._lock:
            return self._inner.query(vector, limit=limit, filter=filter, min_score=min_score)

    def recommend(self, positive: Sequence[NDArray[np.float32]], negative: Sequence[NDArray[np.float32]],
                  *, limit: int, filter: Filter | None = None, min_score: float | None = None) -> list[ScoredPoint]:
        with self._lock:
            return self._inner.recommend(positive, negative, limit=limit, filter=filter, min_score=min_score)

    def retrieve(self, ids: Sequence[str], *, with_vectors: bool = False) -> list[Point]:
        with self._lock:
            return self._inner.retrieve(ids, with_vectors=with_vectors)

    def scroll(self, *, filter: Filter | None = None, with_vectors: bool = False,
               batch: int = 512) -> Iterator[Point]:
        pages = self._inner.scroll(filter=filter, with_vectors=with_vectors, batch=batch)
        while True:
            with self._lock:  # the inner scroll reads a page of ``batch`` points when it runs dry
                chunk = [p for _, p in zip(range(batch), pages)]
            yield from chunk
            if len(chunk) < batch:
                return

    def count(self, filter: Filter | None = None) -> int:
        with self._lock:
            return self._inner.count(filter)

    def delete(self, ids: Sequence[str]) -> None:
        with self._lock:
            self._inner.delete(ids)

    def delete_where(self, filter: Filter) -> None:
        with self._lock:
            self._inner.delete_where(filter)

    def needs_optimize(self) -> bool:
        with self._lock:
            return self._inner.needs_optimize()

    def optimize(self) -> None:
        with self._lock:
            self._inner.optimize()

    def flush(self) -> None:
        with self._lock:
            self._inner.flush()

    def mark_verified(self) -> None:
        with self._lock:
            self._inner.mark_verified()


def average_vector(positive: Sequence[NDArray[np.float32]],
                   negative: Sequence[NDArray[np.float32]]) -> NDArray[np.float32]:
    """Qdrant's average_vector recommend strategy: avg(pos) + (avg(pos) - avg(neg)).

    Built here and searched as a plain nearest query on both backends (Edge 0.9 offers only
    the best_score and sum_scores strategies): with cosine distance that gives the same
    ranking and scores as a server's average_vector strategy.
    """
    if len(positive) == 0:
        raise BadQuery("a recommend query needs at least one positive example")
    query = np.mean(np.asarray(positive, dtype=np.float32), axis=0)
    if len(negative):
        query = 2 * query - np.mean(np.asarray(negative, dtype=np.float32), axis=0)
    norm = float(np.linalg.norm(query))
    if norm < 1e-12:  # negatives cancel the positives: no direction left to search
        raise BadQuery("the negative examples cancel the positive ones; drop a negative")
    return (query / norm).astype(np.float32)


def as_floats(vector: NDArray[np.float32]) -> list[float]:
    """A vector as the flat list of floats both Qdrant clients take."""
    return np.asarray(vector, dtype=np.float32).reshape(-1).tolist()


def point_floats(point: Point) -> list[float]:
    if point.vector is None:
        raise ValueError(f"point {point.id} has no vector to upsert")
    return as_floats(point.vector)


def mismatch_message(collection: str, vectors: dict[str, int], spec: ModelSpec) -> str:
    """ModelMismatch text; ``vectors`` maps the collection's vector names to dimensions."""
    if len(vectors) != 1:
        found = ", ".join(f"{name or '<unnamed>'} ({dim}-d)" for name, dim in vectors.items())
        return (
            f"collection {collection!r} was not made by xlir (vectors: {found or 'none'}); "
            f"use --collection NEW to index with {spec.id} ({spec.dim}-d)"
        )
    (model, dim), = vectors.items()
    return (
        f"collection {collection!r} was built with model {model} ({dim}-d); "
        f"search it with --model {model}, or use --collection NEW to index with "
        f"{spec.id} ({spec.dim}-d)"
    )


def missing_message(collection: str, location: str) -> str:
    """EmptyIndex text for a collection that does not exist yet."""
    return f"no index yet at {location} (collection {collection!r}): run `xlir index PATH` first"
