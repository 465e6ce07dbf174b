"""`xlir serve` as a command, and the CLI talking to a running server: the same output."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from rich.console import Console
from typer.testing import CliRunner

from conftest import save
from xlir_cli import app, main
from xlir_qdrant.config import Overrides, Settings
from xlir_qdrant.index import Index
from xlir_qdrant.serve import discovery
from xlir_qdrant.serve.server import WebServer
from xlir_qdrant.store.edge import EdgeStore

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


@pytest.fixture(autouse=True)
def fixed_consoles(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(app.ui, "out", Console(width=100, no_color=True, force_terminal=False, soft_wrap=True))
    monkeypatch.setattr(app.ui, "err", Console(width=100, no_color=True, force_terminal=False, stderr=True))


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(main.app, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def store(colour_photos: Path, tmp_path: Path) -> Path:
    code, _, err = run("index", str(colour_photos), "--model", "fake-colour", "--store", str(tmp_path / "store"))
    assert code == 0, err
    return tmp_path / "store"


@pytest.fixture
def served(store: Path) -> Iterator[WebServer]:
    with Index(Settings.load(Overrides(store=store))) as idx, WebServer(idx, port=0) as server:
        yield server


COMMANDS = [
    ("search", "rojo", "-k", "3"),
    ("search", "blue", "--json"),
    ("search", "red", "--in", "{photos}/trip", "--json"),
    ("search", "--tag", "Rot", "--json"),
    ("search", "--image", "{photos}/red.jpg", "-k", "2", "--json"),
    ("tag", "{photos}/red.jpg", "{photos}/trip/blue.jpg", "--lang", "de"),
    ("tag", "{photos}/red.jpg", "--json"),
    ("info", "--json"),
]


def test_with_a_server_holding_the_store_the_commands_print_the_same(store: Path, colour_photos: Path) -> None:
    def each(command: tuple[str, ...]) -> list[str]:
        return [a.replace("{photos}", str(colour_photos)) for a in command] + ["--store", str(store)]

    alone = [run(*each(c)) for c in COMMANDS]
    with Index(Settings.load(Overrides(store=store))) as idx, WebServer(idx, port=0) as server:
        assert discovery.path_for(store).exists()
        with pytest.raises(Exception, match="in use by process"):
            EdgeStore(store)  # held: without the server these commands would be refused
        shared = [run(*each(c)) for c in COMMANDS]
    for command, (code, out, err), (code2, out2, err2) in zip(COMMANDS, alone, shared, strict=True):
        assert (code, out) == (code2, out2), (command, err2)
        assert f"using the running `xlir serve` at {server.url}" in err2 and "using" not in err
    assert not discovery.path_for(store).exists()  # removed on the way out


def test_index_through_the_server_reports_like_a_local_run(served: WebServer, store: Path,
                                                           colour_photos: Path) -> None:
    save(colour_photos / "more" / "black.png", (0, 0, 0))
    (colour_photos / "more" / "broken.jpg").write_bytes(b"garbage")
    code, out, err = run("index", str(colour_photos), "--store", str(store), "--json")
    assert code == 0, err
    report = json.loads(out)
    assert (report["added"], report["unchanged"], report["skipped"]) == (1, 4, 1)
    assert "broken.jpg" in err and "skipped" in err and "model fake-colour on cpu" in err
    code, out, err = run("search", "black", "-k", "1", "--json", "--store", str(store))
    assert code == 0 and json.loads(out)["path"].endswith("black.png")


def test_a_relative_path_is_resolved_where_the_command_runs(served: WebServer, store: Path, colour_photos: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(colour_photos)
    code, out, err = run("tag", "red.jpg", "--json", "--store", str(store))
    assert code == 0, err
    assert json.loads(out.splitlines()[0])["path"] == str(colour_photos / "red.jpg")
    code, out, _ = run("search", "red", "--in", "trip", "--json", "--store", str(store))
    assert code == 0 and all("/trip/" in json.loads(line)["path"] for line in out.splitlines())


def test_a_file_outside_the_indexed_folders_is_sent_to_the_server(served: WebServer, store: Path,
                                                                 tmp_path: Path) -> None:
    elsewhere = save(tmp_path / "downloads" / "red-too.png", (220, 20, 20))
    code, out, err = run("tag", str(elsewhere), "--json", "--store", str(store))
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert rows and all(r["path"] == str(elsewhere) and r["source"] == "file" for r in rows)
    code, _, err = run("tag", str(tmp_path / "nope.png"), "--store", str(store))
    assert code == 1 and "no such file" in err and len(err.strip().splitlines()) == 2  # the note, the error


def test_errors_through_the_server_are_one_line(served: WebServer, store: Path) -> None:
    code, out, err = run("search", "", "--store", str(store))
    assert code == 1 and out == "" and "empty query" in err and "Traceback" not in err
    code, _, err = run("search", "red", "-c", "other", "--store", str(store))
    assert code == 1 and "held by `xlir serve`" in err and "collection 'photos'" in err


def test_a_stale_server_file_is_ignored(store: Path, colour_photos: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    for pid, port in ((int(dead.stdout), 9), (os.getpid(), 9)):  # a dead process; a live one that does not answer
        discovery.write(discovery.ServerFile(pid=pid, host="127.0.0.1", port=port, url=f"http://127.0.0.1:{port}",
                                             store=str(store), collection="photos", model="fake-colour"))
        code, out, err = run("search", "red", "-k", "1", "--json", "--store", str(store))
        assert code == 0 and "using the running" not in err and json.loads(out)["path"].endswith("red.jpg")


# -- the command itself, in a process of its own --------------------------------------------------


def _start(args: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    xlir = str(Path(sys.executable).with_name("xlir"))
    proc = subprocess.Popen([xlir, "serve", "--port", "0", *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline()  # "serving on http://HOST:PORT/  (Ctrl-C stops it)"
    if not line.startswith("serving on "):
        proc.kill()
        raise AssertionError(line + (proc.stderr.read() if proc.stderr else ""))
    return proc, line


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("XLIR_")}
    return {**env, "XLIR_HOME": str(home), "XLIR_CACHE": os.environ["XLIR_CACHE"],
            "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)}


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_xlir_serve_listens_and_stops_cleanly_releasing_the_store(tmp_path: Path, stop: signal.Signals) -> None:
    store = tmp_path / "store"
    proc, line = _start(["--store", str(store)], _env(tmp_path / "home"))
    try:
        url = line.split()[2].rstrip("/")
        assert url.startswith("http://127.0.0.1:")
        status = httpx.get(f"{url}/api/status", timeout=10).json()
        assert status["pid"] == proc.pid and status["store"] == str(store)
        found = json.loads(discovery.path_for(store).read_text())
        assert found["pid"] == proc.pid and found["url"] == url and found["token"] is None
        assert oct(discovery.path_for(store).stat().st_mode & 0o777) == "0o600"
        proc.send_signal(stop)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "stopped; the store is released" in err and "Traceback" not in err
    assert not discovery.path_for(store).exists()
    EdgeStore(store).close()  # the lock is free


def test_xlir_serve_off_loopback_makes_a_token_and_requires_it(tmp_path: Path) -> None:
    proc, _ = _start(["--host", "0.0.0.0", "--store", str(tmp_path / "store")], _env(tmp_path / "home"))
    try:
        assert proc.stdout is not None
        token_line, open_line = proc.stdout.readline(), proc.stdout.readline()
        token = token_line.rsplit(" ", 1)[1].strip()
        port = open_line.split("?token=")[0].rsplit(":", 1)[1].strip("/")
        url = f"http://127.0.0.1:{port}"
        assert "shown once" in token_line and open_line.strip().endswith(f"?token={token}")
        assert httpx.get(f"{url}/api/status", timeout=10).status_code == 401
        answer = httpx.get(f"{url}/api/status", headers={"authorization": f"Bearer {token}"}, timeout=10)
        assert answer.status_code == 200
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0


def test_a_port_in_use_is_one_line(tmp_path: Path) -> None:
    import socket

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        code, _, err = run("serve", "--port", str(port), "--store", str(tmp_path / "store"))
    assert code == 1 and "is in use" in err and "--port" in err and len(err.strip().splitlines()) == 1


def test_the_server_runs_numpy_on_one_blas_thread_unless_told_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    from xlir_cli import launch

    monkeypatch.setattr(main, "app", lambda: None)
    for argv, expected in ((["xlir", "serve", "--port", "0"], "1"), (["xlir", "search", "gato"], None)):
        monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
        monkeypatch.setattr(sys, "argv", argv)
        launch.main()
        assert os.environ.get("OPENBLAS_NUM_THREADS") == expected
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "4")  # the user's choice wins
    monkeypatch.setattr(sys, "argv", ["xlir", "serve"])
    launch.main()
    assert os.environ["OPENBLAS_NUM_THREADS"] == "4"
