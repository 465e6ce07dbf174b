"""EdgeStore: the embedded Qdrant engine (qdrant-edge-py), in-process, no server.

Layout: ``root/xlir.lock`` (one process at a time, see lock.py) and one Edge shard directory
per collection, ``root/collections/<name>/``. A shard has one named vector, called after
the model, with the model's dimension and cosine distance.

When to build HNSW. Edge builds it only in a blocking ``optimize()``; until then a query
scans every vector. Measured on this project's 2-core dev box, 512-d, limit 10, p50:
    brute force: 10k points 1.1 ms, 20k 4.8 ms, 50k 9.2 ms
    HNSW:        10k 0.9 ms,        20k 1.9 ms, 50k 2.1 ms
    optimize():  10k 3.3 s,         20k 10.7 s, 50k 50 s (and it re-merges what was indexed)
Below ~20k points an exact scan takes a few milliseconds, well under what encoding the
query costs, while building the graph blocks for seconds to minutes; so we optimize only
once 20k points are outside the HNSW index.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import qdrant_edge as qe
from numpy.typing import NDArray

from ..errors import BadQuery, ConfigError, EmptyIndex, ModelMismatch, StoreLocked, StoreUnavailable
from ..records import Filter, ModelSpec, Point, ScoredPoint
from . import mismatch_message, missing_message
from .base import INDEXED_KEYWORDS, ClosesOnExit, CollectionInfo, as_floats, point_floats
from .lock import DirLock, locked_message

OPTIMIZE_AFTER = 20_000  # points outside the HNSW index before optimize() pays off (see above)
_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_CONFIG_FILE = "edge_config.json"  # where Edge persists a shard's config; it has no getter


class EdgeStore(ClosesOnExit):
    """Collections as Edge shards under ``root``; holds ``root/xlir.lock`` until close()."""

    thread_safe = False  # one shard object: callers take turns
    write_streams = 1

    def __init__(
        self, root: Path, *, purpose: str | None = None, optimize_after: int = OPTIMIZE_AFTER
    ) -> None:
        self.root = Path(root).expanduser().absolute()
        self.location = str(self.root)
        self._optimize_after = optimize_after
        try:
            (self.root / "collections").mkdir(parents=True, exist_ok=True)
            self._lock: DirLock | None = DirLock(self.root, purpose)
        except OSError as exc:  # not a directory, read-only, no permission
            raise StoreUnavailable(
                f"cannot open store {self.root}: {exc.strerror or exc}; "
                f"use --store to pick another directory"
            ) from exc
        self._shard: qe.EdgeShard | None = None
        self._name = ""
        self._vector = ""

    # -- lifecycle ------------------------------------------------------------------------

    def vectors(self, name: str) -> dict[str, int]:
        return _read_vectors(self._collection_dir(name))

    def ensure_collection(self, name: str, spec: ModelSpec, *, create: bool = True) -> None:
        path = self._collection_dir(name)
        existing = _read_vectors(path)
        if existing and existing != {spec.vector_name: spec.dim}:
            raise ModelMismatch(mismatch_message(name, existing, spec))
        if not existing and not create:
            raise EmptyIndex(missing_message(name, self.location))
        if self._shard is not None and self._name == name:
            return  # already open for this model (checked above)
        self._close_shard()
        config = _edge_config(spec, self._optimize_after)
        try:
            # Loading with our config re-checks compatibility and records the current
            # optimizer policy; create() refuses a directory that already holds segments.
            if existing:
                shard = qe.EdgeShard.load(str(path), config)
            else:
                shard = qe.EdgeShard.create(str(path), config)
        except Exception as exc:  # Edge raises bare Exception; its text says which case
            raise self._translate(exc, name, spec) from exc
        indexed = set(shard.info().payload_schema)
        for field in INDEXED_KEYWORDS:
            if field not in indexed:
                keyword = qe.PayloadSchemaType.Keyword
                shard.update(qe.UpdateOperation.create_field_index(field, keyword))
        self._shard, self._name, self._vector = shard, name, spec.vector_name

    def close(self) -> None:
        self._close_shard()
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def collections(self) -> list[CollectionInfo]:
        infos = []
        for path in sorted((self.root / "collections").iterdir()):
            vectors = _read_vectors(path)
            if len(vectors) != 1:  # not a shard, or not one xlir made
                continue
            (model, dim), = vectors.items()
            info = self._shard_info(path)
            infos.append(CollectionInfo(path.name, model, dim, info.points_count,
                                        info.indexed_vectors_count))
        return infos

    # -- writes -------------------------------------------------------------------------

    def upsert(self, points: Sequence[Point]) -> None:
        if not points:
            return
        batch = [
            qe.Point(p.id, {self._vector: point_floats(p)}, dict(p.payload)) for p in points
        ]
        self._open().update(qe.UpdateOperation.upsert_points(batch))

    def delete(self, ids: Sequence[str]) -> None:
        if ids:
            self._open().update(qe.UpdateOperation.delete_points(list(ids)))

    def delete_where(self, filter: Filter) -> None:
        if filter.is_empty():  # an empty filter matches everything; never what a caller means
            raise ValueError("delete_where needs a non-empty filter")
        self._open().update(qe.UpdateOperation.delete_points_by_filter(_conditions(filter)))

    # -- reads --------------------------------------------------------------------------

    def query(
        self, vector: NDArray[np.float32], *, limit: int, filter: Filter | None = None,
        min_score: float | None = None,
    ) -> list[ScoredPoint]:
        if limit <= 0:
            return []
        request = qe.QueryRequest(
            limit=limit,
            query=qe.Query.Nearest(as_floats(vector), using=self._vector),
            filter=_edge_filter(filter),
            score_threshold=min_score,
            with_payload=True,
        )
        return [
            ScoredPoint(str(hit.id), float(hit.score), hit.payload or {})
            for hit in self._open().query(request)
        ]

    def recommend(
        self, positive: Sequence[NDArray[np.float32]], negative: Sequence[NDArray[np.float32]],
        *, limit: int, filter: Filter | None = None, min_score: float | None = None,
    ) -> list[ScoredPoint]:
        return self.query(
            average_vector(positive, negative), limit=limit, filter=filter, min_score=min_score
        )

    def retrieve(self, ids: Sequence[str], *, with_vectors: bool = False) -> list[Point]:
        if not ids:
            return []
        records = self._open().retrieve(
            list(ids), with_payload=True, with_vector=[self._vector] if with_vectors else False
        )
        found = {str(r.id): self._point(r, with_vectors) for r in records}
        return [found[i] for i in ids if i in found]  # the caller's order, missing ids skipped

    def scroll(
        self, *, filter: Filter | None = None, with_vectors: bool = False, batch: int = 512
    ) -> Iterator[Point]:
        offset: Any = None
        while True:
            records, offset = self._open().scroll(qe.ScrollRequest(
                offset=offset, limit=batch, filter=_edge_filter(filter), with_payload=True,
                with_vector=[self._vector] if with_vectors else False,
            ))
            for record in records:
                yield self._point(record, with_vectors)
            if offset is None:
                return

    def count(self, filter: Filter | None = None) -> int:
        return int(self._open().count(qe.CountRequest(exact=True, filter=_edge_filter(filter))))

    # -- indexing -----------------------------------------------------------------------

    def needs_optimize(self) -> bool:
        # Deleted points still count as indexed until a vacuum, so after heavy deletes this
        # undercounts the new points; the next large batch still trips it.
        info = self._open().info()
        return info.points_count - info.indexed_vectors_count >= self._optimize_after

    def optimize(self) -> None:
        self._open().optimize()

    # -- helpers ------------------------------------------------------------------------

    def _open(self) -> qe.EdgeShard:
        if self._shard is None:
            raise RuntimeError("EdgeStore: call ensure_collection() first (or the store is closed)")
        return self._shard

    def _close_shard(self) -> None:
        if self._shard is not None:
            shard, self._shard = self._shard, None
            shard.flush()
            shard.close()

    def _collection_dir(self, name: str) -> Path:
        if not _SAFE_NAME.fullmatch(name):
            raise ConfigError(
                f"collection name {name!r} is not usable; use letters, digits, '_', '-' and '.'"
            )
        return self.root / "collections" / name

    def _shard_info(self, path: Path) -> Any:
        if self._shard is not None and path.name == self._name:
            return self._shard.info()
        try:
            shard = qe.EdgeShard.load(str(path))
        except Exception as exc:
            raise StoreUnavailable(
                f"cannot read collection {path.name!r} in store {self.root}: {exc}; "
                f"remove {path} or use --store to pick another directory"
            ) from exc
        try:
            return shard.info()
        finally:
            shard.close()

    def _point(self, record: Any, with_vectors: bool) -> Point:
        vector = None
        if with_vectors and record.vector:
            vector = np.asarray(record.vector[self._vector], dtype=np.float32)
        return Point(str(record.id), vector, record.payload or {})

    def _translate(self, exc: Exception, name: str, spec: ModelSpec) -> Exception:
        text = str(exc)
        if "WouldBlock" in text:  # Edge's WAL lock: a process that skipped our lock file
            return StoreLocked(locked_message(self.root, None, None))
        if "incompatible" in text.lower():
            vectors = _read_vectors(self._collection_dir(name))
            return ModelMismatch(mismatch_message(name, vectors, spec))
        return StoreUnavailable(
            f"cannot open collection {name!r} in store {self.root}: {text}; "
            f"use --store to pick another directory"
        )


def average_vector(
    positive: Sequence[NDArray[np.float32]], negative: Sequence[NDArray[np.float32]]
) -> NDArray[np.float32]:
    """Qdrant's average_vector recommend strategy: avg(pos) + (avg(pos) - avg(neg)).

    Edge 0.9 offers only the best_score and sum_scores strategies, so the query vector is
    built here and searched as a plain nearest query; with cosine distance that gives the
    same ranking and scores as the server's average_vector strategy.
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


