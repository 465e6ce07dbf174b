"""Where xlir keeps derived files (label matrices, exported models): XLIR_CACHE, else
XLIR_HOME/cache, else the platform's user cache dir."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs


def cache_dir() -> Path:
    if env := os.environ.get("XLIR_CACHE"):
        path = Path(env).expanduser()
    elif home := os.environ.get("XLIR_HOME"):
        path = Path(home).expanduser() / "cache"
    else:
        path = Path(platformdirs.user_cache_dir("xlir"))
    path.mkdir(parents=True, exist_ok=True)
    return path
