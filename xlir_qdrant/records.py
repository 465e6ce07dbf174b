"""Small frozen records that cross the seams (store <-> index <-> CLI)."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True, slots=True)
class Point:
    """One image as the store sees it: id, the model's vector, and its payload."""

    id: str
    vector: NDArray[np.float32] | None
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ScoredPoint:
    id: str
    score: float
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Filter:
    """The payload filters xlir uses; each store translates it to its own API.

    ``under``: keep images at or below one of these directories, or that are one of these files.
    ``paths``: keep exactly these absolute paths. ``sha256``: keep images with this content hash.
    Non-empty fields combine with AND.
    """

    under: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    sha256: str | None = None
    tags: tuple[str, ...] = ()  # keep images tagged with any of these concept ids

    def is_empty(self) -> bool:
        return not (self.under or self.paths or self.sha256 or self.tags)


@dataclass(frozen=True, slots=True)
class Hit:
    """One search result, rendered the same way as a table row and as a JSON line."""

    rank: int
    score: float
    path: str
    date: str | None  # when the photo was taken (EXIF), else the file's modification time
    size: int
    width: int | None = None
    height: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class IngestReport:
    """What one `index` run did."""

    scanned: int = 0
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    reused: int = 0
    removed: int = 0
    failed: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Tag:
    """One tag for one image: a concept id, its name in the asked language, and a score."""

    rank: int
    id: str
    name: str
    lang: str
    score: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """What a model is, independent of whether it is loaded.

    ``loader`` is "module:function" taking (spec, device) and returning an Encoder, so the
    registry can be listed without importing torch or open_clip.
    """

    id: str
    dim: int
    languages: tuple[str, ...]
    licence: str
    size_mb: int
    bundled: bool
    needs_lang: bool
    loader: str
    description: str = ""
    options: dict[str, str] = field(default_factory=dict)

    @property
    def vector_name(self) -> str:
        """The name of this model's vector in a Qdrant collection (safe characters only)."""
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", self.id)
