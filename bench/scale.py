"""The embedded engine at scale: N synthetic 512-d points, float32 against int8 quantization.

Each layout runs in a fresh interpreter (so peak RSS is its own) on the same points, with
payloads shaped like xlir's (bench/_common.fake_payload) and the keyword indexes xlir creates,
through EdgeStore / EdgeCollection as `xlir index` uses them.

The vectors are shaped like embeddings, not like noise: real image embeddings occupy a
low-dimensional part of their space (near photos are near in a few directions), so each point
is a random point of a LATENT-dimensional space mapped into 512-d by one fixed random matrix,
plus NOISE of isotropic noise, normalised; queries are drawn the same way. On isotropic random
unit vectors (``--latent 0``), where every point is almost equally far from every other, no
graph index finds true neighbours: HNSW's recall@10 there was 0.12 at 10^5 points.

    float   float32 vectors in RAM, no quantization (the layout below 10^6 points)
    int8    int8 scalar quantization in RAM, float32 originals and payload on disk, queries
            rescored with the originals (the layout from 10^6 points, store/layout.py)

Per layout: upsert rate, peak RSS, RSS after the build, disk size, exact-scan query p50/p99
(before the graph exists), optimize() time (the blocking HNSW build), HNSW query p50/p99 and
recall@10 against the true nearest neighbours (computed here by brute force, streamed, so the
bench never holds the vectors). It prints figures and ratios (int8 / float, HNSW / exact) of
runs in the same invocation; it asserts nothing about time.

    python bench/scale.py --points 100000        # ~6 min on 2 idle cores
    python bench/scale.py                         # 10^6 points (hours on 2 cores)
    python bench/scale.py --points 200000 --json scale.json && python bench/scale_plan.py scale.json docs/scale.md
                                                  # docs/scale.md: these figures and the plan built on them
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, fake_payload, pct, run_phase  # noqa: E402

DIM = 512
SEED = 1
LATENT = 32  # dimensions the points really vary in
NOISE = 0.1  # share of each vector's length that is isotropic noise
LAYOUTS = ("float", "int8")


def _draw(rng: np.random.Generator, n: int, latent: int) -> np.ndarray:
    if latent <= 0:
        v = rng.standard_normal((n, DIM)).astype(np.float32)
    else:
        basis = np.random.default_rng((SEED, 2**32 - 2)).standard_normal((latent, DIM)).astype(np.float32)
        v = rng.standard_normal((n, latent)).astype(np.float32) @ basis
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        v += NOISE / np.sqrt(DIM) * rng.standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def vectors(lo: int, hi: int, latent: int = LATENT) -> np.ndarray:
    """Points [lo, hi): the same unit vectors on every call (one generator per 1000-point block)."""
    blocks = [_draw(np.random.default_rng((SEED, start)), 1000, latent) for start in range(lo - lo % 1000, hi, 1000)]
    block = np.concatenate(blocks)
    offset = lo - (lo - lo % 1000)
    return block[offset:offset + hi - lo]


def queries(n: int, latent: int = LATENT) -> np.ndarray:
    return _draw(np.random.default_rng((SEED, 2**32 - 1)), n, latent)


def point_id(i: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"p{i}"))


def truth(points: int, qs: np.ndarray, latent: int, k: int = 10) -> list[set[str]]:
    """The true k nearest ids of each query, by a streamed brute-force scan."""
    best_s = np.full((len(qs), k), -np.inf, np.float32)
    best_i = np.zeros((len(qs), k), np.int64)
    step = 50_000
    for lo in range(0, points, step):
        hi = min(points, lo + step)
        scores = qs @ vectors(lo, hi, latent).T
        s = np.concatenate([best_s, scores], axis=1)
        idx = np.concatenate([best_i, np.arange(lo, hi)[None].repeat(len(qs), 0)], axis=1)
        top = np.argpartition(-s, k, axis=1)[:, :k]
        best_s, best_i = np.take_along_axis(s, top, 1), np.take_along_axis(idx, top, 1)
    return [{point_id(int(i)) for i in row} for row in best_i]


def rss_mb(kind: str = "VmRSS") -> float:
    """Resident memory now: VmRSS (all), RssAnon (the heap) or RssFile (mapped files in RAM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{kind}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def timed_queries(col, qs: np.ndarray, k: int = 10) -> tuple[list[float], list[set[str]]]:
    for q in qs[:3]:
        col.query(q, limit=k)  # warm-up
    times, found = [], []
    for q in qs:
        t0 = time.perf_counter()
        hits = col.query(q, limit=k)
        times.append((time.perf_counter() - t0) * 1000)
        found.append({h.id for h in hits})
    return times, found


def recall(found: list[set[str]], true: list[set[str]]) -> float:
    return float(np.mean([len(f & t) / len(t) for f, t in zip(found, true, strict=True)]))


def phase(layout: str, points: int, n_queries: int, exact_queries: int, batch: int, latent: int, work: Path) -> None:
    from xlir_qdrant.encoders.registry import DEFAULT_MODEL, get_spec
    from xlir_qdrant.records import CollectionOptions, Point
    from xlir_qdrant.store.edge import EdgeStore

    options = CollectionOptions(quantization="none", on_disk=False) if layout == "float" else \
        CollectionOptions(quantization="int8", on_disk=True)
    qs = queries(n_queries, latent)
    true = truth(points, qs, latent)
    base_rss = rss_mb()
    store = EdgeStore(work / layout)
    col = store.collection("photos", get_spec(DEFAULT_MODEL), create=True, options=options)
    upsert_s = 0.0
    for lo in range(0, points, batch):
        hi = min(points, lo + batch)
        pts = [Point(point_id(i), v, fake_payload(i)) for i, v in zip(range(lo, hi), vectors(lo, hi, latent), strict=True)]
        t0 = time.perf_counter()
        col.upsert(pts)
        upsert_s += time.perf_counter() - t0
    col.flush()
    loaded_rss = rss_mb()
    exact_t, exact_found = timed_queries(col, qs[:exact_queries])
    t0 = time.perf_counter()
    col.optimize()
    optimize_s = time.perf_counter() - t0
    hnsw_t, hnsw_found = timed_queries(col, qs)
    built_rss, built_anon, built_file = rss_mb(), rss_mb("RssAnon"), rss_mb("RssFile")
    assert col.count() == points
    store.close()
    disk = sum(f.stat().st_size for f in (work / layout).rglob("*") if f.is_file())
    emit({
        "layout": layout, "points": points, "latent": latent, "upsert_per_s": points / upsert_s, "upsert_s": upsert_s,
        "rss_before_mb": base_rss, "rss_loaded_mb": loaded_rss, "rss_built_mb": built_rss,
        "rss_built_anon_mb": built_anon, "rss_built_file_mb": built_file,
        "disk_mb": disk / 1e6, "optimize_s": optimize_s,
        "exact_p50_ms": pct(exact_t, 50), "exact_p99_ms": pct(exact_t, 99),
        "exact_recall": recall(exact_found, true[:exact_queries]),
        "hnsw_p50_ms": pct(hnsw_t, 50), "hnsw_p99_ms": pct(hnsw_t, 99), "hnsw_recall": recall(hnsw_found, true),
    })


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--points", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=200, help="HNSW queries (and recall) per layout")
    ap.add_argument("--exact-queries", type=int, default=50, help="exact-scan queries per layout (slow at 10^6)")
    ap.add_argument("--batch", type=int, default=1000, help="points per upsert")
    ap.add_argument("--layouts", default=",".join(LAYOUTS))
    ap.add_argument("--latent", type=int, default=LATENT, help="dimensions the points vary in (0: isotropic noise)")
    ap.add_argument("--json", help="also write every figure to this file")
    ap.add_argument("--phase", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.phase:
        phase(args.phase, args.points, args.queries, args.exact_queries, args.batch, args.latent, Path(args.work))
        return

    work = Path(tempfile.mkdtemp(prefix="xlir-bench-scale-"))
    rows = {}
    try:
        for layout in args.layouts.split(","):
            rows[layout] = r = run_phase(Path(__file__), layout, [
                "--points", str(args.points), "--queries", str(args.queries), "--exact-queries",
                str(args.exact_queries), "--batch", str(args.batch), "--latent", str(args.latent), "--work", str(work)])
            shutil.rmtree(work / layout, ignore_errors=True)
            print(f"{layout:<6} {r['points']:>9} points: upsert {r['upsert_per_s']:,.0f} points/s "
                  f"({r['upsert_s']:.0f} s); RSS loaded {r['rss_loaded_mb']:,.0f} MB, built {r['rss_built_mb']:,.0f} MB, "
                  f"peak {r['peak_rss_mb']:,.0f} MB (bench itself {r['rss_before_mb']:,.0f} MB); disk "
                  f"{r['disk_mb']:,.0f} MB", flush=True)
            print(f"{'':<6} exact scan p50/p99 {r['exact_p50_ms']:.1f}/{r['exact_p99_ms']:.1f} ms (recall@10 "
                  f"{r['exact_recall']:.3f}); optimize() {r['optimize_s']:.0f} s; HNSW p50/p99 "
                  f"{r['hnsw_p50_ms']:.2f}/{r['hnsw_p99_ms']:.2f} ms, recall@10 {r['hnsw_recall']:.3f}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("\nratios (same points, same run):")
    for layout, r in rows.items():
        print(f"  {layout}: HNSW / exact p50 = {r['hnsw_p50_ms'] / r['exact_p50_ms']:.3f}")
    if {"float", "int8"} <= set(rows):
        f, q = rows["float"], rows["int8"]
        for label, key in (("upsert rate", "upsert_per_s"), ("RSS after build (less the bench's own)", None),
                           ("heap after build", "rss_built_anon_mb"), ("peak RSS", "peak_rss_mb"), ("disk", "disk_mb"), ("optimize() time", "optimize_s"),
                           ("HNSW p50", "hnsw_p50_ms"), ("HNSW p99", "hnsw_p99_ms"), ("recall@10", "hnsw_recall")):
            if key is None:
                a, b = q["rss_built_mb"] - q["rss_before_mb"], f["rss_built_mb"] - f["rss_before_mb"]
            else:
                a, b = q[key], f[key]
            print(f"  int8 / float {label}: {a:,.2f} / {b:,.2f} = {a / b:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
