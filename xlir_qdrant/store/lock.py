"""One process per store directory, refused with a message that names the holder.

Qdrant Edge already refuses a second process (its WAL lock), but its error says only
"WouldBlock". Our own lock file is taken first so the refusal can name the process that
holds the store and what it is doing. flock locks die with their process, so a crashed
run never leaves a stale lock behind; the PID text it leaves is simply overwritten.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import IO

from ..errors import StoreLocked

try:
    import fcntl
except ImportError:  # Windows: no flock; Edge's own WAL lock still refuses a second process
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = "xlir.lock"


def default_purpose() -> str:
    """A short description of this process, e.g. "xlir index", for the other process to read."""
    if not sys.argv or not sys.argv[0]:
        return "python"
    words = [Path(sys.argv[0]).name, *sys.argv[1:2]]
    return " ".join(words)[:60]


def locked_message(location: str | Path, pid: int | None, purpose: str | None) -> str:
    who = f"process {pid}" if pid else "another process"
    if purpose:
        who += f" ({purpose})"
    return (
        f"store {location} is in use by {who}; "
        f"wait for it to finish or use --store to pick another directory"
    )


class DirLock:
    """An exclusive, non-blocking flock on ``directory/xlir.lock`` holding "PID purpose"."""

    def __init__(self, directory: Path, purpose: str | None = None) -> None:
        self.path = directory / LOCK_NAME
        self._file: IO[str] | None = None
        if fcntl is None:
            return
        # "a+" and not "w": opening must not wipe the holder's PID before we know we own it.
        handle = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 (held until release)
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            pid, other = _parse(handle.read())
            handle.close()
            raise StoreLocked(locked_message(directory, pid, other)) from None
        except BaseException:
            handle.close()
            raise
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()} {purpose or default_purpose()}\n")
        handle.flush()
        self._file = handle

    def release(self) -> None:
        """Unlock; idempotent. The file stays: deleting it would race a process opening it."""
        if self._file is None:
            return
        handle, self._file = self._file, None
        handle.seek(0)
        handle.truncate()
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        handle.close()


def _parse(text: str) -> tuple[int | None, str | None]:
    first, _, rest = text.strip().partition(" ")
    if not first.isdigit():  # read between the holder's truncate and write
        return None, None
    return int(first), rest.strip() or None
