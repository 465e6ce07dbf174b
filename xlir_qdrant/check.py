"""Store integrity: verify every point against its file, and repair what is wrong.

A point is sound when its vector is the model's width, finite and of unit length, its payload
names a path, size, mtime and content hash, its id is its path's, and its file is still there
with the stored size and mtime. Repairing never guesses: a point whose file is gone (or whose
payload no longer says which file it was) is removed, the way `xlir index` would prune it;
every other faulty point is embedded again from its file.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .records import CheckEvent, CheckReport, IngestReport, Point
from .store import Collection
from .store.schema import file_path, point_id, shown, sound_vector

Progress = Callable[[CheckEvent], None]
Reindex = Callable[[Sequence[str]], IngestReport]


@dataclass
class _Findings:
    points: int = 0
    sound: int = 0
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        ("bad_vector", "bad_payload", "wrong_id", "missing_file", "changed_file"), 0))
    remove: list[str] = field(default_factory=list)  # point ids to delete
    embed: list[str] = field(default_factory=list)  # files to embed again


def check_points(collection: Collection, dim: int, *, repair: bool, reindex: Reindex,
                 progress: Progress | None = None) -> CheckReport:
    """Verify every point of ``collection``; with ``repair``, fix what is wrong (``reindex``
    embeds files again, as `xlir index` does)."""
    emit = progress or (lambda _e: None)
    start = time.perf_counter()
    emit(CheckEvent("total", n=collection.count()))
    found = _Findings()
    for point in collection.scroll(with_vectors=True, batch=256):
        found.points += 1
        fault = _verify(point, dim, found)
        if fault:
            emit(CheckEvent("fault", path=shown(str(point.payload.get("path", point.id))), reason=fault))
        else:
            found.sound += 1
        if found.points % 256 == 0:
            emit(CheckEvent("checked", n=256))
    emit(CheckEvent("checked", n=found.points % 256))
    repaired = removed = 0
    if repair and (found.remove or found.embed):
        emit(CheckEvent("stage", reason=f"repairing: removing {len(found.remove)}, embedding {len(found.embed)}"))
        if found.remove:
            before = collection.count()
            collection.delete(found.remove)
            removed = before - collection.count()
        if found.embed:
            report = reindex(found.embed)
            repaired = report.added + report.updated + report.reused
        collection.flush()
    return CheckReport(collection=collection.name, points=found.points, sound=found.sound, **found.counts,
                       repaired=repaired, removed=removed, seconds=time.perf_counter() - start)


def _verify(point: Point, dim: int, found: _Findings) -> str:
    """The point's fault in words, or "" when it is sound; notes what repairing it takes."""
    p: dict[str, Any] = point.payload
    if not (isinstance(p.get("path"), str) and p.get("path") and isinstance(p.get("size"), int)
            and isinstance(p.get("mtime_ns"), int) and isinstance(p.get("sha256"), str)):
        found.counts["bad_payload"] += 1
        found.remove.append(point.id)  # which file it was is lost: `xlir index` adds it again
        return "payload unreadable (no path, size, mtime or hash)"
    path = file_path(p)
    try:
        st = os.stat(path)
    except OSError:
        found.counts["missing_file"] += 1
        found.remove.append(point.id)
        return "its file is gone"
    if point.id != point_id(path):
        found.counts["wrong_id"] += 1
        found.remove.append(point.id)
        found.embed.append(path)
        return "stored under an id that is not its path's"
    if not sound_vector(point.vector, dim):
        found.counts["bad_vector"] += 1
        found.remove.append(point.id)  # else the next run would take it as unchanged
        found.embed.append(path)
        return "damaged vector (not finite, not unit length, or the wrong width)"
    if st.st_size != p["size"] or st.st_mtime_ns != p["mtime_ns"]:
        found.counts["changed_file"] += 1
        found.embed.append(path)
        return "the file changed since it was indexed"
    return ""
