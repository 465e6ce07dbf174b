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

Safety (health.py): a shard not known to be intact is first opened by a child process, nothing
is opened or written with under 64 MB free, and every engine error becomes one line that names
the collection and `xlir check --repair`. Durability: the writer calls flush() at least every
few seconds (ingest/writer.py) and close() flushes; a point is on disk once a flush returns.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import qdrant_edge as qe

from ..errors import (
    ConfigError, DiskFull, EmptyIndex, ModelMismatch, StoreDamaged, StoreLocked, StoreUnavailable, XlirError,
)
from ..records import CollectionInfo, CollectionOptions, ModelSpec, Point, ScoredPoint
from . import health
from .base import ClosesOnExit, CollectionBase, mismatch_message, missing_message, point_floats
from .layout import EMBEDDED_ON_DISK, RESCORE_OVERSAMPLING, Layout, plan
from .lock import DirLock, locked_message
from .pagecache import kept_in_cache
from .schema import INDEXED_KEYWORDS, INDEXED_RANGES, TEXT_KEY

T = TypeVar("T")
DAMAGED = ".damaged-"  # what a collection or its log set aside by `xlir check --repair` is called

OPTIMIZE_AFTER = 20_000  # points outside the HNSW index before optimize() pays off (see above)
_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_CONFIG_FILE = "edge_config.json"  # where Edge persists a shard's config; it has no getter


