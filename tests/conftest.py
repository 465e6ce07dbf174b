from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

import fakes

# Derived files (label matrices, the exported image tower) shared by every test run.
TEST_CACHE = Path(os.environ.get("XLIR_TEST_CACHE", "/tmp/xlir-test-cache"))


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own data dir, and no XLIR_* setting leaks in from the machine."""
    for key in list(os.environ):
        if key.startswith("XLIR_"):
            monkeypatch.delenv(key)
    home = tmp_path_factory.mktemp("xlir-home")
    monkeypatch.setenv("XLIR_HOME", str(home))
    # The label matrix of the bundled model is shared across tests: computing it takes seconds.
    monkeypatch.setenv("XLIR_CACHE", str(TEST_CACHE))
    # Nothing from this machine's Hugging Face cache: `xlir models` reports the same everywhere.
    monkeypatch.setenv("HF_HOME", str(home / "hf"))
    return home


@pytest.fixture(autouse=True)
def fake_models(monkeypatch: pytest.MonkeyPatch) -> None:
    """The colour fakes join the model registry (a literal) for each test, and leave it after."""
    from xlir_qdrant.encoders import registry

    monkeypatch.setattr(registry, "MODELS", registry.MODELS + fakes.SPECS)
    monkeypatch.setitem(registry.FAMILIES, "fake", fakes.FAMILY)


def save(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (64, 48), **kw: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, **kw)
    return path


@pytest.fixture
def colour_photos(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    save(root / "red.jpg", (230, 20, 20))
    save(root / "green.png", (20, 220, 30))
    save(root / "trip" / "blue.jpg", (10, 30, 240))
    save(root / "trip" / "white.webp", (250, 250, 250))
    return root
