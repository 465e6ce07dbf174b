"""File scanning and decoding: formats, orientation, transparency, and every kind of bad file."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import save
from xlir_qdrant.images import decode as decoding
from xlir_qdrant.images.decode import DecodeError, decode
from xlir_qdrant.images.files import WalkErrors, scan
from xlir_qdrant.store.schema import ancestors


def test_scan_finds_images_recursively_and_skips_hidden(tmp_path: Path) -> None:
    for name in ["a.jpg", "b.JPEG", "c.png", "d.webp", "e.gif", "f.bmp", "g.tiff", "sub/h.tif", "notes.txt",
                 ".hidden.jpg", ".cache/i.jpg"]:
        p = tmp_path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    found = sorted(Path(f.path).relative_to(tmp_path).as_posix() for f in scan(tmp_path))
    assert found == ["a.jpg", "b.JPEG", "c.png", "d.webp", "e.gif", "f.bmp", "g.tiff", "sub/h.tif"]
    with_hidden = {Path(f.path).name for f in scan(tmp_path, include_hidden=True)}
    assert {".hidden.jpg", "i.jpg"} <= with_hidden


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads everything")
def test_unreadable_folder_is_reported_not_fatal(tmp_path: Path) -> None:
    (tmp_path / "locked").mkdir()
    save(tmp_path / "ok.jpg", (1, 2, 3))
    os.chmod(tmp_path / "locked", 0)
    errors = WalkErrors()
    try:
        found = [f.path for f in scan(tmp_path, errors=errors)]
    finally:
        os.chmod(tmp_path / "locked", 0o755)
    assert len(found) == 1 and errors.folders == [str(tmp_path / "locked")]


def test_ancestors_are_every_parent_directory() -> None:
    assert ancestors("/a/b/c.jpg") == ["/", "/a", "/a/b"]


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    im = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    im.save(tmp_path / "rot.jpg", exif=exif)
    d = decode(str(tmp_path / "rot.jpg"))
    assert d.image.size == (20, 40) and (d.width, d.height) == (20, 40)


def test_exif_capture_date_is_read(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0132] = "2021:07:04 12:30:00"
    Image.new("RGB", (8, 8)).save(tmp_path / "dated.jpg", exif=exif)
    assert decode(str(tmp_path / "dated.jpg")).taken_at == "2021-07-04T12:30:00"


def test_transparency_is_composited_on_white(tmp_path: Path) -> None:
    Image.new("RGBA", (10, 10), (0, 0, 0, 0)).save(tmp_path / "clear.png")
    assert decode(str(tmp_path / "clear.png")).image.getpixel((5, 5)) == (255, 255, 255)


def test_jpeg_draft_mode_decodes_small_but_reports_full_size(tmp_path: Path) -> None:
    save(tmp_path / "big.jpg", (90, 90, 90), size=(4000, 3000))
    d = decode(str(tmp_path / "big.jpg"), min_side=256)
    assert (d.width, d.height) == (4000, 3000)
    assert min(d.image.size) >= 256 and d.image.size[0] <= 1000


@pytest.mark.parametrize(
    ("content", "reason"),
    [(b"", "empty file"), (b"this is not an image", "not an image"), (None, "truncated")],
)
def test_bad_files_raise_one_line_reasons(tmp_path: Path, content: bytes | None, reason: str) -> None:
    path = tmp_path / "bad.jpg"
    if content is None:
        save(tmp_path / "full.jpg", (10, 200, 10), size=(300, 300), quality=95)
        data = (tmp_path / "full.jpg").read_bytes()
        path.write_bytes(data[: len(data) // 3])
    else:
        path.write_bytes(content)
    with pytest.raises(DecodeError, match=reason) as info:
        decode(str(path))
    assert "\n" not in str(info.value)


def test_too_many_pixels_names_the_flag(tmp_path: Path) -> None:
    save(tmp_path / "huge.png", (0, 0, 0), size=(3000, 2000))
    with pytest.raises(DecodeError, match="--max-megapixels"):
        decode(str(tmp_path / "huge.png"), max_megapixels=5)


def test_a_large_webp_is_decoded_reduced_upright_and_on_white(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = np.zeros((1500, 2400, 4), np.uint8)
    base[..., 0] = 200  # red where opaque
    base[..., 3] = 255
    base[:, :1200, 3] = 0  # the left half transparent: white once composited
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: shown turned 90 degrees clockwise
    path = tmp_path / "big.webp"
    Image.fromarray(base, "RGBA").save(path, lossless=True, exif=exif)
    factors = []
    real = decoding._webp_reduced
    monkeypatch.setattr(decoding, "_webp_reduced", lambda p, f: factors.append(f) or real(p, f))
    out = decode(str(path), min_side=100).image
    assert factors == [5]  # 1500 // (3 * 100): reduced by OpenCV while decoding
    assert out.mode == "RGB" and out.size == (300, 480)  # upright: the EXIF turn applied
    arr = np.asarray(out).astype(int)
    assert np.allclose(arr[:100].reshape(-1, 3).mean(0), (255, 255, 255), atol=3)  # the transparent half
    assert np.allclose(arr[-100:].reshape(-1, 3).mean(0), (200, 0, 0), atol=3)


def test_a_webp_opencv_cannot_read_is_left_to_pillow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "big.webp"
    Image.new("RGB", (1200, 900), (10, 200, 30)).save(path, lossless=True)
    monkeypatch.setattr(decoding, "_webp_reduced", lambda _p, _f: None)
    out = decode(str(path), min_side=100).image
    assert out.size == (400, 300) and np.allclose(np.asarray(out)[5, 5], (10, 200, 30), atol=4)
