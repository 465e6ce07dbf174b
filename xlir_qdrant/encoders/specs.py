"""The built-in model registry. Adding a model is adding an entry here."""

from __future__ import annotations

from .base import ModelSpec, register

MUSE_LANGUAGES = ("ar", "de", "en", "es", "fr", "it", "ja", "ko", "nl", "pl", "pt", "ru", "th", "tr", "zh")
# XLM-R and NLLB cover ~100 and 200 languages; listing the ones xlir's docs and tests use.
MANY_LANGUAGES = MUSE_LANGUAGES + ("hi", "id", "vi", "uk", "sv", "fi", "da", "no", "cs", "el", "he", "fa")

DEFAULT_MODEL = "conse-lite0-muse"

register(
    ModelSpec(
        id=DEFAULT_MODEL,
        dim=512,
        languages=MUSE_LANGUAGES,
        licence="Apache-2.0",
        size_mb=52,
        bundled=True,
        needs_lang=False,
        loader="xlir_qdrant.encoders.bundled:load",
        description="EfficientNet-Lite0 (ImageNet) bridged into mUSE v3 by ConSE; offline, CPU-friendly",
        options={"variant": "lite0"},
    ),
    "default",
    "bundled",
)

register(
    ModelSpec(
        id="conse-lite2-muse",
        dim=512,
        languages=MUSE_LANGUAGES,
        licence="Apache-2.0",
        size_mb=58,
        bundled=True,
        needs_lang=False,
        loader="xlir_qdrant.encoders.bundled:load",
        description="EfficientNet-Lite2 (ImageNet, 260 px) bridged into mUSE v3 by ConSE; offline",
        options={"variant": "lite2"},
    )
)
