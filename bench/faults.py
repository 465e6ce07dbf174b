"""Kills during indexing: SIGKILL an index run at random moments and count what was lost.

A child process indexes a folder of 200 photos with the bundled model and prints each batch
the writer has stored. The parent kills it at a random moment, reopens the store (as the next
command would: a shard left unclean is first opened in a child, health.py), and counts:

  lost        batches the child reported stored that the reopened store does not hold
  duplicated  paths stored twice
  unopenable  reopens that failed
  unsound     points `xlir check` finds faulty

then lets the next child resume the same store. A run that completes starts a new store, so
the 20 kills spread over whole runs. Takes a few minutes on 2 cores.

    python bench/faults.py            # 20 kills, 200 photos
    python bench/faults.py --kills 5 --n 60
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = """
import sys
from pathlib import Path
from xlir_qdrant.config import Overrides, Settings
from xlir_qdrant.index import Index
root = Path(sys.argv[1])
with Index(Settings.load(Overrides(store=root / "store", home=root / "home", device="cpu", batch_size=16))) as idx:
    idx.encoder.warm_up()
    print("ready", flush=True)
    idx.index([root / "photos"], progress=lambda e: print(e.kind, e.n, flush=True) if e.kind == "done" else None)
print("finished", flush=True)
"""


def make_photos(folder: Path, n: int) -> None:
    import numpy as np
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        im = Image.new("RGB", (1600, 1200), tuple(int(v) for v in rng.integers(0, 255, 3)))
        draw = ImageDraw.Draw(im)
        for _ in range(8):
            x, y = (int(v) for v in rng.integers(0, 1500, 2))
            draw.ellipse([x, y, x + 300, y + 220], fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
        im.save(folder / f"{i:04d}.jpg", quality=90)


def _timed_run(tmp: Path, env: dict[str, str]) -> float:
    root = tmp / "timing"
    root.mkdir()
    os.symlink(tmp / "photos", root / "photos")
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(root)], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True)
    assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    start = time.perf_counter()
    child.communicate(timeout=600)
    shutil.rmtree(root)
    return time.perf_counter() - start


def reopen(root: Path) -> tuple[bool, int, int, int, str]:
    """(opened, points, duplicated paths, unsound points, problem) as the next command sees it."""
    from xlir_qdrant.config import Overrides, Settings
    from xlir_qdrant.errors import EmptyIndex, XlirError
    from xlir_qdrant.index import Index

    try:
        with Index(Settings.load(Overrides(store=root / "store", home=root / "home", device="cpu"))) as idx:
            try:
                paths = [p.payload["path"] for p in idx.collection.scroll()]
            except EmptyIndex:
                return True, 0, 0, 0, ""
            report = idx.check()
            return True, len(paths), len(paths) - len(set(paths)), report.faults, report.problem
    except XlirError as exc:
        return False, 0, 0, 0, str(exc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    tmp = Path(tempfile.mkdtemp(prefix="xlir-bench-faults-"))
    root = tmp / "run"
    make_photos(tmp / "photos", args.n)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    totals = {"lost": 0, "duplicated": 0, "unopenable": 0, "unsound": 0, "completed runs": 0}
    span = _timed_run(tmp, env)  # how long an uninterrupted run takes: kills spread over it
    print(f"an uninterrupted run of {args.n} photos takes {span:.1f}s after the model is loaded")
    print(f"{'kill':>4} {'at s':>6} {'stored':>7} {'found':>6} {'lost':>5} {'dup':>4} {'opens':>6} {'unsound':>8}")
    try:
        fresh = True
        for kill in range(1, args.kills + 1):
            if fresh:
                shutil.rmtree(root, ignore_errors=True)
                root.mkdir(parents=True)
                os.symlink(tmp / "photos", root / "photos")
                fresh, before = False, 0
            child = subprocess.Popen([sys.executable, "-c", CHILD, str(root)], env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "ready", "the child did not start"
            at = rng.uniform(0.02, 1.0) * span  # the model is loaded: kill somewhere in the run
            time.sleep(at)
            child.send_signal(signal.SIGKILL)
            out, _ = child.communicate(timeout=120)
            stored = before + sum(int(line.split()[1]) for line in out.splitlines() if line.startswith("done "))
            opened, found, dup, unsound, problem = reopen(root)
            lost = max(0, stored - found)
            totals["lost"] += lost
            totals["duplicated"] += dup
            totals["unopenable"] += 0 if opened else 1
            totals["unsound"] += unsound
            print(f"{kill:>4} {at:>6.2f} {stored:>7} {found:>6} {lost:>5} {dup:>4} {'yes' if opened else 'NO':>6} "
                  f"{unsound:>8}" + (f"  {problem[:80]}" if problem else ""), flush=True)
            before = found
            if "finished" in out or found >= args.n:
                totals["completed runs"] += 1
                fresh = True
        done = subprocess.run([sys.executable, "-c", CHILD, str(root)], env=env, capture_output=True, text=True)
        opened, found, dup, unsound, _ = reopen(root)
        print(f"\nresumed to the end: {found} of {args.n} photos stored, {dup} duplicated, {unsound} unsound, "
              f"exit {done.returncode}")
        print(f"over {args.kills} kills: " + ", ".join(f"{v} {k}" for k, v in totals.items()))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
