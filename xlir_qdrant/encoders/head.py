"""The trainable part of the paper's model: a text head and an image projection into one space.

`xlir train` fits them (train/); checkpoints run them (checkpoint.py), which is why they live
with the encoders: inference never imports the training code. Both towers below are frozen;
only these small layers learn. The text head is a 2-layer MLP with a residual path whose last
layer starts at zero: with a 512-d mUSE input and a 512-d joint space the untrained head *is*
mUSE, and training moves it only as far as the English captions ask. mUSE's alignment across
languages lives in that input space, so a head that stays near it keeps other languages close
to their English translations (the zero-shot transfer the paper relies on).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True, slots=True)
class HeadConfig:
    """Shapes of the trainable layers; stored in the checkpoint to rebuild them."""

    text_in: int
    image_in: int
    dim: int = 512
    hidden: int = 1024
    dropout: float = 0.1
    image_projection: bool = True

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> HeadConfig:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})  # type: ignore[arg-type]


class TextHead(nn.Module):
    """x -> normalise(skip(x) + MLP(x)); skip is the identity when the widths match."""

    def __init__(self, text_in: int, dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.skip: nn.Module = nn.Identity() if text_in == dim else nn.Linear(text_in, dim, bias=False)
        self.mlp = nn.Sequential(
            nn.Linear(text_in, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim)
        )
        # Zero-initialised output layer: the head starts as its skip path (see module docstring).
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.skip(x) + self.mlp(x), dim=-1)


class ImageProjection(nn.Module):
    """LayerNorm + linear map of frozen image features; or none, when they already live in the
    joint space (an open_clip image tower of the right width)."""

    def __init__(self, image_in: int, dim: int, enabled: bool) -> None:
        super().__init__()
        if not enabled and image_in != dim:
            raise ValueError(
                f"image features are {image_in}-d but the joint space is {dim}-d; enable the image "
                f"projection or set the dimension to {image_in}"
            )
        # Pooled CNN features are non-negative and far from zero-mean; normalising them first
        # keeps the projection's early gradients well scaled.
        self.proj: nn.Module = nn.Sequential(nn.LayerNorm(image_in), nn.Linear(image_in, dim)) if enabled else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.proj(x), dim=-1)


class JointModel(nn.Module):
    def __init__(self, config: HeadConfig) -> None:
        super().__init__()
        self.config = config
        self.text = TextHead(config.text_in, config.dim, config.hidden, config.dropout)
        self.image = ImageProjection(config.image_in, config.dim, config.image_projection)

    def embed_text(self, features: torch.Tensor) -> torch.Tensor:
        return self.text(features)

    def embed_image(self, features: torch.Tensor) -> torch.Tensor:
        return self.image(features)
