"""xlir: cross-lingual photo search and tagging on Qdrant.

    from xlir_qdrant import Index
    with Index.open() as idx:
        idx.index(["~/Pictures"])
        hits = idx.search("perro en la playa").hits
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"
__all__ = ["Index", "Settings", "__version__"]

if TYPE_CHECKING:
    from .config import Settings
    from .index import Index


def __getattr__(name: str) -> object:
    # Lazy, so `import xlir_qdrant` (and `xlir --version`) stays instant.
    if name == "Index":
        from .index import Index

        return Index
    if name == "Settings":
        from .config import Settings

        return Settings
    raise AttributeError(name)
