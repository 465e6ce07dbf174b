"""The open_clip family, wired end to end on tiny random models built here, offline.

Two tiny open_clip architectures are registered for the session: a ViT with an XLM-R-like
text tower, and one with an NLLB-like (M2M100 encoder) text tower whose tokenizer carries
the real FLORES-200 language tokens. Both load through the model registry exactly as the
real models do; only the weights are random.
"""

from __future__ import annotations

import json
import os
import socket
import string
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

open_clip = pytest.importorskip("open_clip")
transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

from xlir_qdrant.encoders import base  # noqa: E402
from xlir_qdrant.encoders.base import Encoder, ModelSpec, load_encoder  # noqa: E402
from xlir_qdrant.encoders.lang import UnknownLanguage  # noqa: E402
from xlir_qdrant.encoders.openclip import OpenClipEncoder  # noqa: E402
from xlir_qdrant.errors import ModelUnavailable  # noqa: E402

DIM = 24
XLMR_ID = "test-tiny-xlmr-vit"
NLLB_ID = "test-tiny-nllb-vit"
LOADER = "xlir_qdrant.encoders.openclip:load"
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


def _spec(model_id: str, arch: str, *, needs_lang: bool, dim: int = DIM) -> ModelSpec:
    return ModelSpec(
        id=model_id, dim=dim, languages=("multi",), licence="test", size_mb=1, bundled=False,
        needs_lang=needs_lang, loader=LOADER, options={"arch": arch, "pretrained": ""},
    )  # fmt: skip


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    root = tmp_path_factory.mktemp("tiny-openclip")
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
        base.register(_spec(XLMR_ID, "tiny-xlmr-vit", needs_lang=False))
        base.register(_spec(NLLB_ID, "tiny-nllb-vit", needs_lang=True))
        try:
            yield
        finally:
            base.unregister(XLMR_ID)
            base.unregister(NLLB_ID)


def _load_seeded(model_id: str, seed: int) -> OpenClipEncoder:
    torch.manual_seed(seed)  # the tiny towers' random weights
    encoder = load_encoder(model_id, device="cpu")
    assert isinstance(encoder, OpenClipEncoder)
    return encoder


@pytest.fixture(scope="module")
def xlmr(tiny_models: None) -> OpenClipEncoder:
    return _load_seeded(XLMR_ID, 0)


@pytest.fixture(scope="module")
def nllb(tiny_models: None) -> OpenClipEncoder:
    return _load_seeded(NLLB_ID, 1)


def _images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    ramp = np.tile(np.linspace(0, 255, 48).astype(np.uint8), (40, 1))
    return [
        Image.new("RGB", (48, 40), "red"),
        Image.new("RGB", (40, 48), "blue"),
        Image.fromarray(np.stack([ramp, ramp[:, ::-1], ramp], axis=-1)),
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)),
        Image.new("L", (32, 32), 200),  # greyscale input is converted, not rejected
    ]


def _assert_unit_rows(vectors: np.ndarray, n: int) -> None:
    assert vectors.shape == (n, DIM)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)


def test_loads_through_the_registry_as_an_encoder(xlmr: OpenClipEncoder) -> None:
    assert isinstance(xlmr, Encoder)
    assert xlmr.spec.id == XLMR_ID and xlmr.spec.dim == DIM
    assert (xlmr.device, xlmr.precision) == ("cpu", "fp32")


@pytest.mark.parametrize("which", ["xlmr", "nllb"])
def test_text_vectors(which: str, request: pytest.FixtureRequest) -> None:
    encoder: OpenClipEncoder = request.getfixturevalue(which)
    texts = ["a dog on the beach", "a red car", "a dog on the beach"]
    vectors = encoder.embed_texts(texts, lang="en")
    _assert_unit_rows(vectors, 3)
    np.testing.assert_allclose(vectors[0], vectors[2], atol=1e-6)  # same text, same vector
    assert np.abs(vectors[0] - vectors[1]).max() > 1e-5  # tiny random towers separate texts only slightly
    alone = encoder.embed_texts(["a red car"], lang="en")
    np.testing.assert_allclose(alone[0], vectors[1], atol=1e-5)  # batch-mates do not matter


@pytest.mark.parametrize("which", ["xlmr", "nllb"])
def test_image_vectors(which: str, request: pytest.FixtureRequest) -> None:
    encoder: OpenClipEncoder = request.getfixturevalue(which)
    images = _images()
    vectors = encoder.embed_images(images)
    _assert_unit_rows(vectors, len(images))
    similarity = vectors @ vectors.T
    off_diagonal = similarity[~np.eye(len(images), dtype=bool)]
    assert off_diagonal.max() < 1 - 1e-4  # every image differs from every other


