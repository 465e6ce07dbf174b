"""The paper's training recipe: losses by hand, training on synthetic data where the answer is
known, frozen-feature caching, data loading, and the checkpoint round trip."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import save

from xlir_qdrant.encoders.registry import DEFAULT_MODEL, get_spec, load_encoder
from xlir_qdrant.encoders.base import EmbeddingSide
from xlir_qdrant.train.config import TrainConfig
from xlir_qdrant.train.data import DataError, from_pairs, load_coco, load_pairs, split_images
from xlir_qdrant.train.features import image_features, image_tower, text_features, text_tower
from xlir_qdrant.train.loop import FeatureSet, embed_features, lr_lambda, train
from xlir_qdrant.train.losses import m3_loss, negative_hinge, patr_loss


# ---------------------------------------------------------------- losses, by hand


def _unit(*rows: tuple[float, ...]) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.tensor(rows, dtype=torch.float32), dim=1)


def test_patr_matches_the_formula_by_hand() -> None:
    # Two pairs in 2-D: t0 sits on v0, t1 is 60 degrees from v1 and 30 degrees from v0.
    c60, s60 = math.cos(math.pi / 3), math.sin(math.pi / 3)
    text = _unit((1.0, 0.0), (s60, c60))
    image = _unit((1.0, 0.0), (0.0, 1.0))
    ids = torch.tensor([0, 1])
    # anchor 0: d+ = 0, d(t0, v1) = 1 -> hinge max(0, 0.4 - 1) = 0
    # anchor 1: d+ = 1 - cos60 = 0.5, d(t1, v0) = 1 - cos30 -> hinge 0.4 - (1 - cos30)
    expected = (0.0 + 0.0 + 0.5 + (0.4 - (1 - s60))) / 2
    got = patr_loss(text, image, ids, margin=0.4, mining="hardest")
    assert got.item() == pytest.approx(expected, abs=1e-6)


def test_captions_of_the_same_image_are_never_negatives() -> None:
    # Rows 0 and 1 are two captions of image 7: v1 == v0 must not count as t0's negative.
    text = _unit((1.0, 0.0), (1.0, 0.1), (0.0, 1.0))
    image = _unit((1.0, 0.0), (1.0, 0.0), (0.0, 1.0))
    ids = torch.tensor([7, 7, 3])
    loss = patr_loss(text, image, ids, margin=0.5, mining="hardest")
    # Only the cross pairs are ~orthogonal (d ~ 1 > 0.5): no hinge at all, just the pulls.
    pulls = (1 - (text * image).sum(1)).mean().item()
    assert loss.item() == pytest.approx(pulls, abs=1e-6)
    # If the duplicate image counted as a negative, anchor 0 would add max(0, 0.5 - 0) = 0.5.
    assert loss.item() < 0.1


def test_mining_modes_pick_the_documented_negative() -> None:
    dist = torch.tensor([[0.2, 0.1, 0.3, 0.9]])  # column 0 is the positive
    negative = torch.tensor([[False, True, True, True]])
    d_pos = torch.tensor([0.2])
    hinge = lambda mode: negative_hinge(dist, negative, d_pos, 0.5, mode).item()  # noqa: E731
    assert hinge("hardest") == pytest.approx(0.5 - 0.1)  # closest negative
    assert hinge("semihard") == pytest.approx(0.5 - 0.3)  # closest one farther than the positive
    assert hinge("all") == pytest.approx(((0.5 - 0.1) + (0.5 - 0.3)) / 2)  # mean over violators
    # No negative farther than the positive: semi-hard falls back to the farthest one.
    assert negative_hinge(dist, negative, torch.tensor([0.95]), 1.0, "semihard").item() == pytest.approx(0.1)
    # An anchor alone with its own image's captions has no negatives and no hinge.
    assert negative_hinge(dist, torch.zeros_like(negative), d_pos, 0.5, "hardest").item() == 0.0


def test_m3_is_patr_plus_the_text_text_hinge() -> None:
    text = _unit((1.0, 0.0), (0.9, 0.1), (0.0, 1.0))
    image = _unit((1.0, 0.0), (0.0, 1.0), (-1.0, 0.0))
    ids = torch.tensor([0, 1, 2])
    patr = patr_loss(text, image, ids, margin=0.4)
    assert m3_loss(text, image, ids, margin=0.4, weight=0.0).item() == pytest.approx(patr.item())
    # t0 and t1 describe different images yet nearly coincide: M3 charges for it.
    assert m3_loss(text, image, ids, margin=0.4, text_margin=0.6, weight=1.0).item() > patr.item() + 0.1


# ---------------------------------------------------------------- training on synthetic data


def synthetic(n_images: int = 400, n_train: int = 300, *, seed: int = 0, caps: int = 5, dt: int = 16, di: int = 24
              ) -> tuple[FeatureSet, FeatureSet]:
    """Images of 10 concepts; captions = a linear view of the image's latent + noise + a large
    component shared by *all* captions, as sentence encoders give ("every caption is a caption")."""
    rng = np.random.default_rng(seed)
    k = 8
    concept = rng.normal(size=(10, k))
    z = concept[rng.integers(0, 10, n_images)] + 0.3 * rng.normal(size=(n_images, k))
    image = z @ rng.normal(size=(k, di)) + 0.3 * rng.normal(size=(n_images, di)) + 3.0
    owners = np.repeat(np.arange(n_images), caps)
    common = rng.normal(size=dt)
    common *= 2.0 / np.linalg.norm(common)
    text = z[owners] @ rng.normal(size=(k, dt)) / np.sqrt(k) + 0.25 * rng.normal(size=(len(owners), dt)) + common
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    text, image = text.astype(np.float32), image.astype(np.float32)
    tr = owners < n_train
    return (FeatureSet(text[tr], image[:n_train], owners[tr]),
            FeatureSet(text[~tr], image[n_train:], owners[~tr] - n_train))


def caption_cluster_gap(text: np.ndarray, owners: np.ndarray) -> float:
    """Mean cosine of captions of the same image minus that of captions of different images."""
    sim = text @ text.T
    same = owners[:, None] == owners[None, :]
    off_diagonal = ~np.eye(len(text), dtype=bool)
    return float(sim[same & off_diagonal].mean() - sim[~same].mean())


SMALL = dict(dim=16, hidden=32, epochs=6, batch_size=64, lr=3e-3, dropout=0.0, margin=0.4, text_margin=0.6,
             m3_weight=0.5)


@pytest.mark.parametrize("mining", ["hardest", "semihard"])
def test_m3_tightens_caption_clusters_more_than_patr(mining: str) -> None:
    train_set, val_set = synthetic()
    gaps = {}
    for loss in ("patr", "m3"):
        result = train(train_set, val_set, TrainConfig(loss=loss, mining=mining, **SMALL))
        text, _ = embed_features(result.model, val_set, "cpu")
        gaps[loss] = caption_cluster_gap(text, val_set.caption_image)
    # PATR's hinge is already satisfied by the shared component, so it leaves captions of
    # different images close; M3 pushes them apart (held-out captions, not memorised ones).
    assert gaps["m3"] > gaps["patr"] + 0.03, gaps


def test_training_improves_held_out_recall_and_is_deterministic() -> None:
    train_set, val_set = synthetic(seed=1)
    events = []
    config = TrainConfig(loss="m3", **SMALL)
    first = train(train_set, val_set, config, progress=events.append)
    untrained, trained = first.history[0], first.history[-1]
    assert untrained["epoch"] == 0 and trained["epoch"] == config.epochs
    assert trained["t2i_r10"] > untrained["t2i_r10"] + 30, (untrained, trained)
    assert trained["t2i_r1"] > 2 * max(untrained["t2i_r1"], 5.0)
    steps = [e for e in events if e.kind == "step"]
    assert steps and all(e.rate > 0 and math.isfinite(e.loss) for e in steps)
    assert steps[-1].step == steps[-1].total_steps
    again = train(train_set, val_set, config)
    assert again.history == first.history
    for a, b in zip(first.model.state_dict().values(), again.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_schedule_warms_up_linearly_then_decays_to_zero() -> None:
    f = lr_lambda(10, 110)
    assert [round(f(s), 2) for s in (0, 4, 9)] == [0.1, 0.5, 1.0]
    assert f(10) == pytest.approx(1.0) and f(60) == pytest.approx(0.5) and f(110) == pytest.approx(0.0)


# ---------------------------------------------------------------- data


def test_split_is_by_image_seeded_and_disjoint() -> None:
    pairs = from_pairs([(f"img{i // 3}.jpg", f"caption {i}") for i in range(60)])  # 20 images x 3
    train_a, val_a = split_images(len(pairs.images), 0.25, seed=3)
    assert (train_a, val_a) == split_images(20, 0.25, seed=3) and len(val_a) == 5
    assert not set(train_a) & set(val_a) and sorted(train_a + val_a) == list(range(20))
    # Every caption stays with its own image through the renumbering.
    feats = FeatureSet(np.arange(60, dtype=np.float32)[:, None], np.arange(20, dtype=np.float32)[:, None],
                       pairs.caption_image)
    for part in (feats.subset(train_a), feats.subset(val_a)):
        for caption, owner in zip(part.text[:, 0], part.caption_image, strict=True):
            assert int(caption) // 3 == int(part.image[owner, 0])
    assert sum(len(feats.subset(p).text) for p in (train_a, val_a)) == 60
    assert split_images(20, 0.25, seed=4)[1] != val_a


def test_coco_json_finds_images_in_subfolders_and_drops_missing(tmp_path: Path) -> None:
    save(tmp_path / "coco" / "train2014" / "COCO_train2014_000000000001.jpg", (200, 0, 0))
    save(tmp_path / "coco" / "val2014" / "COCO_val2014_000000000002.jpg", (0, 200, 0))
    data = {"images": [{"id": 1, "file_name": "COCO_train2014_000000000001.jpg"},
                       {"id": 2, "file_name": "COCO_val2014_000000000002.jpg"},
                       {"id": 3, "file_name": "COCO_val2014_000000000003.jpg"}],
            "annotations": [{"image_id": 1, "caption": "A red  square.\n"}, {"image_id": 2, "caption": "green"},
                            {"image_id": 1, "caption": "red thing"}, {"image_id": 3, "caption": "gone"}]}
    (tmp_path / "captions.json").write_text(json.dumps(data))
    pairs = load_coco(tmp_path / "captions.json", tmp_path / "coco")
    assert len(pairs.images) == 2 and pairs.captions == ("A red square.", "green", "red thing")
    assert pairs.caption_image.tolist() == [0, 1, 0]
    with pytest.raises(DataError, match="--images"):
        load_coco(tmp_path / "captions.json", tmp_path / "elsewhere")


def test_pairs_tsv_and_jsonl(tmp_path: Path) -> None:
    save(tmp_path / "a.jpg", (1, 2, 3))
    (tmp_path / "p.tsv").write_text("path\tcaption\r\na.jpg\tone\r\na.jpg\ttwo")
    (tmp_path / "p.jsonl").write_text(json.dumps({"image": str(tmp_path / "a.jpg"), "caption": "one"}) + "\n")
    tsv = load_pairs(tmp_path / "p.tsv")
    assert tsv.images == (str(tmp_path / "a.jpg"),) and tsv.captions == ("one", "two")
    assert load_pairs(tmp_path / "p.jsonl").captions == ("one",)
    (tmp_path / "bad.tsv").write_text("missing.jpg\tcaption\n")
    with pytest.raises(DataError, match="missing.jpg not found"):
        load_pairs(tmp_path / "bad.tsv")


# ---------------------------------------------------------------- frozen features


@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random BERT and its tokenizer, saved like a hub model (no network)."""
    from transformers import BertConfig, BertModel, BertTokenizer

    path = tmp_path_factory.mktemp("tiny-bert")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "the", "red", "green", "blue", "dog", "cat",
             "square", "circle", "on", "grass"]
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(words), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=64)).save_pretrained(path)
    BertTokenizer(vocab={w: i for i, w in enumerate(words)}).save_pretrained(path)
    return path


