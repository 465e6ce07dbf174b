"""The built-in model registry. Adding a model is adding an entry here."""

from __future__ import annotations

from .base import ModelSpec, register

MUSE_LANGUAGES = ("ar", "de", "en", "es", "fr", "it", "ja", "ko", "nl", "pl", "pt", "ru", "th", "tr", "zh", "zh-TW")
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

# open_clip multilingual models: downloaded from the Hugging Face hub on first use, then cached.
_OPENCLIP = "xlir_qdrant.encoders.openclip:load"
for _id, _tag, _dim, _mb, _lic, _langs, _needs, _desc in [
    ("xlm-roberta-base-ViT-B-32", "laion5b_s13b_b90k", 512, 1100, "MIT", MANY_LANGUAGES, False,
     "open_clip ViT-B/32 + XLM-RoBERTa base, LAION-5B"),
    ("nllb-clip-base-siglip", "mrl", 768, 2000, "CC-BY-NC-4.0", MANY_LANGUAGES, True,
     "SigLIP ViT-B + NLLB text encoder; needs the query language (detected)"),
    ("nllb-clip-large-siglip", "mrl", 1152, 5000, "CC-BY-NC-4.0", MANY_LANGUAGES, True,
     "SigLIP SO400M + NLLB text encoder; needs the query language (detected)"),
    ("xlm-roberta-large-ViT-H-14", "frozen_laion5b_s13b_b90k", 1024, 4500, "MIT", MANY_LANGUAGES, False,
     "open_clip ViT-H/14 + XLM-RoBERTa large, LAION-5B"),
]:
    register(ModelSpec(id=_id, dim=_dim, languages=_langs, licence=_lic, size_mb=_mb, bundled=False,
                       needs_lang=_needs, loader=_OPENCLIP, description=_desc,
                       options={"arch": _id, "pretrained": _tag}))