class EdgeStore(ClosesOnExit):
    """Collections as Edge shards under ``root``; holds ``root/xlir.lock`` until close()."""

    kind = "embedded (Qdrant Edge)"

    def __init__(self, root: Path, *, purpose: str | None = None, optimize_after: int = OPTIMIZE_AFTER,
                 create: bool = True) -> None:
        """``create=False``: a store that does not exist yet is not made (nor locked) until a
        collection is created in it; until then it reads as empty. Commands that only read
        never leave a store directory behind."""
        self.root = Path(root).expanduser().absolute()
        self.location = str(self.root)
        self._optimize_after = optimize_after
        self._purpose = purpose
        self._lock: DirLock | None = None
        self._closed = False
        self._handles: dict[str, EdgeCollection] = {}
        if create or (self.root / "collections").is_dir():
            self._take_lock()

    def _take_lock(self) -> None:
        try:
            (self.root / "collections").mkdir(parents=True, exist_ok=True)
            self._lock = DirLock(self.root, self._purpose)
        except OSError as exc:  # not a directory, read-only, no permission
            raise StoreUnavailable(
                f"cannot open store {self.root}: {exc.strerror or exc}; use --store to pick another directory"
            ) from exc

    def vectors(self, name: str) -> dict[str, int]:
        return _read_vectors(self._collection_dir(name))

    def collection(self, name: str, spec: ModelSpec, *, create: bool = False,
                   options: CollectionOptions | None = None) -> EdgeCollection:
        if self._closed:
            raise RuntimeError("EdgeStore is closed")
        path = self._collection_dir(name)
        stored = _shard_config(path)
        existing = _vectors(stored)
        if existing and existing != {spec.vector_name: spec.dim}:
            raise ModelMismatch(mismatch_message(name, existing, spec))
        if not existing and not create:
            raise EmptyIndex(missing_message(name, self.location))
        if self._lock is None:  # the first collection of a store that did not exist yet
            self._take_lock()
        if name in self._handles:
            return self._handles[name]  # already open for this model (checked above)
        health.require_space(self.root)
        closed = health.as_closed(path) if existing else None
        if existing and closed is None:
            self._check_health(name, path)  # in a child process first: it may be damaged
        trusted = not existing or (closed is not None and closed.verified)
        # One shard on one machine: of the layout, only quantization, disk and HNSW apply.
        layout = None if existing else plan(options)
        config = _edge_config(spec, self._optimize_after, layout, on_disk=_vector_params(stored).get("on_disk"))
        try:
            # Loading with our config re-checks compatibility and records the current
            # optimizer policy (the layout it was made with stays as persisted);
            # create() refuses a directory that already holds segments.
            if existing:
                with kept_in_cache(path):  # Edge would re-read its bitmaps from disk (pagecache.py)
                    shard = qe.EdgeShard.load(str(path), config)
            else:
                shard = qe.EdgeShard.create(str(path), config)
            indexed = set(shard.info().payload_schema)
        except Exception as exc:  # Edge raises bare Exception; its text says which case
            raise self._translate(exc, name, spec) from exc
        quantized = _quantized(stored if existing else _shard_config(path))  # a new shard: as just written
        handle = EdgeCollection(shard, name, spec.vector_name, self, path, quantized=quantized)
        handle.trusted = trusted
        for field in INDEXED_KEYWORDS:
            if field not in indexed:
                handle.create_keyword_index(field, on_disk=field in EMBEDDED_ON_DISK)
        if TEXT_KEY not in indexed:
            handle.create_text_index(TEXT_KEY)
        for field, kind in INDEXED_RANGES.items():
            if field not in indexed:
                handle.create_range_index(field, kind)
        self._handles[name] = handle
        return handle

    def disk_bytes(self) -> int:
        """The collections' own files, as du counts them: allocated blocks, so the engine's
        sparse, memory-mapped files count for what they hold, not for their length (not the
        lock, the ledger or a running server's address file)."""
        total = 0
        for root, _dirs, files in os.walk(self.root / "collections"):
            for name in files:
                try:
                    st = os.lstat(os.path.join(root, name))
                except OSError:
                    continue  # gone since the walk listed it
                blocks = getattr(st, "st_blocks", None)
                total += blocks * 512 if blocks is not None else st.st_size
        return total

    def collections(self) -> list[CollectionInfo]:
        infos = []
        if not (self.root / "collections").is_dir():  # no store here yet
            return infos
        for path in sorted((self.root / "collections").iterdir()):
            vectors = _read_vectors(path)
            if len(vectors) != 1 or DAMAGED in path.name:  # not a shard, not xlir's, or set aside
                continue
            (model, dim), = vectors.items()
            infos.append(self._shard_info(path, model, dim))
        return infos

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()
        if self._lock is not None:
            self._lock.release()
            self._lock = None
        self._closed = True

    # -- repair (xlir check --repair) ---------------------------------------------------------

    def damage(self, name: str) -> str:
        """Why collection ``name`` cannot be opened, or "" when it can (opened in a child)."""
        path = self._collection_dir(name)
        if name in self._handles or health.as_closed(path) is not None:
            return ""
        try:
            self._check_health(name, path)
        except StoreDamaged as exc:
            return str(exc)
        return ""

    def set_aside(self, name: str, part: str = "") -> Path:
        """Move collection ``name`` (or one ``part`` of it, such as its "wal") out of the way,
        renamed with the time; nothing is deleted. Returns where it went."""
        handle = self._handles.pop(name, None)
        if handle is not None:
            handle.close(record=False)
        path = self._collection_dir(name)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        source = path / part if part else path
        target = source.with_name(f"{source.name}{DAMAGED}{stamp}")
        os.replace(source, target)
        state = health.state_file(path)
        if not part and state.exists():
            os.replace(state, state.with_name(f"{path.name}{DAMAGED}{stamp}.state.json"))
        elif part:
            health.write_state(path, health.ShardState(clean=False))
        return target

    # -- helpers ------------------------------------------------------------------------------

    def _check_health(self, name: str, path: Path) -> None:
        found = health.probe(path)
        if not found.ok and "WouldBlock" in found.reason:  # held by a process that skipped our lock
            raise StoreLocked(locked_message(self.root, None, None))
        if not found.ok:
            raise StoreDamaged(damaged_message(name, self.root, found.reason))
        last = health.read_state(path)
        if last is not None and last.clean and found.points < last.points:
            raise StoreDamaged(damaged_message(
                name, self.root, f"it holds {found.points} of the {last.points} points it had when last closed"))

    def _collection_dir(self, name: str) -> Path:
        if not _SAFE_NAME.fullmatch(name):
            raise ConfigError(f"collection name {name!r} is not usable; use letters, digits, '_', '-' and '.'")
        return self.root / "collections" / name

    def _shard_info(self, path: Path, model: str, dim: int) -> CollectionInfo:
        if path.name in self._handles:
            info = self._handles[path.name].info()
            return CollectionInfo(path.name, model, dim, info.points_count, info.indexed_vectors_count)
        closed = health.as_closed(path)
        trusted = closed is not None and closed.verified
        if closed is None and not (found := health.probe(path)).ok:
            return CollectionInfo(path.name, model, dim, 0, None, problem=damaged_message(path.name, self.root,
                                                                                         found.reason))
        health.require_space(self.root)
        try:
            shard = qe.EdgeShard.load(str(path))
            info = shard.info()
            shard.close()
        except Exception as exc:  # noqa: BLE001 - reported as the collection's problem, in one line
            return CollectionInfo(path.name, model, dim, 0, None,
                                  problem=damaged_message(path.name, self.root, _first_line(exc)))
        health.write_state(path, health.ShardState(True, health.fingerprint(path), info.points_count,
                                                   verified=trusted))
        return CollectionInfo(path.name, model, dim, info.points_count, info.indexed_vectors_count)

    def _translate(self, exc: Exception, name: str, spec: ModelSpec) -> Exception:
        text = str(exc)
        if "WouldBlock" in text:  # Edge's WAL lock: a process that skipped our lock file
            return StoreLocked(locked_message(self.root, None, None))
        if "incompatible" in text.lower():
            return ModelMismatch(mismatch_message(name, _read_vectors(self._collection_dir(name)), spec))
        return StoreDamaged(damaged_message(name, self.root, _first_line(exc)))


