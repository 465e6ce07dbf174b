"""`xlir serve` under use: API search latency at 10k images, thumbnails, and a load run.

Everything runs against a real `xlir serve` (uvicorn) in its own process on 127.0.0.1, with
the bundled model; the clients are threads of this process (httpx, keep-alive connections).

1. The store: 40 camera-like 12 MP JPEGs (made from scikit-image's photos, as bench/ingest.py
   makes them) indexed for real, plus synthetic points (random unit vectors, xlir-shaped
   payloads) up to --points in all.
2. Warm search: --queries text queries in 8 languages, one at a time, p50 / p99; the baseline
   is Index.search in this process on the same store (the library without HTTP).
3. Thumbnails (256 px): p50 of the first request for each photo (made: decode in draft mode,
   orient, resize, encode, cache) and of --thumbs requests once cached.
4. Load: --clients threads search without pause while an index job (POST /api/index) embeds a
   new folder of --job-photos 12 MP photos; requests, errors, latency during the job, and the
   job's rate against the same job on an idle server (a second, equal folder, indexed first).
   Bounded: the load stops when the job ends, or after --load-limit seconds.

Prints figures and ratios; asserts nothing.

    python bench/serve.py                       # ~3 min on 2 cores, the first run +1 min making photos
    python bench/serve.py --points 100000 --clients 50
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from multiprocessing import Pool
from pathlib import Path

# The in-process baseline runs as `xlir serve` does (cli/launch.py): one BLAS thread per call.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import httpx  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import fake_payload, pct  # noqa: E402
from ingest import _make_one  # noqa: E402  (the camera-like 12 MP photos of bench/ingest.py)

QUERIES = ["perro en la playa", "a cup of coffee", "Katze auf dem Sofa", "夕焼けの山", "red car in the snow",
           "дети играют в парке", "un gâteau d'anniversaire", "old castle ruins", "gato", "una motocicleta roja",
           "바다 위의 배", "火箭发射", "a bowl of soup", "eine alte Kirche", "kot śpi na oknie", "bir fincan çay"]
SOURCES = ["chelsea.png", "coffee.png", "rocket.jpg", "astronaut.png", "motorcycle_left.png", "motorcycle_right.png"]


def make_photos(folder: Path, n: int, first: int) -> list[Path]:
    """n camera-like 12 MP JPEGs in ``folder`` (kept between runs: made once, ~1 s each)."""
    existing = sorted(folder.glob("IMG_*.jpg"))
    if len(existing) == n:
        return existing
    import skimage.data

    folder.mkdir(parents=True, exist_ok=True)
    for p in existing:
        p.unlink()
    skimage = Path(skimage.data.__file__).parent
    jobs = [(first + i, str(skimage / SOURCES[i % len(SOURCES)]), str(folder), 0) for i in range(n)]
    t0 = time.perf_counter()
    with Pool(os.cpu_count() or 2) as pool:
        pool.map(_make_one, jobs, chunksize=2)
    print(f"made {n} photos in {folder} in {time.perf_counter() - t0:.0f} s (not measured)", flush=True)
    return sorted(folder.glob("IMG_*.jpg"))


def build_store(work: Path, points: int) -> Path:
    from xlir_qdrant.config import Overrides, Settings
    from xlir_qdrant.index import Index
    from xlir_qdrant.records import Point

    store = work / "store"
    shutil.rmtree(store, ignore_errors=True)
    with Index(Settings.load(Overrides(store=store))) as idx:
        report = idx.index([work / "photos"])
        rng = np.random.default_rng(0)
        synthetic = max(0, points - report.added)
        for lo in range(0, synthetic, 1000):
            n = min(1000, synthetic - lo)
            vectors = rng.standard_normal((n, idx.model_spec().dim)).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            idx.collection.upsert([
                Point(str(uuid.uuid5(uuid.NAMESPACE_URL, f"bench-{lo + k}")), vectors[k],
                      fake_payload(lo + k, root=str(work / "synthetic"))) for k in range(n)])
        print(f"store: {report.added} photos indexed + {synthetic} synthetic points = {idx.count()}", flush=True)
    return store


def library_search(store: Path, n: int) -> list[float]:
    """Index.search in this process, warm: the baseline the API adds HTTP to."""
    from xlir_qdrant.config import Overrides, Settings
    from xlir_qdrant.index import Index

    with Index(Settings.load(Overrides(store=store))) as idx:
        for q in QUERIES:
            idx.search(q, top_k=24)
        times = []
        for i in range(n):
            t0 = time.perf_counter()
            idx.search(QUERIES[i % len(QUERIES)], top_k=24)
            times.append((time.perf_counter() - t0) * 1000)
    return times


class Server:
    """`xlir serve` in its own process."""

    def __init__(self, store: Path) -> None:
        xlir = shutil.which("xlir") or str(Path(sys.executable).with_name("xlir"))
        self.proc = subprocess.Popen([xlir, "serve", "--store", str(store), "--port", "0"], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("serving on "):
            raise SystemExit(f"xlir serve did not start: {line}{self.proc.stderr.read() if self.proc.stderr else ''}")
        self.url = line.split()[2].rstrip("/")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        self.proc.communicate(timeout=120)


def timed_gets(client: httpx.Client, urls: list[str]) -> list[float]:
    times = []
    for url in urls:
        t0 = time.perf_counter()
        response = client.get(url)
        times.append((time.perf_counter() - t0) * 1000)
        response.raise_for_status()
    return times


def run_job(client: httpx.Client, folder: Path, limit: float) -> dict:
    job = client.post("/api/index", json={"paths": [str(folder)]}).json()
    end = time.monotonic() + limit
    while time.monotonic() < end:
        status = client.get(f"/api/jobs/{job['id']}").json()
        if status["state"] != "running":
            return status
        time.sleep(0.2)
    client.delete(f"/api/jobs/{job['id']}")
    return client.get(f"/api/jobs/{job['id']}").json()


def load_run(url: str, folder: Path, clients: int, limit: float) -> dict:
    stop = threading.Event()
    lock = threading.Lock()
    latencies: list[float] = []
    errors: list[str] = []

    def client_loop(k: int) -> None:
        with httpx.Client(base_url=url, timeout=60) as http:
            i = k
            while not stop.is_set():
                i += clients
                t0 = time.perf_counter()
                try:
                    response = http.get("/api/search", params={"q": QUERIES[i % len(QUERIES)], "top_k": 24})
                    ok = response.status_code == 200
                    why = f"HTTP {response.status_code}: {response.text[:120]}"
                except httpx.HTTPError as exc:
                    ok, why = False, f"{type(exc).__name__}: {exc}"
                elapsed = (time.perf_counter() - t0) * 1000
                with lock:
                    (latencies.append(elapsed) if ok else errors.append(why))

    threads = [threading.Thread(target=client_loop, args=(k,), daemon=True) for k in range(clients)]
    for t in threads:
        t.start()
    t0 = time.perf_counter()
    with httpx.Client(base_url=url, timeout=60) as http:
        job = run_job(http, folder, limit)
    seconds = time.perf_counter() - t0
    stop.set()
    for t in threads:
        t.join()
    return {"job": job, "seconds": seconds, "latencies": latencies, "errors": errors}


def rate(job: dict) -> float:
    report = job.get("report") or {}
    return (report.get("added", 0) + report.get("updated", 0)) / max(report.get("seconds", 0.0), 1e-9)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--points", type=int, default=10_000)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--thumbs", type=int, default=300)
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--job-photos", type=int, default=80)
    ap.add_argument("--load-limit", type=float, default=180.0)
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "xlir-bench-serve",
                    help="photos are kept here between runs; the store is made again each run")
    args = ap.parse_args()

    work = args.work
    # One data dir for this process and the server: the same model cache (the bundled model's
    # prepared network), and a thumbnail cache that starts empty.
    home = Path(os.environ.setdefault("XLIR_HOME", str(work / "home")))
    photos = make_photos(work / "photos", 40, first=0)
    alone_folder = make_photos(work / "job-alone", args.job_photos, first=1000)[0].parent
    loaded_folder = make_photos(work / "job-loaded", args.job_photos, first=2000)[0].parent
    shutil.rmtree(home / "thumbs", ignore_errors=True)
    store = build_store(work, args.points)
    library = library_search(store, args.queries)

    server = Server(store)
    try:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            urls = [f"/api/search?q={QUERIES[i % len(QUERIES)]}&top_k=24" for i in range(args.queries)]
            timed_gets(http, urls[:20])  # warm: connection, model, caches
            api = timed_gets(http, urls)
            hits = http.get("/api/search", params={"q": "gato", "top_k": 200, "in": str(photos[0].parent)}).json()
            ids = [h["id"] for h in hits["hits"]]
            cold = timed_gets(http, [f"/api/thumb/{i}?size=256" for i in ids])
            cached = timed_gets(http, [f"/api/thumb/{ids[k % len(ids)]}?size=256" for k in range(args.thumbs)])
            alone = run_job(http, alone_folder, args.load_limit)
        load = load_run(server.url, loaded_folder, args.clients, args.load_limit)
    finally:
        server.stop()

    print()
    print(f"API search, warm, {args.points} images, top 24: p50 {pct(api, 50):.1f} ms, p99 {pct(api, 99):.1f} ms "
          f"(target p50 <= 20 ms)")
    print(f"  Index.search in-process (baseline): p50 {pct(library, 50):.1f} ms, p99 {pct(library, 99):.1f} ms; "
          f"API / library p50 = {pct(api, 50) / pct(library, 50):.2f}")
    print(f"thumbnail 256 px of a 12 MP JPEG: first request p50 {pct(cold, 50):.1f} ms ({len(cold)} photos), "
          f"cached p50 {pct(cached, 50):.2f} ms, p99 {pct(cached, 99):.2f} ms; first / cached = "
          f"{pct(cold, 50) / pct(cached, 50):.0f}x")
    lat, errors, job = load["latencies"], load["errors"], load["job"]
    print(f"load: {args.clients} clients searching while an index job embedded {args.job_photos} 12 MP photos "
          f"({job['state']} after {load['seconds']:.1f} s):")
    print(f"  {len(lat) + len(errors)} searches, {len(errors)} errors, {len(lat) / load['seconds']:.1f} searches/s, "
          f"p50 {pct(lat, 50):.0f} ms, p99 {pct(lat, 99):.0f} ms")
    print(f"  the job: {rate(job):.1f} images/s under load, {rate(alone):.1f} alone "
          f"(under load / alone = {rate(job) / max(rate(alone), 1e-9):.2f})")
    for why in sorted(set(errors))[:5]:
        print(f"  error: {why}")


if __name__ == "__main__":
    main()
