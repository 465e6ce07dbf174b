"""The paper's recipe: English-only training of a text head and image projection over frozen
towers, with the PATR and M3 ranking losses (docs/training.md).

    from xlir_qdrant.train import TrainConfig, load_pairs, run
    report = run(load_pairs("pairs.tsv"), Path("ckpt"), TrainConfig(loss="m3", epochs=5))

Import the submodules for the parts: losses, data, features, model, loop, checkpoint.
"""

from __future__ import annotations

from .data import DataError, PairSet, load_coco, load_pairs, split_by_image
from .loop import FeatureSet, TrainConfig, TrainEvent, TrainReport, TrainResult, run, train

__all__ = [
    "DataError", "FeatureSet", "PairSet", "TrainConfig", "TrainEvent", "TrainReport", "TrainResult",
    "load_coco", "load_pairs", "run", "split_by_image", "train",
]
