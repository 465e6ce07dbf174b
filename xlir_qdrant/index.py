"""Index: the facade that ties one Encoder to one collection of one Store. The CLI and the web
server talk only to this (and to recipe.py for training and evaluation).

    from xlir_qdrant import Index
    with Index.open() as idx:                 # embedded store under the data dir
        idx.index(["~/Pictures"])
        for hit in idx.search("perro en la playa").hits:
            print(hit.score, hit.path)

One Index may be shared by threads (the web server does): the embedded engine takes one call
at a time, so every store call holds one lock for its own length. An index run then lets
searches in between its batches instead of holding the store for the whole run. Run one
index() or check() at a time.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np

from .config import Overrides, Settings
from .encoders.base import CROP_MARGIN, Encoder, device_summary
from .encoders.lang import UnknownLanguage, canonical
from .encoders.registry import DEFAULT_MODEL, get_spec, load_encoder, model_rows, spec_for_vector
from .check import Progress as CheckProgress
from .check import check_points
from .duplicates import DEFAULT_THRESHOLD as DUPLICATE_THRESHOLD
from .duplicates import find_duplicates
from .errors import BadQuery, BadValue, ConfigError, EmptyIndex, ModelMismatch, NotFound, StoreDamaged
from .images.decode import DecodeError, decode
from .ingest import IngestOptions, IngestRun, Progress
from .ledger import Ledger, ledger_path
from .records import (
    CheckEvent, CheckReport, CollectionOptions, DuplicatesReport, Filter, IndexStats, IngestReport, ModelRow,
    ModelSpec, Point, Runtime, TagInfo, TagResult, TransferReport,
)
from .search import SORTS, SearchResult, photo_filter, search, sort_hits, to_hits, validate
from .store import Collection, Store, open_store
from .store.base import Serialised
from .store.schema import file_path, point_id
from .tagging import resolve_tag
from .tagging.tagger import Tagger
from .transfer import TransferProgress, bound_spec, transfer


class Index:
    def __init__(self, settings: Settings | None = None, *, store: Store | None = None,
                 encoder: Encoder | None = None, purpose: str = "xlir", create_store: bool = False) -> None:
        """``create_store``: make (and lock) the store directory on first use, as a process that
        owns the store does (`xlir serve`); otherwise only making a collection makes it."""
        self.settings = settings or Settings.load()
        self._create_store = create_store
        self._store = store
        self._encoder = encoder
        self._spec: ModelSpec | None = None
        self._collection: Collection | None = None
        self._purpose = purpose
        # Held by each store call (see the module docstring) and while the wiring is settled,
        # so two threads never open the same shard twice or load the model twice.
        self._lock = threading.RLock()

    @classmethod
    def open(cls, overrides: Overrides | None = None, *, purpose: str = "xlir", create_store: bool = False,
             **flags: Any) -> Index:
        """Settings from defaults, config file, XLIR_* env and the overrides (an Overrides, or
        the same fields as keywords: ``Index.open(store="~/idx", model="default")``)."""
        return cls(Settings.load(overrides or Overrides.of(**flags)), purpose=purpose, create_store=create_store)

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- wiring -------------------------------------------------------------------------------
    @property
    def store(self) -> Store:
        """The backend: the one place that picks it is open_store (a URL means a server)."""
        with self._lock:
            if self._store is None:
                s = self.settings
                # Unless this process owns the store, only making a collection (xlir index) makes
                # the store directory: commands that only read leave nothing behind.
                self._store = open_store(s.store_path, qdrant_url=s.qdrant_url, api_key=s.qdrant_api_key,
                                         timeout=s.timeout, purpose=self._purpose, create=self._create_store)
            return self._store

    @property
    def collection(self) -> Collection:
        """The handle on this index's collection, which must exist (EmptyIndex otherwise)."""
        return self._open_collection(create=False)

    def _open_collection(self, *, create: bool, options: CollectionOptions | None = None) -> Collection:
        with self._lock:
            if self._collection is None:
                handle = self.store.collection(self.settings.collection, self.model_spec(), create=create,
                                               options=options)
                self._collection = handle if handle.thread_safe else Serialised(handle, self._lock)
            return self._collection

    def collection_model(self) -> ModelSpec | None:
        """The spec of the model that built this collection, if it exists and is known."""
        name = self.settings.collection
        vectors = self.store.vectors(name)
        if len(vectors) != 1:  # no such collection, or not one xlir made (opening it says so)
            return None
        (vector_name, _dim), = vectors.items()
        spec = spec_for_vector(vector_name)
        if spec is None:
            raise ModelMismatch(
                f"collection {name!r} was built with model {vector_name!r}, which this xlir does not "
                f"know; pass --model PATH_OR_ID for it, or --collection NEW for a new index"
            )
        return spec

    def model_spec(self) -> ModelSpec:
        """The encoder's spec; else --model's; else the collection's model; else the default.
        Settled once: each answer reads the collection's config (a request, for a server)."""
        if self._encoder is not None:
            return self._encoder.spec
        with self._lock:
            if self._spec is None:
                self._spec = get_spec(self.settings.model) if self.settings.model else (
                    self.collection_model() or get_spec(DEFAULT_MODEL))
            return self._spec

    @property
    def encoder(self) -> Encoder:
        if self._encoder is None:
            with self._lock:
                if self._encoder is None:
                    self._encoder = load_encoder(self.model_spec(), device=self.settings.device)
        return self._encoder

    def runtime(self) -> Runtime:
        """The model this index runs and where, e.g. conse-lite0-muse on cpu int8."""
        encoder = self.encoder  # cheap: weights load only once there is something to embed
        return Runtime(encoder.spec.id, encoder.device, encoder.precision)

    def first_use_note(self) -> str:
        """Non-empty when the model's first use on this machine will prepare files (seconds)."""
        return self.encoder.first_use_note()

    # -- operations ---------------------------------------------------------------------------
    def index(self, paths: Sequence[str | os.PathLike[str]], *, progress: Progress | None = None,
              include_hidden: bool = False, prune: bool = True, read_text: bool = False,
              cancel: threading.Event | None = None, layout: CollectionOptions | None = None,
              ray: str | None = None, ray_actors: int | None = None) -> IngestReport:
        """Embed new and changed images under ``paths``; ``read_text`` also reads the text in
        them (OCR); setting ``cancel`` (from another thread) stops the run with Cancelled,
        keeping what it stored. ``layout`` shapes a collection made now (shards, replicas,
        quantization...: store/layout.py chooses what it leaves out). With ``ray`` (an address,
        or "auto"), the embedding runs on Ray actors, ``ray_actors`` of them."""
        roots = index_roots(paths)
        if ray and read_text:
            raise BadValue("--read-text runs in this process only: index with --ray first, then run "
                           "`xlir index --read-text` on the same folders to read their text here")
        encoder = self.encoder  # a model that cannot load must not leave an empty collection behind
        collection = self._open_collection(create=True, options=layout)
        s = self.settings
        options = IngestOptions(batch_size=s.batch_size, workers=s.workers, include_hidden=include_hidden,
                                max_megapixels=s.max_megapixels, prune=prune, read_text=read_text)
        ledger = self.ledger()
        ledger.record_index(s.collection, [str(r) for r in roots if r.exists()], {})  # before: a crash keeps it
        embedding = None
        if ray:
            from .ingest.distributed import OnRay

            embedding = OnRay(self.model_spec(), address=ray, actors=ray_actors, device=s.device)
        report = IngestRun(encoder, collection, options, progress, tags=self.tagger(), cancel=cancel,
                           embedding=embedding).run(roots)
        ledger.record_index(s.collection, [], report.to_dict())
        return report

    def ledger(self) -> Ledger:
        """What was indexed into this store's collections (roots, last run)."""
        s = self.settings
        return Ledger(ledger_path(store_dir=s.store_path, home=s.home, qdrant_url=s.qdrant_url))

    def check(self, *, repair: bool = False, progress: CheckProgress | None = None,
              index_progress: Progress | None = None) -> CheckReport:
        """Verify every point of the collection against its file; with ``repair``, embed the
        faulty ones again and remove those whose file is gone. A collection that cannot be
        opened is set aside (never deleted): its log alone when that is the damage, else the
        whole collection, which is then built again from the folders the ledger recorded."""
        name = self.settings.collection
        emit = progress or (lambda _e: None)
        if not self.store.vectors(name):
            raise EmptyIndex(f"no index yet at {self.location} (collection {name!r}): run `xlir index PATH` first")
        start = time.perf_counter()
        problem = self.store.damage(name)
        aside, rebuilt = "", False
        if problem and not repair:
            return CheckReport(collection=name, problem=problem, seconds=time.perf_counter() - start)
        if problem and "write-ahead log" in problem:
            emit(CheckEvent("stage", reason="setting the damaged write-ahead log aside"))
            aside = str(self.store.set_aside(name, "wal"))
            if not self.store.damage(name):
                found = self._check_open(repair=True, progress=emit, index_progress=index_progress)
                return replace(found, problem=problem, set_aside=aside, resolved=True,
                               seconds=time.perf_counter() - start)
        if not problem:
            try:
                return self._check_open(repair=repair, progress=emit, index_progress=index_progress)
            except StoreDamaged as exc:  # it opens, but its points cannot all be read
                if not repair:
                    return CheckReport(collection=name, problem=str(exc), seconds=time.perf_counter() - start)
                problem = str(exc)
        return self._rebuild(problem, emit, index_progress, start)

    def _check_open(self, *, repair: bool, progress: CheckProgress, index_progress: Progress | None) -> CheckReport:
        collection = self.collection

        def reindex(files: Sequence[str]) -> IngestReport:
            s = self.settings
            options = IngestOptions(batch_size=s.batch_size, workers=s.workers, max_megapixels=s.max_megapixels,
                                    prune=False, include_hidden=True)
            return IngestRun(self.encoder, collection, options, index_progress, tags=self.tagger()).run(
                [Path(f) for f in files])

        report = check_points(collection, self.model_spec().dim, repair=repair, reindex=reindex, progress=progress)
        if report.healthy:
            collection.mark_verified()
        return report

    def _rebuild(self, problem: str, emit: CheckProgress, index_progress: Progress | None,
                 start: float) -> CheckReport:
        name = self.settings.collection
        roots = [r for r in self.ledger().roots(name) if os.path.exists(r)]
        self.model_spec()  # settled from the damaged collection before it is moved
        emit(CheckEvent("stage", reason="setting the damaged collection aside"))
        self._collection = None
        aside = str(self.store.set_aside(name))
        if not roots:
            raise StoreDamaged(f"collection {name!r} was damaged ({problem}); it is kept at {aside}, but nothing "
                               f"records which folders it held: run `xlir index FOLDER` to build it again")
        emit(CheckEvent("stage", reason=f"building it again from {len(roots)} indexed folder(s)"))
        report = self.index(roots, progress=index_progress)
        return CheckReport(collection=name, points=report.added + report.reused, sound=report.added + report.reused,
                           problem=problem, set_aside=aside, rebuilt=True, resolved=True,
                           seconds=time.perf_counter() - start)

    def search(self, query: str | None = None, *, image: str | os.PathLike[str] | None = None,
               negatives: Sequence[str] = (), top_k: int = 10, min_score: float | None = None,
               lang: str | None = None, under: Sequence[str | os.PathLike[str]] = (),
               tags: Sequence[str] = (), after: When = None, before: When = None,
               sort: str = "score") -> SearchResult:
        """Rank images by ``query`` (any language) and/or ``image``; ``tags`` (ids or names in
        any language of the shipped vocabulary) keep only images tagged so at index time;
        ``after`` / ``before`` (a date, a datetime or an ISO-8601 string such as "2024-05-01")
        keep images dated on or after / before it (their EXIF date, else the file's mtime);
        ``sort="date"`` orders the ``top_k`` best by date, newest first."""
        if sort not in SORTS:
            raise BadValue(f"--sort {sort!r}: use one of {', '.join(SORTS)}")
        tag_ids = tuple(resolve_tag(t) for t in tags)
        since, until = date_range(after, before)
        if lang:
            check_language(lang)
        if tag_ids and not (query or "").strip() and image is None:
            query = " ".join(tags)  # `--tag Katze` alone: rank the tagged images by the tag itself
            min_score = 0.0 if min_score is None else min_score  # and list them all: they are tagged so
        validate(query, Path(image) if image else None, top_k)
        collection = self.collection
        for folder in under:
            self._known_path(folder, "--in")
        result = search(self.encoder, collection, query=query, image=Path(image) if image else None,
                        negatives=tuple(negatives), top_k=top_k, min_score=min_score, lang=lang,
                        under=tuple(Path(u) for u in under), tags=tag_ids, after=since, before=until)
        # Counting 100k points takes 10 ms, twice the search itself: only when nothing matched.
        if not result.hits and collection.count() == 0:
            raise EmptyIndex(f"the index {self.settings.collection!r} at {self.location} is empty: "
                             f"run `xlir index PATH` first")
        return replace(result, hits=sort_hits(result.hits, sort))

    def duplicates(self, under: Sequence[str | os.PathLike[str]] = (), *, threshold: float = DUPLICATE_THRESHOLD,
                   progress: CheckProgress | None = None) -> DuplicatesReport:
        """Exact copies (the same bytes) and groups of near-copies (resized, recompressed, lightly
        cropped or edited: stored vectors at or above ``threshold`` cosine, through the store's
        nearest-neighbour search) among the indexed photos, or those under ``under``."""
        if not 0.0 < threshold <= 1.0:
            raise BadValue(f"--threshold {threshold:g}: use a cosine similarity above 0 and at most 1")
        collection = self.collection
        for folder in under:
            self._known_path(folder, "duplicates")
        folders = [os.path.abspath(os.path.expanduser(u)) for u in under]
        return find_duplicates(collection, under=folders, threshold=threshold, progress=progress)

    def similar(self, photo_id: str, *, top_k: int = 10, min_score: float | None = None,
                under: Sequence[str | os.PathLike[str]] = (), tags: Sequence[str] = (), after: When = None,
                before: When = None) -> SearchResult:
        """Photos like the indexed photo ``photo_id`` (its stored vector), itself left out."""
        if top_k < 1:
            raise BadQuery("--top-k must be at least 1")
        since, until = date_range(after, before)
        point = self._point(photo_id, with_vectors=True)
        flt = photo_filter(under, tuple(resolve_tag(t) for t in tags), since, until)
        scored = self.collection.query(point.vector, limit=top_k + 1, filter=flt, min_score=min_score)
        return SearchResult(hits=to_hits([s for s in scored if s.id != point.id][:top_k]),
                            model=self.model_spec().id)

    def photo_path(self, photo_id: str) -> str:
        """The file of the indexed photo ``photo_id`` (a Hit's id), exactly as indexed."""
        return file_path(self._point(photo_id).payload)

    def roots(self) -> list[str]:
        """The folders and files ever indexed into this collection (from the ledger)."""
        return self.ledger().roots(self.settings.collection)

    def _point(self, photo_id: str, *, with_vectors: bool = False) -> Point:
        try:
            canonical = str(uuid.UUID(str(photo_id)))
        except ValueError:
            raise NotFound(f"no photo with id {str(photo_id)[:80]!r}: ids are the `id` of a search hit") from None
        found = self.collection.retrieve([canonical], with_vectors=with_vectors)
        if not found or (with_vectors and found[0].vector is None):
            raise NotFound(f"no photo with id {canonical} in the index {self.settings.collection!r}")
        return found[0]

    def tagger(self) -> Tagger:
        """A tagger for this index's model over the shipped vocabulary."""
        from .vocab import load_vocabulary

        return Tagger(self.encoder, load_vocabulary())

    def tag(self, files: Sequence[str | os.PathLike[str]], *, lang: str = "en", top_k: int | None = None,
            min_score: float | None = None, vocab: str | os.PathLike[str] | None = None) -> list[TagResult]:
        """Tags for each file in ``lang``: indexed images use their stored vector, other files
        are embedded on the fly (and not stored). ``vocab``: a user's tag list, any language."""
        from .vocab import LANGUAGES, load_user_vocabulary

        free = load_user_vocabulary(Path(vocab)) if vocab else None
        if free is None and lang not in LANGUAGES:
            raise BadValue(f"--lang {lang!r}: the built-in vocabulary has no names in it; it has "
                           f"{', '.join(LANGUAGES)} (or pass --vocab FILE with your own tags in any language)")
        vectors, sources = self._vectors_for(files)
        per_image = self.tagger().tag(vectors, lang, top_k=top_k, min_score=min_score, free=free)
        return [TagResult(path=p, source=src, tags=tuple(t)) for (p, src), t in zip(sources, per_image, strict=True)]

    def _vectors_for(self, files: Sequence[str | os.PathLike[str]]) -> tuple[Any, list[tuple[str, str]]]:
        paths = [os.path.abspath(os.path.expanduser(f)) for f in files]
        if not paths:
            raise BadQuery("no files given: name one or more images to tag")
        stored: dict[str, Any] = {}
        if self.store.vectors(self.settings.collection):
            for point in self.collection.retrieve([point_id(p) for p in paths], with_vectors=True):
                stored[file_path(point.payload)] = point.vector
        vectors, sources = [], []
        for path in paths:
            if stored.get(path) is not None:
                vectors.append(np.asarray(stored[path], np.float32))
                sources.append((path, "index"))
                continue
            try:
                image = decode(path, min_side=self.encoder.input_size + CROP_MARGIN).image
            except DecodeError as exc:
                raise BadQuery(f"cannot tag {path}: {exc}") from None
            except FileNotFoundError:
                raise BadQuery(f"cannot tag {path}: no such file") from None
            assert image is not None  # decoded on the CPU
            vectors.append(self.encoder.embed_images([image])[0])
            sources.append((path, "file"))
        return np.stack(vectors), sources

    # -- copies between Qdrants (transfer.py) --------------------------------------------------
    def push(self, to: str | Store, *, remote_collection: str | None = None, options: CollectionOptions | None = None,
             progress: TransferProgress | None = None) -> TransferReport:
        """Copy this index to the Qdrant server or cluster at ``to`` (a URL, or an open Store),
        into ``remote_collection`` (default: the same name), bound to the same model. Run it
        again to resume."""
        name = self.settings.collection
        with self._other_store(to) as destination:
            spec = bound_spec(self.store, name)
            source = self.store.collection(name, spec)
            return transfer(source, destination, name=remote_collection or name, spec=spec, options=options,
                            progress=progress)

    def pull(self, source: str | Store, *, remote_collection: str | None = None,
             progress: TransferProgress | None = None) -> TransferReport:
        """Copy ``remote_collection`` (default: this index's name) from the Qdrant at ``source``
        (a URL, or an open Store) into this index's collection. Run it again to resume."""
        name = self.settings.collection
        with self._other_store(source) as remote:
            spec = bound_spec(remote, remote_collection or name)
            return transfer(remote.collection(remote_collection or name, spec), self.store, name=name, spec=spec,
                            progress=progress)

    @contextlib.contextmanager
    def _other_store(self, where: str | Store) -> Iterator[Store]:
        """The other side of a copy: a server opened (and closed) here, or the caller's store."""
        if not isinstance(where, str):
            yield where
            return
        if not where.strip():
            raise ConfigError("no Qdrant URL given to copy to or from; pass one such as http://localhost:6333")
        if where.rstrip("/") == (self.settings.qdrant_url or "").rstrip("/"):
            raise ConfigError(f"{where} is the server this index is on already; copy between two different Qdrants")
        s = self.settings
        with open_store(s.store_path, qdrant_url=where, api_key=s.qdrant_api_key, timeout=s.timeout) as store:
            yield store

    def count(self) -> int:
        """How many images the collection holds."""
        return self.collection.count()

    def remove(self, paths: Sequence[str | os.PathLike[str]]) -> int:
        """Forget these files, or every image under these folders; files on disk are untouched."""
        collection = self.collection
        if not paths:
            return 0
        for path in paths:  # all checked before anything is deleted
            self._known_path(path, "remove")
        before = collection.count()
        # `under` matches a file by its path and a folder by its ancestors: one delete for all
        collection.delete_where(Filter(under=tuple(os.path.abspath(os.path.expanduser(p)) for p in paths)))
        return before - collection.count()

    def _known_path(self, path: str | os.PathLike[str], flag: str) -> None:
        """A path is usable as a filter if it is on disk or something is indexed under it (an
        unplugged drive's photos stay searchable); anything else is a typo, said in one line."""
        full = os.path.abspath(os.path.expanduser(path))
        if not os.path.lexists(full) and self.collection.count(Filter(under=(full,))) == 0:
            raise BadValue(f"{flag} {full}: no such file or folder, and nothing indexed under it")

    @property
    def location(self) -> str:
        return self.settings.qdrant_url or str(self.settings.store_path)

    def stats(self) -> IndexStats:
        """The store, its collections (with when each was last indexed) and its size on disk."""
        store, ledger = self.store, self.ledger()
        with self._lock:  # it reads the open shards too
            collections = tuple(replace(c, last_indexed=(ledger.last_index(c.name) or {}).get("at"))
                                for c in store.collections())
        disk = store.disk_bytes()
        return IndexStats(store=store.kind, location=self.location, device=device_summary(),
                          collections=collections, disk_bytes=disk)

    def close(self) -> None:
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None
            self._collection = None
            self._spec = None


