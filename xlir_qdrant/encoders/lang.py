"""Query languages: guess the language of a short query, and name it the way NLLB wants.

NLLB text towers are conditioned on a FLORES-200 language token ("deu_Latn"), so a query
needs a language even when the user gives none. Detection runs on queries of two or three
words, where n-gram statistics alone are unreliable, so it works in three steps:

1. the writing system decides whenever it can (kana -> ja, hangul -> ko, Han only -> zh,
   Thai -> th, ...) and otherwise narrows the candidates to languages written in it;
2. py3langid (its model ships inside the package, no download) scores the remaining
   candidates;
3. by default the languages our models and evaluation sets are built around get a prior,
   so that "кошка на диване" is Russian rather than Macedonian; other languages still win
   when the evidence for them is clearly stronger.

A wrong guess on a two-word query is always possible; ``--lang`` settles it.
"""

from __future__ import annotations

import functools
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Sequence

from ..errors import BadQuery

# The languages the multilingual models are trained and evaluated on (XTD10 plus the other
# common photo-search languages), and Hindi, by far the most used Devanagari language;
# detection prefers them when the evidence is close.
CORE_LANGUAGES: tuple[str, ...] = (
    "en", "de", "fr", "es", "it", "ja", "ko", "pl", "ru", "tr", "zh", "nl", "pt", "ar", "th",
    "hi",
)  # fmt: skip

# The languages of mUSE v3, the bundled models' text encoder.
MUSE_LANGUAGES: tuple[str, ...] = (
    "ar", "de", "en", "es", "fr", "it", "ja", "ko", "nl", "pl", "pt", "ru", "th", "tr", "zh", "zh-TW",
)  # fmt: skip
# The 100 languages of XLM-R's pre-training data (CC-100, as listed by the XLM-R paper and
# fairseq), the text tower of the xlm-roberta open_clip models. Codes as CC-100 names them:
# "_rom" is a romanised variant, "my_zaw" Burmese in the Zawgyi encoding.
XLMR_LANGUAGES: tuple[str, ...] = (
    "af", "am", "ar", "as", "az", "be", "bg", "bn", "bn_rom", "br", "bs", "ca",
    "cs", "cy", "da", "de", "el", "en", "eo", "es", "et", "eu", "fa", "fi",
    "fr", "fy", "ga", "gd", "gl", "gu", "ha", "he", "hi", "hi_rom", "hr", "hu",
    "hy", "id", "is", "it", "ja", "jv", "ka", "kk", "km", "kn", "ko", "ku",
    "ky", "la", "lo", "lt", "lv", "mg", "mk", "ml", "mn", "mr", "ms", "my",
    "my_zaw", "ne", "nl", "no", "om", "or", "pa", "pl", "ps", "pt", "ro", "ru",
    "sa", "sd", "si", "sk", "sl", "so", "sq", "sr", "su", "sv", "sw", "ta",
    "ta_rom", "te", "te_rom", "th", "tl", "tr", "ug", "uk", "ur", "ur_rom", "uz", "vi",
    "xh", "yi", "zh", "zh-Hant",
)  # fmt: skip

