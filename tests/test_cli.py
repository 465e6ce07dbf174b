"""What users see: golden output for the table and --json, and one-line errors."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from rich.console import Console
import typer.rich_utils
from typer.testing import CliRunner

from xlir_cli import app, main

GOLDEN = Path(__file__).parent / "golden"
COMMANDS = ("index", "search", "tag", "remove", "info", "check", "models", "push", "pull", "train", "eval")
runner = CliRunner()


@pytest.fixture(autouse=True)
def fixed_consoles(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(app.ui, "out", Console(width=100, no_color=True, force_terminal=False, soft_wrap=True))
    monkeypatch.setattr(app.ui, "err", Console(width=100, no_color=True, force_terminal=False, stderr=True))
    monkeypatch.setattr(typer.rich_utils, "MAX_WIDTH", 100)  # --help renders at one width everywhere
    monkeypatch.setattr(typer.rich_utils, "COLOR_SYSTEM", None)


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(main.app, list(args))
    return result.exit_code, result.stdout, result.stderr


def _normalise(text: str, root: Path) -> str:
    text = text.replace(str(root), "<photos>")
    text = re.sub(r"\d+\.\ds\b", "<s>", text)  # durations
    text = re.sub(r"\(\d+\.\d images/s\)", "(<rate>)", text)
    return re.sub(r"\d{4}-\d{2}-\d{2}(T[\d:]+)?", "<date>", text)


def _golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    assert text == path.read_text()


@pytest.fixture
def indexed(colour_photos: Path, tmp_path: Path) -> Path:
    code, out, err = run("index", str(colour_photos), "--model", "fake-colour", "--store", str(tmp_path / "s"))
    assert code == 0, err
    assert "4 new" in out
    return colour_photos


def test_search_table_golden(indexed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the table shows paths relative to the working directory
    code, out, _ = run("search", "rojo", "--store", str(tmp_path / "s"), "-k", "3")
    assert code == 0
    _golden("search_table.txt", _normalise(out, indexed))


def test_search_json_golden_has_the_table_fields(indexed: Path, tmp_path: Path) -> None:
    code, out, _ = run("search", "blue", "--store", str(tmp_path / "s"), "-k", "2", "--json")
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["rank"] for r in rows] == [1, 2] and rows[0]["path"].endswith("blue.jpg")
    assert {"rank", "score", "path", "date", "size"} <= set(rows[0])
    _golden("search.jsonl", _normalise(out, indexed))


def test_second_index_run_reports_unchanged(indexed: Path, tmp_path: Path) -> None:
    code, out, _ = run("index", str(indexed), "--store", str(tmp_path / "s"), "--json")
    assert code == 0
    assert json.loads(out)["unchanged"] == 4


def test_bad_file_gets_one_line_and_run_goes_on(colour_photos: Path, tmp_path: Path) -> None:
    (colour_photos / "broken.jpg").write_bytes(b"garbage")
    code, out, err = run("index", str(colour_photos), "--model", "fake-colour", "--store", str(tmp_path / "s"))
    assert code == 0 and "4 new" in out and "1 skipped" in out
    lines = [line for line in err.splitlines() if "broken.jpg" in line]
    assert len(lines) == 1 and "skipped" in lines[0] and "not an image" in lines[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("search", ""), "empty query"),
        (("search", "red"), "xlir index"),
        (("search", "red", "--model", "nope"), "unknown model 'nope'"),
    ],
)
def test_errors_are_one_red_line_with_exit_1(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    code, out, err = run(*args, "--store", str(tmp_path / "empty"))
    assert code == 1 and out == ""
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_wrong_model_for_index_is_refused(indexed: Path, tmp_path: Path) -> None:
    code, _, err = run("search", "red", "--model", "fake-colour-wide", "--store", str(tmp_path / "s"))
    assert code == 1 and "built with model fake-colour" in err and "--collection" in err


def test_unreachable_server_is_one_line(tmp_path: Path) -> None:
    code, _, err = run("search", "red", "--qdrant-url", "http://127.0.0.1:9")
    assert code == 1 and "cannot reach Qdrant" in err and len(err.strip().splitlines()) == 1


def test_index_summary_golden(colour_photos: Path, tmp_path: Path) -> None:
    (colour_photos / "broken.jpg").write_bytes(b"garbage")
    code, out, _ = run("index", str(colour_photos), "--model", "fake-colour", "--store", str(tmp_path / "s"))
    assert code == 0
    _golden("index_summary.txt", _normalise(out, colour_photos))


def test_tag_table_golden(indexed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(indexed)
    code, out, err = run("tag", "red.jpg", "trip/blue.jpg", "--lang", "de", "--store", str(tmp_path / "s"))
    assert code == 0, err
    _golden("tag_table.txt", out)


def test_info_golden_and_json(indexed: Path, tmp_path: Path) -> None:
    store = tmp_path / "s"
    code, out, _ = run("info", "--store", str(store))
    assert code == 0
    _golden("info.txt", out.replace(str(store), "<store>"))
    code, out, _ = run("info", "--store", str(store), "--json")
    stats = json.loads(out)
    assert code == 0 and stats["collections"][0]["points"] == 4
    assert stats["collections"][0]["model"] == "fake-colour" and stats["device"].startswith("cpu")


def test_models_golden_and_json() -> None:
    code, out, _ = run("models")
    assert code == 0
    _golden("models.txt", out)
    code, out, _ = run("models", "--json")
    rows = {r["id"]: r for r in map(json.loads, out.splitlines())}
    assert rows["conse-lite0-muse"]["offline_ready"] is True and rows["conse-lite0-muse"]["bundled"]
    assert rows["xlm-roberta-base-ViT-B-32"]["offline_ready"] is False  # not downloaded here


@pytest.mark.parametrize("command", ("", *COMMANDS))
def test_help_of_every_command_golden(command: str) -> None:
    code, out, _ = run(*([command] if command else []), "--help")
    assert code == 0
    _golden(f"help_{command or 'xlir'}.txt", out)


def test_main_help_teaches() -> None:
    _, out, _ = run("--help")
    assert "XLIR_HOME" in out and "perro en la playa" in out
    assert all(command in out for command in COMMANDS)


def test_a_model_prepared_on_first_use_gets_a_spinner_that_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    import contextlib

    class Idx:
        def __init__(self, note: str) -> None:
            self.note = note

        def first_use_note(self) -> str:
            return self.note

    shown = []
    monkeypatch.setattr(app.ui.err, "status", lambda text: shown.append(text) or contextlib.nullcontext())
    assert isinstance(app.first_use(Idx("")), contextlib.nullcontext) and shown == []
    app.first_use(Idx("first use: ~30 s to prepare, once"))
    assert shown == ["loading model (first use: ~30 s to prepare, once)"]
    app.first_use(Idx("first use: ~30 s to prepare, once"), needed=False)  # a text search
    assert len(shown) == 1
