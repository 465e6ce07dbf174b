"""The store seam: pick a backend in one place (open_store) and share its user-facing messages.

The backends are imported lazily so that the embedded default never pays for importing
qdrant-client, and a server run never loads the Edge engine.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..records import ModelSpec
from .base import INDEXED_KEYWORDS, CollectionInfo, Store

if TYPE_CHECKING:
    from .edge import EdgeStore
    from .server import ServerStore

__all__ = [
    "INDEXED_KEYWORDS",
    "CollectionInfo",
    "EdgeStore",
    "ServerStore",
    "Store",
    "mismatch_message",
    "missing_message",
    "open_store",
]


def open_store(
    root: Path | str,
    *,
    qdrant_url: str | None = None,
    api_key: str | None = None,
    timeout: float = 10.0,
    purpose: str | None = None,
) -> Store:
    """The embedded Edge store under ``root``, or a Qdrant server when ``qdrant_url`` is set.

    ``purpose`` describes this process (e.g. "xlir index") to a second process that finds the
    embedded store locked. Refusing ambiguous settings (both a URL and an explicit store
    directory) is the settings layer's job; here the URL simply wins.
    """
    if qdrant_url:
        from .server import ServerStore

        return ServerStore.connect(qdrant_url, api_key=api_key, timeout=timeout)
    from .edge import EdgeStore

    return EdgeStore(Path(root), purpose=purpose)


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


def __getattr__(name: str) -> object:
    # `from xlir_qdrant.store import EdgeStore` works without importing both engines eagerly.
    if name == "EdgeStore":
        from .edge import EdgeStore

        return EdgeStore
    if name == "ServerStore":
        from .server import ServerStore

        return ServerStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
