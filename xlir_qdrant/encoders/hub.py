"""Is a file of a Hugging Face repository in the local hub cache? Answered from the cache's
documented layout, without importing huggingface_hub (almost half a second) or open_clip and
torch (seconds): `xlir models` asks it for every hub model.

    <cache>/models--<org>--<name>/refs/main             the commit the cache holds for main
    <cache>/models--<org>--<name>/snapshots/<commit>/<file>

<cache> is $HF_HUB_CACHE, else $HUGGINGFACE_HUB_CACHE, else $HF_HOME/hub, where HF_HOME
defaults to $XDG_CACHE_HOME/huggingface or ~/.cache/huggingface, as huggingface_hub has it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

# The files open_clip loads its weights from, in the order it prefers them.
OPEN_CLIP_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def hub_cache() -> Path:
    if cache := os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE"):
        return Path(cache).expanduser()
    if home := os.environ.get("HF_HOME"):
        return Path(home).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return Path(xdg).expanduser() / "huggingface" / "hub"


def in_cache(repo_id: str, filenames: Sequence[str], revision: str = "main") -> bool:
    """Whether one of ``filenames`` of ``repo_id`` at ``revision`` is in the cache."""
    repo = hub_cache() / ("models--" + repo_id.strip("/").replace("/", "--"))
    try:
        commit = (repo / "refs" / revision).read_text(encoding="utf-8").strip()
    except OSError:
        return False
    return any((repo / "snapshots" / commit / name).is_file() for name in filenames)
