"""The store seam: pick a backend in one place (open_store).

The backends are imported lazily so that the embedded default never pays for importing
qdrant-client, and a server run never loads the Edge engine.
"""

from __future__ import annotations

from pathlib import Path

from .base import Collection, Store

__all__ = ["Collection", "Store", "open_store"]


def open_store(root: Path | str, *, qdrant_url: str | None = None, api_key: str | None = None,
               timeout: float = 10.0, purpose: str | None = None, create: bool = True) -> Store:
    """The embedded Edge store under ``root``, or a Qdrant server when ``qdrant_url`` is set.

    ``purpose`` describes this process (e.g. "xlir index") to a second process that finds the
    embedded store locked. Refusing ambiguous settings (both a URL and an explicit store
    directory) is the settings layer's job; here the URL simply wins.
    """
    if qdrant_url:
        from .server import ServerStore

        return ServerStore.connect(qdrant_url, api_key=api_key, timeout=timeout)
    from .edge import EdgeStore

    return EdgeStore(Path(root), purpose=purpose, create=create)