# The 202 FLORES-200 codes the NLLB-200 text encoder takes (its tokenizer's language tokens):
# 196 languages, six of them in two scripts.
NLLB_LANGUAGES: tuple[str, ...] = (
    "ace_Arab", "ace_Latn", "acm_Arab", "acq_Arab", "aeb_Arab", "afr_Latn", "ajp_Arab", "aka_Latn", "als_Latn",
    "amh_Ethi", "apc_Arab", "arb_Arab", "ars_Arab", "ary_Arab", "arz_Arab", "asm_Beng", "ast_Latn", "awa_Deva",
    "ayr_Latn", "azb_Arab", "azj_Latn", "bak_Cyrl", "bam_Latn", "ban_Latn", "bel_Cyrl", "bem_Latn", "ben_Beng",
    "bho_Deva", "bjn_Arab", "bjn_Latn", "bod_Tibt", "bos_Latn", "bug_Latn", "bul_Cyrl", "cat_Latn", "ceb_Latn",
    "ces_Latn", "cjk_Latn", "ckb_Arab", "crh_Latn", "cym_Latn", "dan_Latn", "deu_Latn", "dik_Latn", "dyu_Latn",
    "dzo_Tibt", "ell_Grek", "eng_Latn", "epo_Latn", "est_Latn", "eus_Latn", "ewe_Latn", "fao_Latn", "fij_Latn",
    "fin_Latn", "fon_Latn", "fra_Latn", "fur_Latn", "fuv_Latn", "gaz_Latn", "gla_Latn", "gle_Latn", "glg_Latn",
    "grn_Latn", "guj_Gujr", "hat_Latn", "hau_Latn", "heb_Hebr", "hin_Deva", "hne_Deva", "hrv_Latn", "hun_Latn",
    "hye_Armn", "ibo_Latn", "ilo_Latn", "ind_Latn", "isl_Latn", "ita_Latn", "jav_Latn", "jpn_Jpan", "kab_Latn",
    "kac_Latn", "kam_Latn", "kan_Knda", "kas_Arab", "kas_Deva", "kat_Geor", "kaz_Cyrl", "kbp_Latn", "kea_Latn",
    "khk_Cyrl", "khm_Khmr", "kik_Latn", "kin_Latn", "kir_Cyrl", "kmb_Latn", "kmr_Latn", "knc_Arab", "knc_Latn",
    "kon_Latn", "kor_Hang", "lao_Laoo", "lij_Latn", "lim_Latn", "lin_Latn", "lit_Latn", "lmo_Latn", "ltg_Latn",
    "ltz_Latn", "lua_Latn", "lug_Latn", "luo_Latn", "lus_Latn", "lvs_Latn", "mag_Deva", "mai_Deva", "mal_Mlym",
    "mar_Deva", "min_Latn", "mkd_Cyrl", "mlt_Latn", "mni_Beng", "mos_Latn", "mri_Latn", "mya_Mymr", "nld_Latn",
    "nno_Latn", "nob_Latn", "npi_Deva", "nso_Latn", "nus_Latn", "nya_Latn", "oci_Latn", "ory_Orya", "pag_Latn",
    "pan_Guru", "pap_Latn", "pbt_Arab", "pes_Arab", "plt_Latn", "pol_Latn", "por_Latn", "prs_Arab", "quy_Latn",
    "ron_Latn", "run_Latn", "rus_Cyrl", "sag_Latn", "san_Deva", "sat_Beng", "scn_Latn", "shn_Mymr", "sin_Sinh",
    "slk_Latn", "slv_Latn", "smo_Latn", "sna_Latn", "snd_Arab", "som_Latn", "sot_Latn", "spa_Latn", "srd_Latn",
    "srp_Cyrl", "ssw_Latn", "sun_Latn", "swe_Latn", "swh_Latn", "szl_Latn", "tam_Taml", "taq_Latn", "taq_Tfng",
    "tat_Cyrl", "tel_Telu", "tgk_Cyrl", "tgl_Latn", "tha_Thai", "tir_Ethi", "tpi_Latn", "tsn_Latn", "tso_Latn",
    "tuk_Latn", "tum_Latn", "tur_Latn", "twi_Latn", "tzm_Tfng", "uig_Arab", "ukr_Cyrl", "umb_Latn", "urd_Arab",
    "uzn_Latn", "vec_Latn", "vie_Latn", "war_Latn", "wol_Latn", "xho_Latn", "ydd_Hebr", "yor_Latn", "yue_Hant",
    "zho_Hans", "zho_Hant", "zsm_Latn", "zul_Latn",
)  # fmt: skip

