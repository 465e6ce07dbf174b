"""Open photos in the system's viewer: xdg-open on Linux and the BSDs, open on macOS, the file
association on Windows. Each file is handed over and left to the viewer; xlir does not wait."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence


class NoViewer(Exception):
    """There is no way to open files here (no xdg-open on PATH, say); the message says which."""


def opener() -> str | None:
    """The program that opens a file with its default application, or None on Windows, which
    has os.startfile instead."""
    if sys.platform == "win32":
        return None
    name = "open" if sys.platform == "darwin" else "xdg-open"
    found = shutil.which(name)
    if found is None:
        raise NoViewer(f"cannot open photos: no {name} on PATH (install xdg-utils, or use --format paths "
                       f"and pass them to a viewer)")
    return found


def open_files(paths: Sequence[str]) -> None:
    program = opener()
    for path in paths:
        if program is None:
            os.startfile(path)  # type: ignore[attr-defined]  # Windows only
        else:
            subprocess.Popen([program, path], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
