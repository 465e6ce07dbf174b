"""The tag vocabulary xlir ships for zero-shot multilingual photo tagging, and user vocabularies.

``vocab.tsv`` (shipped next to this module) holds one everyday photo concept per row: a
stable snake_case id derived from the English name, a category, and the word a native
speaker would naturally use as a tag for it in each of the :data:`LANGUAGES`. Ids are
stable: a concept may be renamed in any language, but an id is never reused for a
different concept.

A user vocabulary is a plain UTF-8 text file with one tag per line, in any language::

    # my tags
    Katze
    sunset
    grandma<TAB>Oma

Each line is either ``tag`` or ``id<TAB>tag``. Blank lines and lines starting with ``#``
are ignored (give an id to use a tag that itself starts with ``#``). Without an id, one is
derived from the tag: a slug for tags in Latin script (``Crème brûlée`` -> ``creme_brulee``)
and ``u_`` plus 8 hex digits of a SHA-1 for anything else (``猫`` -> ``u_...``). Repeated
tags collapse into one concept. A user concept has a single name, stored under the
language key ``"*"``, which :meth:`Concept.name` returns for every language.

:func:`lookup` finds a shipped concept by id or by its name in any language
(``xlir search --tag Katze``).
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

LANGUAGES: tuple[str, ...] = ("en", "de", "fr", "es", "it", "ja", "ko", "pl", "ru", "tr", "zh")
"""The languages of the shipped vocabulary, in the column order of ``vocab.tsv``."""

CATEGORIES: tuple[str, ...] = (
    "people", "animal", "food", "drink", "place", "scene", "nature", "plant", "object",
    "vehicle", "event", "weather", "activity", "colour", "clothing", "building",
)  # fmt: skip
"""The categories of the shipped vocabulary."""

ANY_LANGUAGE = "*"
"""The ``names`` key of a user concept's single name, valid for every language."""

USER_CATEGORY = "user"
"""The category of every concept read by :func:`load_user_vocabulary`."""

VOCAB_FILE = "vocab.tsv"
PARENTS_FILE = "parents.tsv"
_PACKAGE = __name__  # "xlir_qdrant.vocab"
_HEADER: tuple[str, ...] = ("id", "category", *LANGUAGES)
_ID_RE = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)*")
_USER_ID_RE = re.compile(r"[a-z0-9]+(?:_[a-z0-9]+)*")
# Letters that Unicode does not decompose into base + accent, for the accent-blind match.
_FOLD = str.maketrans({"ł": "l", "ı": "i", "ø": "o", "đ": "d", "ħ": "h", "æ": "ae", "œ": "oe"})


@dataclass(frozen=True, slots=True)
class Concept:
    """A taggable concept: a stable id, a category and its name per language."""

    id: str
    category: str
    # Excluded from the hash (a dict is unhashable), so concepts can live in sets.
    names: dict[str, str] = field(hash=False)

    def name(self, lang: str) -> str:
        """The concept's name in ``lang``; a user concept's single name in any language."""
        if lang in self.names:
            return self.names[lang]
        if ANY_LANGUAGE in self.names:
            return self.names[ANY_LANGUAGE]
        raise KeyError(
            f"concept {self.id!r} has no name in {lang!r}; it has {', '.join(self.names)}"
        )


# --- the shipped vocabulary -------------------------------------------------------------


def _parse_shipped(lines: Iterable[str], source: str) -> list[Concept]:
    concepts: list[Concept] = []
    seen: dict[str, int] = {}
    rows = iter(enumerate(lines, 1))
    header = next(rows, None)
    if header is None or tuple(header[1].rstrip("\r\n").split("\t")) != _HEADER:
        raise ValueError(f"{source}:1: header must be {chr(9).join(_HEADER)!r}")
    for lineno, raw in rows:
        line = raw.rstrip("\r\n")
        if not line:
            continue
        cols = line.split("\t")
        if len(cols) != len(_HEADER):
            raise ValueError(f"{source}:{lineno}: {len(cols)} columns, expected {len(_HEADER)}")
        cid, category, *names = cols
        if not _ID_RE.fullmatch(cid):
            raise ValueError(f"{source}:{lineno}: id {cid!r} is not lowercase ASCII snake_case")
        if cid in seen:
            raise ValueError(f"{source}:{lineno}: id {cid!r} already used on line {seen[cid]}")
        if category not in CATEGORIES:
            raise ValueError(f"{source}:{lineno}: unknown category {category!r}")
        for lang, name in zip(LANGUAGES, names, strict=True):
            if not name.strip():
                raise ValueError(f"{source}:{lineno}: {cid!r} has no {lang} name")
        seen[cid] = lineno
        concepts.append(Concept(cid, category, dict(zip(LANGUAGES, names, strict=True))))
    return concepts


