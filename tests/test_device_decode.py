"""Decoding on the encoder's device (nvjpeg on CUDA). torchvision runs the same code on a CPU
device, so everything but nvjpeg itself is checked here."""

from __future__ import annotations

import io
import random
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image, ImageOps

from conftest import TEST_CACHE
from xlir_qdrant.encoders.bundled import tf_preprocess
from xlir_qdrant.encoders.registry import get_spec, load_encoder
from xlir_qdrant.images import device as dev
from xlir_qdrant.ingest import IngestOptions, IngestRun
from xlir_qdrant.store.edge import EdgeStore

# GPU decoding serves encoders whose input is one tensor (a PixelSpec), as the ConSE model's is
MODEL = "conse-lite0-muse"


@pytest.fixture(scope="module")
def encoder():  # noqa: ANN201
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XLIR_CACHE", str(TEST_CACHE))
        enc = load_encoder(MODEL, device="cpu")
        enc.warm_up()
    return enc


def _chw(im: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1).contiguous()


def _with_orientation(im: Image.Image, orientation: int, fmt: str) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    im.save(buf, fmt, exif=exif, **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_matches_pillow(orientation: int) -> None:
    im = Image.fromarray(np.random.default_rng(orientation).integers(0, 255, (5, 7, 3), dtype=np.uint8))
    stored = Image.open(io.BytesIO(_with_orientation(im, orientation, "PNG")))
    want = _chw(ImageOps.exif_transpose(stored))
    assert torch.equal(dev.orient(_chw(im), orientation), want)


def test_batch_decode_is_upright_and_names_the_file_it_cannot_read() -> None:
    photo = Image.fromarray(skimage.data.astronaut()).resize((96, 64))
    good = dev.raw_jpeg(_with_orientation(photo, 6, "JPEG"), 6, "cpu")
    broken_bytes = _with_orientation(photo, 1, "JPEG")[:600] + random.Random(0).randbytes(4000)
    broken = dev.raw_jpeg(broken_bytes, 1, "cpu")
    out = dev.decode_jpegs([good, broken, good], "cpu")
    assert out[1] is None
    assert out[0].shape == out[2].shape == (3, 96, 64)  # rotated upright: 64 wide, 96 tall
    assert out[0].dtype == torch.uint8


def test_tensor_preprocessing_matches_the_cpu_preprocessing(encoder) -> None:  # noqa: ANN001
    spec = encoder.pixel_spec()
    names = ["chelsea.png", "coffee.png", "rocket.jpg"]
    photos = [Image.open(Path(skimage.data.__file__).parent / n).convert("RGB") for n in names]
    got = dev.to_pixels([_chw(p) for p in photos], spec, "cpu").numpy()
    want = np.stack([tf_preprocess(p, encoder.input_size) for p in photos])
    assert got.shape == want.shape == (3, 3, 224, 224)
    # both are antialiased bicubic resizes; they differ by rounding, a level or two of 255
    assert np.abs(got - want).mean() * 128 < 1.0
    assert np.abs(got - want).max() * 128 < 16


def _folder(root: Path) -> Path:
    base = Path(skimage.data.__file__).parent
    root.mkdir()
    for name in ["chelsea.png", "coffee.png", "astronaut.png"]:
        Image.open(base / name).convert("RGB").save(root / f"{Path(name).stem}.jpg", quality=92)
    upright = Image.open(base / "motorcycle_left.png").convert("RGB")
    # stored sideways with an EXIF note to turn it: must embed like the upright photo
    (root / "moto-exif.jpg").write_bytes(_with_orientation(upright.transpose(Image.ROTATE_90), 6, "JPEG"))
    upright.save(root / "moto.jpg", quality=95)
    Image.open(base / "rocket.jpg").save(root / "rocket.png")  # not for nvjpeg: the CPU way
    (root / "broken.jpg").write_bytes((root / "coffee.jpg").read_bytes()[:600] + random.Random(1).randbytes(9000))
    return root


def _vectors(collection) -> dict[str, np.ndarray]:  # noqa: ANN001
    return {Path(p.payload["path"]).name: np.asarray(p.vector) for p in collection.scroll(with_vectors=True)}


def test_ingest_with_device_decoding_matches_the_cpu_path(tmp_path: Path, encoder) -> None:  # noqa: ANN001
    folder = _folder(tmp_path / "photos")
    results, skipped = {}, {}
    for mode in (False, True):
        store = EdgeStore(tmp_path / f"store-{mode}")
        collection = store.collection("photos", get_spec(MODEL), create=True)
        events = []
        report = IngestRun(encoder, collection, IngestOptions(batch_size=4, gpu_decode=mode), events.append).run([folder])
        assert (report.added, report.skipped) == (6, 1)
        skipped[mode] = [(Path(e.path).name, e.reason) for e in events if e.kind == "skipped"]
        results[mode] = _vectors(collection)
        sizes = {Path(p.payload["path"]).name: (p.payload["width"], p.payload["height"]) for p in collection.scroll()}
        assert sizes["moto-exif.jpg"] == sizes["moto.jpg"]
        store.close()
    assert skipped[True] == skipped[False] == [("broken.jpg", "truncated or corrupt image data")]
    cpu, gpu = results[False], results[True]
    assert cpu.keys() == gpu.keys()
    for name in cpu:
        assert float(cpu[name] @ gpu[name]) > 0.97, name
    assert float(gpu["moto-exif.jpg"] @ gpu["moto.jpg"]) > 0.97
