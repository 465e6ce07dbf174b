"""xlir duplicates: exact copies by content hash, near-copies through the store's nearest
neighbours confirmed by the files' signatures, on a small set made from real photos."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import skimage.data
from PIL import Image, ImageEnhance
from rich.console import Console
from typer.testing import CliRunner

from conftest import save
from xlir_qdrant.config import Overrides, Settings
from xlir_qdrant.images.signature import distance, signature
from xlir_qdrant.index import Index

SKIMAGE = Path(skimage.data.__file__).parent
SOURCES = ("chelsea.png", "coffee.png", "rocket.jpg", "astronaut.png", "motorcycle_left.png")


def _copies(src: Path, folder: Path) -> list[Path]:
    """The photo and four near-copies: half the size, JPEG quality 35, 5 % cropped, 25 % brighter."""
    folder.mkdir(parents=True)
    im = Image.open(src).convert("RGB")
    w, h = im.size
    made = {"half.jpg": (im.resize((w // 2, h // 2), Image.Resampling.LANCZOS), 92),
            "q35.jpg": (im, 35),
            "crop5.jpg": (im.crop((round(w * 0.05), 0, w, h - round(h * 0.05))), 92),
            "bright.jpg": (ImageEnhance.Brightness(im).enhance(1.25), 92)}
    shutil.copyfile(src, folder / src.name)
    for name, (out, quality) in made.items():
        out.save(folder / name, quality=quality)
    return [folder / src.name, *(folder / name for name in made)]


@pytest.fixture(scope="module")
def made_set(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("dups") / "photos"
    truth = {}
    for name in SOURCES:
        for path in _copies(SKIMAGE / name, root / Path(name).stem):
            truth[str(path)] = name
    shutil.copyfile(SKIMAGE / "coffee.png", root / "backup-of-coffee.png")  # the same bytes
    truth[str(root / "backup-of-coffee.png")] = "coffee.png"
    return root, truth


def test_the_groups_found_on_a_made_set_are_the_photos_and_their_copies(made_set, tmp_path: Path) -> None:  # noqa: ANN001
    root, truth = made_set
    with Index(Settings.load(Overrides(store=tmp_path / "store"))) as idx:  # the bundled model
        idx.index([root])
        report = idx.duplicates()
    exact = [g for g in report.groups if g.kind == "exact"]
    near = [g for g in report.groups if g.kind == "near"]
    assert report.scanned == len(truth) == 26
    assert [{Path(m.path).name for m in g.members} for g in exact] == [{"coffee.png", "backup-of-coffee.png"}]
    # one near group per source photo, holding it and its four near-copies (coffee.png stands
    # for its exact copy too), and nothing from another photo
    found = sorted(sorted(Path(m.path).name for m in g.members) for g in near)
    assert len(near) == len(SOURCES)
    for group in near:
        assert len({truth[m.path] for m in group.members}) == 1, [m.path for m in group.members]
        assert len(group.members) == 5, found
        assert group.members[0].width * group.members[0].height == max(m.width * m.height for m in group.members)
    assert all(m.similarity >= report.threshold for g in near for m in g.members)


def test_a_different_photo_of_the_same_thing_is_not_a_copy(tmp_path: Path) -> None:
    # motorcycle_left and _right are a stereo pair: one scene, two viewpoints. Their vectors are
    # close; their files are two pictures, so their signatures tell them apart from a copy.
    left, right = (signature(str(SKIMAGE / f"motorcycle_{side}.png")) for side in ("left", "right"))
    chelsea, coffee = signature(str(SKIMAGE / "chelsea.png")), signature(str(SKIMAGE / "coffee.png"))
    assert left is not None and right is not None and chelsea is not None and coffee is not None
    assert distance(chelsea, coffee) > 20
    half = tmp_path / "half.jpg"
    Image.open(SKIMAGE / "chelsea.png").convert("RGB").resize((225, 150)).save(half, quality=80)
    assert distance(chelsea, signature(str(half))) <= 4
    assert signature(str(tmp_path / "gone.jpg")) is None


def test_cli_duplicates_table_and_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from xlir_cli import app, main

    monkeypatch.setattr(app.ui, "out", Console(width=120, no_color=True, force_terminal=False, soft_wrap=True))
    photos = tmp_path / "photos"
    save(photos / "red.jpg", (230, 20, 20), size=(128, 96))
    save(photos / "small" / "red.jpg", (230, 20, 20), size=(64, 48))  # the same colour, half the size
    save(photos / "green.png", (20, 220, 30))
    shutil.copyfile(photos / "green.png", photos / "green-copy.png")
    runner = CliRunner()
    store = ["--store", str(tmp_path / "s")]
    assert runner.invoke(main.app, ["index", str(photos), "--model", "fake-colour", *store]).exit_code == 0
    result = runner.invoke(main.app, ["duplicates", *store])
    assert result.exit_code == 0, result.output
    assert "1 group(s) of exact copies, 1 of near-copies among 4 photos" in result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("│")]
    assert len(rows) == 4 and "exact" in rows[0] and "near" in rows[2] and "128×96" in rows[2]
    result = runner.invoke(main.app, ["duplicates", *store, "--json"])
    groups = [json.loads(line) for line in result.stdout.splitlines()]
    assert [g["kind"] for g in groups] == ["exact", "near"]
    assert [Path(m["path"]).name for m in groups[1]["members"]] == ["red.jpg", "red.jpg"]
    assert groups[1]["members"][0]["width"] == 128  # the one to keep first
    result = runner.invoke(main.app, ["duplicates", str(photos / "small"), *store, "--json"])
    assert result.exit_code == 0 and result.stdout == ""  # one photo under that folder: no pair
    result = runner.invoke(main.app, ["duplicates", *store, "--threshold", "1.5"])
    assert result.exit_code == 2 and "--threshold" in result.stderr
    (photos / "small" / "red.jpg").unlink()  # on a drive that is not plugged in, say
    result = runner.invoke(main.app, ["duplicates", *store])
    assert result.exit_code == 0 and "0 of near-copies" in result.stderr
    assert "1 close pair(s) not compared: a file could not be read" in result.stderr
