"""Settings: defaults < config file < XLIR_* environment < explicit overrides (CLI flags).

The config file is TOML at $XLIR_CONFIG, else <home>/config.toml, with the same keys as
Settings (e.g. ``qdrant_url = "http://localhost:6333"``). The Qdrant API key is read only from
XLIR_QDRANT_API_KEY or the config file, never from a flag, so it stays out of shell history.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import platformdirs

from .errors import ConfigError

DEFAULT_MAX_MEGAPIXELS = 150.0
_LEVELS = ("default", "config file", "environment", "flag")


def default_home() -> Path:
    if env := os.environ.get("XLIR_HOME"):
        return Path(env).expanduser()
    return Path(platformdirs.user_data_dir("xlir"))


@dataclass(frozen=True)
class Settings:
    home: Path = field(default_factory=default_home)
    store: Path | None = None  # embedded store directory; default <home>/store
    qdrant_url: str | None = None
    qdrant_api_key: str | None = field(default=None, repr=False)
    collection: str = "photos"
    model: str | None = None  # None: the collection's own model, else the bundled default
    device: str = "auto"
    batch_size: int = 32
    workers: int = 0  # 0: one decode thread per core, at most 8
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS
    timeout: float = 10.0

    @property
    def store_path(self) -> Path:
        return (self.store or self.home / "store").expanduser().resolve()

    @property
    def uses_server(self) -> bool:
        return self.qdrant_url is not None

    @classmethod
    def load(cls, overrides: Overrides | None = None) -> Settings:
        """Resolve every source; ``overrides`` are explicit values (None fields: not given)."""
        flags = overrides.given() if overrides is not None else {}
        home = Path(flags["home"]).expanduser() if "home" in flags else default_home()
        layers = [("config file", _read_config(home)), ("environment", _read_env()), ("flag", flags)]
        values: dict[str, Any] = {"home": home}
        level: dict[str, str] = {}
        for name, layer in layers:
            for key, value in layer.items():
                values[key] = value
                level[key] = name
        if values.get("store") and values.get("qdrant_url"):
            store_level, url_level = _LEVELS.index(level["store"]), _LEVELS.index(level["qdrant_url"])
            if store_level == url_level:
                raise ConfigError(
                    f"both a store directory and a Qdrant URL are set ({level['store']}); "
                    "keep one: --store for the embedded engine, --qdrant-url for a server"
                )
            values.pop("store" if store_level < url_level else "qdrant_url")
        return _coerce(values, level)


@dataclass(frozen=True, slots=True)
class Overrides:
    """Explicit settings (CLI flags, keyword arguments of Index.open); None means "not given".

    Every Settings field but the API key, which never comes from a flag.
    """

    home: Path | None = None
    store: Path | None = None
    qdrant_url: str | None = None
    collection: str | None = None
    model: str | None = None
    device: str | None = None
    batch_size: int | None = None
    workers: int | None = None
    max_megapixels: float | None = None
    timeout: float | None = None

    @classmethod
    def of(cls, **values: Any) -> Overrides:
        """Overrides from keyword arguments; an unknown name is a ConfigError, not a crash."""
        known = {f.name for f in fields(cls)}
        if "qdrant_api_key" in values:
            raise ConfigError("the Qdrant API key is read only from XLIR_QDRANT_API_KEY or the config file")
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown setting {unknown[0]!r}; known: {', '.join(sorted(known))}")
        return cls(**values)

    def given(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}


def defaults() -> dict[str, Any]:
    """Each setting's built-in default (what `--help` shows), read from Settings itself."""
    return {f.name: f.default for f in fields(Settings) if f.name != "home"}


def environment() -> list[tuple[str, str]]:
    """Every environment variable xlir reads, with a note for those that are not a setting of
    their own name: the data dir, the config file, one XLIR_<NAME> per setting, and the cache
    of derived files (read by cache.py)."""
    settings = [(f"XLIR_{f.name.upper()}", "") for f in fields(Settings) if f.name != "home"]
    return [("XLIR_HOME", "data dir"), ("XLIR_CONFIG", "TOML config file"), *settings,
            ("XLIR_CACHE", "derived files such as label matrices")]


def _read_config(home: Path) -> dict[str, Any]:
    named = os.environ.get("XLIR_CONFIG")
    path = Path(named or home / "config.toml").expanduser()
    if named and not path.is_file():
        # A config file asked for by name and silently not read would leave every setting in it unset.
        raise ConfigError(f"XLIR_CONFIG={named} is not a file; point it at a TOML config file, or unset it")
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    known = {f.name for f in fields(Settings)} - {"home"}
    unknown = set(data) - known
    if unknown:
        raise ConfigError(f"unknown keys in {path}: {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
    return data


def _read_env() -> dict[str, Any]:
    out = {}
    for f in fields(Settings):
        if f.name == "home":
            continue
        value = os.environ.get(f"XLIR_{f.name.upper()}")
        if value:
            out[f.name] = value
    return out


def _coerce(values: dict[str, Any], level: dict[str, str]) -> Settings:
    settings = Settings()
    try:
        for key, value in values.items():
            current = getattr(settings, key)
            if key in ("home", "store") and value is not None:
                value = Path(value).expanduser()
            elif isinstance(current, bool):
                value = str(value).lower() in {"1", "true", "yes"}
            elif isinstance(current, int):
                value = int(value)
            elif isinstance(current, float):
                value = float(value)
            settings = replace(settings, **{key: value})
    except ValueError as exc:
        raise ConfigError(f"bad setting {key}={value!r} ({_where(key, level)}): {exc}") from exc
    for key, (low, strict, note) in _LOWER_BOUNDS.items():
        value = getattr(settings, key)
        if value < low or (strict and value == low):
            bound = f"more than {low}" if strict else f"at least {low}"
            raise ConfigError(f"{key} must be {bound}{note}, not {value} ({_where(key, level)})")
    return settings


def _where(key: str, level: dict[str, str]) -> str:
    """Where a setting came from, the way a person would change it."""
    source = level.get(key, "default")
    if source == "environment":
        return f"from XLIR_{key.upper()}"
    if source == "flag":
        return f"from --{key.replace('_', '-')}"
    return f"from the {source}"


# Lower bounds of the numeric settings, checked whatever level set them: key -> (bound, strict, note)
_LOWER_BOUNDS: dict[str, tuple[float, bool, str]] = {
    "batch_size": (1, False, ""),
    "workers": (0, False, " (0: one decode thread per core, up to 8)"),
    "max_megapixels": (0, True, ""),
    "timeout": (0, True, " seconds"),
}
