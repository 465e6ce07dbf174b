from __future__ import annotations

from pathlib import Path

import pytest

from xlir_qdrant.config import Overrides, Settings
from xlir_qdrant.errors import ConfigError
from xlir_qdrant.index import Index


def test_precedence_default_file_env_flag(isolated_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings.load().collection == "photos"
    (isolated_home / "config.toml").write_text('collection = "from-file"\nbatch_size = 8\n')
    assert Settings.load().collection == "from-file"
    monkeypatch.setenv("XLIR_COLLECTION", "from-env")
    s = Settings.load()
    assert s.collection == "from-env" and s.batch_size == 8
    assert Settings.load(Overrides(collection="from-flag")).collection == "from-flag"


def test_store_defaults_under_home(isolated_home: Path) -> None:
    assert Settings.load().store_path == (isolated_home / "store").resolve()


def test_store_and_url_at_same_level_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="keep one"):
        Settings.load(Overrides(store=tmp_path, qdrant_url="http://localhost:6333"))


def test_flag_store_beats_url_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XLIR_QDRANT_URL", "http://localhost:6333")
    s = Settings.load(Overrides(store=tmp_path))
    assert s.qdrant_url is None and s.store == tmp_path


def test_api_key_never_from_flags_nor_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="XLIR_QDRANT_API_KEY"):
        Overrides.of(qdrant_api_key="secret")
    monkeypatch.setenv("XLIR_QDRANT_API_KEY", "secret")
    settings = Settings.load()
    assert settings.qdrant_api_key == "secret" and "secret" not in repr(settings)


def test_overrides_are_typed_and_an_unknown_one_is_a_config_error(tmp_path: Path) -> None:
    assert Overrides.of(store=tmp_path, batch_size=4).given() == {"store": tmp_path, "batch_size": 4}
    with pytest.raises(ConfigError, match="unknown setting 'colection'.*collection"):
        Overrides.of(colection="typo")
    with pytest.raises(ConfigError, match="unknown setting"):
        Index.open(colection="typo")


def test_bad_config_file_is_one_clear_error(isolated_home: Path) -> None:
    (isolated_home / "config.toml").write_text("colection = 'typo'\n")
    with pytest.raises(ConfigError, match="unknown keys.*colection"):
        Settings.load()
    (isolated_home / "config.toml").write_text("batch_size = 'many'\n")
    with pytest.raises(ConfigError, match="batch_size"):
        Settings.load()
