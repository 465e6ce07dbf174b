"""TrainConfig: everything that decides the trained weights. Kept free of torch, so `xlir
--help` and the CLI's options (derived from these fields) stay instant."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import ConfigError

MINING_MODES: tuple[str, ...] = ("hardest", "semihard", "all")
LOSSES: tuple[str, ...] = ("patr", "m3")


def _option(default: Any, help: str) -> Any:
    """A TrainConfig field with the help text its `xlir train` option shows."""
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True, slots=True)
class TrainConfig:
    """Everything that decides the trained weights (saved as train-config.json). Each field is
    an option of `xlir train` (--text-margin for text_margin), with this default and help."""

    loss: str = _option("m3", "patr, or m3 (PATR + push captions of other images apart).")
    margin: float = _option(0.4, "Image margin m: negatives pushed to cosine distance >= m.")
    text_margin: float = _option(0.6, "M3 text margin: captions of other images pushed to distance >= this.")
    m3_weight: float = _option(0.5, "Weight of M3's text-text term.")
    mining: str = _option("hardest", "Which in-batch negative: hardest, semihard or all.")
    lr: float = _option(1e-3, "Peak AdamW learning rate.")
    weight_decay: float = _option(1e-4, "AdamW weight decay.")
    batch_size: int = _option(256, "Captions per step (in-batch negatives).")
    epochs: int = _option(10, "Passes over the training captions.")
    warmup: float = _option(0.05, "Linear warm-up: a fraction of all steps (<1) or a step count (>=1).")
    seed: int = _option(0, "Seed for the split, initialisation, dropout and batch order.")
    dim: int = _option(512, "Joint embedding dimension.")
    hidden: int = _option(1024, "Width of the text head's hidden layer.")
    dropout: float = _option(0.1, "Dropout in the text head.")
    image_projection: bool = _option(True, "Train a projection of the image features (off: they must "
                                           "already be --dim wide).")
    val_fraction: float = _option(0.05, "Share of images held out for validation recall.")
    val_max_images: int = _option(1000, "Validation recall over at most this many held-out images "
                                        "(COCO's 1K protocol).")

    def validate(self) -> None:
        problems = []
        if self.loss not in LOSSES:
            problems.append(f"--loss {self.loss!r} (use {' or '.join(LOSSES)})")
        if self.mining not in MINING_MODES:
            problems.append(f"--mining {self.mining!r} (use {', '.join(MINING_MODES)})")
        if self.batch_size < 2:
            problems.append("--batch-size below 2 (in-batch negatives need company)")
        if self.epochs < 1 or self.dim < 1 or self.hidden < 1 or self.lr <= 0:
            problems.append("--epochs, --dim, --hidden and --lr must be positive")
        if not 0 <= self.margin <= 2 or not 0 <= self.text_margin <= 2:
            problems.append("margins are cosine distances, in [0, 2]")
        if not 0 <= self.dropout < 1 or self.weight_decay < 0 or self.val_max_images < 1:
            problems.append("--dropout must be in [0, 1), --weight-decay at least 0, --val-max-images at least 1")
        if problems:
            raise ConfigError("invalid training settings: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
