"""The discovery file: ``<store>/xlir-serve.json`` says which server holds an embedded store.

`xlir serve` writes it once it listens and removes it when it stops; a CLI command that finds
the store locked reads it to talk to that server instead. It is checked before use: the
process must be alive and its port must answer for this very store, so a file left behind by
a killed server is ignored. It holds the server's token, so it is readable by its owner only.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

FILE_NAME = "xlir-serve.json"


@dataclass(frozen=True, slots=True)
class ServerFile:
    pid: int
    host: str  # what it is bound to
    port: int
    url: str  # where a process on this machine reaches it
    store: str  # the store directory it holds
    collection: str
    model: str
    token: str | None = None

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}


def path_for(store_dir: Path) -> Path:
    return Path(store_dir) / FILE_NAME


def local_url(host: str, port: int) -> str:
    """The address a process on this machine uses for a server bound to ``host``."""
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def write(record: ServerFile) -> Path:
    path = path_for(Path(record.store))
    path.parent.mkdir(parents=True, exist_ok=True)  # a server may start on a store not made yet
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # the token is in it
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(asdict(record), fh)
    os.replace(tmp, path)
    return path


def remove(record: ServerFile) -> None:
    """Remove the file if it is still this server's (another may have started since)."""
    path = path_for(Path(record.store))
    found = _read(path)
    if found is not None and found.pid == record.pid and found.port == record.port:
        with contextlib.suppress(OSError):
            path.unlink()


def find(store_dir: Path, *, timeout: float = 2.0) -> ServerFile | None:
    """The server holding ``store_dir``, if one is alive and answers for it; else None."""
    found = _read(path_for(store_dir))
    if found is None or not _alive(found.pid):
        return None
    import httpx  # only once a server may be there: a plain command does not pay for it

    try:
        answer = httpx.get(f"{found.url}/api/status", headers=found.headers(), timeout=timeout)
        status = answer.json() if answer.status_code == 200 else {}
    except (httpx.HTTPError, ValueError):
        return None
    if not isinstance(status, dict) or status.get("store") != found.store or status.get("pid") != found.pid:
        return None
    return found


def _read(path: Path) -> ServerFile | None:
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
        return ServerFile(**data) if isinstance(data, dict) else None
    except (OSError, ValueError, TypeError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive, but not one we could talk to as ourselves
        return True
    except OSError:
        return False
    return True
