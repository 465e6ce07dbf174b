"""What was indexed into each collection, and when: the roots (so a store damaged beyond
opening can be rebuilt from the photos by `xlir check --repair`) and the last run's report.

For the embedded store the ledger lives beside it (``<store>/xlir-ledger.json``), so it moves
with the store; for a server, under the data dir, one file per server URL.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any


def ledger_path(*, store_dir: Path, home: Path, qdrant_url: str | None) -> Path:
    if qdrant_url:
        return home / "ledgers" / f"{hashlib.sha256(qdrant_url.encode()).hexdigest()[:16]}.json"
    return store_dir / "xlir-ledger.json"


class Ledger:
    def __init__(self, path: Path) -> None:
        self.path = path

    def roots(self, collection: str) -> list[str]:
        """The folders and files ever indexed into ``collection`` (exact paths, oldest first)."""
        entry = self._read().get(collection, {})
        return [os.fsdecode(base64.b64decode(r)) for r in entry.get("roots", []) if isinstance(r, str)]

    def last_index(self, collection: str) -> dict[str, Any] | None:
        entry = self._read().get(collection, {})
        last = entry.get("last_index")
        return last if isinstance(last, dict) else None

    def record_index(self, collection: str, roots: list[str], report: dict[str, Any]) -> None:
        """Best effort: the ledger is a record, never a reason for a run to fail."""
        data = self._read()
        entry = data.setdefault(collection, {})
        known = [r for r in entry.get("roots", []) if isinstance(r, str)]
        for root in roots:
            encoded = base64.b64encode(os.fsencode(os.path.abspath(root))).decode("ascii")
            if encoded not in known:
                known.append(encoded)
        entry["roots"] = known
        entry["last_index"] = {"at": time.strftime("%Y-%m-%dT%H:%M:%S"), **report}
        tmp = self.path.with_name(self.path.name + ".tmp")
        with contextlib.suppress(OSError):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
            os.replace(tmp, self.path)

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}