@functools.lru_cache(maxsize=1)
def _shipped() -> tuple[Concept, ...]:
    text = resources.files(_PACKAGE).joinpath(VOCAB_FILE).read_text(encoding="utf-8")
    return tuple(_parse_shipped(text.splitlines(), f"{_PACKAGE}/{VOCAB_FILE}"))


@functools.lru_cache(maxsize=1)
def parents() -> dict[str, str]:
    """Each concept's more general concept (``daisy`` -> ``flower``), from ``parents.tsv``;
    checked against the vocabulary and for cycles once a process."""
    text = resources.files(_PACKAGE).joinpath(PARENTS_FILE).read_text(encoding="utf-8")
    known = {c.id for c in _shipped()}
    out: dict[str, str] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        child, _, parent = line.partition("\t")
        if child not in known or parent not in known or child in out:
            raise ValueError(f"{_PACKAGE}/{PARENTS_FILE}:{lineno}: {line!r} is not a new concept and a known parent")
        out[child] = parent
    for child in out:
        _chain(out, child)
    return out


def ancestors(concept_id: str) -> tuple[str, ...]:
    """The concepts ``concept_id`` is a kind of, nearest first (``daisy``: flower, plant)."""
    return _chain(parents(), concept_id)


def _chain(table: dict[str, str], cid: str) -> tuple[str, ...]:
    out: list[str] = []
    while cid in table:
        cid = table[cid]
        if cid in out:
            raise ValueError(f"{PARENTS_FILE}: the parents of {out[0]!r} loop")
        out.append(cid)
    return tuple(out)


def load_vocabulary() -> list[Concept]:
    """The shipped vocabulary, in file order (grouped by category).

    The file is read and parsed once per process; each call returns a new list of the
    same (immutable) concepts, so callers may filter or reorder it freely.
    """
    return list(_shipped())


# --- lookup ----------------------------------------------------------------------------


