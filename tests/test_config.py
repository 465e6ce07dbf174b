from __future__ import annotations

from pathlib import Path

import pytest

from xlir_qdrant.config import Settings
from xlir_qdrant.errors import ConfigError


def test_precedence_default_file_env_flag(isolated_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings.load().collection == "photos"
    (isolated_home / "config.toml").write_text('collection = "from-file"\nbatch_size = 8\n')
    assert Settings.load().collection == "from-file"
    monkeypatch.setenv("XLIR_COLLECTION", "from-env")
    s = Settings.load()
    assert s.collection == "from-env" and s.batch_size == 8
    assert Settings.load(collection="from-flag").collection == "from-flag"


def test_store_defaults_under_home(isolated_home: Path) -> None:
    assert Settings.load().store_path == (isolated_home / "store").resolve()


def test_store_and_url_at_same_level_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="keep one"):
        Settings.load(store=tmp_path, qdrant_url="http://localhost:6333")


def test_flag_store_beats_url_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XLIR_QDRANT_URL", "http://localhost:6333")
    s = Settings.load(store=tmp_path)
    assert s.qdrant_url is None and s.store == tmp_path


def test_api_key_never_from_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="XLIR_QDRANT_API_KEY"):
        Settings.load(qdrant_api_key="secret")
    monkeypatch.setenv("XLIR_QDRANT_API_KEY", "secret")
    assert Settings.load().qdrant_api_key == "secret"


def test_bad_config_file_is_one_clear_error(isolated_home: Path) -> None:
    (isolated_home / "config.toml").write_text("colection = 'typo'\n")
    with pytest.raises(ConfigError, match="unknown keys.*colection"):
        Settings.load()
    (isolated_home / "config.toml").write_text("batch_size = 'many'\n")
    with pytest.raises(ConfigError, match="batch_size"):
        Settings.load()
