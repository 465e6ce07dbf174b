"""Tiny open_clip models built here, offline: a ViT with an XLM-R-like text tower, and one with an
NLLB-like (M2M100 encoder) text tower whose tokenizer carries the real FLORES-200 language
tokens. Both load through the model registry exactly as the real models do; only the weights
are random. Shared by the open_clip tests and the encoder conformance suite."""

from __future__ import annotations

import json
import string
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import open_clip
import pytest
import transformers

from xlir_qdrant.encoders import registry
from xlir_qdrant.records import ModelSpec

DIM = 24
XLMR_ID = "test-tiny-xlmr-vit"
NLLB_ID = "test-tiny-nllb-vit"
_CHARS = string.ascii_letters + string.digits + "äöüßéèàçñáíóúł"


def _xlmr_tower(path: Path) -> None:
    """A 1-layer XLM-R with a character-level sentencepiece-style (Unigram) vocabulary."""
    vocab = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("<mask>", 0.0)]
    vocab += [("▁", -2.0)] + [(c, -3.0) for c in _CHARS] + [("▁cat", -1.0), ("▁dog", -1.0)]
    tokenizer = transformers.XLMRobertaTokenizer(vocab=vocab)
    tokenizer.save_pretrained(path)
    config = transformers.XLMRobertaConfig(
        vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=40, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    transformers.XLMRobertaModel(config, add_pooling_layer=False).save_pretrained(path)


def _nllb_tower(path: Path) -> None:
    """A 1-layer M2M100 encoder with NLLB's tokenizer class (and its 200 language tokens)."""
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "▁": 4}
    vocab.update({c: 5 + i for i, c in enumerate(_CHARS)})
    tokenizer = transformers.NllbTokenizer(vocab=vocab, merges=[])
    tokenizer.save_pretrained(path)
    config = transformers.M2M100Config(
        vocab_size=len(tokenizer), d_model=16, encoder_layers=1, decoder_layers=1,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
        decoder_ffn_dim=32, max_position_embeddings=40, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    transformers.M2M100Model(config).save_pretrained(path)


def _arch(root: Path, name: str, tower: Path, pooler: str) -> None:
    config = {
        "embed_dim": DIM,
        "vision_cfg": {
            "image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8,
        },  # fmt: skip
        "text_cfg": {
            "hf_model_name": str(tower),
            "hf_tokenizer_name": str(tower),
            "hf_pooler_type": pooler,
            "hf_proj_type": "linear",
            "context_length": 24,
        },
    }
    (root / f"{name}.json").write_text(json.dumps(config))


def spec(model_id: str, arch: str, *, needs_lang: bool, dim: int = DIM) -> ModelSpec:
    return ModelSpec(
        id=model_id, family="openclip", dim=dim, languages=("multi",), licence="test", size_mb=1,
        bundled=False, needs_lang=needs_lang, options={"arch": arch, "pretrained": ""},
    )  # fmt: skip


@contextmanager
def installed(root: Path) -> Iterator[None]:
    """Build the tiny models under ``root``; open_clip and the registry know them inside."""
    _xlmr_tower(root / "xlmr")
    _nllb_tower(root / "nllb")
    configs = root / "configs"
    configs.mkdir()
    _arch(configs, "tiny-xlmr-vit", root / "xlmr", "mean_pooler")
    _arch(configs, "tiny-nllb-vit", root / "nllb", "cls_pooler")
    with pytest.MonkeyPatch.context() as mp:
        # open_clip keeps its config registry in module globals; restore them afterwards.
        factory = sys.modules["open_clip.factory"]
        mp.setattr(factory, "_MODEL_CONFIG_PATHS", list(factory._MODEL_CONFIG_PATHS))
        mp.setattr(factory, "_MODEL_CONFIGS", dict(factory._MODEL_CONFIGS))
        open_clip.add_model_config(configs)
        tiny = (spec(XLMR_ID, "tiny-xlmr-vit", needs_lang=False), spec(NLLB_ID, "tiny-nllb-vit", needs_lang=True))
        mp.setattr(registry, "MODELS", registry.MODELS + tiny)
        yield
