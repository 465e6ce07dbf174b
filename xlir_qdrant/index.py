"""Index: the facade that ties one Encoder to one Store. The CLI talks only to this.

    from xlir_qdrant import Index
    with Index.open() as idx:                 # embedded store under the data dir
        idx.index(["~/Pictures"])
        for hit in idx.search("perro en la playa").hits:
            print(hit.score, hit.path)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .config import Settings
from .encoders.base import Encoder, ModelSpec, get_spec, load_encoder, registry
from .encoders.specs import DEFAULT_MODEL
from .errors import EmptyIndex, ModelMismatch
from .ingest.pipeline import IngestOptions, Progress, ingest, point_id
from .records import Filter, IngestReport
from .search import SearchResult, search, validate
from .store import open_store
from .store.base import Store


class Index:
    def __init__(self, settings: Settings | None = None, *, store: Store | None = None,
                 encoder: Encoder | None = None, purpose: str = "xlir") -> None:
        self.settings = settings or Settings.load()
        self._store = store
        self._encoder = encoder
        self._purpose = purpose
        self._ready = False

    @classmethod
    def open(cls, *, purpose: str = "xlir", **flags: Any) -> Index:
        """Settings from defaults, config file, XLIR_* env and these keyword overrides."""
        return cls(Settings.load(**flags), purpose=purpose)

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- wiring -------------------------------------------------------------------------
    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = _open_store(self.settings, self._purpose)
        return self._store

    def collection_model(self) -> ModelSpec | None:
        """The spec of the model that built this collection, if it exists and is known."""
        for info in self.store.collections():
            if info.name == self.settings.collection:
                for spec in registry():
                    if spec.vector_name == info.model:
                        return spec
                raise ModelMismatch(
                    f"collection {info.name!r} was built with model {info.model!r}, which this xlir does not "
                    f"know; pass --model PATH_OR_ID for it, or --collection NEW for a new index"
                )
        return None

    def model_spec(self) -> ModelSpec:
        if self._encoder is not None:
            return self._encoder.spec
        if self.settings.model:
            return get_spec(self.settings.model)
        return self.collection_model() or get_spec(DEFAULT_MODEL)

    @property
    def encoder(self) -> Encoder:
        if self._encoder is None:
            self._encoder = load_encoder(self.model_spec().id if not self.settings.model else self.settings.model,
                                         device=self.settings.device)
        return self._encoder

    def _open_collection(self, *, create: bool) -> None:
        if not self._ready:
            self.store.ensure_collection(self.settings.collection, self.model_spec(), create=create)
            self._ready = True

    # -- operations ---------------------------------------------------------------------
    def index(self, paths: Sequence[str | os.PathLike[str]], *, progress: Progress | None = None,
              include_hidden: bool = False, prune: bool = True) -> IngestReport:
        self._open_collection(create=True)
        opts = IngestOptions(batch_size=self.settings.batch_size, include_hidden=include_hidden,
                             max_megapixels=self.settings.max_megapixels, prune=prune)
        if self.settings.workers:
            opts.workers = self.settings.workers
        roots = [Path(p).expanduser() for p in paths]
        return ingest(roots, self.encoder, self.store, opts, progress)

    def search(self, query: str | None = None, *, image: str | os.PathLike[str] | None = None,
               negatives: Sequence[str] = (), top_k: int = 10, min_score: float | None = None,
               lang: str | None = None, under: Sequence[str | os.PathLike[str]] = ()) -> SearchResult:
        validate(query, Path(image) if image else None, top_k)
        self._open_collection(create=False)
        if self.store.count() == 0:
            raise EmptyIndex(f"the index {self.settings.collection!r} at {self.location} is empty: "
                             f"run `xlir index PATH` first")
        return search(self.encoder, self.store, query=query, image=Path(image) if image else None,
                      negatives=tuple(negatives), top_k=top_k, min_score=min_score, lang=lang,
                      under=tuple(Path(u) for u in under))

    def count(self) -> int:
        """How many images the collection holds."""
        self._open_collection(create=False)
        return self.store.count()

    def remove(self, paths: Sequence[str | os.PathLike[str]]) -> int:
        """Forget these files, or every image under these folders; files on disk are untouched."""
        self._open_collection(create=False)
        before = self.store.count()
        for p in paths:
            absolute = os.path.abspath(os.path.expanduser(p))
            self.store.delete([point_id(absolute)])
            self.store.delete_where(Filter(under=(absolute,)))
        return before - self.store.count()

    @property
    def location(self) -> str:
        return self.settings.qdrant_url or str(self.settings.store_path)

    def stats(self) -> dict[str, Any]:
        cols = self.store.collections()
        return {
            "store": "qdrant-server" if self.settings.uses_server else "embedded (Qdrant Edge)",
            "location": self.location,
            "collections": [
                {"name": c.name, "model": c.model, "dim": c.dim, "points": c.points,
                 "indexed_vectors": c.indexed_vectors} for c in cols
            ],
        }

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None
        self._ready = False


def _open_store(settings: Settings, purpose: str) -> Store:
    """The one place that picks a backend: a server when a URL is set, else the embedded engine."""
    return open_store(settings.store_path, qdrant_url=settings.qdrant_url, api_key=settings.qdrant_api_key,
                      timeout=settings.timeout, purpose=purpose)
