"""What users see: golden output for the table and --json, and one-line errors."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from rich.console import Console
import typer.core
import typer.main
import typer.rich_utils
from typer.testing import CliRunner

from conftest import save
from xlir_cli import app, main
from xlir_qdrant.store.schema import point_id

GOLDEN = Path(__file__).parent / "golden"
COMMANDS = ("index", "search", "tag", "remove", "info", "check", "duplicates", "models", "push", "pull", "serve",
            "train", "eval")
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
    text = re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "<id>", text)  # from tmp paths
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
    code, out, _ = run("search", "rojo", "--store", str(tmp_path / "s"), "-k", "3", "--format", "table")
    assert code == 0
    _golden("search_table.txt", _normalise(out, indexed))


def test_search_json_golden_has_the_table_fields(indexed: Path, tmp_path: Path) -> None:
    code, out, _ = run("search", "blue", "--store", str(tmp_path / "s"), "-k", "2", "--json")
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["rank"] for r in rows] == [1, 2] and rows[0]["path"].endswith("blue.jpg")
    assert {"rank", "score", "path", "date", "size", "id", "taken_at", "tags"} <= set(rows[0])
    assert rows[0]["id"] == point_id(rows[0]["path"]) and "blue" in rows[0]["tags"]
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
    out = re.sub(r"size on disk: [\d.]+ \w+", "size on disk: <size>", out.replace(str(store), "<store>"))
    _golden("info.txt", re.sub(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}", "<date>          ", out))
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


def _options(command: str) -> list[typer.core.TyperOption]:
    group = typer.main.get_command(main.app)
    return [p for p in group.commands[command].params if isinstance(p, typer.core.TyperOption)]


# Options whose absence simply means "not used" (no filter, no server, no second query): they
# have no default to show.
NOTHING_BY_DEFAULT = {"--qdrant-url", "--in", "--image", "--not", "--tag", "--vocab", "--after", "--before",
                      "--xtd10", "--tsv", "--coco-json", "--images", "--pairs", "--lang@eval", "--out",
                      "--ray", "--to", "--from"}


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_that_takes_a_value_shows_its_default(command: str) -> None:
    _, out, _ = run(command, "--help")
    for option in _options(command):
        name = option.opts[0]
        if option.is_flag or name in NOTHING_BY_DEFAULT or f"{name}@{command}" in NOTHING_BY_DEFAULT:
            continue
        shown = isinstance(option.show_default, str) or (option.default is not None and option.show_default)
        assert shown, f"xlir {command} {name} hides its default"
    assert "[default: ()" not in out and "[default: (" not in out  # described defaults read like literal ones


@pytest.mark.parametrize(("command", "expected"), [
    ("index", ["[default: XLIR_HOME/store]", "[default: photos]", "[default: 32]", "[default: one per core, up to 8]",
               "[default: 150]", "[default: auto]"]),
    ("search", ["[default: 10]", "[default: XLIR_HOME/store]"]),
    ("tag", ["[default: 5]", "[default: 0.58 for sight-lite0-ssd-muse, 0.54 for conse-lite0-muse and conse-lite2-muse, else 0.15]", "[default: en]"]),
])
def test_the_defaults_named_in_help_are_the_code_s(command: str, expected: list[str]) -> None:
    from xlir_qdrant.config import Settings
    from xlir_qdrant.tagging.tagger import CALIBRATED, TagDefaults

    _, out, _ = run(command, "--help")
    flat = " ".join(out.replace("│", " ").split())
    for text in expected:
        assert " ".join(text.split()) in flat, text
    assert (Settings.batch_size, Settings.max_megapixels, Settings.collection) == (32, 150, "photos")
    assert TagDefaults().min_score == 0.15 and {d.min_score for d in CALIBRATED.values()} == {0.58, 0.54}


@pytest.mark.parametrize("command", ("", *COMMANDS))
def test_flags_are_shown_as_flags_and_examples_one_per_line(command: str) -> None:
    _, out, _ = run(*([command] if command else []), "--help")
    assert "<bool>" not in out  # a flag takes no value
    lines = [line.strip(" │") for line in out.splitlines()]
    if "Examples:" in lines:
        examples = lines[lines.index("Examples:") + 1:]
        examples = examples[:examples.index("")] if "" in examples else examples
        assert len(examples) >= 2 and all(line.startswith("xlir ") for line in examples), examples
        assert not any(re.search(r"xlir \S.*\s{3,}xlir ", line) for line in examples)  # two run together


def test_main_help_lists_every_environment_variable_the_code_reads() -> None:
    from dataclasses import fields

    from xlir_qdrant.config import Settings

    root = Path(__file__).resolve().parents[1] / "xlir_qdrant"
    named = {m for f in root.rglob("*.py") for m in re.findall(r"environ(?:\.get)?\(\s*\"(XLIR_[A-Z_]+)\"",
                                                                f.read_text())}
    per_setting = {f"XLIR_{f.name.upper()}" for f in fields(Settings) if f.name != "home"}
    assert {"XLIR_HOME", "XLIR_CONFIG", "XLIR_CACHE"} <= named
    _, out, _ = run("--help")
    for variable in named | per_setting:
        assert variable in out, variable


def test_tag_help_counts_the_vocabulary_it_ships() -> None:
    from xlir_qdrant.vocab import LANGUAGES, load_vocabulary

    _, out, _ = run("tag", "--help")
    flat = " ".join(out.replace("│", " ").split())
    assert f"has {len(load_vocabulary())} everyday concepts named in {len(LANGUAGES)} languages" in flat
    assert " ".join(LANGUAGES) in flat


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


def test_index_summary_says_one_file_and_names_the_gone(tmp_path: Path) -> None:
    save(tmp_path / "photos" / "a.png", (200, 10, 10))
    gone = save(tmp_path / "photos" / "b.png", (10, 200, 10))
    store = str(tmp_path / "s")
    run("index", str(tmp_path / "photos"), "--model", "fake-colour", "--store", store)
    gone.unlink()
    code, out, err = run("index", str(tmp_path / "photos"), "--model", "fake-colour", "--store", store)
    assert code == 0
    assert out.startswith("indexed 1 file in ") and "0 new, 0 changed, 0 reused, 1 unchanged, 0 skipped" in out
    assert "; 1 file gone from disk, removed from the index" in out


def test_kinds_xlir_does_not_read_are_one_line_each(colour_photos: Path, tmp_path: Path) -> None:
    for i in range(3):
        (colour_photos / f"logo{i}.svg").write_text("<svg/>")
    code, out, err = run("index", str(colour_photos), "--model", "fake-colour", "--store", str(tmp_path / "s"))
    assert code == 0 and "indexed 7 files" in out and "3 skipped" in out
    assert [line for line in err.splitlines() if "svg" in line.lower()] == \
        ["3 SVG files skipped: not a raster format xlir reads"]
# -- bad values: one line that names the flag and what it accepts, exit code 2 --------------------


@pytest.mark.parametrize(
    ("args", "flag", "allowed"),
    [
        (("search", "red", "--lang", "xx"), "--lang 'xx'", "ISO 639-1"),
        (("search", "red", "--min-score", "2"), "--min-score", "allowed: 0 to 1"),
        (("search", "red", "-k", "0"), "--top-k", "allowed: 1 or more"),
        (("search", "red", "-k", "many"), "--top-k", "integer"),
        (("search", "red", "--in", "/nope"), "--in /nope", "nothing indexed under it"),
        (("tag", "red.jpg", "-k", "0"), "--top-k", "allowed: 1 or more"),
        (("tag", "red.jpg", "-k", "-3"), "--top-k", "allowed: 1 or more"),
        (("tag", "red.jpg", "--lang", "xx"), "--lang 'xx'", "en, de, fr"),
        (("index", ".", "--max-megapixels", "-1"), "--max-megapixels", "allowed: 0 or more"),
        (("index", ".", "--max-megapixels", "0"), "--max-megapixels", "more than 0"),
        (("index", ".", "--workers", "0"), "--workers", "allowed: 1 or more"),
        (("index", ".", "--batch-size", "0"), "--batch-size", "allowed: 1 or more"),
        (("remove", "/nope"), "remove /nope", "nothing indexed under it"),
        (("search", "red", "--nope"), "--nope", "No such option"),
        (("search", "red", "--after", "last summer"), "--after 'last summer'", "YYYY-MM-DD"),
        (("search", "red", "--after", "2024-05-01", "--before", "2024-01-01"), "--after", "earlier than --before"),
        (("search", "red", "--sort", "size"), "--sort", "'score', 'date'"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_flag_with_exit_2(
    indexed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...], flag: str, allowed: str
) -> None:
    monkeypatch.chdir(indexed)
    code, out, err = run(*args, "--store", str(tmp_path / "s"))
    assert code == 2 and out == "", err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and "╭" not in err, err
    assert err.startswith("error:") and flag in err and allowed in err, err


def test_remove_of_a_path_that_is_gone_from_disk_but_indexed_still_works(indexed: Path, tmp_path: Path) -> None:
    (indexed / "red.jpg").unlink()  # deleted by hand: the entry is still there to be removed
    code, out, err = run("remove", str(indexed / "red.jpg"), "--store", str(tmp_path / "s"))
    assert code == 0 and "removed 1 images" in out, err
    code, out, _ = run("search", "blue", "--in", str(indexed / "trip"), "--store", str(tmp_path / "s"), "--json")
    assert code == 0 and len(out.splitlines()) == 2  # --in a folder that exists: no questions asked


def test_a_config_file_named_but_missing_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XLIR_CONFIG", str(tmp_path / "nonexistent.toml"))
    code, out, err = run("search", "red", "--store", str(tmp_path / "s"))
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "XLIR_CONFIG" in err and "nonexistent.toml" in err


def test_a_bad_setting_from_the_environment_names_its_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XLIR_WORKERS", "-2")
    code, _, err = run("search", "red", "--store", str(tmp_path / "s"))
    assert code == 2 and "XLIR_WORKERS" in err and "at least 0" in err


def test_index_of_nothing_fails_before_the_banner_and_makes_no_store(tmp_path: Path) -> None:
    code, out, err = run("index", str(tmp_path / "nope"), "--model", "fake-colour", "--store", str(tmp_path / "s"))
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [f"error: nothing to index: {tmp_path / 'nope'} does not exist"]
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("args", [("search", "red"), ("info",), ("check",), ("tag", "{photo}", "--model", "fake-colour"),
                                  ("remove", "{photo}")])
def test_commands_that_read_never_create_a_store(colour_photos: Path, tmp_path: Path, args: tuple[str, ...]) -> None:
    store = tmp_path / "fresh" / "store"
    run(*(a.replace("{photo}", str(colour_photos / "red.jpg")) for a in args), "--store", str(store))
    assert not store.exists() and not store.parent.exists()


# -- output for people and for pipes ----------------------------------------------------------


def test_search_into_a_pipe_prints_plain_lines_and_formats_are_chosen(indexed: Path, tmp_path: Path) -> None:
    store = ["--store", str(tmp_path / "s")]
    code, out, _ = run("search", "blue", "-k", "2", *store)  # the test console is no terminal: a pipe
    rows = [line.split("\t") for line in out.splitlines()]
    assert code == 0 and [r[0] for r in rows] == ["1", "2"] and all(len(r) == 5 for r in rows)
    assert rows[0][2] == str(indexed / "trip" / "blue.jpg") and int(rows[0][4]) > 0 and "│" not in out
    _, paths, _ = run("search", "blue", "-k", "2", "--format", "paths", *store)
    assert paths.splitlines() == [r[2] for r in rows]
    _, as_json, _ = run("search", "blue", "-k", "2", "--format", "json", *store)
    _, alias, _ = run("search", "blue", "-k", "2", "--json", *store)
    assert as_json == alias and [json.loads(line)["path"] for line in alias.splitlines()] == paths.splitlines()
    _, table, _ = run("search", "blue", "-k", "2", "--format", "table", *store)
    assert "┃ score ┃" in table
    code, out, err = run("search", "blue", "--json", "--format", "tsv", *store)
    assert code == 2 and out == "" and "--json" in err and len(err.strip().splitlines()) == 1


def test_the_table_never_folds_a_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from conftest import save

    deep = tmp_path / "photos" / "a-rather-long-folder-name" / "holidays-in-the-mountains-2024" / "day-three"
    save(deep / "sunrise-over-the-lake-from-the-hut.jpg", (230, 20, 20))
    save(tmp_path / "photos" / "short.jpg", (200, 30, 30))
    assert run("index", str(tmp_path / "photos"), "--model", "fake-colour", "--store", str(tmp_path / "s"))[0] == 0
    monkeypatch.setattr(app.ui, "out", Console(width=80, no_color=True, force_terminal=False, soft_wrap=True))
    code, out, _ = run("search", "red", "--store", str(tmp_path / "s"), "--format", "table")
    lines = out.splitlines()
    assert code == 0 and max(len(line) for line in lines) <= 80
    rows = [line for line in lines if line.startswith("│")]
    assert len(rows) == 2  # one line per hit: nothing folded onto a second line
    assert any("…/day-three/sunrise-over-the-lake-from-the-hut.jpg" in row or
               "…/sunrise-over-the-lake-from-the-hut.jpg" in row for row in rows), out
    assert any("short.jpg" in row for row in rows)


def test_a_tag_table_titled_with_a_long_path_keeps_it_on_one_line(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from conftest import save

    photo = save(tmp_path / ("a-folder-with-a-long-name/" * 4) / "red-sunset-over-the-harbour.jpg", (230, 20, 20))
    monkeypatch.setattr(app.ui, "out", Console(width=60, no_color=True, force_terminal=False, soft_wrap=True))
    code, out, _ = run("tag", str(photo), "--model", "fake-colour", "--store", str(tmp_path / "s"))
    title = out.splitlines()[0]
    assert code == 0 and len(title) <= 60 and "red-sunset-over-the-harbour.jpg" in title and title.startswith("…")


def test_fit_path_keeps_the_file_name_and_drops_whole_folders() -> None:
    from xlir_cli.render import fit_path

    assert fit_path("photos/trip/blue.jpg", 40) == "photos/trip/blue.jpg"
    assert fit_path("a/very/long/chain/of/folders/blue.jpg", 20) == "…/folders/blue.jpg"
    assert fit_path("x/" + "n" * 30 + ".jpg", 12) == "…" + ("n" * 30 + ".jpg")[-11:]  # the name alone is too long
    assert fit_path("写真/旅行/猫の写真.jpg", 19) == "…/旅行/猫の写真.jpg"  # wide characters take two cells
    assert fit_path("写真/旅行/猫の写真.jpg", 18) == "…/猫の写真.jpg"


def test_open_hands_the_top_hits_to_the_system_viewer(indexed: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import sys
    import time

    if sys.platform in ("win32", "darwin"):
        pytest.skip("the fake viewer stands in for xdg-open")
    bin_dir, opened = tmp_path / "bin", tmp_path / "opened.txt"
    bin_dir.mkdir()
    fake = bin_dir / "xdg-open"
    fake.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$1\" >> {opened}\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    code, out, err = run("search", "blue", "-k", "2", "--open", "--format", "paths", "--store", str(tmp_path / "s"))
    assert code == 0, err
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(opened.read_text().splitlines() if opened.exists() else []) < 2:
        time.sleep(0.05)
    assert sorted(opened.read_text().splitlines()) == sorted(out.splitlines())  # each hit, once

    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    code, _, err = run("search", "blue", "--open", "--store", str(tmp_path / "s"))
    assert code == 1 and "xdg-open" in err and len(err.strip().splitlines()) == 1


# -- dates --------------------------------------------------------------------------------


def test_search_by_date_uses_the_exif_date_else_the_file_time_and_sorts_by_it(tmp_path: Path) -> None:
    from datetime import datetime

    from PIL import Image

    from conftest import save

    photos = tmp_path / "photos"
    when = {"red.jpg": "2019-07-14T10:00", "green.png": "2021-03-01T12:00", "white.webp": "2023-08-20T18:30"}
    save(photos / "red.jpg", (230, 20, 20))
    save(photos / "green.png", (20, 220, 30))
    save(photos / "white.webp", (250, 250, 250))
    for name, stamp in when.items():
        t = datetime.fromisoformat(stamp).timestamp()
        os.utime(photos / name, (t, t))
    exif = Image.Exif()
    exif[306] = "2022:12:24 20:00:00"  # DateTime: taken on Christmas Eve 2022, copied here today
    Image.new("RGB", (64, 48), (10, 30, 240)).save(photos / "blue.jpg", exif=exif)
    store = ["--store", str(tmp_path / "s")]
    assert run("index", str(photos), "--model", "fake-colour", *store)[0] == 0

    def names(*args: str) -> list[str]:
        code, out, err = run("search", "white", "--format", "paths", *args, *store)
        assert code == 0, err
        return [Path(line).name for line in out.splitlines()]

    assert set(names("--after", "2021-01-01")) == {"green.png", "white.webp", "blue.jpg"}
    assert set(names("--before", "2021-01-01")) == {"red.jpg"}
    assert set(names("--after", "2022-12-24", "--before", "2023-01-01")) == {"blue.jpg"}  # its EXIF date
    by_date = names("--sort", "date")
    assert by_date == ["white.webp", "blue.jpg", "green.png", "red.jpg"]  # newest first
    assert names() != by_date  # by score, white first, then the light colours
    code, out, _ = run("search", "white", "--sort", "date", "--json", *store)
    ranks = [json.loads(line)["rank"] for line in out.splitlines()]
    assert sorted(ranks) == [1, 2, 3, 4] and ranks != [1, 2, 3, 4]  # each keeps its rank by score


def test_info_shows_the_size_on_disk_and_when_each_collection_was_last_indexed(indexed: Path, tmp_path: Path) -> None:
    from datetime import datetime

    code, out, _ = run("info", "--store", str(tmp_path / "s"))
    assert code == 0 and re.search(r"size on disk: \d+(\.\d)? (KB|MB)", out)
    today = datetime.now().strftime("%Y-%m-%d")
    assert "last indexed" in out and today in out
    stats = json.loads(run("info", "--store", str(tmp_path / "s"), "--json")[1])
    assert stats["disk_bytes"] > 0 and stats["collections"][0]["last_indexed"].startswith(today)
