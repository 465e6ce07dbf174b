"""Shared helpers for the speed benchmarks (bench/ingest.py, rescan.py, search.py).

Benchmarks print figures and ratios against baselines measured in the same run; they never
assert on time.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PHOTOS = HERE / "photos" / "cache"


def peak_rss_mb() -> float:
    """This process's peak resident set size (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    k = min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))
    return s[k]


def median(values: list[float]) -> float:
    return statistics.median(values)


def run_phase(script: Path, phase: str, args: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``script --phase PHASE args`` in a fresh interpreter; it prints one JSON line last."""
    cmd = [sys.executable, str(script), "--phase", phase, *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"phase {phase} failed (exit {proc.returncode})")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def emit(result: dict[str, Any]) -> None:
    result["peak_rss_mb"] = round(peak_rss_mb(), 1)
    print(json.dumps(result), flush=True)


def fake_payload(i: int, root: str = "/photos") -> dict[str, Any]:
    """A payload shaped like the one xlir stores (store/schema.py image_payload + tags)."""
    year = 2015 + i % 10
    folder = f"{root}/{year}/{(i // 100) % 12 + 1:02d}"
    path = f"{folder}/IMG_{i:06d}.jpg"
    parts = path.strip("/").split("/")
    dirs = ["/"] + ["/" + "/".join(parts[:k]) for k in range(1, len(parts))]
    return {
        "path": path,
        "dirs": dirs,
        "size": 3_000_000 + (i * 7919) % 2_000_000,
        "mtime_ns": 1_600_000_000_000_000_000 + i * 1_000_000_000,
        "sha256": hashlib.sha256(str(i).encode()).hexdigest(),
        "width": 4000,
        "height": 3000,
        "taken_at": f"{year}-06-01T12:{i % 60:02d}:00",
        "tags": [f"c{(i * 13 + k * 101) % 500:04d}" for k in range(5)],
        "tags_key": "tags-bench",
    }


class Timer:
    def __enter__(self) -> Timer:
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.s = time.perf_counter() - self.t0


def time_cli(argv_list: list[list[str]], home: Path) -> tuple[list[float], subprocess.CompletedProcess[str]]:
    """Wall time of each `xlir ARGS` process in turn (a new process each: cold start included)."""
    xlir = shutil.which("xlir") or str(Path(sys.executable).with_name("xlir"))
    env = {**os.environ, "XLIR_HOME": str(home)}
    times = []
    for argv in argv_list:
        t0 = time.perf_counter()
        proc = subprocess.run([xlir, *argv], capture_output=True, text=True, env=env)
        times.append(time.perf_counter() - t0)
        if proc.returncode != 0:
            print(proc.stdout, proc.stderr)
    return times, proc