# ISO 639-1 (plus a few tags for variants) -> FLORES-200, the codes NLLB's tokenizer knows.
FLORES: dict[str, str] = {
    "af": "afr_Latn", "am": "amh_Ethi", "ar": "arb_Arab", "as": "asm_Beng", "az": "azj_Latn",
    "ba": "bak_Cyrl", "be": "bel_Cyrl", "bg": "bul_Cyrl", "bn": "ben_Beng", "bs": "bos_Latn",
    "ca": "cat_Latn", "cs": "ces_Latn", "cy": "cym_Latn", "da": "dan_Latn", "de": "deu_Latn",
    "dz": "dzo_Tibt", "el": "ell_Grek", "en": "eng_Latn", "eo": "epo_Latn", "es": "spa_Latn",
    "et": "est_Latn", "eu": "eus_Latn", "fa": "pes_Arab", "fi": "fin_Latn", "fo": "fao_Latn",
    "fr": "fra_Latn", "ga": "gle_Latn", "gd": "gla_Latn", "gl": "glg_Latn", "gu": "guj_Gujr",
    "ha": "hau_Latn", "he": "heb_Hebr", "hi": "hin_Deva", "hr": "hrv_Latn", "ht": "hat_Latn",
    "hu": "hun_Latn", "hy": "hye_Armn", "id": "ind_Latn", "ig": "ibo_Latn", "is": "isl_Latn",
    "it": "ita_Latn", "ja": "jpn_Jpan", "jv": "jav_Latn", "ka": "kat_Geor", "kk": "kaz_Cyrl",
    "km": "khm_Khmr", "kn": "kan_Knda", "ko": "kor_Hang", "ku": "kmr_Latn", "ky": "kir_Cyrl",
    "lb": "ltz_Latn", "lg": "lug_Latn", "ln": "lin_Latn", "lo": "lao_Laoo", "lt": "lit_Latn",
    "lv": "lvs_Latn", "mg": "plt_Latn", "mk": "mkd_Cyrl", "ml": "mal_Mlym", "mn": "khk_Cyrl",
    "mr": "mar_Deva", "ms": "zsm_Latn", "mt": "mlt_Latn", "my": "mya_Mymr", "nb": "nob_Latn",
    "ne": "npi_Deva", "nl": "nld_Latn", "nn": "nno_Latn", "no": "nob_Latn", "oc": "oci_Latn",
    "om": "gaz_Latn", "or": "ory_Orya", "pa": "pan_Guru", "pl": "pol_Latn", "ps": "pbt_Arab",
    "pt": "por_Latn", "qu": "quy_Latn", "ro": "ron_Latn", "ru": "rus_Cyrl", "rw": "kin_Latn",
    "sa": "san_Deva", "si": "sin_Sinh", "sk": "slk_Latn", "sl": "slv_Latn", "sn": "sna_Latn",
    "so": "som_Latn", "sq": "als_Latn", "sr": "srp_Cyrl", "st": "sot_Latn", "sv": "swe_Latn",
    "sw": "swh_Latn", "ta": "tam_Taml", "te": "tel_Telu", "tg": "tgk_Cyrl", "th": "tha_Thai",
    "tk": "tuk_Latn", "tl": "tgl_Latn", "tr": "tur_Latn", "tt": "tat_Cyrl", "ug": "uig_Arab",
    "uk": "ukr_Cyrl", "ur": "urd_Arab", "uz": "uzn_Latn", "vi": "vie_Latn", "xh": "xho_Latn",
    "yo": "yor_Latn", "yue": "yue_Hant", "zh": "zho_Hans", "zh-hant": "zho_Hant", "zu": "zul_Latn",
}  # fmt: skip

# Other spellings people (and data sets) use for the same languages. XTD10 says "jp".
_ALIASES: dict[str, str] = {
    "jp": "ja", "iw": "he", "in": "id", "zh-cn": "zh", "zh-hans": "zh", "zh-sg": "zh",
    "zh-tw": "zh-hant", "zh-hk": "zh-hant", "tw": "zh-hant", "fil": "tl",
}  # fmt: skip

# "nb" and "no" share nob_Latn; the later "no" wins, the code py3langid reports.
_ISO_OF_FLORES: dict[str, str] = {flores: iso for iso, flores in FLORES.items()}

_FLORES_CODE = re.compile(r"^([a-z]{3})[_-]([a-z]{4})$", re.IGNORECASE)

# Prior log-odds of a core language over any other one (e^2.2, about 9:1). Scores are
# compared as py3langid calibrates them, divided by sqrt(bytes), so the prior weighs the
# same for a one-word query as for a sentence: it settles "кошка на диване" (ru, not mk)
# and still lets "punainen auto" be Finnish. Tuned on ~80 short queries in 28 languages.
_NON_CORE_LOG_ODDS = 2.2

# Unicode character-name prefixes -> ISO 15924 script of the letter.
_SCRIPT_OF_NAME: dict[str, str] = {
    "LATIN": "Latn", "CYRILLIC": "Cyrl", "GREEK": "Grek", "ARABIC": "Arab", "HEBREW": "Hebr",
    "DEVANAGARI": "Deva", "BENGALI": "Beng", "GURMUKHI": "Guru", "GUJARATI": "Gujr",
    "ORIYA": "Orya", "TAMIL": "Taml", "TELUGU": "Telu", "KANNADA": "Knda", "MALAYALAM": "Mlym",
    "SINHALA": "Sinh", "THAI": "Thai", "LAO": "Laoo", "TIBETAN": "Tibt", "MYANMAR": "Mymr",
    "GEORGIAN": "Geor", "ARMENIAN": "Armn", "ETHIOPIC": "Ethi", "KHMER": "Khmr",
    "HANGUL": "Hang", "HIRAGANA": "Kana", "KATAKANA": "Kana", "KATAKANA-HIRAGANA": "Kana",
    "CJK": "Hani", "IDEOGRAPHIC": "Hani",
}  # fmt: skip


_Prior = Callable[[str], float]


class UnknownLanguage(BadQuery, ValueError):
    """A language code that cannot be turned into a FLORES-200 token."""