def test_hf_text_encoder_mean_pools_over_real_tokens_only(tiny_hf: Path) -> None:
    enc = text_tower(str(tiny_hf))
    alone = enc.features(["a dog"])
    padded = enc.features(["a dog", "the red cat on the green grass"])  # "a dog" gets padding
    assert enc.dim == 16 and alone.shape == (1, 16)
    np.testing.assert_allclose(alone[0], padded[0], atol=1e-5)
    assert np.allclose(np.linalg.norm(padded, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(padded[0], padded[1], atol=1e-3)


def test_bundled_tower_gives_penultimate_features(tmp_path: Path) -> None:
    tower = image_tower("default")
    feats, ok = image_features([str(save(tmp_path / "x.jpg", (30, 90, 200)))], tower, use_cache=False)
    assert tower.dim == 1280 and feats.shape == (1, 1280) and ok.all()
    assert tower.key == f"{DEFAULT_MODEL}:penultimate" and np.isfinite(feats).all() and feats.std() > 0
    assert tower._tower.runtime == "torch"  # the ONNX exports end at the logits: not made for this


class _Counting(EmbeddingSide):
    def __init__(self) -> None:
        super().__init__(load_encoder("fake-colour"))
        self.seen = 0

    def embed(self, batch):  # noqa: ANN001, ANN201
        self.seen += len(batch)
        return super().embed(batch)


def test_image_features_are_cached_by_path_mtime_and_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XLIR_CACHE", str(tmp_path / "cache"))
    paths = [str(save(tmp_path / f"{i}.png", (i * 50, 10, 10))) for i in range(4)]
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    skipped: list[tuple[str, str]] = []
    tower = _Counting()
    first, ok = image_features(paths + [str(tmp_path / "broken.jpg")], tower, batch_size=2,
                               on_skip=lambda p, r: skipped.append((p, r)))
    assert ok.tolist() == [True] * 4 + [False] and tower.seen == 4
    assert len(skipped) == 1 and "broken.jpg" in skipped[0][0] and not first[4].any()
    second, _ = image_features(paths, tower)
    assert tower.seen == 4 and np.array_equal(second, first[:4])  # all from the cache
    save(Path(paths[1]), (0, 255, 0))  # edited in place: new mtime/size, new features
    os.utime(paths[1], ns=(1, 1))
    third, _ = image_features(paths, tower)
    assert tower.seen == 5 and not np.allclose(third[1], first[1])


def test_text_features_are_cached_per_caption_list(tiny_hf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XLIR_CACHE", str(tmp_path))
    enc = text_tower(str(tiny_hf))
    a = text_features(["a red dog", "the cat"], enc)
    assert len(list((tmp_path / "features").rglob("texts-*.npz"))) == 1
    np.testing.assert_array_equal(text_features(["a red dog", "the cat"], enc), a)


# ---------------------------------------------------------------- checkpoint


def test_checkpoint_round_trip_through_the_registry(tiny_hf: Path, tmp_path: Path) -> None:
    from xlir_qdrant.train.checkpoint import save as save_checkpoint

    colours = [(220, 20, 20), (20, 200, 20), (20, 20, 220), (240, 240, 240), (20, 20, 20), (200, 200, 20)]
    names = ["red", "green", "blue", "white", "black", "yellow"]
    paths = [str(save(tmp_path / f"{n}.png", c)) for n, c in zip(names, colours, strict=True)]
    pairs = from_pairs([(p, f"a {n} square") for p, n in zip(paths, names, strict=True)] +
                       [(p, f"the {n} circle") for p, n in zip(paths, names, strict=True)])
    img, txt = image_tower("fake-colour"), text_tower(str(tiny_hf))
    feats, _ = image_features(pairs.images, img, use_cache=False)
    data = FeatureSet(text_features(pairs.captions, txt, use_cache=False), feats, pairs.caption_image)
    config = TrainConfig(dim=12, hidden=16, epochs=2, batch_size=6, image_projection=True)
    result = train(data, None, config)
    out = tmp_path / "my ckpt"
    model_id = save_checkpoint(out, result.model, config=config.to_dict(), history=result.history, image_model="fake-colour",
                               image_key=img.key, text_encoder=str(tiny_hf), text_key=txt.key,
                               languages=txt.languages)
    assert {"model.safetensors", "xlir-model.json", "train-config.json", "metrics.json"} <= set(os.listdir(out))
    assert json.loads((out / "train-config.json").read_text())["epochs"] == 2

    spec = get_spec(str(out))
    assert spec.id == model_id and model_id.startswith("xlir-my-ckpt-") and spec.dim == 12
    enc = load_encoder(str(out))
    want_text, want_image = embed_features(result.model, data, "cpu")
    got_text = enc.embed_texts(list(pairs.captions))
    from PIL import Image

    got_image = enc.embed_images([Image.open(p) for p in pairs.images])
    np.testing.assert_allclose(got_text, want_text, atol=1e-5)
    np.testing.assert_allclose(got_image, want_image, atol=1e-5)
    for v in (got_text, got_image):
        assert v.dtype == np.float32 and v.shape[1] == 12
        np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert enc.takes_pixels is False  # the fake tower takes PIL images: ingest hands them over as they are


def test_a_damaged_checkpoint_is_one_clear_error(tmp_path: Path) -> None:
    from xlir_qdrant.errors import ModelUnavailable

    (tmp_path / "xlir-model.json").write_text(json.dumps({"id": "x", "dim": 4}))
    with pytest.raises(ModelUnavailable, match="not a usable xlir checkpoint.*lacks image_model"):
        load_encoder(str(tmp_path))
    (tmp_path / "xlir-model.json").write_text("{not json")
    with pytest.raises(ModelUnavailable, match="not a usable xlir checkpoint"):
        load_encoder(str(tmp_path))


def test_subsets_keep_captions_with_their_images() -> None:
    feats = FeatureSet(np.arange(4, dtype=np.float32)[:, None], np.array([[10.0], [11.0], [12.0]], np.float32),
                       np.array([0, 1, 2, 0]))
    fsub = feats.subset([2, 0])
    assert fsub.text[:, 0].tolist() == [0, 2, 3] and fsub.image[:, 0].tolist() == [12, 10]
    assert fsub.image[fsub.caption_image][:, 0].tolist() == [10, 12, 10]
