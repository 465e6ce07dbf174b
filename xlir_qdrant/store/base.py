"""The store seam. Every implementation passes the same test suite (tests/test_store.py).

A collection holds one model's vectors: its single named vector is called after the model
(``ModelSpec.vector_name``) and has the model's dimension, so the collection itself records
which model built it. Opening it for another model raises ModelMismatch.

Payload of each point (one point per image, id = uuid5 of the absolute path):
    path (keyword, indexed), dirs (keyword array of every ancestor directory, indexed; this
    is how "under this folder" filters work on any backend), size (int), mtime_ns (int),
    sha256 (keyword, indexed), width, height (int), taken_at (ISO-8601 string or null).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, Self

import numpy as np
from numpy.typing import NDArray

from ..records import ModelSpec
from ..records import Filter, Point, ScoredPoint

INDEXED_KEYWORDS = ("path", "dirs", "sha256", "tags")


@dataclass(frozen=True, slots=True)
class CollectionInfo:
    name: str
    model: str  # the vector name, i.e. ModelSpec.vector_name of the model that built it
    dim: int
    points: int
    indexed_vectors: int | None = None  # HNSW-indexed points, where the backend tells


class ClosesOnExit:
    """``with store:`` closes it on the way out (both backends)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()  # type: ignore[attr-defined]


class Store(Protocol):
    """A Qdrant collection holding one model's image vectors."""

    location: str  # a directory or a URL, for `xlir info`
    thread_safe: bool  # calls may overlap from several threads (else the caller serialises them)
    write_streams: int  # concurrent upserts worth running during ingest

    def ensure_collection(self, name: str, spec: ModelSpec, *, create: bool = True) -> None:
        """Open (or create when ``create``) collection ``name`` for ``spec``.

        Raises ModelMismatch when the collection holds another model's vectors or dimension,
        EmptyIndex when it does not exist and ``create`` is false.
        """

    def collections(self) -> list[CollectionInfo]:
        """Every xlir collection with its point counts (opens each one: for `xlir info`)."""

    def vectors(self, name: str) -> dict[str, int]:
        """Collection ``name``'s vectors as {vector name: dim}, {} if it does not exist.

        Cheap (no collection is opened), so callers can learn which model built an index
        before deciding how to open it.
        """

    def upsert(self, points: Sequence[Point]) -> None: ...

    def query(
        self, vector: NDArray[np.float32], *, limit: int, filter: Filter | None = None,
        min_score: float | None = None,
    ) -> list[ScoredPoint]: ...

    def recommend(
        self, positive: Sequence[NDArray[np.float32]], negative: Sequence[NDArray[np.float32]],
        *, limit: int, filter: Filter | None = None, min_score: float | None = None,
    ) -> list[ScoredPoint]:
        """Qdrant's recommend query (average-vector strategy) over raw vectors."""

    def retrieve(self, ids: Sequence[str], *, with_vectors: bool = False) -> list[Point]: ...

    def scroll(
        self, *, filter: Filter | None = None, with_vectors: bool = False, batch: int = 512
    ) -> Iterator[Point]: ...

    def count(self, filter: Filter | None = None) -> int: ...

    def delete(self, ids: Sequence[str]) -> None: ...

    def delete_where(self, filter: Filter) -> None: ...

    def needs_optimize(self) -> bool:
        """True when enough points are not in the HNSW index that optimize() pays off."""

    def optimize(self) -> None:
        """Build indexes now (blocking). A no-op where the backend does it by itself."""

    def close(self) -> None: ...


def as_floats(vector: NDArray[np.float32]) -> list[float]:
    """A vector as the flat list of floats both Qdrant clients take."""
    return np.asarray(vector, dtype=np.float32).reshape(-1).tolist()


def point_floats(point: Point) -> list[float]:
    if point.vector is None:
        raise ValueError(f"point {point.id} has no vector to upsert")
    return as_floats(point.vector)
