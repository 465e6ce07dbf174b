"""xlir: cross-lingual photo search and tagging on Qdrant."""

__version__ = "0.1.0"