def canonical(code: str) -> str:
    """The ISO form of ``code`` ("JP" -> "ja", "deu_Latn" -> "de"); unknown FLORES codes stay."""
    flores = _as_flores_code(code)
    if flores is not None:
        return _ISO_OF_FLORES.get(flores, flores)
    key = code.strip().lower().replace("_", "-")
    key = _ALIASES.get(key, key)
    if key not in FLORES:
        raise UnknownLanguage(_unknown_message(code))
    return key


def to_flores(code: str) -> str:
    """ISO 639-1 code (or alias, or a FLORES-200 code passed through) -> FLORES-200 code."""
    flores = _as_flores_code(code)
    if flores is not None:
        return flores
    return FLORES[canonical(code)]


@functools.cache
def default_candidates() -> tuple[str, ...]:
    """Languages detection considers by default: those with a FLORES code py3langid knows."""
    known = set(_identifier().labels)
    return tuple(iso for iso in FLORES if iso in known)


def detect_language(text: str, candidates: Sequence[str] | None = None) -> str:
    """Best guess at the ISO 639-1 code of ``text`` among ``candidates``.

    With ``candidates`` None, every language in ``default_candidates()`` is possible and the
    core languages are preferred on close calls; an explicit list is taken as equally likely.
    Text with no letters at all (digits, emoji) is taken as English, the language the
    models saw most.
    """
    if candidates is None:
        pool, prior = default_candidates(), _core_prior
    else:
        pool, prior = _check_candidates(candidates), _flat_prior
    if not pool:
        raise UnknownLanguage("detect_language needs at least one candidate language")
    script = _dominant_script(text)
    if script is None:
        return "en" if "en" in pool else pool[0]
    same_script = [iso for iso in pool if _script_group(FLORES[iso]) == script]
    if len(same_script) == 1:
        return same_script[0]
    return _best_scored(text, same_script or list(pool), prior)


def _best_scored(text: str, pool: Iterable[str], prior: _Prior) -> str:
    scores = dict(_identifier().rank(text))
    temperature = math.sqrt(len(text.encode("utf-8")))
    return max(pool, key=lambda iso: scores[iso] / temperature + prior(iso))


def _core_prior(iso: str) -> float:
    return 0.0 if iso in CORE_LANGUAGES else -_NON_CORE_LOG_ODDS


def _flat_prior(iso: str) -> float:
    return 0.0


def _check_candidates(candidates: Sequence[str]) -> tuple[str, ...]:
    known = set(_identifier().labels)
    pool: list[str] = []
    for code in candidates:
        iso = canonical(code)
        if iso not in known:
            raise UnknownLanguage(
                f"language {code!r} cannot be detected automatically; pass it with --lang"
            )
        if iso not in pool:
            pool.append(iso)
    return tuple(pool)


def _dominant_script(text: str) -> str | None:
    """The script group deciding the language: kana marks Japanese even among kanji,
    hangul marks Korean, and any non-Latin script outweighs Latin brand names or units."""
    counts: Counter[str] = Counter()
    for ch in text:
        if ch.isalpha():
            counts[_script_of_char(ch)] += 1
    if counts["Kana"]:
        return "Jpan"
    if counts["Hang"]:
        return "Hang"
    others = {s: n for s, n in counts.items() if s not in {"Latn", "Zyyy"} and n}
    if others:
        return max(others, key=others.__getitem__)
    return "Latn" if counts["Latn"] else None


def _script_of_char(ch: str) -> str:
    words = unicodedata.name(ch, "").split()
    if words and words[0] in {"HALFWIDTH", "FULLWIDTH"}:
        words = words[1:]
    return _SCRIPT_OF_NAME.get(words[0], "Zyyy") if words else "Zyyy"


def _script_group(flores: str) -> str:
    # FLORES writes Japanese as Jpan and Chinese as Hans/Hant; both Han variants are one
    # group because nothing in a short query tells simplified from traditional reliably.
    script = flores.split("_")[1]
    return "Hani" if script in {"Hans", "Hant"} else script


def _as_flores_code(code: str) -> str | None:
    match = _FLORES_CODE.match(code.strip())
    if match is None:
        return None
    return f"{match.group(1).lower()}_{match.group(2).title()}"


def _unknown_message(code: str) -> str:
    return (
        f"unknown language {code!r}; pass --lang as an ISO 639-1 code "
        f"(e.g. de, ja, zh, pt) or a FLORES-200 code (e.g. deu_Latn, zho_Hant)"
    )


@functools.cache
def _identifier():  # noqa: ANN202  (py3langid ships no type information)
    # Loading decompresses a 4.5 MB model (about a second), so it happens once, on first use.
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE)
