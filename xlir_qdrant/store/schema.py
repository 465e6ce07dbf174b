"""The point schema: one point per image, the same on every backend.

    id        uuid5 of the image's absolute path
    vector    one named vector, called after the model that made it (ModelSpec.vector_name)
    payload   path (keyword, indexed), dirs (every ancestor directory, keyword array, indexed:
              this is how "under this folder" filters work on any backend), size (int),
              mtime_ns (int), sha256 (keyword, indexed), width, height (int), taken_at
              (ISO-8601 or null), tags (concept ids, keyword array, indexed) and tags_key
              (what computed those tags: stale ones are recomputed from the stored vector)
"""

from __future__ import annotations

import os
import uuid
from pathlib import PurePath
from typing import Any

POINT_NAMESPACE = uuid.NAMESPACE_URL
INDEXED_KEYWORDS = ("path", "dirs", "sha256", "tags")


def point_id(path: str) -> str:
    return str(uuid.uuid5(POINT_NAMESPACE, os.path.abspath(path)))


def ancestors(path: str) -> list[str]:
    """Every directory above ``path``, root first: the payload behind "under this folder"."""
    return [str(p) for p in reversed(PurePath(path).parents)]


def image_payload(path: str, *, size: int, mtime_ns: int, sha256: str, width: int | None,
                  height: int | None, taken_at: str | None) -> dict[str, Any]:
    """The payload fields every image point has (tags come on top)."""
    return {
        "path": path,
        "dirs": ancestors(path),
        "size": size,
        "mtime_ns": mtime_ns,
        "sha256": sha256,
        "width": width,
        "height": height,
        "taken_at": taken_at,
    }