def _key(text: str) -> str:
    """Exact-match key: NFKC, case-folded, whitespace collapsed, Russian ё read as е."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(folded.split()).replace("ё", "е")


def _loose_key(text: str) -> str:
    """Forgiving key: also blind to accents on Latin letters, hyphens and apostrophes.

    Only Latin letters lose their marks: stripping them from kana (ガ -> カ) or Cyrillic
    (й -> и) would turn one word into another.
    """
    out: list[str] = []
    for ch in unicodedata.normalize("NFD", _key(text).translate(_FOLD)):
        if unicodedata.combining(ch) and out and out[-1] < "\u0250":
            continue
        out.append(ch)
    loose = unicodedata.normalize("NFC", "".join(out))
    loose = re.sub(r"['’`]", "", loose)
    return " ".join(re.sub(r"[-_‐‑–]", " ", loose).split())


_Hits = list[tuple[int, Concept]]  # (rank of the name's language in LANGUAGES, concept)


@functools.lru_cache(maxsize=1)
def _index() -> tuple[dict[str, Concept], dict[str, _Hits], dict[str, _Hits]]:
    by_id = {c.id: c for c in _shipped()}
    exact: dict[str, _Hits] = {}
    loose: dict[str, _Hits] = {}
    # Language-major order: every English name comes before any German one, and so on,
    # so that an ambiguous word resolves the same way on every call.
    for rank, lang in enumerate(LANGUAGES):
        for concept in _shipped():
            name = concept.names[lang]
            exact.setdefault(_key(name), []).append((rank, concept))
            loose.setdefault(_loose_key(name), []).append((rank, concept))
    return by_id, exact, loose


def lookup(text: str, lang: str | None = None) -> Concept | None:
    """A shipped concept by id or by name in any language, or None.

    Matching ignores case and Unicode width/compatibility forms (NFKC), and reads ё as е;
    only if nothing matches exactly does it also ignore accents on Latin letters, hyphens
    and apostrophes (``cafe``, ``rüzgar``, ``hot dog``). A word that names different
    concepts in different languages (``Rock``: en rock, de skirt) resolves to the id,
    then the English name, then the other languages in :data:`LANGUAGES` order; pass
    ``lang`` to prefer names in that language first (``lookup("Rock", "de")`` is skirt).
    An unknown ``lang`` is simply no preference.
    """
    key = _key(text)
    if not key:
        return None
    by_id, exact, loose = _index()
    preferred = LANGUAGES.index(lang) if lang in LANGUAGES else None

    def pick(hits: _Hits | None, only_preferred: bool) -> Concept | None:
        for rank, concept in hits or ():
            if not only_preferred or rank == preferred:
                return concept
        return None

    if preferred is not None:
        found = pick(exact.get(key), True) or pick(loose.get(_loose_key(text)), True)
        if found:
            return found
    id_key = re.sub(r"[\s-]+", "_", key)
    if id_key in by_id:
        return by_id[id_key]
    return pick(exact.get(key), False) or pick(loose.get(_loose_key(text)), False)


# --- user vocabularies -----------------------------------------------------------------


def user_tag_id(tag: str) -> str:
    """The id derived for a user tag given without one.

    Tags in Latin script become a slug (``Crème brûlée`` -> ``creme_brulee``, ``Straße`` ->
    ``strasse``); any other tag (``猫``, ``кошка``), or one with nothing to slug (``!!``),
    becomes ``u_`` plus the first 8 hex digits of the SHA-1 of its NFKC, case-folded
    form, so the id is stable across runs and machines.
    """
    norm = _key(tag)
    latin = "".join(
        ch for ch in unicodedata.normalize("NFKD", norm.translate(_FOLD))
        if not unicodedata.combining(ch)
    )  # fmt: skip
    if latin.isascii():
        slug = re.sub(r"[^a-z0-9]+", "_", latin).strip("_")
        if slug:
            return slug
    return "u_" + hashlib.sha1(norm.encode("utf-8")).hexdigest()[:8]


def load_user_vocabulary(path: str | os.PathLike[str]) -> list[Concept]:
    """Concepts from a user's tag file (see the module docstring for the format).

    Returns concepts in file order, category :data:`USER_CATEGORY`, the tag stored under
    :data:`ANY_LANGUAGE`. Raises ``ValueError`` naming the file and line for a line with
    more than two tab-separated columns, an empty id or tag, an id that is not lowercase
    ASCII snake_case, or an id given to two different tags (or two ids to one tag).
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8-sig")  # a BOM from Windows editors is fine
    concepts: dict[str, Concept] = {}
    id_line: dict[str, int] = {}
    tag_owner: dict[str, str] = {}  # normalised tag -> id

    for lineno, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        where = f"{path}:{lineno}"
        cols = [col.strip() for col in raw.split("\t")]
        if len(cols) > 2:
            raise ValueError(
                f"{where}: expected 'tag' or 'id<TAB>tag', got {len(cols)} tab-separated columns"
            )
        if len(cols) == 2:
            cid, tag = cols
            if not cid:
                raise ValueError(f"{where}: empty id before the tab")
            if not _USER_ID_RE.fullmatch(cid):
                raise ValueError(
                    f"{where}: invalid id {cid!r}: use lowercase ASCII letters, digits and "
                    "underscores (snake_case)"
                )
            explicit = True
        else:
            cid, tag, explicit = "", cols[0], False
        if not tag:
            raise ValueError(f"{where}: empty tag")
        tag = unicodedata.normalize("NFC", tag)
        norm = _key(tag)

        if norm in tag_owner:  # the same tag again
            owner = tag_owner[norm]
            if explicit and cid != owner:
                raise ValueError(
                    f"{where}: tag {tag!r} already has id {owner!r} (line {id_line[owner]})"
                )
            continue
        if not explicit:
            cid = user_tag_id(tag)
            if cid in concepts:  # "C++" and "C" both slug to "c": keep both, apart
                cid = f"{cid}_{hashlib.sha1(norm.encode('utf-8')).hexdigest()[:8]}"
        if cid in concepts:
            raise ValueError(
                f"{where}: id {cid!r} already names {concepts[cid].names[ANY_LANGUAGE]!r} "
                f"(line {id_line[cid]})"
            )
        concepts[cid] = Concept(cid, USER_CATEGORY, {ANY_LANGUAGE: tag})
        id_line[cid] = lineno
        tag_owner[norm] = cid
    return list(concepts.values())