def _edge_config(spec: ModelSpec, optimize_after: int) -> qe.EdgeConfig:
    # Edge indexes a segment only once its vectors exceed indexing_threshold (KB). Half of
    # our point threshold in bytes, so an optimize() that needs_optimize() asked for always
    # indexes the new points, whatever the model's dimension.
    threshold_kb = max(1, optimize_after * spec.dim * 4 // 1024 // 2)
    return qe.EdgeConfig(
        vectors={spec.vector_name: qe.EdgeVectorParams(size=spec.dim, distance=qe.Distance.Cosine)},
        optimizers=qe.EdgeOptimizersConfig(indexing_threshold=threshold_kb),
    )


def _read_vectors(path: Path) -> dict[str, int]:
    """The shard's dense vectors as {name: dim}; {} when ``path`` holds no shard."""
    try:
        data = json.loads((path / _CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    vectors = data.get("vectors") or {}
    return {name: int(params["size"]) for name, params in vectors.items()}


def _edge_filter(filter: Filter | None) -> qe.Filter | None:
    return None if filter is None or filter.is_empty() else _conditions(filter)


def _conditions(filter: Filter) -> qe.Filter:
    must: list[Any] = []
    # dirs lists every ancestor directory, so "/a/photos" never matches a sibling "/a/photos2"
    if filter.under:  # a folder (any ancestor) or the file itself
        under = list(filter.under)
        must.append(qe.Filter(should=[qe.FieldCondition("dirs", match=qe.MatchAny(under)),
                                      qe.FieldCondition("path", match=qe.MatchAny(under))]))
    if filter.paths:
        must.append(qe.FieldCondition("path", match=qe.MatchAny(list(filter.paths))))
    if filter.sha256:
        must.append(qe.FieldCondition("sha256", match=qe.MatchValue(filter.sha256)))
    if filter.tags:
        must.append(qe.FieldCondition("tags", match=qe.MatchAny(list(filter.tags))))
    return qe.Filter(must=must)