def damaged_message(name: str, root: Path, reason: str) -> str:
    reason = _tidy(reason, root)
    if "WAL" in reason or "/wal" in reason:
        return (f"collection {name!r} in store {root} cannot be opened: its write-ahead log is damaged "
                f"({reason}); run `xlir check --repair`, which sets the log aside and keeps every point "
                f"saved before it")
    return (f"collection {name!r} in store {root} is damaged ({reason}); run `xlir check --repair` to rebuild "
            f"it from your photos (the damaged copy is kept aside, nothing is deleted)")


def _tidy(reason: str, root: Path) -> str:
    """The engine's message without its wrapping ("Exception: Service runtime error: ...") and
    with paths inside the store shortened: the collection is already named."""
    reason = re.sub(r"(Exception: |Service runtime error: )", "", reason)
    return reason.replace(str(root) + os.sep, "")


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:300]


class EdgeCollection(CollectionBase):
    """One open Edge shard; one call at a time (the caller serialises threads)."""

    def __init__(self, shard: qe.EdgeShard, name: str, vector: str, store: EdgeStore, path: Path, *,
                 quantized: bool = False) -> None:
        super().__init__(name, vector, store.location)
        self._shard: qe.EdgeShard | None = shard
        # int8 candidates are rescored with the float originals, which keeps the scores exact
        self._params = qe.SearchParams(quantization=qe.QuantizationSearchParams(
            rescore=True, oversampling=RESCORE_OVERSAMPLING)) if quantized else None
        self._optimize_after = store._optimize_after
        self._root = store.root
        self._path = path
        self._dirty = False

    def upsert(self, points: Sequence[Point]) -> None:
        if points:
            batch = [qe.Point(p.id, {self._vector: point_floats(p)}, dict(p.payload)) for p in points]
            # vectors, payload and log: a few times their raw size, before the engine writes
            raw_mb = len(points) * (4 * int(np.asarray(points[0].vector).size) + 4096) / 1e6
            self._write("store points", lambda s: s.update(qe.UpdateOperation.upsert_points(batch)),
                        extra_mb=3 * raw_mb)

    def delete(self, ids: Sequence[str]) -> None:
        if ids:
            self._write("delete points", lambda s: s.update(qe.UpdateOperation.delete_points(list(ids))))

    def create_keyword_index(self, field: str, *, on_disk: bool = False) -> None:
        keyword = qe.KeywordIndexParams(on_disk=True) if on_disk else qe.PayloadSchemaType.Keyword
        self._write("index the payload", lambda s: s.update(qe.UpdateOperation.create_field_index(field, keyword)))

    def create_text_index(self, field: str) -> None:
        # words in any script (the multilingual tokenizer splits CJK too), case and accents folded
        params = qe.TextIndexParams(tokenizer=qe.TokenizerType.Multilingual, lowercase=True, ascii_folding=True)
        self._write("index the payload", lambda s: s.update(qe.UpdateOperation.create_field_index(field, params)))

    def create_range_index(self, field: str, kind: str) -> None:
        schema = qe.PayloadSchemaType.Datetime if kind == "datetime" else qe.PayloadSchemaType.Integer
        self._write("index the payload", lambda s: s.update(qe.UpdateOperation.create_field_index(field, schema)))

    def needs_optimize(self) -> bool:
        # Deleted points still count as indexed until a vacuum, so after heavy deletes this
        # undercounts the new points; the next large batch still trips it.
        info = self.info()
        return info.points_count - info.indexed_vectors_count >= self._optimize_after

    def optimize(self) -> None:
        self._write("build the search index", lambda s: s.optimize(), extra_mb=64)

    def flush(self) -> None:
        if self._dirty:
            self._call("flush to disk", lambda s: s.flush())

    def info(self) -> Any:
        return self._call("read its info", lambda s: s.info())

    def close(self, *, record: bool = True) -> None:
        """Flush and close; ``record`` notes the clean close (health.py) for the next open."""
        if self._shard is None:
            return
        shard, self._shard = self._shard, None
        points = -1
        try:
            points = shard.info().points_count
            shard.flush()
        finally:
            shard.close()
        if record:
            health.write_state(self._path, health.ShardState(True, health.fingerprint(self._path), points,
                                                             verified=self.trusted))

    def mark_verified(self) -> None:
        """Every vector has been read and found sound (or made so): trust it from the next open."""
        self.trusted = True

    # -- the engine, guarded --------------------------------------------------------------------

    def _live(self) -> qe.EdgeShard:
        if self._shard is None:
            raise RuntimeError(f"collection {self.name!r} is closed")
        return self._shard

    def _write(self, what: str, fn: Callable[[qe.EdgeShard], T], *, extra_mb: float = 0.0) -> T:
        health.require_space(self._root, extra_mb)
        if not self._dirty:  # a kill from here on leaves it unclean: the next open checks it first
            health.write_state(self._path, health.ShardState(clean=False))
            self._dirty = True
        return self._call(what, fn)

    def _call(self, what: str, fn: Callable[[qe.EdgeShard], T]) -> T:
        shard = self._live()
        try:
            return fn(shard)
        except (KeyboardInterrupt, SystemExit, XlirError):
            raise
        except BaseException as exc:  # Edge raises bare Exception, and PanicException on damage
            text = _first_line(exc)
            if "No space left" in text or "Disk quota" in text:
                raise DiskFull(f"disk full while trying to {what} in store {self._root} ({text}); free some "
                               f"space and run the command again (nothing stored is lost)") from None
            raise StoreDamaged(f"collection {self.name!r} in store {self._root} failed to {what} "
                               f"({_tidy(text, self._root)}); run `xlir check --repair`") from None

    # -- CollectionBase ---------------------------------------------------------------------

    def _nearest(self, vector: list[float], limit: int, flt: Any, min_score: float | None) -> list[ScoredPoint]:
        request = qe.QueryRequest(limit=limit, query=qe.Query.Nearest(vector, using=self._vector), filter=flt,
                                  score_threshold=min_score, with_payload=True, params=self._params)
        hits = [ScoredPoint(str(h.id), float(h.score), h.payload or {}) for h in self._call("search", lambda s: s.query(request))]
        if any(not math.isfinite(h.score) or abs(h.score) > 1.001 for h in hits):
            # cosine scores lie in [-1, 1]: these come from vectors the disk has garbled
            raise StoreDamaged(f"collection {self.name!r} in store {self._root} returned impossible scores: "
                               f"some stored vectors are damaged; run `xlir check --repair`")
        return hits

    def _fetch(self, ids: list[str], with_vectors: bool) -> list[Point]:
        records = self._call("read points", lambda s: s.retrieve(
            ids, with_payload=True, with_vector=[self._vector] if with_vectors else False))
        return [self._point(r.id, r.payload, r.vector if with_vectors else None) for r in records]

    def _page(self, flt: Any, offset: Any, limit: int, with_vectors: bool) -> tuple[list[Point], Any]:
        request = qe.ScrollRequest(offset=offset, limit=limit, filter=flt, with_payload=True,
                                   with_vector=[self._vector] if with_vectors else False)
        records, offset = self._call("read points", lambda s: s.scroll(request))
        return [self._point(r.id, r.payload, r.vector if with_vectors else None) for r in records], offset

    def _count(self, flt: Any) -> int:
        return int(self._call("count points", lambda s: s.count(qe.CountRequest(exact=True, filter=flt))))

    def _delete_matching(self, flt: Any) -> None:
        self._write("delete points", lambda s: s.update(qe.UpdateOperation.delete_points_by_filter(flt)))

    def _match_any(self, key: str, values: list[str]) -> Any:
        return qe.FieldCondition(key, match=qe.MatchAny(values))

    def _match_value(self, key: str, value: str) -> Any:
        return qe.FieldCondition(key, match=qe.MatchValue(value))

    def _match_text(self, key: str, text: str) -> Any:
        return qe.FieldCondition(key, match=qe.MatchText(text))

    def _any_of(self, conditions: list[Any]) -> Any:
        return qe.Filter(should=conditions)

    def _all_of(self, conditions: list[Any]) -> Any:
        return qe.Filter(must=conditions)

    def _datetime_range(self, key: str, gte: str | None, lt: str | None) -> Any:
        return qe.FieldCondition(key, range=qe.RangeDateTime(gte=gte, lt=lt))

    def _number_range(self, key: str, gte: float | None, lt: float | None) -> Any:
        return qe.FieldCondition(key, range=qe.RangeFloat(gte=gte, lt=lt))

    def _is_empty(self, key: str) -> Any:
        return qe.IsEmptyCondition(key)


