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
from .errors import BadQuery, EmptyIndex, ModelMismatch
from .ingest.decode import DecodeError, decode, decode_side
from .ingest.pipeline import ANNOTATION_KEY, IngestOptions, Progress, ingest, point_id
from .records import Filter, IngestReport
from .search import SearchResult, search, validate
from .tagging import TagResult, resolve_tag
from .tagging.tagger import Tagger
from .store import open_store
from .store.base import Store


class Index:
    def __init__(self, settings: Settings | None = None, *, store: Store | None = None,
                 encoder: Encoder | None = None, purpose: str = "xlir") -> None:
        self.settings = settings or Settings.load()
        self._store = store
        self._encoder = encoder
        self._spec: ModelSpec | None = None
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
        name = self.settings.collection
        vectors = self.store.vectors(name)
        if len(vectors) != 1:  # no such collection, or not one xlir made (ensure_collection says so)
            return None
        (vector_name, _dim), = vectors.items()
        for spec in registry():
            if spec.vector_name == vector_name:
                return spec
        raise ModelMismatch(
            f"collection {name!r} was built with model {vector_name!r}, which this xlir does not "
            f"know; pass --model PATH_OR_ID for it, or --collection NEW for a new index"
        )

    def model_spec(self) -> ModelSpec:
        """The encoder's spec; else --model's; else the collection's model; else the default.
        Settled once: each answer reads the collection's config (a request, for a server)."""
        if self._encoder is not None:
            return self._encoder.spec
        if self._spec is None:
            self._spec = get_spec(self.settings.model) if self.settings.model else (
                self.collection_model() or get_spec(DEFAULT_MODEL))
        return self._spec

    @property
    def encoder(self) -> Encoder:
        if self._encoder is None:
            self._encoder = load_encoder(self.model_spec(), device=self.settings.device)
        return self._encoder

    def _open_collection(self, *, create: bool) -> None:
        if not self._ready:
            self.store.ensure_collection(self.settings.collection, self.model_spec(), create=create)
            self._ready = True

    # -- operations ---------------------------------------------------------------------
    def index(self, paths: Sequence[str | os.PathLike[str]], *, progress: Progress | None = None,
              include_hidden: bool = False, prune: bool = True) -> IngestReport:
        roots = [Path(p).expanduser() for p in paths]
        missing = [str(r) for r in roots if not r.exists()]
        if roots and len(missing) == len(roots):
            raise BadQuery(f"nothing to index: {', '.join(missing)} does not exist")
        _ = self.encoder  # a model that cannot load must not leave an empty collection behind
        self._open_collection(create=True)
        opts = IngestOptions(batch_size=self.settings.batch_size, include_hidden=include_hidden,
                             max_megapixels=self.settings.max_megapixels, prune=prune)
        if self.settings.workers:
            opts.workers = self.settings.workers
        tagger = self.tagger()
        key = tagger.key()

        def annotate(vectors: Any) -> list[dict[str, Any]]:
            return [{"tags": ids, ANNOTATION_KEY: key} for ids in tagger.top_ids(vectors)]

        return ingest(roots, self.encoder, self.store, opts, progress, annotate=annotate, annotation=key)

    def search(self, query: str | None = None, *, image: str | os.PathLike[str] | None = None,
               negatives: Sequence[str] = (), top_k: int = 10, min_score: float | None = None,
               lang: str | None = None, under: Sequence[str | os.PathLike[str]] = (),
               tags: Sequence[str] = ()) -> SearchResult:
        """Rank images by ``query`` (any language) and/or ``image``; ``tags`` (ids or names in
        any language of the shipped vocabulary) keep only images tagged so at index time."""
        tag_ids = tuple(resolve_tag(t) for t in tags)
        if tag_ids and not (query or "").strip() and image is None:
            query = " ".join(tags)  # `--tag Katze` alone: rank the tagged images by the tag itself
        validate(query, Path(image) if image else None, top_k)
        self._open_collection(create=False)
        result = search(self.encoder, self.store, query=query, image=Path(image) if image else None,
                        negatives=tuple(negatives), top_k=top_k, min_score=min_score, lang=lang,
                        under=tuple(Path(u) for u in under), tags=tag_ids)
        # Counting 100k points takes 10 ms, twice the search itself: only when nothing matched.
        if not result.hits and self.store.count() == 0:
            raise EmptyIndex(f"the index {self.settings.collection!r} at {self.location} is empty: "
                             f"run `xlir index PATH` first")
        return result

    def tagger(self) -> Tagger:
        """A tagger for this index's model over the shipped vocabulary."""
        from .tagging.vocab import load_vocabulary

        return Tagger(self.encoder, load_vocabulary())

    def tag(self, files: Sequence[str | os.PathLike[str]], *, lang: str = "en", top_k: int | None = None,
            min_score: float | None = None, vocab: str | os.PathLike[str] | None = None) -> list[TagResult]:
        """Tags for each file in ``lang``: indexed images use their stored vector, other files
        are embedded on the fly (and not stored). ``vocab``: a user's tag list, any language."""
        from .tagging.vocab import LANGUAGES, load_user_vocabulary

        free = load_user_vocabulary(Path(vocab)) if vocab else None
        if free is None and lang not in LANGUAGES:
            raise BadQuery(f"the built-in vocabulary has no {lang!r} names; it has {', '.join(LANGUAGES)} "
                           f"(or pass --vocab FILE with your own tags in any language)")
        vectors, sources = self._vectors_for(files)
        tagger = self.tagger()
        per_image = tagger.tag(vectors, lang, top_k=top_k, min_score=min_score, free=free)
        return [TagResult(path=p, source=src, tags=t) for (p, src), t in zip(sources, per_image, strict=True)]

    def _vectors_for(self, files: Sequence[str | os.PathLike[str]]) -> tuple[Any, list[tuple[str, str]]]:
        import numpy as np

        paths = [os.path.abspath(os.path.expanduser(f)) for f in files]
        if not paths:
            raise BadQuery("no files given: name one or more images to tag")
        stored: dict[str, Any] = {}
        if self._collection_exists():
            self._open_collection(create=False)
            for point in self.store.retrieve([point_id(p) for p in paths], with_vectors=True):
                stored[point.payload.get("path", "")] = point.vector
        vectors, sources = [], []
        for path in paths:
            if path in stored and stored[path] is not None:
                vectors.append(np.asarray(stored[path], np.float32))
                sources.append((path, "index"))
                continue
            try:
                image = decode(path, min_side=decode_side(self.encoder)).image
            except DecodeError as exc:
                raise BadQuery(f"cannot tag {path}: {exc}") from None
            except FileNotFoundError:
                raise BadQuery(f"cannot tag {path}: no such file") from None
            vectors.append(self.encoder.embed_images([image])[0])
            sources.append((path, "file"))
        return np.stack(vectors), sources

    def _collection_exists(self) -> bool:
        return bool(self.store.vectors(self.settings.collection))

    def count(self) -> int:
        """How many images the collection holds."""
        self._open_collection(create=False)
        return self.store.count()

    def remove(self, paths: Sequence[str | os.PathLike[str]]) -> int:
        """Forget these files, or every image under these folders; files on disk are untouched."""
        self._open_collection(create=False)
        if not paths:
            return 0
        before = self.store.count()
        # `under` matches a file by its path and a folder by its ancestors: one delete for all
        self.store.delete_where(Filter(under=tuple(os.path.abspath(os.path.expanduser(p)) for p in paths)))
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
        self._spec = None


def _open_store(settings: Settings, purpose: str) -> Store:
    """The one place that picks a backend: a server when a URL is set, else the embedded engine."""
    return open_store(settings.store_path, qdrant_url=settings.qdrant_url, api_key=settings.qdrant_api_key,
                      timeout=settings.timeout, purpose=purpose)
