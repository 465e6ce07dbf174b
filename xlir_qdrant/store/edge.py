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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import qdrant_edge as qe

from ..errors import ConfigError, EmptyIndex, ModelMismatch, StoreLocked, StoreUnavailable
from ..records import CollectionInfo, ModelSpec, Point, ScoredPoint
from .base import ClosesOnExit, CollectionBase, mismatch_message, missing_message, point_floats
from .lock import DirLock, locked_message
from .schema import INDEXED_KEYWORDS

OPTIMIZE_AFTER = 20_000  # points outside the HNSW index before optimize() pays off (see above)
_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_CONFIG_FILE = "edge_config.json"  # where Edge persists a shard's config; it has no getter


class EdgeStore(ClosesOnExit):
    """Collections as Edge shards under ``root``; holds ``root/xlir.lock`` until close()."""

    kind = "embedded (Qdrant Edge)"

    def __init__(self, root: Path, *, purpose: str | None = None, optimize_after: int = OPTIMIZE_AFTER) -> None:
        self.root = Path(root).expanduser().absolute()
        self.location = str(self.root)
        self._optimize_after = optimize_after
        try:
            (self.root / "collections").mkdir(parents=True, exist_ok=True)
            self._lock: DirLock | None = DirLock(self.root, purpose)
        except OSError as exc:  # not a directory, read-only, no permission
            raise StoreUnavailable(
                f"cannot open store {self.root}: {exc.strerror or exc}; use --store to pick another directory"
            ) from exc
        self._handles: dict[str, EdgeCollection] = {}

    def vectors(self, name: str) -> dict[str, int]:
        return _read_vectors(self._collection_dir(name))

    def collection(self, name: str, spec: ModelSpec, *, create: bool = False) -> EdgeCollection:
        if self._lock is None:
            raise RuntimeError("EdgeStore is closed")
        path = self._collection_dir(name)
        existing = _read_vectors(path)
        if existing and existing != {spec.vector_name: spec.dim}:
            raise ModelMismatch(mismatch_message(name, existing, spec))
        if not existing and not create:
            raise EmptyIndex(missing_message(name, self.location))
        if name in self._handles:
            return self._handles[name]  # already open for this model (checked above)
        config = _edge_config(spec, self._optimize_after)
        try:
            # Loading with our config re-checks compatibility and records the current
            # optimizer policy; create() refuses a directory that already holds segments.
            shard = qe.EdgeShard.load(str(path), config) if existing else qe.EdgeShard.create(str(path), config)
        except Exception as exc:  # Edge raises bare Exception; its text says which case
            raise self._translate(exc, name, spec) from exc
        indexed = set(shard.info().payload_schema)
        for field in INDEXED_KEYWORDS:
            if field not in indexed:
                shard.update(qe.UpdateOperation.create_field_index(field, qe.PayloadSchemaType.Keyword))
        handle = EdgeCollection(shard, name, spec.vector_name, self.location, self._optimize_after)
        self._handles[name] = handle
        return handle

    def collections(self) -> list[CollectionInfo]:
        infos = []
        for path in sorted((self.root / "collections").iterdir()):
            vectors = _read_vectors(path)
            if len(vectors) != 1:  # not a shard, or not one xlir made
                continue
            (model, dim), = vectors.items()
            info = self._shard_info(path)
            infos.append(CollectionInfo(path.name, model, dim, info.points_count, info.indexed_vectors_count))
        return infos

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _collection_dir(self, name: str) -> Path:
        if not _SAFE_NAME.fullmatch(name):
            raise ConfigError(f"collection name {name!r} is not usable; use letters, digits, '_', '-' and '.'")
        return self.root / "collections" / name

    def _shard_info(self, path: Path) -> Any:
        if path.name in self._handles:
            return self._handles[path.name].info()
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

    def _translate(self, exc: Exception, name: str, spec: ModelSpec) -> Exception:
        text = str(exc)
        if "WouldBlock" in text:  # Edge's WAL lock: a process that skipped our lock file
            return StoreLocked(locked_message(self.root, None, None))
        if "incompatible" in text.lower():
            return ModelMismatch(mismatch_message(name, _read_vectors(self._collection_dir(name)), spec))
        return StoreUnavailable(
            f"cannot open collection {name!r} in store {self.root}: {text}; use --store to pick another directory"
        )


class EdgeCollection(CollectionBase):
    """One open Edge shard; one call at a time (the caller serialises threads)."""

    def __init__(self, shard: qe.EdgeShard, name: str, vector: str, location: str, optimize_after: int) -> None:
        super().__init__(name, vector, location)
        self._shard: qe.EdgeShard | None = shard
        self._optimize_after = optimize_after

    def upsert(self, points: Sequence[Point]) -> None:
        if points:
            batch = [qe.Point(p.id, {self._vector: point_floats(p)}, dict(p.payload)) for p in points]
            self._live().update(qe.UpdateOperation.upsert_points(batch))

    def delete(self, ids: Sequence[str]) -> None:
        if ids:
            self._live().update(qe.UpdateOperation.delete_points(list(ids)))

    def needs_optimize(self) -> bool:
        # Deleted points still count as indexed until a vacuum, so after heavy deletes this
        # undercounts the new points; the next large batch still trips it.
        info = self._live().info()
        return info.points_count - info.indexed_vectors_count >= self._optimize_after

    def optimize(self) -> None:
        self._live().optimize()

    def info(self) -> Any:
        return self._live().info()

    def close(self) -> None:
        if self._shard is not None:
            shard, self._shard = self._shard, None
            shard.flush()
            shard.close()

    def _live(self) -> qe.EdgeShard:
        if self._shard is None:
            raise RuntimeError(f"collection {self.name!r} is closed")
        return self._shard

    # -- CollectionBase ---------------------------------------------------------------------

    def _nearest(self, vector: list[float], limit: int, flt: Any, min_score: float | None) -> list[ScoredPoint]:
        request = qe.QueryRequest(limit=limit, query=qe.Query.Nearest(vector, using=self._vector), filter=flt,
                                  score_threshold=min_score, with_payload=True)
        return [ScoredPoint(str(hit.id), float(hit.score), hit.payload or {}) for hit in self._live().query(request)]

    def _fetch(self, ids: list[str], with_vectors: bool) -> list[Point]:
        records = self._live().retrieve(ids, with_payload=True, with_vector=[self._vector] if with_vectors else False)
        return [self._point(r.id, r.payload, r.vector if with_vectors else None) for r in records]

    def _page(self, flt: Any, offset: Any, limit: int, with_vectors: bool) -> tuple[list[Point], Any]:
        records, offset = self._live().scroll(qe.ScrollRequest(
            offset=offset, limit=limit, filter=flt, with_payload=True,
            with_vector=[self._vector] if with_vectors else False,
        ))
        return [self._point(r.id, r.payload, r.vector if with_vectors else None) for r in records], offset

    def _count(self, flt: Any) -> int:
        return int(self._live().count(qe.CountRequest(exact=True, filter=flt)))

    def _delete_matching(self, flt: Any) -> None:
        self._live().update(qe.UpdateOperation.delete_points_by_filter(flt))

    def _match_any(self, key: str, values: list[str]) -> Any:
        return qe.FieldCondition(key, match=qe.MatchAny(values))

    def _match_value(self, key: str, value: str) -> Any:
        return qe.FieldCondition(key, match=qe.MatchValue(value))

    def _any_of(self, conditions: list[Any]) -> Any:
        return qe.Filter(should=conditions)

    def _all_of(self, conditions: list[Any]) -> Any:
        return qe.Filter(must=conditions)


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
