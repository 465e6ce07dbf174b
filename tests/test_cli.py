"""What users see: golden output for the table and --json, and one-line errors."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from xlir_cli import main

GOLDEN = Path(__file__).parent / "golden"
runner = CliRunner()


@pytest.fixture(autouse=True)
def fixed_consoles(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(main, "out", Console(width=100, no_color=True, force_terminal=False, soft_wrap=True))
    monkeypatch.setattr(main, "err", Console(width=100, no_color=True, force_terminal=False, stderr=True))


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(main.app, list(args))
    return result.exit_code, result.stdout, result.stderr


def _normalise(text: str, root: Path) -> str:
    text = text.replace(str(root), "<photos>")
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


def test_info_and_models(indexed: Path, tmp_path: Path) -> None:
    code, out, _ = run("info", "--store", str(tmp_path / "s"), "--json")
    stats = json.loads(out)
    assert code == 0 and stats["collections"][0]["points"] == 4
    assert stats["collections"][0]["model"] == "fake-colour" and stats["device"].startswith("cpu")
    code, out, _ = run("models", "--json")
    rows = {r["id"]: r for r in map(json.loads, out.splitlines())}
    assert rows["conse-lite0-muse"]["offline_ready"] is True and rows["conse-lite0-muse"]["bundled"]


def test_every_command_help_teaches() -> None:
    for cmd in ("index", "search", "info", "models", "remove"):
        code, out, _ = run(cmd, "--help")
        assert code == 0 and "Usage" in out
    code, out, _ = run("--help")
    assert "XLIR_HOME" in out and "perro en la playa" in out


def test_a_model_prepared_on_first_use_gets_a_spinner_that_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    import contextlib

    class Idx:
        def __init__(self, note: str) -> None:
            self.encoder = type("Enc", (), {"first_use_note": lambda _self: note})()

    shown = []
    monkeypatch.setattr(main.err, "status", lambda text: shown.append(text) or contextlib.nullcontext())
    assert isinstance(main._first_use(Idx("")), contextlib.nullcontext) and shown == []
    main._first_use(Idx("first use: ~30 s to prepare, once"))
    assert shown == ["loading model (first use: ~30 s to prepare, once)"]
    main._first_use(Idx("first use: ~30 s to prepare, once"), needed=False)  # a text search
    assert len(shown) == 1