def _edge_config(spec: ModelSpec, optimize_after: int, layout: Layout | None = None, *,
                 on_disk: bool | None = None) -> qe.EdgeConfig:
    """The shard's config; ``layout`` for a new shard (None keeps an existing one's as it was,
    given where its vectors live: vector params passed on load replace the persisted ones)."""
    # Edge indexes a segment only once its vectors exceed indexing_threshold (KB). Half of
    # our point threshold in bytes, so an optimize() that needs_optimize() asked for always
    # indexes the new points, whatever the model's dimension.
    threshold_kb = max(1, optimize_after * spec.dim * 4 // 1024 // 2)
    optimizers = qe.EdgeOptimizersConfig(indexing_threshold=threshold_kb)
    if layout is None:
        return qe.EdgeConfig(
            vectors={spec.vector_name: qe.EdgeVectorParams(size=spec.dim, distance=qe.Distance.Cosine,
                                                           on_disk=on_disk)},
            optimizers=optimizers,
        )
    quantization = qe.ScalarQuantizationConfig(qe.ScalarType.Int8, quantile=0.99, always_ram=True) \
        if layout.quantized else None
    return qe.EdgeConfig(
        vectors={spec.vector_name: qe.EdgeVectorParams(size=spec.dim, distance=qe.Distance.Cosine,
                                                       on_disk=layout.on_disk or None)},
        hnsw_config=qe.HnswIndexConfig(m=layout.hnsw_m, ef_construct=layout.hnsw_ef_construct,
                                       full_scan_threshold=10_000),
        quantization_config=quantization,
        on_disk_payload=layout.on_disk or None,
        optimizers=optimizers,
    )


def _shard_config(path: Path) -> dict[str, Any]:
    """The shard's persisted config ({} when ``path`` holds no shard): read once, asked below."""
    try:
        data = json.loads((path / _CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _vector_params(config: dict[str, Any]) -> dict[str, Any]:
    """The shard's one vector's persisted params ({} unless there is exactly one)."""
    vectors = list((config.get("vectors") or {}).values())
    return vectors[0] if len(vectors) == 1 else {}


def _quantized(config: dict[str, Any]) -> bool:
    """Whether the shard keeps int8 copies of its vectors."""
    return bool(config.get("quantization_config") or _vector_params(config).get("quantization_config"))


def _vectors(config: dict[str, Any]) -> dict[str, int]:
    """The shard's dense vectors as {name: dim}."""
    return {name: int(params["size"]) for name, params in (config.get("vectors") or {}).items()}


def _read_vectors(path: Path) -> dict[str, int]:
    """The shard's dense vectors as {name: dim}; {} when ``path`` holds no shard."""
    return _vectors(_shard_config(path))
