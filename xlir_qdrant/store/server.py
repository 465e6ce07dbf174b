"""ServerStore: a Qdrant server or cluster through qdrant-client (and ":memory:" in tests).

The server builds its HNSW indexes in the background, so optimize() is a no-op here.
qdrant-client's local mode (":memory:" or a path) is an exact-search emulation meant for
tests; it ignores payload indexes and holds a file lock on its folder.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from qdrant_client import QdrantClient
from qdrant_client import models as qm

from ..errors import BadQuery, EmptyIndex, ModelMismatch, StoreLocked, StoreUnavailable
from ..records import Filter, ModelSpec, Point, ScoredPoint
from . import mismatch_message, missing_message
from .base import INDEXED_KEYWORDS, ClosesOnExit, CollectionInfo, as_floats, point_floats
from .lock import locked_message

_UPSERT_CHUNK = 256  # keeps one request well under the server's 32 MB body limit at 4096-d
UPLOAD_STREAMS = 4  # concurrent upserts to a server during ingest


class ServerStore(ClosesOnExit):
    """One collection (named as given) in the Qdrant that ``client`` talks to; owns ``client``."""

    def __init__(self, client: QdrantClient, *, location: str = "qdrant-client", remote: bool = False) -> None:
        self.client = client
        self.location = location
        # A server takes concurrent requests (ingest uploads on several streams then);
        # qdrant-client's local mode is one in-process object and takes one call at a time.
        self.thread_safe = remote
        self.write_streams = UPLOAD_STREAMS if remote else 1
        self._name = ""
        self._vector = ""
        self._closed = False

    @classmethod
    def connect(cls, url: str, api_key: str | None = None, timeout: float = 10.0) -> ServerStore:
        """A store on the server at ``url``, checked now so a wrong URL fails before any work."""
        try:
            client = QdrantClient(
                url=url, api_key=api_key, timeout=max(1, math.ceil(timeout)),
                check_compatibility=False,  # it only warns; our probe below is the real check
            )
            client.get_collections()
        except Exception as exc:  # connection, TLS, HTTP status and URL errors all end here
            raise StoreUnavailable(
                f"cannot reach Qdrant at {url}: {_reason(exc)}; check --qdrant-url / "
                f"XLIR_QDRANT_URL or drop it to use the embedded store"
            ) from exc
        return cls(client, location=url, remote=True)

    @classmethod
    def local(cls, path: str | Path) -> ServerStore:
        """qdrant-client's local mode in folder ``path``, or in memory for ":memory:"."""
        if str(path) == ":memory:":
            return cls(QdrantClient(location=":memory:"), location=":memory:")
        try:
            client = QdrantClient(path=str(path))
        except RuntimeError as exc:
            if "already accessed" not in str(exc):
                raise
            raise StoreLocked(locked_message(path, None, None)) from exc
        return cls(client, location=str(path))

    # -- lifecycle ------------------------------------------------------------------------

    def vectors(self, name: str) -> dict[str, int]:
        return self._vectors(name) if self.client.collection_exists(name) else {}

    def ensure_collection(self, name: str, spec: ModelSpec, *, create: bool = True) -> None:
        if self.client.collection_exists(name):
            vectors = self._vectors(name)
            if vectors != {spec.vector_name: spec.dim}:
                raise ModelMismatch(mismatch_message(name, vectors, spec))
        elif not create:
            raise EmptyIndex(missing_message(name, self.location))
        else:
            self.client.create_collection(
                name,
                vectors_config={
                    spec.vector_name: qm.VectorParams(size=spec.dim, distance=qm.Distance.COSINE)
                },
            )
            with warnings.catch_warnings():
                # local mode warns that payload indexes do nothing there; a server uses them
                warnings.filterwarnings("ignore", message="Payload indexes have no effect")
                for field in INDEXED_KEYWORDS:
                    self.client.create_payload_index(name, field, qm.PayloadSchemaType.KEYWORD)
        self._name, self._vector = name, spec.vector_name

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.client.close()

    def collections(self) -> list[CollectionInfo]:
        infos = []
        for description in self.client.get_collections().collections:
            vectors = self._vectors(description.name)
            # A shared server holds other applications' collections; list only xlir-shaped ones.
            if len(vectors) != 1 or "" in vectors:
                continue
            (model, dim), = vectors.items()
            info = self.client.get_collection(description.name)
            infos.append(CollectionInfo(description.name, model, dim, info.points_count or 0,
                                        info.indexed_vectors_count))
        return sorted(infos, key=lambda i: i.name)

    # -- writes -------------------------------------------------------------------------

    def upsert(self, points: Sequence[Point]) -> None:
        name = self._open()
        for start in range(0, len(points), _UPSERT_CHUNK):
            chunk = points[start:start + _UPSERT_CHUNK]
            structs = [
                qm.PointStruct(id=p.id, vector={self._vector: point_floats(p)},
                               payload=dict(p.payload))
                for p in chunk
            ]
            self.client.upsert(name, points=structs, wait=True)

    def delete(self, ids: Sequence[str]) -> None:
        if ids:
            self.client.delete(self._open(), qm.PointIdsList(points=list(ids)), wait=True)

    def delete_where(self, filter: Filter) -> None:
        if filter.is_empty():  # an empty filter matches everything; never what a caller means
            raise ValueError("delete_where needs a non-empty filter")
        selector = qm.FilterSelector(filter=_conditions(filter))
        self.client.delete(self._open(), selector, wait=True)

    # -- reads --------------------------------------------------------------------------

    def query(
        self, vector: NDArray[np.float32], *, limit: int, filter: Filter | None = None,
        min_score: float | None = None,
    ) -> list[ScoredPoint]:
        return self._query(as_floats(vector), limit, filter, min_score)

    def recommend(
        self, positive: Sequence[NDArray[np.float32]], negative: Sequence[NDArray[np.float32]],
        *, limit: int, filter: Filter | None = None, min_score: float | None = None,
    ) -> list[ScoredPoint]:
        if len(positive) == 0:
            raise BadQuery("a recommend query needs at least one positive example")
        recommend = qm.RecommendQuery(recommend=qm.RecommendInput(
            positive=[as_floats(v) for v in positive],
            negative=[as_floats(v) for v in negative],
            strategy=qm.RecommendStrategy.AVERAGE_VECTOR,
        ))
        return self._query(recommend, limit, filter, min_score)

    def retrieve(self, ids: Sequence[str], *, with_vectors: bool = False) -> list[Point]:
        if not ids:
            return []
        records = self.client.retrieve(
            self._open(), list(ids), with_payload=True,
            with_vectors=[self._vector] if with_vectors else False,
        )
        found = {str(r.id): self._point(r, with_vectors) for r in records}
        return [found[i] for i in ids if i in found]  # the caller's order, missing ids skipped

    def scroll(
        self, *, filter: Filter | None = None, with_vectors: bool = False, batch: int = 512
    ) -> Iterator[Point]:
        offset: Any = None
        while True:
            records, offset = self.client.scroll(
                self._open(), scroll_filter=_qdrant_filter(filter), limit=batch, offset=offset,
                with_payload=True, with_vectors=[self._vector] if with_vectors else False,
            )
            for record in records:
                yield self._point(record, with_vectors)
            if offset is None:
                return

    def count(self, filter: Filter | None = None) -> int:
        result = self.client.count(self._open(), count_filter=_qdrant_filter(filter), exact=True)
        return result.count

    # -- indexing -----------------------------------------------------------------------

    def needs_optimize(self) -> bool:
        return False  # the server indexes in the background; local mode has no index at all

    def optimize(self) -> None:
        return None

    # -- helpers ------------------------------------------------------------------------

    def _open(self) -> str:
        if self._closed or not self._name:
            raise RuntimeError("ServerStore: call ensure_collection() first (or it is closed)")
        return self._name

    def _query(
        self, query: Any, limit: int, filter: Filter | None, min_score: float | None
    ) -> list[ScoredPoint]:
        if limit <= 0:
            return []
        response = self.client.query_points(
            self._open(), query=query, using=self._vector, query_filter=_qdrant_filter(filter),
            limit=limit, score_threshold=min_score, with_payload=True,
        )
        return [ScoredPoint(str(p.id), float(p.score), p.payload or {}) for p in response.points]

    def _vectors(self, name: str) -> dict[str, int]:
        vectors = self.client.get_collection(name).config.params.vectors
        if isinstance(vectors, qm.VectorParams):
            return {"": vectors.size}
        return {key: params.size for key, params in (vectors or {}).items()}

    def _point(self, record: Any, with_vectors: bool) -> Point:
        vector = None
        if with_vectors and isinstance(record.vector, dict) and self._vector in record.vector:
            vector = np.asarray(record.vector[self._vector], dtype=np.float32)
        return Point(str(record.id), vector, record.payload or {})


def _qdrant_filter(filter: Filter | None) -> qm.Filter | None:
    return None if filter is None or filter.is_empty() else _conditions(filter)


def _conditions(filter: Filter) -> qm.Filter:
    must: list[qm.Condition] = []
    # dirs lists every ancestor directory, so "/a/photos" never matches a sibling "/a/photos2"
    if filter.under:  # a folder (any ancestor) or the file itself
        under = list(filter.under)
        must.append(qm.Filter(should=[qm.FieldCondition(key="dirs", match=qm.MatchAny(any=under)),
                                      qm.FieldCondition(key="path", match=qm.MatchAny(any=under))]))
    if filter.paths:
        must.append(qm.FieldCondition(key="path", match=qm.MatchAny(any=list(filter.paths))))
    if filter.sha256:
        must.append(qm.FieldCondition(key="sha256", match=qm.MatchValue(value=filter.sha256)))
    if filter.tags:
        must.append(qm.FieldCondition(key="tags", match=qm.MatchAny(any=list(filter.tags))))
    return qm.Filter(must=must)


def _reason(exc: BaseException) -> str:
    """The innermost cause, e.g. "[Errno 111] Connection refused", without the wrapping."""
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    text = " ".join(str(exc).split())
    return text or type(exc).__name__
