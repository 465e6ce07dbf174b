"""Retrieval evaluation: recall@K per language for any registered model or checkpoint, on XTD10
or any multilingual caption set (docs/training.md, "Evaluation").

    from xlir_qdrant.eval import evaluate, load_tsv
    rows = evaluate(load_tsv("captions.tsv"), ["default", "path/to/checkpoint"])
"""

from __future__ import annotations

from .recall import recall_at, retrieval_recall
from .run import EvalRow, average_row, evaluate, reference_rows
from .xtd10 import DatasetError, EvalSet, LangCaptions, load_tsv, load_xtd10

__all__ = ["DatasetError", "EvalRow", "EvalSet", "LangCaptions", "average_row", "evaluate", "load_tsv",
           "load_xtd10", "recall_at", "reference_rows", "retrieval_recall"]
