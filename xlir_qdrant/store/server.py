"""ServerStore: a Qdrant server or cluster through qdrant-client (and ":memory:" in tests).

The server builds its HNSW indexes in the background, so optimize() is a no-op here.
qdrant-client's local mode (":memory:" or a path) is an exact-search emulation meant for
tests; it ignores payload indexes and holds a file lock on its folder.

A server can fail after it answered once: a 5xx, a stalled response, a dropped connection.
Every call xlir makes is safe to repeat (upserts carry their ids, deletes name theirs, the rest
only read), so each is tried up to RETRIES times with a growing pause, and then fails with one
line that names the server, the operation and what to do. An upsert the server acknowledged is
stored; the next run skips it.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx
from qdrant_client import QdrantClient
from qdrant_client import models as qm
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from ..errors import EmptyIndex, ModelMismatch, StoreLocked, StoreUnavailable
from ..records import CollectionInfo, CollectionOptions, ModelSpec, Point, ScoredPoint
from .base import ClosesOnExit, CollectionBase, mismatch_message, missing_message, point_floats
from .layout import RESCORE_OVERSAMPLING, Layout, plan
from .lock import locked_message
from .schema import INDEXED_KEYWORDS, INDEXED_RANGES, TEXT_KEY

_UPSERT_CHUNK = 256  # keeps one request well under the server's 32 MB body limit at 4096-d
UPLOAD_STREAMS = 4  # concurrent upserts to a server during ingest
RETRIES = 4  # tries of one call before it fails
BACKOFF_S = 0.5  # the first pause between tries; it doubles each time
T = TypeVar("T")


class ServerStore(ClosesOnExit):
    """The Qdrant that ``client`` talks to; owns ``client``."""

    kind = "qdrant-server"

    def __init__(self, client: QdrantClient, *, location: str = "qdrant-client", remote: bool = False) -> None:
        self.client = client
        self.location = location
        # A server takes concurrent requests (ingest uploads on several streams then);
        # qdrant-client's local mode is one in-process object and takes one call at a time.
        self.remote = remote
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

    def vectors(self, name: str) -> dict[str, int]:
        return self._vectors(name) if self._exists(name) else {}

    def collection(self, name: str, spec: ModelSpec, *, create: bool = False,
                   options: CollectionOptions | None = None) -> ServerCollection:
        self._check_open()
        if self._exists(name):
            vectors = self._vectors(name)
            if vectors != {spec.vector_name: spec.dim}:
                raise ModelMismatch(mismatch_message(name, vectors, spec))
        elif not create:
            raise EmptyIndex(missing_message(name, self.location))
        else:
            self._create(name, spec, plan(options, nodes=self.nodes()))
        return ServerCollection(self, name, spec.vector_name)

    def nodes(self) -> int:
        """The peers of the cluster behind this server (1 for a single node or local mode)."""
        if not self.remote:
            return 1
        status = retrying(self.location, "read the cluster status", self.client.cluster_status)
        return max(1, len(getattr(status, "peers", None) or {}))

    def _create(self, name: str, spec: ModelSpec, layout: Layout) -> None:
        quantization = qm.ScalarQuantization(scalar=qm.ScalarQuantizationConfig(
            type=qm.ScalarType.INT8, quantile=0.99, always_ram=True)) if layout.quantized else None
        vectors = {spec.vector_name: qm.VectorParams(
            size=spec.dim, distance=qm.Distance.COSINE, on_disk=layout.on_disk or None,
            hnsw_config=qm.HnswConfigDiff(m=layout.hnsw_m, ef_construct=layout.hnsw_ef_construct),
            quantization_config=quantization)}
        retrying(self.location, "create the collection", lambda: self.client.create_collection(
            name, vectors_config=vectors, shard_number=layout.shards, replication_factor=layout.replicas,
            write_consistency_factor=layout.write_consistency, on_disk_payload=layout.on_disk or None))
        with warnings.catch_warnings():
            # local mode warns that payload indexes do nothing there; a server uses them
            warnings.filterwarnings("ignore", message="Payload indexes have no effect")
            for field in INDEXED_KEYWORDS:
                schema: Any = qm.KeywordIndexParams(type=qm.KeywordIndexType.KEYWORD, on_disk=True) \
                    if layout.index_on_disk(field) else qm.PayloadSchemaType.KEYWORD
                retrying(self.location, "index the payload", lambda f=field, k=schema: self.client.create_payload_index(
                    name, f, k, wait=True))
            for field, kind in INDEXED_RANGES.items():
                ranged = qm.PayloadSchemaType.DATETIME if kind == "datetime" else qm.PayloadSchemaType.INTEGER
                retrying(self.location, "index the payload", lambda f=field, k=ranged: self.client.create_payload_index(
                    name, f, k, wait=True))
            text = qm.TextIndexParams(type=qm.TextIndexType.TEXT, tokenizer=qm.TokenizerType.MULTILINGUAL,
                                      lowercase=True)
            retrying(self.location, "index the payload", lambda: self.client.create_payload_index(
                name, TEXT_KEY, text, wait=True))

    def disk_bytes(self) -> None:
        return None  # the server's disk is not this machine's

    def collections(self) -> list[CollectionInfo]:
        infos = []
        for description in retrying(self.location, "list collections", self.client.get_collections).collections:
            vectors = self._vectors(description.name)
            # A shared server holds other applications' collections; list only xlir-shaped ones.
            if len(vectors) != 1 or "" in vectors:
                continue
            (model, dim), = vectors.items()
            info = retrying(self.location, "describe a collection",
                            lambda n=description.name: self.client.get_collection(n))
            infos.append(CollectionInfo(description.name, model, dim, info.points_count or 0,
                                        info.indexed_vectors_count))
        return sorted(infos, key=lambda i: i.name)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.client.close()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("ServerStore is closed")

    def _exists(self, name: str) -> bool:
        return retrying(self.location, "look up the collection", lambda: self.client.collection_exists(name))

    def damage(self, name: str) -> str:
        return ""  # a server keeps its own storage sound

    def set_aside(self, name: str, part: str = "") -> Path:
        raise StoreUnavailable(f"a Qdrant server's collections are repaired on the server ({self.location}), "
                               f"not by xlir")

    def _vectors(self, name: str) -> dict[str, int]:
        vectors = retrying(self.location, "describe a collection",
                           lambda: self.client.get_collection(name)).config.params.vectors
        if isinstance(vectors, qm.VectorParams):
            return {"": vectors.size}
        return {key: params.size for key, params in (vectors or {}).items()}


class ServerCollection(CollectionBase):
    """One collection on the server, through its store's client."""

    def __init__(self, store: ServerStore, name: str, vector: str) -> None:
        super().__init__(name, vector, store.location)
        self._store = store
        self.thread_safe = store.remote
        self.write_streams = UPLOAD_STREAMS if store.remote else 1
        # local mode searches exactly and warns about search params it cannot use
        self._search_params = _RESCORED if store.remote else None

    @property
    def _client(self) -> QdrantClient:
        self._store._check_open()
        return self._store.client

    def _retry(self, what: str, call: Callable[[], T]) -> T:
        return retrying(self.location, what, call)

    def flush(self) -> None:
        return None  # an acknowledged write (wait=True) is in the server's own write-ahead log

    def upsert(self, points: Sequence[Point]) -> None:
        for start in range(0, len(points), _UPSERT_CHUNK):
            chunk = points[start:start + _UPSERT_CHUNK]
            structs = [qm.PointStruct(id=p.id, vector={self._vector: point_floats(p)}, payload=dict(p.payload))
                       for p in chunk]
            self._retry("store points", lambda s=structs: self._client.upsert(self.name, points=s, wait=True))

    def delete(self, ids: Sequence[str]) -> None:
        if ids:
            self._retry("delete points",
                        lambda: self._client.delete(self.name, qm.PointIdsList(points=list(ids)), wait=True))

    def needs_optimize(self) -> bool:
        return False  # the server indexes in the background; local mode has no index at all

    def optimize(self) -> None:
        return None

    # -- CollectionBase ---------------------------------------------------------------------

    def _nearest(self, vector: list[float], limit: int, flt: Any, min_score: float | None) -> list[ScoredPoint]:
        response = self._retry("search", lambda: self._client.query_points(
            self.name, query=vector, using=self._vector, query_filter=flt, limit=limit, score_threshold=min_score,
            with_payload=True, search_params=self._search_params))
        return [ScoredPoint(str(p.id), float(p.score), p.payload or {}) for p in response.points]

    def _fetch(self, ids: list[str], with_vectors: bool) -> list[Point]:
        records = self._retry("read points", lambda: self._client.retrieve(
            self.name, ids, with_payload=True, with_vectors=[self._vector] if with_vectors else False))
        return [self._point(r.id, r.payload, r.vector if with_vectors else None) for r in records]

    def _page(self, flt: Any, offset: Any, limit: int, with_vectors: bool) -> tuple[list[Point], Any]:
        records, offset = self._retry("read points", lambda: self._client.scroll(
            self.name, scroll_filter=flt, limit=limit, offset=offset, with_payload=True,
            with_vectors=[self._vector] if with_vectors else False))
        return [self._point(r.id, r.payload, r.vector if with_vectors else None) for r in records], offset

    def _count(self, flt: Any) -> int:
        return self._retry("count points", lambda: self._client.count(self.name, count_filter=flt, exact=True)).count

    def _delete_matching(self, flt: Any) -> None:
        self._retry("delete points", lambda: self._client.delete(self.name, qm.FilterSelector(filter=flt), wait=True))

    def _match_any(self, key: str, values: list[str]) -> Any:
        return qm.FieldCondition(key=key, match=qm.MatchAny(any=values))

    def _match_value(self, key: str, value: str) -> Any:
        return qm.FieldCondition(key=key, match=qm.MatchValue(value=value))

    def _match_text(self, key: str, text: str) -> Any:
        return qm.FieldCondition(key=key, match=qm.MatchText(text=text))

    def _any_of(self, conditions: list[Any]) -> Any:
        return qm.Filter(should=conditions)

    def _all_of(self, conditions: list[Any]) -> Any:
        return qm.Filter(must=conditions)

    def _datetime_range(self, key: str, gte: str | None, lt: str | None) -> Any:
        return qm.FieldCondition(key=key, range=qm.DatetimeRange(gte=gte, lt=lt))

    def _number_range(self, key: str, gte: float | None, lt: float | None) -> Any:
        return qm.FieldCondition(key=key, range=qm.Range(gte=gte, lt=lt))

    def _is_empty(self, key: str) -> Any:
        return qm.IsEmptyCondition(is_empty=qm.PayloadField(key=key))


