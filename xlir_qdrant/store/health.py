"""Keeping an embedded shard trustworthy: what state it was left in, and whether it still opens.

Qdrant Edge runs in this process, so a damaged shard can take the process down with it: a
damaged id tracker makes the engine ask for 60 GB and abort, a damaged payload page panics,
and any write on a full disk is a SIGBUS through its memory maps. None of those can be caught.
So each collection directory has a small state file beside it (``<name>.state.json``):

    clean        the last process to open it closed it (flushed, nothing half-written)
    fingerprint  the size and mtime of every file in it at that close
    points       how many points it held then
    verified     its vectors have been read and checked since it was last found not intact

A shard whose state is clean and whose files are as they were opens as it did then, so it is
opened directly; if it is also verified it is trusted: its vectors are not re-read on every
rescan. Any other (a run was killed, or the files were changed from outside) is first opened by
a child process: if the child dies or reports an error, or the shard holds fewer points than it
did when it was last closed cleanly, it is damaged, and the user is told to run `xlir check
--repair`. A shard that passed and was closed cleanly since is not probed again (each `xlir
search` would pay a second open), though it stays untrusted until an index run has read every
vector.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ..cache import free_mb
from ..errors import DiskFull

# The engine maps a 32 MB write-ahead-log segment when it opens a shard and another as the log
# fills; a mapped write with no disk block behind it is a SIGBUS. Below this much free space,
# nothing is opened or written.
MIN_FREE_MB = 64
PROBE_TIMEOUT_S = 120

_PROBE = """
import json, sys
import qdrant_edge
shard = qdrant_edge.EdgeShard.load(sys.argv[1])
points = shard.info().points_count
shard.close()
print(json.dumps({"points": points}))
"""


@dataclass(frozen=True, slots=True)
class ShardState:
    clean: bool = False
    fingerprint: str = ""
    points: int = -1
    verified: bool = False


def state_file(shard_dir: Path) -> Path:
    return shard_dir.with_name(shard_dir.name + ".state.json")


def read_state(shard_dir: Path) -> ShardState | None:
    try:
        data = json.loads(state_file(shard_dir).read_text(encoding="utf-8"))
        return ShardState(bool(data["clean"]), str(data["fingerprint"]), int(data["points"]),
                          bool(data.get("verified", False)))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_state(shard_dir: Path, state: ShardState) -> None:
    """Best effort: a state that cannot be written only means the next open probes first."""
    path = state_file(shard_dir)
    tmp = path.with_name(path.name + ".tmp")
    with contextlib.suppress(OSError):
        tmp.write_text(json.dumps({"clean": state.clean, "fingerprint": state.fingerprint,
                                   "points": state.points, "verified": state.verified}), encoding="utf-8")
        os.replace(tmp, path)


def fingerprint(shard_dir: Path) -> str:
    """The size and mtime of every file under the shard: changed by any write to it."""
    h = hashlib.sha256()
    for folder, _dirs, files in sorted(os.walk(shard_dir)):
        for name in sorted(files):
            path = os.path.join(folder, name)
            with contextlib.suppress(OSError):
                st = os.stat(path)
                h.update(f"{os.path.relpath(path, shard_dir)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def as_closed(shard_dir: Path) -> ShardState | None:
    """The shard's state when it was last closed cleanly and no file in it has changed since
    (it opens as it did then), else None."""
    state = read_state(shard_dir)
    return state if state is not None and state.clean and state.fingerprint == fingerprint(shard_dir) else None


@dataclass(frozen=True, slots=True)
class Probe:
    ok: bool
    points: int = 0
    reason: str = ""


def probe(shard_dir: Path) -> Probe:
    """Open the shard in a child process: a crash there costs nothing here."""
    try:
        done = subprocess.run([sys.executable, "-c", _PROBE, str(shard_dir)], capture_output=True, text=True,
                              timeout=PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return Probe(False, reason=f"opening it took over {PROBE_TIMEOUT_S} s")
    if done.returncode == 0:
        try:
            return Probe(True, points=int(json.loads(done.stdout.strip().splitlines()[-1])["points"]))
        except (ValueError, KeyError, IndexError):
            pass
    return Probe(False, reason=_child_reason(done))


def _child_reason(done: subprocess.CompletedProcess[str]) -> str:
    lines = [ln.strip() for ln in done.stderr.splitlines() if ln.strip()]
    message = next((ln for ln in lines if ln.startswith("memory allocation of")), None)
    if message is None:
        errors = [ln for ln in lines if "Error" in ln or "error" in ln or "panicked" in ln or "assertion" in ln]
        message = errors[-1] if errors else (lines[-1] if lines else "")
    if done.returncode < 0:
        return f"the storage engine crashed opening it ({message or f'signal {-done.returncode}'})"
    return message[:300] or f"exit code {done.returncode}"


def require_space(where: Path, extra_mb: float = 0.0) -> None:
    """Refuse, with one line, to open or write where a full disk would crash the engine."""
    free = free_mb(where)
    need = MIN_FREE_MB + extra_mb
    if free < need:
        raise DiskFull(f"disk full: {free:.0f} MB free at {where}, and the index needs at least {need:.0f} MB "
                       f"there to be opened and written safely; free some space and run the command again "
                       f"(nothing stored is lost)")
