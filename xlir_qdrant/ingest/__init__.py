"""The index run: scan -> decide -> embed in batches -> upsert, incremental (run.py)."""

from .run import TAGS_KEY, IngestOptions, IngestRun, Progress, Tagging

__all__ = ["TAGS_KEY", "IngestOptions", "IngestRun", "Progress", "Tagging"]