def test_batching_does_not_change_vectors(
    xlmr: OpenClipEncoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    images = _images()
    texts = [f"photo {i}" for i in range(5)]
    whole_images, whole_texts = xlmr.embed_images(images), xlmr.embed_texts(texts)
    monkeypatch.setattr(xlmr, "batch_size", 2)
    np.testing.assert_allclose(xlmr.embed_images(images), whole_images, atol=1e-5)
    np.testing.assert_allclose(xlmr.embed_texts(texts), whole_texts, atol=1e-5)


def test_reduced_precision_still_returns_unit_float32(
    xlmr: OpenClipEncoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The CUDA path runs under bf16 autocast; CPU autocast exercises the same code here.
    images, texts = _images(), ["a dog on the beach", "a red car"]
    full_images, full_texts = xlmr.embed_images(images), xlmr.embed_texts(texts)
    monkeypatch.setattr(xlmr, "precision", "bf16")
    half_images, half_texts = xlmr.embed_images(images), xlmr.embed_texts(texts)
    _assert_unit_rows(half_images, len(images))
    _assert_unit_rows(half_texts, len(texts))
    assert np.all(np.sum(half_images * full_images, axis=1) > 0.98)
    assert np.all(np.sum(half_texts * full_texts, axis=1) > 0.98)


def test_worker_side_preprocess_matches_embed_images(xlmr: OpenClipEncoder) -> None:
    images = _images()
    pixels = torch.stack([xlmr.preprocess(img) for img in images])
    assert pixels.shape == (len(images), 3, 32, 32)
    np.testing.assert_allclose(xlmr.embed_pixels(pixels), xlmr.embed_images(images), atol=1e-5)


@pytest.mark.parametrize("device_decode", [False, True])
def test_a_folder_indexes_with_an_open_clip_model(xlmr: OpenClipEncoder, tmp_path: Path, device_decode: bool) -> None:
    from xlir_qdrant.ingest.pipeline import IngestOptions, ingest
    from xlir_qdrant.store.edge import EdgeStore

    images = _images()
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, img in enumerate(images):
        img.save(folder / f"{i}.{'png' if i % 2 else 'jpg'}", quality=100)
    store = EdgeStore(tmp_path / "store")
    store.ensure_collection("photos", xlmr.spec)
    report = ingest([folder], xlmr, store, IngestOptions(batch_size=3, device_decode=device_decode))
    assert (report.added, report.failed) == (len(images), 0)
    stored = {Path(p.payload["path"]).name: np.asarray(p.vector) for p in store.scroll(with_vectors=True)}
    from PIL import Image as PILImage

    want = xlmr.embed_images([PILImage.open(folder / name) for name in sorted(stored)])
    got = np.stack([stored[name] for name in sorted(stored)])
    assert np.all(np.sum(got * want, axis=1) > 0.98)
    store.close()


@pytest.mark.parametrize("which", ["xlmr", "nllb"])
def test_empty_inputs_give_empty_arrays(which: str, request: pytest.FixtureRequest) -> None:
    encoder: OpenClipEncoder = request.getfixturevalue(which)
    assert encoder.embed_texts([]).shape == (0, DIM)
    assert encoder.embed_images([]).shape == (0, DIM)
    assert encoder.embed_texts([]).dtype == np.float32


def test_language_free_model_ignores_lang(xlmr: OpenClipEncoder) -> None:
    text = ["Katze auf dem Sofa"]
    np.testing.assert_allclose(xlmr.embed_texts(text, lang="de"), xlmr.embed_texts(text), atol=1e-6)
    assert xlmr.last_languages == []


def test_nllb_detects_and_records_each_texts_language(nllb: OpenClipEncoder) -> None:
    texts = ["Katze auf dem Sofa", "perro en la playa", "猫がソファで寝ている", "кошка на диване"]
    detected = nllb.embed_texts(texts)
    assert nllb.last_languages == ["de", "es", "ja", "ru"]
    # each text was tokenised with its own language: the same as asking for it explicitly
    for i, (text, iso) in enumerate(zip(texts, ["de", "es", "ja", "ru"])):
        np.testing.assert_allclose(detected[i], nllb.embed_texts([text], lang=iso)[0], atol=1e-5)


def test_nllb_language_token_changes_the_vector(nllb: OpenClipEncoder) -> None:
    text = ["Katze auf dem Sofa"]
    german = nllb.embed_texts(text, lang="de")
    np.testing.assert_allclose(nllb.embed_texts(text, lang="deu_Latn"), german, atol=1e-6)
    english = nllb.embed_texts(text, lang="en")
    assert not np.allclose(german, english, atol=1e-3)


def test_nllb_explicit_lang_is_recorded_in_iso_form(nllb: OpenClipEncoder) -> None:
    nllb.embed_texts(["赤い車", "青い空"], lang="jp")
    assert nllb.last_languages == ["ja", "ja"]


def test_nllb_refuses_languages_it_cannot_encode(nllb: OpenClipEncoder) -> None:
    with pytest.raises(UnknownLanguage, match="--lang"):
        nllb.embed_texts(["hello"], lang="klingon")
    with pytest.raises(UnknownLanguage, match="tlh_Latn"):  # well-formed, not an NLLB token
        nllb.embed_texts(["hello"], lang="tlh_Latn")


def test_spec_whose_dim_disagrees_with_the_architecture_is_refused(tiny_models: None) -> None:
    base.register(_spec("test-wrong-dim", "tiny-xlmr-vit", needs_lang=False, dim=DIM + 1))
    try:
        with pytest.raises(ModelUnavailable, match="test-wrong-dim.*dim"):
            load_encoder("test-wrong-dim", device="cpu")
    finally:
        base.unregister("test-wrong-dim")


def test_cached_weights_load_without_touching_the_network(
    xlmr: OpenClipEncoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Lay xlmr's weights out the way the hub cache does, under a pretrained tag of their own.
    hub_constants = pytest.importorskip("huggingface_hub.constants")
    repo = tmp_path / "hub" / "models--xlir-test--tiny-xlmr-vit"
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    torch.save(xlmr._model.state_dict(), snapshot / "open_clip_pytorch_model.bin")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    pretrained = sys.modules["open_clip.pretrained"]
    monkeypatch.setitem(pretrained._PRETRAINED, "tiny-xlmr-vit", {"cached": {"hf_hub": "xlir-test/tiny-xlmr-vit/"}})

    attempts: list[object] = []

    def no_network(*args: object, **kwargs: object) -> None:
        attempts.append(args)
        raise OSError("network disabled by the test")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    spec = _spec("test-cached", "tiny-xlmr-vit", needs_lang=False)
    base.register(replace(spec, options={"arch": "tiny-xlmr-vit", "pretrained": "cached"}))
    try:
        torch.manual_seed(123)  # a random init would not match xlmr
        cached = load_encoder("test-cached", device="cpu")
    finally:
        base.unregister("test-cached")
    assert attempts == []  # the cache answered; the hub was never asked
    images, texts = _images(), ["a red car", "Katze"]
    np.testing.assert_allclose(cached.embed_images(images), xlmr.embed_images(images), atol=1e-5)
    np.testing.assert_allclose(cached.embed_texts(texts), xlmr.embed_texts(texts), atol=1e-5)


_OFFLINE_SCRIPT = textwrap.dedent(
    """
    import json, time
    from xlir_qdrant.encoders import base
    from xlir_qdrant.errors import ModelUnavailable

    REAL = [  # id, arch, pretrained tag, dim, needs_lang
        ("xlm-roberta-base-ViT-B-32", "xlm-roberta-base-ViT-B-32", "laion5b_s13b_b90k", 512, False),
        ("nllb-clip-base-siglip", "nllb-clip-base-siglip", "mrl", 768, True),
        ("nllb-clip-large-siglip", "nllb-clip-large-siglip", "mrl", 1152, True),
        ("xlm-roberta-large-ViT-H-14", "xlm-roberta-large-ViT-H-14", "frozen_laion5b_s13b_b90k", 1024, False),
    ]
    try:
        known = {spec.id for spec in base.registry()}  # the built-in specs, where they exist
    except ModuleNotFoundError:
        known = set()
    for model_id, arch, tag, dim, needs_lang in REAL:
        if model_id not in known:
            base.register(base.ModelSpec(
                id=model_id, dim=dim, languages=(), licence="", size_mb=0, bundled=False,
                needs_lang=needs_lang, loader="xlir_qdrant.encoders.openclip:load",
                options={"arch": arch, "pretrained": tag}))
    results = {}
    for model_id, *_ in REAL:
        start = time.monotonic()
        try:
            base.load_encoder(model_id, device="cpu")
            results[model_id] = ["loaded", 0.0]
        except ModelUnavailable as exc:
            results[model_id] = [str(exc), time.monotonic() - start]
    print(json.dumps(results))
    """
)


def test_real_models_without_network_or_cache_fail_fast_with_one_line(tmp_path: Path) -> None:
    # A fresh interpreter, because the hub reads HF_HUB_OFFLINE and HF_HOME at import time.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    env.pop("HF_HUB_CACHE", None)
    env.pop("TRANSFORMERS_CACHE", None)
    root = Path(__file__).resolve().parents[1]
    env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")])
    done = subprocess.run(
        [sys.executable, "-c", _OFFLINE_SCRIPT], env=env, cwd=tmp_path,
        capture_output=True, text=True, timeout=240, check=True,
    )  # fmt: skip
    results = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(results) == 4
    for model_id, (message, seconds) in results.items():
        assert model_id in message
        assert "HF_HUB_OFFLINE" in message and "--model" in message and "HF_HOME" in message
        assert "\n" not in message
        # no network retries: a cache miss is known locally (the hub's retries take ~20 s a file)
        assert seconds < 10
