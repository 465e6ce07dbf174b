"""Formats beyond Pillow's own (HEIC, AVIF, camera RAW), files xlir does not read, and the
memory bound: pictures reduced right after decoding, full-size decoding under one budget."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from conftest import save
from xlir_qdrant.config import Overrides, Settings
from xlir_qdrant.images import decode as decode_module
from xlir_qdrant.images.batches import Batch, BatchEmbedder
from xlir_qdrant.images.budget import DecodeBudget
from xlir_qdrant.images.decode import REDUCE_MARGIN, DecodeError, Unsupported, decode
from xlir_qdrant.images.files import scan
from xlir_qdrant.index import Index
from xlir_qdrant.records import IngestEvent

RED = (220, 30, 30)


def _close(rgb: tuple[int, ...], want: tuple[int, int, int], tol: int = 12) -> bool:
    return all(abs(a - b) <= tol for a, b in zip(rgb, want, strict=True))


# -- making test files --------------------------------------------------------------------------

_DNG = [(50706, "B", 4, (1, 4, 0, 0), True), (50708, "s", 0, "xlir test camera", True)]  # DNGVersion, model
_CFA = [(33421, "H", 2, (2, 2), True), (33422, "B", 4, (0, 1, 1, 2), True)]  # a 2x2 RGGB pattern


def make_dng(path: Path, preview: str | None, colour: tuple[int, int, int] = RED) -> Path:
    """A minimal DNG: 16-bit CFA sensor data, and (unless ``preview`` is None) a 160x120
    preview IFD, JPEG-compressed or a plain RGB bitmap, as cameras and converters embed them."""
    pixels = np.zeros((120, 160, 3), np.uint8)
    pixels[...] = colour
    sensor = (np.arange(96 * 64, dtype=np.uint16).reshape(64, 96) * 7) % 4096
    with tifffile.TiffWriter(path) as tw:
        if preview is not None:
            tw.write(pixels, photometric="rgb", subfiletype=1, extratags=_DNG, metadata=None,
                     compression="jpeg" if preview == "jpeg" else None)
        tw.write(sensor, photometric=32803, extratags=_CFA if preview else _DNG + _CFA, metadata=None)
    return path


# -- formats ------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".heic", ".avif"])
def test_heic_and_avif_decode_and_are_walked(tmp_path: Path, suffix: str) -> None:
    decode_module.register_formats()
    path = save(tmp_path / f"red{suffix}", RED, size=(96, 64), quality=90)
    assert Image.open(path).format == ("HEIF" if suffix == ".heic" else "AVIF")  # the test file is real
    d = decode(str(path))
    assert (d.width, d.height) == (96, 64) and d.image.mode == "RGB"
    assert _close(d.image.getpixel((40, 30)), RED)
    assert [Path(f.path).name for f in scan(tmp_path)] == [path.name]


@pytest.mark.parametrize("preview", ["jpeg", "bitmap"])
def test_raw_files_are_read_through_their_embedded_preview(tmp_path: Path, preview: str) -> None:
    import rawpy

    path = make_dng(tmp_path / "IMG_0001.dng", preview)
    with rawpy.imread(str(path)) as raw:  # LibRaw itself finds the preview the test wrote
        assert raw.extract_thumb().format.name == ("JPEG" if preview == "jpeg" else "BITMAP")
    d = decode(str(path), min_side=32)
    assert min(d.image.size) >= 32 and _close(d.image.getpixel((d.image.width // 2, d.image.height // 2)), RED)
    assert (d.width, d.height) == (96, 64)  # the sensor's size, not the preview's


def test_raw_extensions_are_walked(tmp_path: Path) -> None:
    for name in ["a.dng", "b.CR2", "c.cr3", "d.nef", "e.arw", "f.raf", "g.orf"]:
        (tmp_path / name).write_bytes(b"x")
    assert len(list(scan(tmp_path))) == 7


def test_raw_without_preview_is_unsupported_and_a_broken_one_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(Unsupported, match="no embedded preview") as info:
        decode(str(make_dng(tmp_path / "bare.dng", None)))
    assert info.value.kind == "DNG"
    (tmp_path / "cut.nef").write_bytes(b"II*\x00" + b"\x00" * 40)
    with pytest.raises(DecodeError) as bad:
        decode(str(tmp_path / "cut.nef"))
    assert not isinstance(bad.value, Unsupported) and "\n" not in str(bad.value) and "NEF" in str(bad.value)


def test_files_xlir_does_not_read_are_one_line_per_kind(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    save(root / "red.jpg", RED)
    for i in range(3):
        (root / f"logo{i}.svg").parent.mkdir(parents=True, exist_ok=True)
        (root / f"logo{i}.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
    make_dng(root / "a.dng", None)
    make_dng(root / "b.dng", None)
    make_dng(root / "c.dng", "jpeg")
    (root / "notes.txt").write_text("not a picture, not reported")
    events: list[IngestEvent] = []
    with Index(Settings.load(Overrides(store=tmp_path / "store", model="fake-colour"))) as idx:
        report = idx.index([root], progress=events.append)
    lines = [(e.n, e.path, e.reason) for e in events if e.kind == "unread"]
    assert sorted(lines) == [(2, "DNG", "no embedded preview xlir can read (RAW data itself is not developed)"),
                             (3, "SVG", "not a raster format xlir reads")]
    assert not [e for e in events if e.kind == "skipped"]  # no line per file
    assert (report.scanned, report.added, report.skipped) == (7, 2, 5)


# -- reduced right after decoding ---------------------------------------------------------------


@pytest.mark.parametrize(("mode", "suffix"), [("RGB", ".png"), ("RGBA", ".png"), ("RGB", ".webp"),
                                              ("RGB", ".tiff"), ("P", ".png"), ("L", ".png")])
def test_big_pictures_are_reduced_to_a_few_times_the_model_size(tmp_path: Path, mode: str, suffix: str) -> None:
    path = tmp_path / f"big{suffix}"
    Image.new("RGB", (1600, 1200), RED).convert(mode).save(path)
    d = decode(str(path), min_side=100)
    assert (d.width, d.height) == (1600, 1200) and d.image.mode == "RGB"
    assert REDUCE_MARGIN * 100 <= min(d.image.size) < 2 * REDUCE_MARGIN * 100
    if mode != "L":
        assert _close(d.image.getpixel((10, 10)), RED, tol=20)


def test_alpha_is_reduced_strip_by_strip_exactly_as_at_once() -> None:
    rng = np.random.default_rng(1)
    im = Image.fromarray(rng.integers(0, 256, (1500, 700, 4), dtype=np.uint8), "RGBA")
    ours = decode_module._reduce(im, 60)  # factor 3, 512-row strips: several strips and a partial one
    assert ours.size == im.reduce(3).size and ours.tobytes() == im.reduce(3).tobytes()


def test_orientation_is_applied_after_reducing(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    im = Image.new("RGB", (1200, 900), (0, 0, 255))
    im.paste(RED, (0, 0, 600, 900))  # left half red: upright, the top half is red
    im.save(tmp_path / "rot.png", exif=exif)
    d = decode(str(tmp_path / "rot.png"), min_side=100)
    assert (d.width, d.height) == (900, 1200) and d.image.size == (300, 400)
    assert _close(d.image.getpixel((150, 50)), RED) and _close(d.image.getpixel((150, 350)), (0, 0, 255))


# -- the decoding budget ------------------------------------------------------------------------


class _Side:
    """An image side that takes PIL images, embedding nothing of interest."""

    key, dim, device, min_side, pixels, pixel_spec = "test", 2, "cpu", 50, False, None

    def warm_up(self) -> None: ...

    def preprocess(self, image: Image.Image) -> Image.Image:
        return image

    def embed(self, batch: list[Image.Image]) -> np.ndarray:
        return np.ones((len(batch), 2), np.float32)


def _concurrent_full_size(monkeypatch: pytest.MonkeyPatch, files: list[str], limit: int) -> tuple[int, int]:
    """Run the batch loop on 4 threads; return (the most full-size bytes decoded at once, as
    counted inside decode, and the budget's own peak)."""
    live, most, lock = 0, 0, threading.Lock()
    reduce = decode_module._reduce

    def counting(im: Image.Image, min_side: int) -> Image.Image:
        nonlocal live, most
        with lock:
            live += im.width * im.height * 4
            most = max(most, live)
        time.sleep(0.02)  # hold it a moment, so that decodes would overlap if allowed to
        try:
            return reduce(im, min_side)
        finally:
            with lock:
                live -= im.width * im.height * 4

    monkeypatch.setattr(decode_module, "_reduce", counting)
    embedder: BatchEmbedder[str, None] = BatchEmbedder(_Side(), batch_size=4, workers=4, decode_bytes=limit)
    outcomes = list(embedder.run(files, lambda f: f))
    assert sum(len(o.items) for o in outcomes if isinstance(o, Batch)) == len(files)
    assert embedder.budget.held == 0
    return most, embedder.budget.peak


def test_full_size_decoding_stays_within_the_budget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = [str(save(tmp_path / f"{i}.png", (i * 20, 90, 90), size=(800, 600))) for i in range(12)]
    one = 800 * 600 * 4
    most, peak = _concurrent_full_size(monkeypatch, files, limit=2 * one)
    assert most <= 2 * one and peak <= 2 * one
    unbounded, _ = _concurrent_full_size(monkeypatch, files, limit=100 * one)
    assert unbounded > 2 * one  # the same run without the bound does decode more at once


def test_a_picture_bigger_than_the_budget_decodes_alone(tmp_path: Path) -> None:
    budget = DecodeBudget(1000)
    order: list[str] = []
    budget.take(10)

    def big() -> None:
        with budget.hold(5000):
            order.append("big")

    thread = threading.Thread(target=big)
    thread.start()
    time.sleep(0.05)
    assert order == []  # waits while anything else is held
    budget.give(10)
    thread.join(timeout=5)
    assert order == ["big"] and budget.held == 0 and budget.peak == 5000


def test_a_bad_file_gives_its_share_back(tmp_path: Path) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (600, 800, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "ok.jpg", quality=95)
    (tmp_path / "cut.jpg").write_bytes((tmp_path / "ok.jpg").read_bytes()[:100_000])  # header whole, data cut
    budget = DecodeBudget(10**9)
    with pytest.raises(DecodeError, match="truncated"):
        decode(str(tmp_path / "cut.jpg"), min_side=50, budget=budget)
    assert budget.held == 0 and budget.peak > 0


def test_a_jpeg_counts_what_draft_mode_decodes(tmp_path: Path) -> None:
    save(tmp_path / "big.jpg", RED, size=(2000, 1600))
    budget = DecodeBudget(10**9)
    decode(str(tmp_path / "big.jpg"), min_side=200, budget=budget)
    assert budget.peak == 250 * 200 * 4  # decoded at 1/8 scale
