"""The index run: scan -> decide -> embed in batches -> upsert, incremental (run.py); its
embedding step on a Ray cluster (distributed.py, imported only when asked for)."""

from .run import TAGS_KEY, Embedding, EmbeddingFactory, IngestOptions, IngestRun, Progress, Tagging

__all__ = ["TAGS_KEY", "Embedding", "EmbeddingFactory", "IngestOptions", "IngestRun", "Progress", "Tagging"]