# On a quantized collection the int8 candidates are rescored with the originals (a collection
# without quantization ignores this).
_RESCORED = qm.SearchParams(quantization=qm.QuantizationSearchParams(rescore=True, oversampling=RESCORE_OVERSAMPLING))


def retrying(url: str, what: str, call: Callable[[], T], *, tries: int = RETRIES, pause: float = BACKOFF_S) -> T:
    """``call()``, tried again after a transient failure (5xx, 429, timeout, dropped
    connection, garbled answer); a refusal (4xx) or the last failure becomes one line."""
    for attempt in range(1, tries + 1):
        try:
            return call()
        except (UnexpectedResponse, ResponseHandlingException, httpx.HTTPError, ValueError) as exc:
            status = getattr(exc, "status_code", None)
            if isinstance(exc, UnexpectedResponse) and status is not None and status < 500 and status != 429:
                raise StoreUnavailable(f"Qdrant at {url} refused to {what} (HTTP {status}: {_reason(exc)[:200]}); "
                                       f"check --qdrant-url, the API key and the collection") from None
            if attempt == tries:
                got = f"HTTP {status}" if status else _reason(exc)[:200]
                raise StoreUnavailable(f"Qdrant at {url} failed to {what} {tries} times ({got}); check that the "
                                       f"server is healthy, then run the same command again: what it stored is "
                                       f"kept and the run resumes") from None
            time.sleep(pause * 2 ** (attempt - 1))
    raise AssertionError("unreachable")


def _reason(exc: BaseException) -> str:
    """The innermost cause, e.g. "[Errno 111] Connection refused", without the wrapping."""
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    text = " ".join(str(exc).split())
    return text or type(exc).__name__
