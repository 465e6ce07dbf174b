"""`xlir serve` as a command, in a process of its own."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from rich.console import Console
from typer.testing import CliRunner

from xlir_cli import app, main
from xlir_qdrant.serve import discovery
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
