"""The open_clip family, wired end to end on tiny random models built here, offline
(tiny_openclip.py: an XLM-R-like and an NLLB-like text tower, random weights)."""

from __future__ import annotations

import json
import os
import socket
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

from xlir_qdrant.encoders import registry  # noqa: E402
from xlir_qdrant.encoders.base import EncoderBase  # noqa: E402
from xlir_qdrant.encoders.registry import load_encoder  # noqa: E402
from xlir_qdrant.encoders.lang import UnknownLanguage  # noqa: E402
from xlir_qdrant.encoders.openclip import OpenClipEncoder  # noqa: E402
from xlir_qdrant.errors import ModelUnavailable  # noqa: E402
import tiny_openclip  # noqa: E402
from tiny_openclip import DIM, NLLB_ID, XLMR_ID  # noqa: E402



@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    with tiny_openclip.installed(tmp_path_factory.mktemp("tiny-openclip")):
        yield


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
    assert isinstance(xlmr, EncoderBase) and xlmr.takes_pixels and xlmr.input_size == 32
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
    from xlir_qdrant.ingest import IngestOptions, IngestRun
    from xlir_qdrant.store.edge import EdgeStore

    images = _images()
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, img in enumerate(images):
        img.save(folder / f"{i}.{'png' if i % 2 else 'jpg'}", quality=100)
    store = EdgeStore(tmp_path / "store")
    collection = store.collection("photos", xlmr.spec, create=True)
    report = IngestRun(xlmr, collection, IngestOptions(batch_size=3, gpu_decode=device_decode)).run([folder])
    assert (report.added, report.skipped) == (len(images), 0)
    stored = {Path(p.payload["path"]).name: np.asarray(p.vector) for p in collection.scroll(with_vectors=True)}
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
    with pytest.raises(ModelUnavailable, match="test-wrong-dim.*dim"):
        load_encoder(tiny_openclip.spec("test-wrong-dim", "tiny-xlmr-vit", needs_lang=False, dim=DIM + 1), device="cpu")


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
    spec = tiny_openclip.spec("test-cached", "tiny-xlmr-vit", needs_lang=False)
    torch.manual_seed(123)  # a random init would not match xlmr
    cached = load_encoder(replace(spec, options={"arch": "tiny-xlmr-vit", "pretrained": "cached"}), device="cpu")
    assert attempts == []  # the cache answered; the hub was never asked
    images, texts = _images(), ["a red car", "Katze"]
    np.testing.assert_allclose(cached.embed_images(images), xlmr.embed_images(images), atol=1e-5)
    np.testing.assert_allclose(cached.embed_texts(texts), xlmr.embed_texts(texts), atol=1e-5)


_OFFLINE_SCRIPT = textwrap.dedent(
    """
    import json, socket
    from xlir_qdrant.encoders.registry import load_encoder, registry
    from xlir_qdrant.errors import ModelUnavailable

    attempts = []

    def no_network(*args, **kwargs):
        attempts.append(str(args)[:80])
        raise OSError("network disabled")

    socket.getaddrinfo = no_network
    results = {}
    for spec in registry():
        if spec.family != "openclip":
            continue
        try:
            load_encoder(spec, device="cpu")
            results[spec.id] = "loaded"
        except ModelUnavailable as exc:
            results[spec.id] = str(exc)
    print(json.dumps({"results": results, "network": attempts}))
    """
)

REAL_OPENCLIP = {  # every hub model the registry must offer, with its open_clip weights tag
    "xlm-roberta-base-ViT-B-32": "laion5b_s13b_b90k",
    "nllb-clip-base-siglip": "mrl",
    "nllb-clip-large-siglip": "mrl",
    "xlm-roberta-large-ViT-H-14": "frozen_laion5b_s13b_b90k",
}


def test_the_registry_offers_the_real_hub_models_and_open_clip_knows_them() -> None:
    specs = {s.id: s for s in registry.registry() if s.family == "openclip" and not s.id.startswith("test-")}
    assert {k: s.options["pretrained"] for k, s in specs.items()} == REAL_OPENCLIP
    for spec in specs.values():
        # `xlir models` looks for the weights where open_clip would fetch them, without open_clip
        hub = open_clip.get_pretrained_cfg(spec.options["arch"], spec.options["pretrained"])["hf_hub"]
        assert spec.options["hf_hub"] == hub.rstrip("/"), spec.id
        config = open_clip.get_model_config(spec.options["arch"])
        assert config is not None and config["embed_dim"] == spec.dim, spec.id
        assert spec.options["pretrained"] in open_clip.list_pretrained_tags_by_model(spec.options["arch"])


def test_real_models_without_network_or_cache_fail_with_one_line_and_no_request(tmp_path: Path) -> None:
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
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(out["results"]) == set(REAL_OPENCLIP)
    for model_id, message in out["results"].items():
        assert model_id in message
        assert "HF_HUB_OFFLINE" in message and "--model" in message and "HF_HOME" in message
        assert "\n" not in message
    # a cache miss is known locally: not one lookup of the hub (its retries take ~20 s a file)
    assert out["network"] == []
