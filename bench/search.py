"""Search latency: the embedded Edge store against qdrant-client's local mode, then xlir itself.

1. Store query latency (limit 10, with payload), p50/p99 over random unit queries, at 10k and
   100k points x 512 dims (random unit vectors, payloads shaped like xlir's: path, dirs, size,
   mtime_ns, sha256, width, height, taken_at, tags, annotation):
     edge   EdgeStore, exact scan (10k, 100k) and HNSW after optimize() (100k)
     local  ServerStore.local(tmpdir), qdrant-client's local mode: the baseline
   Upsert rate and reopen time are printed too. Local mode loads slowly (it persists point by
   point), so its largest size is capped to what --local-budget seconds of upserts allow and
   the output says so.
2. Warm Index.search (text query -> mUSE -> store query -> hits) on the 100k edge store.
3. Cold start of `xlir search "..."` as a new process (bundled model), median of 5, after
   a first run that fills the cache; against `xlir --help` (the interpreter, the imports and
   the CLI, no model or store), also a new process each time.

    python bench/search.py             # ~6-10 min on 2 cores
    python bench/search.py --cold-only # 2 and 3 only (the edge store built, no local mode)
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import fake_payload, median, pct, time_cli  # noqa: E402

DIM = 512
QUERIES = ["perro en la playa", "a cup of coffee", "Katze auf dem Sofa", "夕焼けの山", "red car in the snow",
           "дети играют в парке", "un gâteau d'anniversaire", "old castle ruins"]


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def fill(store, start: int, stop: int, seed: int, batch: int = 1000) -> float:
    """Upsert points [start, stop); returns seconds."""
    from xlir_qdrant.records import Point

    rng = np.random.default_rng(seed + start)
    t = 0.0
    for lo in range(start, stop, batch):
        hi = min(stop, lo + batch)
        vecs = unit(rng, hi - lo)
        pts = [Point(str(uuid.uuid5(uuid.NAMESPACE_URL, f"p{i}")), vecs[i - lo], fake_payload(i))
               for i in range(lo, hi)]
        t0 = time.perf_counter()
        store.upsert(pts)
        t += time.perf_counter() - t0
    return t


def latency(store, n_queries: int, seed: int = 7) -> tuple[float, float]:
    qs = unit(np.random.default_rng(seed), n_queries + 3)
    for q in qs[:3]:  # warm-up
        store.query(q, limit=10)
    times = []
    for q in qs[3:]:
        t0 = time.perf_counter()
        hits = store.query(q, limit=10)
        times.append((time.perf_counter() - t0) * 1000)
        assert len(hits) == 10
    return pct(times, 50), pct(times, 99)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--local-queries", type=int, default=40)
    ap.add_argument("--local-budget", type=float, default=60.0, help="seconds of local-mode upserts allowed")
    ap.add_argument("--cold-runs", type=int, default=5)
    ap.add_argument("--cold-only", action="store_true", help="only the warm and cold xlir searches")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    from xlir_qdrant.encoders.registry import DEFAULT_MODEL, get_spec
    from xlir_qdrant.store.edge import EdgeStore

    spec = get_spec(DEFAULT_MODEL)
    tmp = Path(tempfile.mkdtemp(prefix="xlir-bench-search-"))
    rows: dict[tuple[str, int], tuple[float, float]] = {}
    try:
        # -- edge ------------------------------------------------------------------------
        edge_dir = tmp / "edge"
        store = EdgeStore(edge_dir)
        col = store.collection("photos", spec, create=True)
        done, up_s = 0, 0.0
        print(f"{'store':<22}{'points':>8}{'upsert pts/s':>14}{'p50 ms':>9}{'p99 ms':>9}")
        for n in sizes[-1:] if args.cold_only else sizes:
            up_s += fill(col, done, n, seed=1)
            done = n
            if args.cold_only:
                print(f"{'edge':<22}{n:>8}{done / up_s:>14.0f}", flush=True)
                break
            p50, p99 = latency(col, args.queries)
            rows[("edge", n)] = (p50, p99)
            print(f"{'edge exact':<22}{n:>8}{done / up_s:>14.0f}{p50:>9.2f}{p99:>9.2f}", flush=True)
        t0 = time.perf_counter()
        col.optimize()
        opt_s = time.perf_counter() - t0
        p50, p99 = latency(col, args.queries)
        rows[("edge-hnsw", done)] = (p50, p99)
        print(f"{'edge HNSW':<22}{done:>8}{'':>14}{p50:>9.2f}{p99:>9.2f}   (optimize() took {opt_s:.1f}s)",
              flush=True)
        store.close()
        t0 = time.perf_counter()
        store = EdgeStore(edge_dir)
        store.collection("photos", spec)
        reopen_edge = time.perf_counter() - t0
        store.close()
        if args.cold_only:
            print(f"reopen: edge {done} points {reopen_edge:.2f}s")
        else:
            compare_local(args, tmp, spec, sizes, rows, reopen_edge)
        xlir_searches(args, tmp, edge_dir, sizes)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def compare_local(args: argparse.Namespace, tmp: Path, spec, sizes: list[int],  # noqa: ANN001
                  rows: dict[tuple[str, int], tuple[float, float]], reopen_edge: float) -> None:
    from xlir_qdrant.store.server import ServerStore

    # -- qdrant-client local mode ----------------------------------------------------
    local_dir = tmp / "local"
    local = ServerStore.local(local_dir)
    local_col = local.collection("photos", spec, create=True)
    done, up_s, capped = 0, 0.0, None
    for n in sizes:
        if done:
            projected = up_s / done * n
            if projected > args.local_budget:
                capped = n
                n = max(done, int(args.local_budget * done / up_s) // 10_000 * 10_000)
                if n == done:
                    break
        up_s += fill(local_col, done, n, seed=1)
        done = n
        p50, p99 = latency(local_col, args.local_queries)
        rows[("local", n)] = (p50, p99)
        print(f"{'qdrant-client local':<22}{n:>8}{done / up_s:>14.0f}{p50:>9.2f}{p99:>9.2f}", flush=True)
        if capped:
            break
    local.close()
    t0 = time.perf_counter()
    local = ServerStore.local(local_dir)
    local.collection("photos", spec)
    reopen_local = time.perf_counter() - t0
    local.close()
    if capped:
        print(f"NOTE: local mode capped at {done} points (projected {up_s / done * capped:.0f}s to load "
              f"{capped}, over --local-budget {args.local_budget:.0f}s); its scan is linear in N")
    print(f"reopen: edge {done_edge(sizes)} points {reopen_edge:.2f}s; local mode {done} points {reopen_local:.2f}s")

    print("\nratio baseline (local) / edge, query p50:")
    for (kind, n), (p50, _p99) in rows.items():
        if kind != "local":
            continue
        for ek in ("edge", "edge-hnsw"):
            if (ek, n) in rows:
                print(f"  {n:>7} points: local {p50:.2f} ms / {ek} {rows[(ek, n)][0]:.2f} ms = "
                      f"{p50 / rows[(ek, n)][0]:.0f}x")
    if capped:
        big = max(sizes)
        lp50 = rows[("local", done)][0]
        print(f"  {big:>7} points: local (at {done}, so a lower bound) {lp50:.2f} ms / edge exact "
              f"{rows[('edge', big)][0]:.2f} ms = {lp50 / rows[('edge', big)][0]:.0f}x; / edge HNSW "
              f"{rows[('edge-hnsw', big)][0]:.2f} ms = {lp50 / rows[('edge-hnsw', big)][0]:.0f}x")


def xlir_searches(args: argparse.Namespace, tmp: Path, edge_dir: Path, sizes: list[int]) -> None:
    # -- xlir Index.search, warm ----------------------------------------------------
    from xlir_qdrant import Index
    from xlir_qdrant.config import Overrides, Settings

    home = tmp / "home"
    settings = Settings.load(Overrides(home=home, store=edge_dir, device="cpu"))
    with Index(settings) as idx:
        t0 = time.perf_counter()
        idx.search("warm up")
        first = time.perf_counter() - t0
        times, enc_t = [], []
        for i in range(40):
            q = QUERIES[i % len(QUERIES)] + ("" if i < len(QUERIES) else f" {i}")
            t0 = time.perf_counter()
            res = idx.search(q, min_score=0.0)  # random vectors: nothing would pass the calibrated cut
            times.append((time.perf_counter() - t0) * 1000)
            assert res.hits
        for i in range(40):
            t0 = time.perf_counter()
            idx.encoder.embed_texts([QUERIES[i % len(QUERIES)]])
            enc_t.append((time.perf_counter() - t0) * 1000)
    print(f"\nIndex.search warm, {done_edge(sizes)} points (HNSW): p50 {pct(times, 50):.1f} ms, "
          f"p99 {pct(times, 99):.1f} ms  (first call incl. model load {first:.2f}s; "
          f"mUSE query encode alone p50 {pct(enc_t, 50):.1f} ms)")

    # -- xlir search cold start -----------------------------------------------------
    base, _ = time_cli([["--help"] for _ in range(args.cold_runs)], home)
    cold, _ = time_cli([["search", QUERIES[i % len(QUERIES)], "--store", str(edge_dir), "--device", "cpu",
                         "--min-score", "0", "--json"] for i in range(args.cold_runs + 1)], home)
    # The first process with an empty cache also writes it (mUSE's tokenizer and weights, the bank).
    print(f"`xlir search` cold start ({done_edge(sizes)} points): median {median(cold[1:]):.2f}s "
          f"over {args.cold_runs} runs {[round(c, 2) for c in cold[1:]]}; the first run, which "
          f"fills the cache, {cold[0]:.2f}s")
    print(f"baseline `xlir --help`, a new process each: median {median(base):.2f}s; search / baseline = "
          f"{median(cold[1:]) / median(base):.2f}x (the model and the store add "
          f"{median(cold[1:]) - median(base):.2f}s)")


def done_edge(sizes: list[int]) -> int:
    return sizes[-1]  # what the edge store holds once filled: the sizes are filled in order


if __name__ == "__main__":
    main()
