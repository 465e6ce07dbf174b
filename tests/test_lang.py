"""Query-language handling: detection of short queries and FLORES-200 codes for NLLB."""

from __future__ import annotations

import re

import pytest

from xlir_qdrant.encoders.lang import (
    CORE_LANGUAGES,
    FLORES,
    UnknownLanguage,
    canonical,
    default_candidates,
    detect_language,
    to_flores,
)
from xlir_qdrant.errors import BadQuery, XlirError


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("perro en la playa", "es"),
        ("Katze auf dem Sofa", "de"),
        ("猫がソファで寝ている", "ja"),
        ("고양이", "ko"),
        ("кошка на диване", "ru"),
        ("一只猫", "zh"),
        ("dog on the beach", "en"),
        ("chat sur le canapé", "fr"),
        ("gatto sul divano", "it"),
        ("pies w parku", "pl"),
        ("kat op de bank", "nl"),
        ("gato no sofá", "pt"),
        ("köpek sahilde", "tr"),
        ("قطة على الأريكة", "ar"),
        ("แมวบนโซฟา", "th"),
        ("γάτα στον καναπέ", "el"),
        ("חתול על הספה", "he"),
        ("कुत्ता समुद्र तट पर", "hi"),
        ("punainen auto", "fi"),
        ("en rød bil", "da"),
        ("kucing di sofa", "id"),
    ],
)
def test_detects_short_queries(query: str, expected: str) -> None:
    assert detect_language(query) == expected


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("東京の猫", "ja"),  # kanji plus one kana is Japanese, not Chinese
        ("ｶﾀｶﾅ", "ja"),  # half-width katakana
        ("서울 야경", "ko"),
        ("故宫", "zh"),  # Han only
        ("iPhone 充电器", "zh"),  # a Latin brand name does not outweigh the Han text
        ("ทะเล", "th"),
    ],
)
def test_script_decides_before_statistics(query: str, expected: str) -> None:
    assert detect_language(query) == expected


@pytest.mark.parametrize("query", ["", "   ", "2024", "🐱🐶", "!!!"])
def test_text_without_letters_is_taken_as_english(query: str) -> None:
    assert detect_language(query) == "en"


def test_explicit_candidates_restrict_the_answer() -> None:
    assert detect_language("kot na kanapie", candidates=["pl", "cs", "sk"]) == "pl"
    # a script none of the candidates uses falls back to scoring among the candidates
    assert detect_language("кошка на диване", candidates=["en", "de"]) in {"en", "de"}
    # aliases and FLORES codes are accepted as candidates too
    assert detect_language("猫がいる", candidates=["jp", "zho_Hans"]) == "ja"


def test_unknown_candidate_is_refused() -> None:
    with pytest.raises(UnknownLanguage):
        detect_language("hello", candidates=["en", "xx"])


def test_default_candidates_cover_the_core_and_map_to_flores() -> None:
    candidates = default_candidates()
    assert set(CORE_LANGUAGES) <= set(candidates)
    assert len(candidates) > 60
    for iso in candidates:
        assert re.fullmatch(r"[a-z]{3}_[A-Z][a-z]{3}", to_flores(iso))


def test_flores_table_is_broad_and_well_formed() -> None:
    assert len(FLORES) >= 40
    for flores in FLORES.values():
        assert re.fullmatch(r"[a-z]{3}_[A-Z][a-z]{3}", flores)


def test_flores_codes_are_real_nllb_language_tokens() -> None:
    nllb = pytest.importorskip("transformers.models.nllb.tokenization_nllb")
    known = set(nllb.FAIRSEQ_LANGUAGE_CODES)
    assert set(FLORES.values()) <= known


def test_each_model_family_lists_its_real_languages() -> None:
    from xlir_qdrant.encoders.lang import MUSE_LANGUAGES, NLLB_LANGUAGES, XLMR_LANGUAGES
    from xlir_qdrant.encoders.registry import registry

    assert len(set(MUSE_LANGUAGES)) == len(MUSE_LANGUAGES) == 16
    assert len(set(XLMR_LANGUAGES)) == len(XLMR_LANGUAGES) == 100  # CC-100 as XLM-R used it
    assert {"sw", "my_zaw", "hi_rom", "zh-Hant", "la", "xh"} <= set(XLMR_LANGUAGES)
    assert len(set(NLLB_LANGUAGES)) == len(NLLB_LANGUAGES) == 202
    assert set(FLORES.values()) <= set(NLLB_LANGUAGES)  # every --lang NLLB is given is one it takes
    nllb = pytest.importorskip("transformers.models.nllb.tokenization_nllb")
    assert set(NLLB_LANGUAGES) == set(nllb.FAIRSEQ_LANGUAGE_CODES)
    counts = {s.id: len(s.languages) for s in registry()}
    assert counts["conse-lite0-muse"] == 16 and counts["xlm-roberta-base-ViT-B-32"] == 100
    assert counts["xlm-roberta-large-ViT-H-14"] == 100 and counts["nllb-clip-base-siglip"] == 202


@pytest.mark.parametrize(
    ("code", "flores"),
    [
        ("de", "deu_Latn"),
        ("ja", "jpn_Jpan"),
        ("jp", "jpn_Jpan"),  # XTD10 spells Japanese "jp"
        ("zh", "zho_Hans"),
        ("zh-TW", "zho_Hant"),
        ("ar", "arb_Arab"),
        ("EN", "eng_Latn"),
        ("deu_Latn", "deu_Latn"),  # FLORES passes through
        ("DEU_latn", "deu_Latn"),  # and is normalised
        ("kas_Deva", "kas_Deva"),  # even one missing from the ISO table
    ],
)
def test_to_flores(code: str, flores: str) -> None:
    assert to_flores(code) == flores


@pytest.mark.parametrize(("code", "iso"), [("JP", "ja"), ("deu_Latn", "de"), ("zh_TW", "zh-hant")])
def test_canonical(code: str, iso: str) -> None:
    assert canonical(code) == iso


def test_unknown_code_names_the_flag() -> None:
    with pytest.raises(UnknownLanguage) as info:
        to_flores("klingon")
    # one line a user can act on, caught by the CLI as a domain error or by callers as ValueError
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, BadQuery) and isinstance(info.value, XlirError)
    message = str(info.value)
    assert "klingon" in message and "--lang" in message and "\n" not in message
