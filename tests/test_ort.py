"""The onnxruntime path of the image tower: same outputs as torch, exported once, self-healing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

from conftest import TEST_CACHE
from xlir_qdrant.encoders import bundled, ort

SKIMAGE = Path(skimage.data.__file__).parent


NAMES = ["chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "astronaut.png"]


@pytest.fixture(scope="module")
def towers() -> dict[str, bundled.ImageNetTower]:
    with pytest.MonkeyPatch.context() as mp:  # module fixtures run before the per-test env
        mp.setenv("XLIR_CACHE", str(TEST_CACHE))
        return {r: bundled.ImageNetTower("lite0", "cpu", runtime=r) for r in bundled.ImageNetTower.RUNTIMES}


def _photos(tower: bundled.ImageNetTower) -> np.ndarray:
    return np.stack([tower.preprocess(Image.open(SKIMAGE / n)) for n in NAMES])


def test_the_cpu_runtime_is_int8_onnxruntime() -> None:
    assert bundled.ImageNetTower("lite0", "cpu").runtime == "onnxruntime"


def test_the_float_export_computes_what_torch_computes(towers) -> None:
    fp32, torch_tower = towers["onnxruntime-fp32"], towers["torch"]
    assert fp32.runtime == "onnxruntime-fp32" and torch_tower.runtime == "torch"
    pixels = _photos(fp32)
    a, b = fp32.logits(pixels), torch_tower.logits(pixels)
    assert a.shape == b.shape == (5, 1000)
    np.testing.assert_allclose(a, b, atol=1e-3)
    assert (np.argsort(-a, axis=1)[:, :5] == np.argsort(-b, axis=1)[:, :5]).all()
    pa, pb = fp32.probabilities(pixels, 2.0), torch_tower.probabilities(pixels, 2.0)
    np.testing.assert_allclose(pa, pb, atol=1e-5)
    np.testing.assert_allclose(pa.sum(axis=1), 1.0, atol=1e-5)


def test_the_int8_network_sees_what_the_float_one_sees(towers) -> None:
    int8, torch_tower = towers["onnxruntime"], towers["torch"]
    assert int8.runtime == "onnxruntime"
    pixels = _photos(int8)
    a, b = int8.logits(pixels), torch_tower.logits(pixels)
    top5 = np.argsort(-b, axis=1)[:, :5]
    assert all(a[i].argmax() in top5[i] for i in range(len(NAMES)))
    l1 = np.abs(int8.probabilities(pixels, 2.0) - torch_tower.probabilities(pixels, 2.0)).sum(axis=1)
    assert l1.max() < 0.35, l1
    assert not np.allclose(a, b, atol=1e-3)  # it is a different network, not the float one again


def test_batch_size_is_free_after_export(towers) -> None:
    fast = towers["onnxruntime-fp32"]
    rng = np.random.default_rng(0)
    pixels = rng.standard_normal((7, 3, fast.size, fast.size)).astype(np.float32)
    whole = fast.logits(pixels)
    parts = np.concatenate([fast.logits(pixels[:1]), fast.logits(pixels[1:])])
    np.testing.assert_allclose(whole, parts, atol=1e-4)


def test_a_cached_export_is_loaded_not_rebuilt(towers, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_export(*_a: object, **_k: object) -> None:
        raise AssertionError("exported again")

    monkeypatch.setattr(ort, "export", no_export)
    monkeypatch.setattr(ort, "quantize", no_export)
    again = bundled.ImageNetTower("lite0", "cpu")
    assert again.runtime == "onnxruntime"
    assert again._net is None  # torch network never built


def test_a_failed_export_falls_back_to_torch(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XLIR_CACHE", str(tmp_path))

    def broken(*_a: object) -> None:
        raise ort.ExportMismatch("exported network differs from torch by 1.00e+00")

    monkeypatch.setattr(ort, "export", broken)
    monkeypatch.setattr(bundled, "shipped_int8", lambda _variant: None)  # made here, not shipped
    tower = bundled.ImageNetTower("lite0", "cpu")
    assert tower.runtime == "torch"
    pixels = tower.preprocess(Image.open(SKIMAGE / "chelsea.png"))[None]
    assert tower.probabilities(pixels).shape == (1, 1000)
    assert not list(tmp_path.glob("*.onnx*"))


class Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x)).mean(dim=(2, 3))


def _export_tiny(path: Path) -> None:
    ort.export(Tiny(), path, (2, 3, 8, 8))


def test_torn_cache_file_is_exported_again(tmp_path: Path) -> None:
    path = tmp_path / "tiny.onnx"
    path.write_bytes(b"\x08\x07 half a protobuf")
    net = ort.cached_net(path, _export_tiny)
    x = np.random.default_rng(1).standard_normal((5, 3, 8, 8)).astype(np.float32)
    with torch.inference_mode():
        want = Tiny()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(net(x), want, atol=1e-5)
    assert path.stat().st_size > 100
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.onnx", "tiny.onnx.sha256"]  # no temp file left


def test_a_cached_network_altered_after_it_was_made_is_made_again(tmp_path: Path) -> None:
    path = tmp_path / "tiny.onnx"
    ort.cached_net(path, _export_tiny)
    made = path.read_bytes()
    other = tmp_path / "other.onnx"
    ort.export(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(2), torch.nn.AdaptiveAvgPool1d(1),
                                   torch.nn.Flatten()), other, (2, 3, 8, 8))
    path.write_bytes(other.read_bytes())  # a valid network, but not the one this cache made
    calls = []
    ort.cached_net(path, lambda p: (calls.append(p), _export_tiny(p)))
    assert calls == [path] and path.read_bytes() == made


def test_an_export_that_disagrees_is_not_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ort, "EXPORT_ATOL", -1.0)  # nothing can agree this closely
    with pytest.raises(ort.ExportMismatch):
        ort.cached_net(tmp_path / "tiny.onnx", _export_tiny)
    assert list(tmp_path.iterdir()) == []


def test_quantization_is_checked_against_the_float_network(tmp_path: Path) -> None:
    float_path = tmp_path / "tiny.onnx"
    _export_tiny(float_path)
    batch = np.random.default_rng(2).standard_normal((16, 3, 8, 8)).astype(np.float32)
    ort.quantize(float_path, tmp_path / "tiny-int8.onnx", batch)
    close = ort.OnnxNet(tmp_path / "tiny-int8.onnx")(batch)
    np.testing.assert_allclose(close, ort.OnnxNet(float_path)(batch), atol=0.05)
    with pytest.raises(ort.ExportMismatch):
        ort.quantize(float_path, tmp_path / "strict-int8.onnx", batch, max_l1=-1.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny-int8.onnx", "tiny.onnx"]
