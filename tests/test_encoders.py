"""One conformance suite for every model family behind the encoder seam.

Each family gets a model that runs here: the bundled model with its real weights, a tiny random
open_clip model, a checkpoint saved here over the colour fake, and the fake itself. Every one
must keep the seam's promises: unit float32 rows of the spec's width, empty in -> empty out,
greyscale and transparent images taken, and, when it declares ``takes_pixels``, worker-side
preprocessing that embeds exactly like ``embed_images``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import tiny_openclip
from conftest import TEST_CACHE
from xlir_qdrant.encoders import registry
from xlir_qdrant.encoders.base import CROP_MARGIN, EncoderBase, PixelSpec
from xlir_qdrant.encoders.registry import DEFAULT_MODEL, load_encoder

FAMILIES = ("sight", "conse", "openclip", "checkpoint", "fake")


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    with tiny_openclip.installed(tmp_path_factory.mktemp("tiny-openclip")):
        yield


def _checkpoint(root: Path) -> str:
    """An (untrained) head over the colour fake's images and mUSE, saved as `xlir train` does."""
    from xlir_qdrant.encoders.head import HeadConfig, JointModel
    from xlir_qdrant.train.checkpoint import save

    model = JointModel(HeadConfig(text_in=512, image_in=8, dim=16, hidden=8))
    save(root, model, config={"loss": "m3"}, history=[], image_model="fake-colour", image_key="fake-colour:embedding",
         text_encoder="muse", text_key="muse", languages=("en", "de"))
    return str(root)


@pytest.fixture(params=FAMILIES)
def encoder(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> EncoderBase:
    monkeypatch.setenv("XLIR_CACHE", str(TEST_CACHE))  # the bundled model's prepared files
    family = request.param
    if family == "sight":
        return load_encoder(DEFAULT_MODEL, device="cpu")
    if family == "conse":
        return load_encoder("conse-lite0-muse", device="cpu")
    if family == "openclip":
        request.getfixturevalue("tiny_clip")
        return load_encoder(tiny_openclip.spec(tiny_openclip.XLMR_ID, "tiny-xlmr-vit", needs_lang=False), device="cpu")
    if family == "checkpoint":
        return load_encoder(_checkpoint(tmp_path / "ckpt"), device="cpu")
    return load_encoder("fake-colour", device="cpu")


def _images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [
        Image.fromarray(rng.integers(0, 255, (120, 90, 3), dtype=np.uint8)),
        Image.new("L", (64, 80), 200),  # greyscale
        Image.new("RGBA", (70, 70), (255, 0, 0, 128)),  # transparency
    ]


def _unit_rows(x: np.ndarray, n: int, dim: int) -> None:
    assert x.shape == (n, dim) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-4)


def test_every_family_of_the_registry_is_in_this_suite() -> None:
    assert set(registry.FAMILIES) == set(FAMILIES)
    assert {spec.family for spec in registry.MODELS} <= set(FAMILIES)


def test_every_registered_spec_is_well_formed() -> None:
    ids = [spec.id for spec in registry.MODELS]
    assert len(ids) == len(set(ids)) and registry.get_spec("default").id == DEFAULT_MODEL
    for spec in registry.MODELS:
        assert spec.dim > 0 and spec.languages and spec.licence and spec.description, spec.id
        assert re.fullmatch(r"[A-Za-z0-9_.-]+", spec.vector_name)
        assert registry.spec_for_vector(spec.vector_name) is spec


def test_the_seam_holds(encoder: EncoderBase) -> None:
    dim = encoder.spec.dim
    assert isinstance(encoder, EncoderBase) and encoder.device == "cpu" and encoder.precision
    assert isinstance(encoder.first_use_note(), str)
    encoder.warm_up()
    _unit_rows(encoder.embed_texts(["a cat on a sofa", "eine Katze"]), 2, dim)
    _unit_rows(encoder.embed_images(_images()), 3, dim)
    assert encoder.embed_texts([]).shape == encoder.embed_images([]).shape == (0, dim)
    assert encoder.input_size > 0
    _unit_rows(encoder.embed_labels(["cat", "Katze"]), 2, dim)
    queries = encoder.embed_texts(["a cat on a sofa", "eine Katze"])
    relevance = encoder.relevance(queries)
    if relevance is not None:  # calibrated: monotone in the cosine, and the inverse holds
        assert (np.asarray(relevance.slope) > 0).all()
        p = relevance.probability(0, np.array([0.1, 0.3, 0.6]))
        assert (np.diff(p) > 0).all() and ((p > 0) & (p < 1)).all()
        assert relevance.probability(1, relevance.cosine_at(1, 0.5)) == pytest.approx(0.5, abs=1e-6)


def test_the_image_side_embeds_like_embed_images(encoder: EncoderBase) -> None:
    side = encoder.image_side()
    assert side.dim == encoder.spec.dim and side.min_side == encoder.input_size + CROP_MARGIN
    assert side.pixels is encoder.takes_pixels
    images = [im.convert("RGB") for im in _images()]
    rows = [side.preprocess(im) for im in images]
    batch = np.stack([np.asarray(r) for r in rows]) if side.pixels else rows
    np.testing.assert_allclose(side.embed(batch), encoder.embed_images(images), atol=1e-4)
    if encoder.takes_pixels:
        assert side.pixel_spec is None or isinstance(side.pixel_spec, PixelSpec)
        np.testing.assert_allclose(encoder.embed_pixels(batch), encoder.embed_images(images), atol=1e-4)


def test_the_feature_side_gives_finite_features(encoder: EncoderBase) -> None:
    side = encoder.feature_side()
    images = [im.convert("RGB") for im in _images()]
    rows = [side.preprocess(im) for im in images]
    feats = side.embed(np.stack([np.asarray(r) for r in rows]) if side.pixels else rows)
    assert feats.shape == (3, side.dim) and np.isfinite(feats).all() and side.key