When = str | date | datetime | None


def date_range(after: When, before: When) -> tuple[datetime | None, datetime | None]:
    """``after`` and ``before`` as datetimes (a bare date is its midnight), checked in order."""
    since, until = _when(after, "after"), _when(before, "before")
    if since is not None and until is not None and since >= until:
        raise BadValue(f"--after ({since:%Y-%m-%d %H:%M}) must be earlier than --before ({until:%Y-%m-%d %H:%M})")
    return since, until


def _when(value: When, name: str) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day)
    text = value.strip()
    if not text:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise BadValue(f"--{name} {text[:40]!r} is not a date: use YYYY-MM-DD, or YYYY-MM-DDTHH:MM") from None


def index_roots(paths: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """The folders and files to index. Some may be missing (an unplugged drive: its photos are
    kept, not pruned), but if every one is, the command is refused before anything starts."""
    roots = [Path(p).expanduser() for p in paths]
    missing = [str(r) for r in roots if not r.exists()]
    if roots and len(missing) == len(roots):
        raise BadValue(f"nothing to index: {', '.join(missing)} does not exist")
    return roots


def check_language(code: str) -> str:
    """``code`` as the ISO 639-1 (or FLORES-200) code the encoders take, or a one-line refusal."""
    try:
        return canonical(code)
    except UnknownLanguage:
        raise BadValue(f"--lang {code!r} is not a language code: use ISO 639-1 (e.g. de, ja, zh, pt) or "
                       f"FLORES-200 (e.g. deu_Latn, zho_Hant)") from None


def tag_info() -> TagInfo:
    """The shipped vocabulary (size, languages) and the tagger's defaults, per model."""
    from .tagging.tagger import CALIBRATED, TagDefaults
    from .vocab import LANGUAGES, load_vocabulary

    fallback = TagDefaults()
    return TagInfo(concepts=len(load_vocabulary()), languages=LANGUAGES, top_k=fallback.top_k,
                   min_score=fallback.min_score,
                   calibrated={model: (d.top_k, d.min_score) for model, d in CALIBRATED.items()})


def list_models() -> list[ModelRow]:
    """The model registry, with whether each model can run here right now, offline."""
    return model_rows()
