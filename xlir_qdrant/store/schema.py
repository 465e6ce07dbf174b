"""The point schema: one point per image, the same on every backend.

    id        uuid5 of the image's absolute path
    vector    one named vector, called after the model that made it (ModelSpec.vector_name)
    payload   path (keyword, indexed), dirs (every ancestor directory, keyword array, indexed:
              this is how "under this folder" filters work on any backend), size (int),
              mtime_ns (int), sha256 (keyword, indexed), width, height (int), taken_at
              (ISO-8601 or null; taken_at and mtime_ns have range indexes), tags (concept ids, keyword array, indexed) and tags_key
              (what computed those tags: stale ones are recomputed from the stored vector)

File names are bytes to the filesystem, and not every name is valid UTF-8 (FAT drives, Samba
shares, old Latin-1 copies). Python hands such names over with surrogate escapes, which JSON
cannot carry. So ``path`` and ``dirs`` hold the readable form (the bytes that are not UTF-8
written as \\xNN), the id is computed from the bytes themselves, and a name that needed
escaping also keeps them, base64-encoded, in ``path_bytes``: ``file_path()`` gives the exact
name back. For every valid name this is the plain path, and the same uuid5 as before.
"""

from __future__ import annotations

import base64
import hashlib
import os
import uuid
from datetime import datetime
from pathlib import PurePath
from typing import Any

import numpy as np

POINT_NAMESPACE = uuid.NAMESPACE_URL
INDEXED_KEYWORDS = ("path", "dirs", "sha256", "tags")
TEXT_KEY = "text"  # the text read in a photo (`xlir index --read-text`), full-text indexed
# Range indexes behind the date filter (Filter.after / before): field -> kind
INDEXED_RANGES = {"taken_at": "datetime", "mtime_ns": "integer"}


def point_id(path: str) -> str:
    """uuid5 of the absolute path's bytes: uuid.uuid5(NAMESPACE_URL, path) for any UTF-8 name,
    and an id for the names that are not UTF-8 as well."""
    raw = os.fsencode(os.path.abspath(path))
    digest = hashlib.sha1(POINT_NAMESPACE.bytes + raw, usedforsecurity=False).digest()
    return str(uuid.UUID(bytes=digest[:16], version=5))


def shown(path: str) -> str:
    """The readable form of a path: itself when it is valid UTF-8, else with \\xNN escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def file_path(payload: dict[str, Any]) -> str:
    """The exact filesystem path of a stored point (see the module docstring)."""
    raw = payload.get("path_bytes")
    if raw:
        return os.fsdecode(base64.b64decode(raw))
    return str(payload.get("path", ""))


def photo_date(payload: dict[str, Any]) -> str | None:
    """When the photo was taken (EXIF), else its file's modification time, as local ISO-8601."""
    if payload.get("taken_at"):
        return str(payload["taken_at"])
    if payload.get("mtime_ns") is None:
        return None
    return datetime.fromtimestamp(int(payload["mtime_ns"]) / 1e9).isoformat(timespec="seconds")


def sound_vector(vector: Any, dim: int) -> bool:
    """Whether a stored vector is what an encoder writes: ``dim`` finite values of unit length."""
    if vector is None:
        return False
    v = np.asarray(vector, dtype=np.float64).reshape(-1)
    if v.shape != (dim,) or not np.isfinite(v).all():
        return False
    return abs(float(np.linalg.norm(v)) - 1.0) < 1e-3


def damaged_rows(vectors: list[Any], dim: int) -> list[bool]:
    """``not sound_vector(v, dim)`` for each of many vectors, in one numpy pass."""
    if not vectors:
        return []
    if any(v is None or np.asarray(v).shape != (dim,) for v in vectors):
        return [not sound_vector(v, dim) for v in vectors]
    m = np.asarray(vectors, dtype=np.float64)
    finite = np.isfinite(m).all(axis=1)
    norms = np.linalg.norm(np.where(finite[:, None], m, 0.0), axis=1)
    return (~finite | (np.abs(norms - 1.0) >= 1e-3)).tolist()


def ancestors(path: str) -> list[str]:
    """Every directory above ``path``, root first: the payload behind "under this folder"."""
    return [shown(str(p)) for p in reversed(PurePath(path).parents)]


def image_payload(path: str, *, size: int, mtime_ns: int, sha256: str, width: int | None,
                  height: int | None, taken_at: str | None) -> dict[str, Any]:
    """The payload fields every image point has (tags come on top)."""
    readable = shown(path)
    extra = {} if readable == path else {"path_bytes": base64.b64encode(os.fsencode(path)).decode("ascii")}
    return {
        "path": readable,
        **extra,
        "dirs": ancestors(path),
        "size": size,
        "mtime_ns": mtime_ns,
        "sha256": sha256,
        "width": width,
        "height": height,
        "taken_at": taken_at,
    }
