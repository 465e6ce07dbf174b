"""The shipped tag vocabulary: shape, scripts, anchors, lookup; and user vocabularies."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from xlir_qdrant.vocab import (
    ANY_LANGUAGE,
    CATEGORIES,
    LANGUAGES,
    USER_CATEGORY,
    Concept,
    load_user_vocabulary,
    load_vocabulary,
    lookup,
    user_tag_id,
)

VOCAB = load_vocabulary()

# Real homonyms within one language. Any other collision is a mistake to fix in vocab.tsv,
# and this list may only grow by deliberate choice, by a handful at most.
KNOWN_COLLISIONS = {
    ("en", "orange"): {"orange", "orange_colour"},
    ("de", "orange"): {"orange", "orange_colour"},
    ("fr", "orange"): {"orange", "orange_colour"},
    ("es", "naranja"): {"orange", "orange_colour"},
    ("fr", "rose"): {"rose", "pink"},
    ("es", "rosa"): {"rose", "pink"},
    ("it", "rosa"): {"rose", "pink"},
    ("fr", "café"): {"coffee", "cafe"},  # the drink and the place are both "café"
}

# A cell may carry a Latin letter in these scripts only where that is how it is written.
LATIN_ALLOWED = {("ja", "t_shirt"), ("zh", "t_shirt"), ("zh", "karaoke")}

# Characters that give away the wrong Han variant: Traditional or Japanese-only forms in
# Simplified Chinese cells, Simplified-only forms in Japanese cells.
NOT_SIMPLIFIED = set(
    "們個車馬鳥魚龍麵雞鴨書電門東樂頭髮發氣風雲場館廳園圖學醫燈鐘錶筆腦視鏡鑰傘遊戲節聖誕漢"
    "熱條湯餅蘋檸櫻鳳蘭葉樹蘿蔔貓豬鵝鴿鷹龜蝦點機腳臉網藍綠紅黃飛"  # Traditional
    "図駅楽鉄気渋広桜県売読関浜戦歩黒団様亀"  # Japanese shinjitai
)
NOT_JAPANESE = set("们车马鸟鱼龙鸡鸭书电门东乐头发气风场馆厅园图钟笔脑视镜钥伞戏节圣诞汉热汤饼苹柠樱凤兰树鹅鸽鹰龟虾脸网蓝绿红")


def _key(text: str) -> str:
    return unicodedata.normalize("NFKC", text).casefold()


def _has(text: str, *ranges: tuple[int, int]) -> bool:
    return any(lo <= ord(ch) <= hi for ch in text for lo, hi in ranges)


HAN = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0xF900, 0xFAFF))
KANA = ((0x3040, 0x309F), (0x30A0, 0x30FF), (0x31F0, 0x31FF))
HANGUL = ((0xAC00, 0xD7AF), (0x1100, 0x11FF), (0x3130, 0x318F))
CYRILLIC = ((0x0400, 0x04FF),)
LATIN = ((0x41, 0x5A), (0x61, 0x7A), (0xC0, 0x24F))


# --- shape ---------------------------------------------------------------------------------


def test_languages_match_the_header() -> None:
    assert LANGUAGES == ("en", "de", "fr", "es", "it", "ja", "ko", "pl", "ru", "tr", "zh")
    assert all(tuple(c.names) == LANGUAGES for c in VOCAB)


def test_vocabulary_is_large_and_covers_every_category() -> None:
    assert len(VOCAB) >= 500
    per_category = Counter(c.category for c in VOCAB)
    assert set(per_category) == set(CATEGORIES)
    assert min(per_category.values()) >= 10, per_category


def test_ids_are_unique_ascii_snake_case() -> None:
    ids = [c.id for c in VOCAB]
    assert len(ids) == len(set(ids)), [i for i, n in Counter(ids).items() if n > 1]
    bad = [i for i in ids if not re.fullmatch(r"[a-z][a-z0-9]*(_[a-z0-9]+)*", i)]
    assert not bad


def test_ids_derive_from_the_english_name() -> None:
    """`ice cream` -> `ice_cream`; a few ids carry a qualifier that English needs."""
    qualified = {"orange_colour": "orange", "drinking_glass": "drinking glass"}
    for c in VOCAB:
        slug = re.sub(r"[^a-z0-9]+", "_", c.names["en"].lower().replace("é", "e")).strip("_")
        slug = slug.replace("valentine_s", "valentines")
        assert slug == c.id or qualified.get(c.id) == c.names["en"], (c.id, c.names["en"])


def test_every_cell_is_a_single_clean_name() -> None:
    problems = []
    for c in VOCAB:
        for lang, name in c.names.items():
            if (
                not name
                or name != name.strip()
                or "  " in name
                or any(ch in name for ch in "\t\n,/;，、／|")
                or name != unicodedata.normalize("NFC", name)
            ):
                problems.append((c.id, lang, name))
    assert not problems


def test_no_articles_in_names() -> None:
    articles = {
        "en": ("the ", "a ", "an "), "de": ("der ", "die ", "das ", "ein ", "eine "),
        "fr": ("le ", "la ", "les ", "l'", "un ", "une "), "es": ("el ", "la ", "los ", "las "),
        "it": ("il ", "lo ", "la ", "gli ", "le ", "l'", "un ", "una "),
    }  # fmt: skip
    bad = [(c.id, lang, c.names[lang]) for c in VOCAB for lang, arts in articles.items()
           if c.names[lang].lower().startswith(arts)]  # fmt: skip
    assert not bad


def test_german_nouns_are_capitalised() -> None:
    adjectives = {"sunny", "cloudy", "colourful"}  # sonnig, bewölkt, bunt
    bad = [(c.id, c.names["de"]) for c in VOCAB
           if c.id not in adjectives and not any(w[:1].isupper() for w in c.names["de"].split())]  # fmt: skip
    assert not bad


def test_names_are_unique_within_each_language_but_for_known_homonyms() -> None:
    collisions = {}
    for lang in LANGUAGES:
        owners: dict[str, set[str]] = defaultdict(set)
        for c in VOCAB:
            owners[_key(c.names[lang])].add(c.id)
        collisions.update({(lang, k): v for k, v in owners.items() if len(v) > 1})
    assert collisions == KNOWN_COLLISIONS, f"collisions: {sorted(collisions.items())}"
    assert len(KNOWN_COLLISIONS) <= 10


# --- scripts -------------------------------------------------------------------------------


def test_japanese_cells_are_kana_or_kanji() -> None:
    bad = []
    for c in VOCAB:
        name = c.names["ja"]
        if not _has(name, *KANA, *HAN) or _has(name, *HANGUL, *CYRILLIC):
            bad.append((c.id, name))
        elif _has(name, *LATIN) and ("ja", c.id) not in LATIN_ALLOWED:
            bad.append((c.id, name))
        elif set(name) & NOT_JAPANESE:
            bad.append((c.id, name))
    assert not bad


def test_korean_cells_are_hangul() -> None:
    bad = [(c.id, c.names["ko"]) for c in VOCAB
           if not _has(c.names["ko"], *HANGUL) or _has(c.names["ko"], *KANA, *HAN, *LATIN, *CYRILLIC)]  # fmt: skip
    assert not bad


def test_chinese_cells_are_simplified_han_without_kana() -> None:
    bad = []
    for c in VOCAB:
        name = c.names["zh"]
        if not _has(name, *HAN) or _has(name, *KANA, *HANGUL, *CYRILLIC):
            bad.append((c.id, name))
        elif _has(name, *LATIN) and ("zh", c.id) not in LATIN_ALLOWED:
            bad.append((c.id, name))
        elif set(name) & NOT_SIMPLIFIED:
            bad.append((c.id, name, sorted(set(name) & NOT_SIMPLIFIED)))
    assert not bad


def test_russian_cells_are_cyrillic() -> None:
    bad = [(c.id, c.names["ru"]) for c in VOCAB
           if not _has(c.names["ru"], *CYRILLIC) or _has(c.names["ru"], *LATIN, *HAN, *KANA, *HANGUL)]  # fmt: skip
    assert not bad


@pytest.mark.parametrize("lang", ["en", "de", "fr", "es", "it", "pl", "tr"])
def test_latin_script_cells_are_latin(lang: str) -> None:
    bad = [(c.id, c.names[lang]) for c in VOCAB
           if not _has(c.names[lang], *LATIN) or _has(c.names[lang], *CYRILLIC, *HAN, *KANA, *HANGUL)]  # fmt: skip
    assert not bad


def test_diacritics_belong_to_the_language() -> None:
    """Catches a Polish ł typed into Turkish or a Turkish ş into Polish, and similar slips."""
    letters = {
        "de": "äöüßé", "fr": "àâæçéèêëîïôœùûüÿ", "es": "áéíñóúü", "it": "àèéìíîòóùú",
        "pl": "ąćęłńóśźż", "tr": "çğıİöşüâîû", "en": "é",
    }  # fmt: skip
    bad = []
    for lang, allowed in letters.items():
        for c in VOCAB:
            extra = {ch for ch in c.names[lang].lower() if not ch.isascii() and ch.isalpha()}
            if extra - set(allowed):
                bad.append((c.id, lang, c.names[lang]))
    assert not bad


# --- anchors and lookup ----------------------------------------------------------------------


def test_anchors() -> None:
    by_id = {c.id: c for c in VOCAB}
    assert by_id["cat"].name("en") == "cat"
    assert by_id["cat"].name("de") == "Katze"
    assert by_id["cat"].name("ja") == "猫"
    assert by_id["coffee"].name("de") == "Kaffee"
    assert by_id["coffee"].name("ja") == "コーヒー"
    assert by_id["dog"].category == "animal" and by_id["coffee"].category == "drink"


def test_name_in_an_unknown_language_is_a_key_error() -> None:
    with pytest.raises(KeyError, match="pt"):
        lookup("cat").name("pt")  # type: ignore[union-attr]


def test_lookup_by_name_in_any_language() -> None:
    assert lookup("Katze").id == "cat"  # type: ignore[union-attr]
    assert lookup("コーヒー").id == "coffee"  # type: ignore[union-attr]
    assert lookup("katze").id == "cat"  # type: ignore[union-attr]
    assert lookup("  KATZE ").id == "cat"  # type: ignore[union-attr]
    assert lookup("кошка").id == "cat"  # type: ignore[union-attr]
    assert lookup("고양이").id == "cat"  # type: ignore[union-attr]
    assert lookup("Schmetterling").id == "butterfly"  # type: ignore[union-attr]
    assert lookup("Weihnachtsbaum").id == "christmas_tree"  # type: ignore[union-attr]


def test_lookup_by_id() -> None:
    assert lookup("ice_cream").id == "ice_cream"  # type: ignore[union-attr]
    assert lookup("ice cream").id == "ice_cream"  # type: ignore[union-attr]
    assert lookup("orange_colour").id == "orange_colour"  # type: ignore[union-attr]


def test_lookup_normalises_width_case_and_yo() -> None:
    assert lookup("ｺｰﾋｰ").id == "coffee"  # type: ignore[union-attr]  # half-width kana, NFKC
    assert lookup("ＫＡＴＺＥ").id == "cat"  # type: ignore[union-attr]  # full-width Latin
    assert lookup("ребенок").id == "child"  # type: ignore[union-attr]  # ё written as е
    assert lookup("STRASSE").id == "street"  # type: ignore[union-attr]  # ß case-folds to ss


def test_lookup_falls_back_to_accent_blind_matching() -> None:
    assert lookup("cafe").id == "cafe"  # type: ignore[union-attr]
    assert lookup("rüzgar").id == "wind"  # type: ignore[union-attr]
    assert lookup("oeuf").id == "egg"  # type: ignore[union-attr]
    assert lookup("lodz").id == "boat"  # type: ignore[union-attr]  # pl łódź
    assert lookup("Hot-Dog").id == "hot_dog"  # type: ignore[union-attr]
    assert lookup("Valentines Day").id == "valentines_day"  # type: ignore[union-attr]
    # kana keep their voicing marks: ガメラ is not カメラ
    assert lookup("カメラ").id == "camera"  # type: ignore[union-attr]
    assert lookup("ガメラ") is None


def test_lookup_misses_and_empty_input() -> None:
    assert lookup("") is None
    assert lookup("   ") is None
    assert lookup("no such tag anywhere") is None


def test_lookup_prefers_the_given_language_for_cross_language_homonyms() -> None:
    assert lookup("Rock").id == "rock"  # type: ignore[union-attr]  # English first
    assert lookup("Rock", "de").id == "skirt"  # type: ignore[union-attr]
    assert lookup("latte").id == "latte"  # type: ignore[union-attr]
    assert lookup("latte", "it").id == "milk"  # type: ignore[union-attr]
    assert lookup("船", "zh").id == "boat"  # type: ignore[union-attr]
    assert lookup("船", "ja").id == "ship"  # type: ignore[union-attr]
    assert lookup("Katze", "pt").id == "cat"  # type: ignore[union-attr]  # unknown: no preference


def test_every_name_looks_up_to_a_concept_with_that_name() -> None:
    for c in VOCAB:
        for lang, name in c.names.items():
            found = lookup(name, lang)
            assert found is not None and _key(found.names[lang]) == _key(name), (c.id, lang)
        assert lookup(c.id) is c


def test_vocabulary_is_cached_but_callers_get_their_own_list() -> None:
    first, second = load_vocabulary(), load_vocabulary()
    assert first == second and first is not second
    assert all(a is b for a, b in zip(first, second, strict=True))
    first.clear()
    assert len(load_vocabulary()) == len(VOCAB)


def test_concepts_are_frozen_and_hashable() -> None:
    cat = lookup("cat")
    assert cat is not None
    with pytest.raises(AttributeError):
        cat.id = "dog"  # type: ignore[misc]
    assert len({c for c in VOCAB}) == len(VOCAB)


# --- user vocabularies -----------------------------------------------------------------------


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tags.txt"
    path.write_text(text, encoding="utf-8")
    return path


def test_user_vocabulary_with_and_without_ids(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "# family tags\n"
        "\n"
        "Katze\n"
        "grandma\tOma\n"
        "  Crème brûlée  \n"
        "猫\n"
        "   # an indented comment\n"
        "my_dog_2\tRex the dog\n",
    )
    concepts = load_user_vocabulary(path)
    assert [c.id for c in concepts] == [
        "katze", "grandma", "creme_brulee", user_tag_id("猫"), "my_dog_2",
    ]  # fmt: skip
    assert all(c.category == USER_CATEGORY for c in concepts)
    assert all(set(c.names) == {ANY_LANGUAGE} for c in concepts)
    oma = concepts[1]
    assert oma.name("de") == oma.name("ja") == oma.name("xx") == "Oma"
    assert concepts[2].name("fr") == "Crème brûlée"
    assert re.fullmatch(r"u_[0-9a-f]{8}", concepts[3].id)


def test_user_tag_ids_are_stable_slugs_or_hashes() -> None:
    assert user_tag_id("Ice Cream") == "ice_cream"
    assert user_tag_id("Straße") == "strasse"
    assert user_tag_id("łódź") == "lodz"
    assert user_tag_id("猫") == "u_" + __import__("hashlib").sha1("猫".encode()).hexdigest()[:8]
    assert user_tag_id("кошка") == user_tag_id("КОШКА")  # case-folded before hashing
    assert user_tag_id("кошка").startswith("u_") and user_tag_id("кошка") != user_tag_id("猫")
    assert user_tag_id("!!!").startswith("u_")


def test_user_vocabulary_collapses_duplicates(tmp_path: Path) -> None:
    path = write(tmp_path, "Katze\nkatze\nKATZE\n猫\n猫\nkatze\tKATZE\n")
    concepts = load_user_vocabulary(path)
    assert [c.name("en") for c in concepts] == ["Katze", "猫"]


def test_user_vocabulary_keeps_different_tags_with_the_same_slug_apart(tmp_path: Path) -> None:
    concepts = load_user_vocabulary(write(tmp_path, "C\nC++\n"))
    assert concepts[0].id == "c" and concepts[1].id.startswith("c_")
    assert [c.name("en") for c in concepts] == ["C", "C++"]


def test_user_vocabulary_accepts_a_bom_and_crlf(tmp_path: Path) -> None:
    path = tmp_path / "tags.txt"
    path.write_bytes("\ufeffKatze\r\ndog\tHund\r\n".encode())
    assert [c.id for c in load_user_vocabulary(path)] == ["katze", "dog"]


@pytest.mark.parametrize(
    ("text", "lineno", "message"),
    [
        ("Katze\n\na\tb\tc\n", 3, "3 tab-separated columns"),
        ("# c\nBad Id\tx\n", 2, "invalid id 'Bad Id'"),
        ("ok\n\tKatze\n", 2, "empty id"),
        ("ok\ncat\t\n", 2, "empty tag"),
        ("cat\tKatze\ncat\tHund\n", 2, "id 'cat' already names 'Katze' \\(line 1\\)"),
        ("cat\tKatze\nkitty\tkatze\n", 2, "tag 'katze' already has id 'cat' \\(line 1\\)"),
    ],
)
def test_user_vocabulary_errors_name_file_and_line(
    tmp_path: Path, text: str, lineno: int, message: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}:{lineno}: .*{message}"):
        load_user_vocabulary(path)


def test_concept_is_a_plain_dataclass() -> None:
    c = Concept("x", USER_CATEGORY, {ANY_LANGUAGE: "X"})
    assert c == Concept("x", USER_CATEGORY, {ANY_LANGUAGE: "X"})
    assert hash(c) == hash(Concept("x", USER_CATEGORY, {ANY_LANGUAGE: "Y"}))


def test_parents_make_a_forest_over_known_concepts() -> None:
    from xlir_qdrant.vocab import ancestors, parents

    table = parents()
    assert set(table) | set(table.values()) <= {c.id for c in VOCAB}
    assert ancestors("daisy") == ("flower", "plant")
    assert ancestors("cruise_ship") == ("ship", "boat", "vehicle")
    assert ancestors("astronaut") == ("person",) and ancestors("plant") == ()
    for child in table:  # no loops: every chain ends
        assert child not in ancestors(child)


def test_a_parents_file_with_a_loop_or_an_unknown_concept_is_refused() -> None:
    from xlir_qdrant.vocab import _chain

    with pytest.raises(ValueError, match="loop"):
        _chain({"a": "b", "b": "a"}, "a")
