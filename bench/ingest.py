"""Ingest throughput on camera-like 12 MP photos: where does `xlir index` sit between its limits?

Makes (or takes) a folder of N 4000x3000 JPEGs (quality 95, EXIF date, ~2.6 MB; each an
upscaled, individually cropped/flipped/tinted bench photo with sensor-like noise, so every file
hashes differently and decodes like a camera's) plus a few PNGs, then measures on the SAME files in one run, each phase in its own process (so every
phase has its own peak RSS, and no phase warms the page cache or the model for another):

  decode-only   the pipeline's worker step: sha256 + decode() (JPEG draft mode) + preprocess(),
                on bounded_map with the default worker count; no model call
  encode-only   the bundled model (embed_pixels) on pre-decoded pixel tensors, batch 32, on
                the runtime xlir picks (int8 onnxruntime on CPU)
  encode-fp32   the same on the float onnxruntime export
  encode-torch  the same on torch eager, the runtime both had to beat
  naive         sequential full PIL decode (no draft mode) -> embed_images(batch of 8) ->
                upsert into a fresh EdgeStore
  xlir          Index.index on a fresh store (hashing, decode threads, batch 32, tagging, upsert,
                a durable flush of the store at least every 5 s)
  xlir-flush-at-end  the same, flushed only when the run ends: what the durability costs
  xlir-conse    the same with conse-lite0-muse, the earlier ImageNet-only default

Model load is excluded everywhere (warm_up() before the clock). The files are read once
before the phases so all phases see a warm page cache.

    python bench/ingest.py                 # N=120, ~1 min on 2 cores
    python bench/ingest.py --mix           # memory: PNG/WebP mix, bounded vs unbounded decoding
    python bench/ingest.py --n 40 --folder ~/Pictures/sample
    python bench/ingest.py --device cuda --model vit-b-32-random --n 1000   # see bench/gpu.sh

--mix measures memory instead, on a folder of large PNGs and WebPs made from real photos (24
PNGs at 12 MP, 12 WebPs at 4096x4096, 2 PNGs with alpha at 60 MP), `xlir index` on a fresh
store in each phase:

  mix-xlir            the defaults (decode threads: one per core, up to 8)
  mix-xlir-8          8 decode threads, as on an 8-core machine
  mix-unbounded-8     8 threads with the decoding budget lifted: memory then follows the
                      number of threads, the baseline the budget is measured against

With --device cuda, decode-only is the GPU path's own: workers read, hash and probe each file,
and nvjpeg decodes, orients, resizes and normalises batches of 32 on the GPU; encode-torch is
skipped (torch is the GPU runtime). ``vit-b-32-random`` is open_clip's ViT-B-32 image tower
with random weights: the same work as the trained one, without a download.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from multiprocessing import Pool
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import PHOTOS, emit, run_phase  # noqa: E402

W, H = 4000, 3000
SCRIPT = Path(__file__).resolve()


# -- data ---------------------------------------------------------------------------------

def _make_one(job: tuple[int, str, str, int]) -> str:
    import numpy as np
    from PIL import Image, ImageDraw, ImageEnhance

    i, src, out_dir, n_png = job
    rng = random.Random(i)
    im = Image.open(src).convert("RGB")
    w, h = im.size
    # a random crop of 80-100% keeps content realistic and makes every file distinct
    f = rng.uniform(0.8, 1.0)
    cw, ch = int(w * f), int(h * f)
    x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
    im = im.crop((x, y, x + cw, y + ch))
    if rng.random() < 0.5:
        im = im.transpose(Image.FLIP_LEFT_RIGHT)
    im = ImageEnhance.Brightness(im).enhance(rng.uniform(0.85, 1.15))
    if ch > cw:  # portrait sources become 3000x4000
        size = (H, W)
    else:
        size = (W, H)
    im = im.resize(size, Image.BICUBIC)
    d = ImageDraw.Draw(im)  # a little per-file detail at full resolution
    for _ in range(20):
        cx, cy = rng.randint(0, size[0]), rng.randint(0, size[1])
        d.ellipse((cx, cy, cx + rng.randint(4, 40), cy + rng.randint(4, 40)),
                  fill=tuple(rng.randint(0, 255) for _ in range(3)))
    # sensor noise: an upscaled photo is smoother than a camera's, and would decode too fast
    noise = np.random.default_rng(i).standard_normal((size[1], size[0], 3), dtype=np.float32) * 3
    im = Image.fromarray(np.clip(np.asarray(im, dtype=np.float32) + noise, 0, 255).astype(np.uint8))
    exif = Image.Exif()
    exif[0x0132] = f"2023:0{1 + i % 9}:1{i % 10} 10:{i % 60:02d}:00"
    if i < n_png:
        path = Path(out_dir) / f"IMG_{i:04d}.png"
        im.save(path, compress_level=3)
    else:
        path = Path(out_dir) / f"IMG_{i:04d}.jpg"
        im.save(path, quality=95, exif=exif, subsampling=0 if i % 7 == 0 else 2)
    return str(path)


def _reuse(folder: Path, pattern: str, suffixes: tuple[str, ...], want: int) -> list[str] | None:
    """The files a previous run made in ``folder``, if there are ``want`` of them; else an empty
    folder to make them in (None)."""
    existing = sorted(p for p in folder.glob(pattern) if p.suffix in suffixes)
    if len(existing) == want:
        print(f"reusing {want} files in {folder}")
        return [str(p) for p in existing]
    folder.mkdir(parents=True, exist_ok=True)
    for p in existing:
        p.unlink()
    return None


def make_folder(folder: Path, n: int) -> list[str]:
    n_png = max(1, n // 40)
    if (kept := _reuse(folder, "IMG_*", (".jpg", ".png"), n)) is not None:
        return kept
    sources = sorted(PHOTOS.glob("*.jpg"))
    if not sources:
        raise SystemExit(f"no photos in {PHOTOS}: run bench/photos/fetch.py first")
    t0 = time.perf_counter()
    jobs = [(i, str(sources[i % len(sources)]), str(folder), n_png) for i in range(n)]
    with Pool(os.cpu_count() or 2) as pool:
        paths = pool.map(_make_one, jobs, chunksize=2)
    print(f"made {n} files ({n - n_png} JPEG, {n_png} PNG, 12 MP) in {folder} "
          f"in {time.perf_counter() - t0:.0f}s (not measured)")
    return sorted(paths)


MIX = (("png", 24, (4000, 3000)), ("webp", 12, (4096, 4096)), ("alpha", 2, (8944, 6708)))


def _mix_sources() -> list[str]:
    """Real photos: bench/photos when fetched, else the ones scikit-image ships."""
    found = sorted(str(p) for p in PHOTOS.glob("*.jpg"))
    if found:
        return found
    import skimage.data

    folder = Path(skimage.data.__file__).parent
    return [str(folder / n) for n in ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg",
                                      "motorcycle_left.png", "hubble_deep_field.jpg", "retina.jpg")]


def _make_mix_one(job: tuple[int, str, str, str, tuple[int, int]]) -> str:
    import numpy as np
    from PIL import Image

    i, src, out_dir, kind, size = job
    im = Image.open(src).convert("RGB").resize(size, Image.BICUBIC)
    noise = np.random.default_rng(i).standard_normal((size[1], size[0], 3), dtype=np.float32) * 3
    im = Image.fromarray(np.clip(np.asarray(im, dtype=np.float32) + noise, 0, 255).astype(np.uint8))
    if kind == "webp":
        path = Path(out_dir) / f"MIX_{i:04d}.webp"
        im.save(path, quality=85)
    else:
        if kind == "alpha":  # a soft vignette in the alpha channel
            im.putalpha(Image.radial_gradient("L").resize(size).point(lambda v: 255 - v))
        path = Path(out_dir) / f"MIX_{i:04d}.png"
        im.save(path, compress_level=1)
    return str(path)


def make_mix(folder: Path) -> list[str]:
    want = sum(n for _, n, _ in MIX)
    if (kept := _reuse(folder, "MIX_*", (".png", ".webp"), want)) is not None:
        return kept
    sources = _mix_sources()
    jobs, i = [], 0
    for kind, n, size in MIX:
        for _ in range(n):
            jobs.append((i, sources[i % len(sources)], str(folder), kind, size))
            i += 1
    t0 = time.perf_counter()
    with Pool(os.cpu_count() or 2) as pool:
        paths = pool.map(_make_mix_one, jobs, chunksize=1)
    print(f"made {want} files ({', '.join(f'{n} {k}' for k, n, _ in MIX)}) in {folder} "
          f"in {time.perf_counter() - t0:.0f}s (not measured)")
    return sorted(paths)


def files_of(folder: Path) -> list[str]:
    exts = {".jpg", ".jpeg", ".png", ".webp"}
    return sorted(str(p) for p in folder.rglob("*") if p.suffix.lower() in exts)


# -- phases (each runs in a fresh process) --------------------------------------------------

def bench_spec(model: str):
    """A registry model, or open_clip's ViT-B-32 with random weights (GPU runs: no download)."""
    from xlir_qdrant.encoders.registry import get_spec
    from xlir_qdrant.records import ModelSpec

    if model == "vit-b-32-random":
        return ModelSpec(id="vit-b-32-random", family="openclip", dim=512, languages=("en",), licence="MIT",
                         size_mb=0, bundled=False, needs_lang=False,
                         description="open_clip ViT-B-32, random weights (benchmarks only)",
                         options={"arch": "ViT-B-32", "pretrained": ""})
    return get_spec(model)


def _encoder(model: str, device: str, runtime: str = "auto"):
    from xlir_qdrant.encoders.bundled import ImageNetTower
    from xlir_qdrant.encoders.registry import load_encoder

    enc = load_encoder(bench_spec(model), device=device)
    if runtime != "auto":
        enc._tower = ImageNetTower(enc.params.variant, device, runtime=runtime)
    enc.warm_up()
    return enc


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def phase_decode(files: list[str], model: str, device: str) -> dict:
    from xlir_qdrant.images import device as on_device
    from xlir_qdrant.images.batches import BatchEmbedder
    from xlir_qdrant.images.workers import bounded_map
    from xlir_qdrant.ingest import IngestOptions

    enc = _encoder(model, device)
    opts = IngestOptions()
    side = enc.image_side()
    # the batch loop's own worker step: hash + decode (draft mode) + preprocess; on a GPU, read
    # once, hash and probe, the pixels coming from nvjpeg below
    embedder = BatchEmbedder(side, batch_size=opts.batch_size, hash_files=True)
    gpu = str(enc.device).startswith("cuda")
    spec = side.pixel_spec

    def prepare(path: str):
        return embedder.read(path).pixels

    t0 = time.perf_counter()
    n, batch = 0, []

    def finish() -> None:
        raws = [b for b in batch if isinstance(b, on_device.RawJpeg)]
        images = [im for im in on_device.decode_jpegs(raws, str(enc.device)) if im is not None]
        if images:
            on_device.to_pixels(images, spec, str(enc.device))
        batch.clear()

    for _, res in bounded_map(prepare, files, embedder.workers, lookahead=embedder.lookahead):
        if isinstance(res, BaseException):
            raise res
        n += 1
        if gpu:
            batch.append(res)
            if len(batch) >= opts.batch_size:
                finish()
    if gpu:
        finish()
        _sync(str(enc.device))
    s = time.perf_counter() - t0
    return {"images": n, "seconds": s, "rate": n / s, "workers": embedder.workers}


def phase_encode(files: list[str], model: str, device: str, runtime: str = "auto") -> dict:
    import numpy as np

    from xlir_qdrant.images.decode import decode
    from xlir_qdrant.images.workers import bounded_map

    enc = _encoder(model, device, runtime)
    min_side = enc.image_side().min_side

    def prep(p: str):
        return np.asarray(enc.preprocess(decode(p, min_side=min_side).image))

    pixels = np.stack([px for _, px in bounded_map(prep, files, os.cpu_count() or 2, lookahead=64)])
    if str(enc.device).startswith("cuda"):  # pre-decoded tensors already on the GPU
        import torch

        pixels = torch.from_numpy(pixels).to(enc.device)
    enc.embed_pixels(pixels[:2])  # first-call allocations, outside the clock
    _sync(str(enc.device))
    t0 = time.perf_counter()
    for i in range(0, len(pixels), 32):
        enc.embed_pixels(pixels[i : i + 32])
    _sync(str(enc.device))
    s = time.perf_counter() - t0
    runtime = enc.tower.runtime if enc.spec.family in ("conse", "sight") else f"torch {enc.precision}"
    return {"images": len(pixels), "seconds": s, "rate": len(pixels) / s, "runtime": runtime}


def phase_naive(files: list[str], model: str, device: str) -> dict:
    import uuid

    from PIL import Image

    from xlir_qdrant.records import Point
    from xlir_qdrant.store.edge import EdgeStore

    enc = _encoder(model, device)
    files = files[: int(os.environ.get("XLIR_BENCH_NAIVE_N", 0)) or None]  # a rate: a subset will do
    with tempfile.TemporaryDirectory() as tmp:
        store = EdgeStore(Path(tmp) / "store")
        collection = store.collection("photos", enc.spec, create=True)
        t0 = time.perf_counter()
        for i in range(0, len(files), 8):
            chunk = files[i : i + 8]
            images, sizes = [], []
            for p in chunk:
                with Image.open(p) as im:
                    rgb = im.convert("RGB")  # full 12 MP decode
                images.append(rgb)
                sizes.append(rgb.size)
            vecs = enc.embed_images(images)
            collection.upsert([Point(str(uuid.uuid5(uuid.NAMESPACE_URL, p)), v,
                                {"path": p, "width": w, "height": h})
                          for p, v, (w, h) in zip(chunk, vecs, sizes, strict=True)])
        s = time.perf_counter() - t0
        count = collection.count()
        store.close()
    return {"images": count, "seconds": s, "rate": count / s}


def phase_xlir(folder: Path, model: str, device: str, flush_every: float | None = None,
               workers: int | None = None, unbounded: bool = False) -> dict:
    import functools

    import xlir_qdrant.index
    import xlir_qdrant.ingest.run
    from xlir_qdrant import Index
    from xlir_qdrant.config import Overrides, Settings
    from xlir_qdrant.images.batches import BatchEmbedder
    from xlir_qdrant.ingest import IngestOptions

    if flush_every is not None:  # the baseline of the durability cost: flushed only at the end
        xlir_qdrant.index.IngestOptions = functools.partial(IngestOptions, flush_every=flush_every)
    if unbounded:  # the baseline of the decoding budget: every thread decodes at once
        xlir_qdrant.ingest.run.BatchEmbedder = functools.partial(BatchEmbedder, decode_bytes=2**62)
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings.load(Overrides(home=tmp, store=Path(tmp) / "store", device=device, workers=workers))
        with Index(settings, encoder=_encoder(model, device)) as idx:
            idx.tagger().english  # the tag matrix (computed once per model, then cached)
            t0 = time.perf_counter()
            report = idx.index([str(folder)])
            s = time.perf_counter() - t0
            n = report.added + report.updated
    return {"images": n, "seconds": s, "rate": n / s, "report_seconds": report.seconds,
            "skipped": report.skipped, "workers": settings.workers or "default"}


# -- driver -------------------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=120)
    ap.add_argument("--folder", type=Path, help="use these images instead of generated ones")
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    ap.add_argument("--model", default="default", help="a model id; vit-b-32-random for GPU runs")
    ap.add_argument("--naive-n", type=int, default=0, help="time the naive baseline on the first N files only")
    ap.add_argument("--mix", action="store_true", help="memory on a PNG/WebP mix instead (see above)")
    ap.add_argument("--phase", choices=["decode", "encode", "encode-fp32", "encode-torch", "naive", "xlir",
                                        "xlir-flush-at-end", "xlir-conse", "mix-xlir", "mix-xlir-8",
                                        "mix-unbounded-8"], help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.phase and args.phase.startswith("mix-"):
        emit(phase_xlir(args.folder, args.model, args.device, workers=8 if args.phase.endswith("-8") else None,
                        unbounded="unbounded" in args.phase))
        return
    if args.mix:
        mix_main(args)
        return
    if args.phase:
        folder = args.folder
        files = files_of(folder)
        fn = {"decode": phase_decode, "encode": phase_encode, "naive": phase_naive,
              "encode-torch": lambda f, m, d: phase_encode(f, m, d, "torch"),
              "encode-fp32": lambda f, m, d: phase_encode(f, m, d, "onnxruntime-fp32")}.get(args.phase)
        if args.phase == "xlir-flush-at-end":
            emit(phase_xlir(folder, args.model, args.device, flush_every=float("inf")))
            return
        if args.phase == "xlir-conse":  # the default before the detector joined it
            emit(phase_xlir(folder, "conse-lite0-muse", args.device))
            return
        emit(fn(files, args.model, args.device) if fn else phase_xlir(folder, args.model, args.device))
        return

    if args.folder:
        folder = args.folder.expanduser().resolve()
        files = files_of(folder)
        print(f"using {len(files)} images in {folder}")
    else:
        folder = Path(tempfile.gettempdir()) / f"xlir-bench-ingest-v2-{args.n}"
        files = make_folder(folder, args.n)
    total_mb = sum(os.path.getsize(f) for f in files) / 1e6
    for f in files:  # warm the page cache for every phase alike
        Path(f).read_bytes()
    print(f"{len(files)} files, {total_mb:.0f} MB ({total_mb / len(files):.1f} MB/file), "
          f"{os.cpu_count()} CPU cores; model load excluded from every phase\n")

    results = {}
    phases = ["decode", "encode", "encode-fp32", "encode-torch", "naive", "xlir", "xlir-flush-at-end", "xlir-conse"]
    bundled = ("default", "sight-lite0-ssd-muse", "conse-lite0-muse", "conse-lite2-muse")
    if args.device != "cpu" or args.model not in bundled:
        phases = [p for p in phases if p not in ("encode-fp32", "encode-torch", "xlir-conse")]  # CPU, bundled only
    for phase in phases:
        t0 = time.perf_counter()
        results[phase] = r = run_phase(SCRIPT, phase, ["--folder", str(folder), "--device", args.device,
                                                       "--model", args.model],
                                       env={"XLIR_BENCH_NAIVE_N": str(args.naive_n)})
        extra = f", workers {r['workers']}" if "workers" in r else ""
        extra += f", {r['runtime']}" if "runtime" in r else ""
        print(f"{phase:<12} {r['rate']:6.1f} images/s  ({r['images']} in {r['seconds']:.1f}s{extra})  "
              f"peak RSS {r['peak_rss_mb']:.0f} MB   [process {time.perf_counter() - t0:.0f}s]", flush=True)

    limit = min(results["decode"]["rate"], results["encode"]["rate"])
    e2e = results["xlir"]["rate"]
    print()
    print(f"end-to-end / min(decode-only, encode-only) = {e2e:.1f} / {limit:.1f} = {e2e / limit:.2f}")
    for other in ("encode-fp32", "encode-torch"):
        if other in results:
            print(f"encode-only / {other:<29}= {results['encode']['rate']:.1f} / {results[other]['rate']:.1f} "
                  f"= {results['encode']['rate'] / results[other]['rate']:.2f}x")
    print(f"end-to-end / naive                         = {e2e:.1f} / {results['naive']['rate']:.1f} "
          f"= {e2e / results['naive']['rate']:.2f}x")
    if "xlir-conse" in results:
        old = results["xlir-conse"]["rate"]
        print(f"end-to-end / the same with conse-lite0-muse = {e2e:.1f} / {old:.1f} = {e2e / old:.2f} "
              f"(what seeing people and objects costs)")
    late = results["xlir-flush-at-end"]["rate"]
    print(f"flushed every 5 s / flushed only at the end = {e2e:.1f} / {late:.1f} = {e2e / late:.2f} "
          f"(the cost of the durability guarantee)")
    # Both stages share the same 2 cores, so a pipeline cannot beat 1/(1/d + 1/e) unless one
    # side waits on I/O; that serial bound is the honest ceiling on a CPU-only box.
    d, e = results["decode"]["rate"], results["encode"]["rate"]
    serial = 1 / (1 / d + 1 / e)
    print(f"end-to-end / serial bound 1/(1/d+1/e)      = {e2e:.1f} / {serial:.1f} = {e2e / serial:.2f}")


def mix_main(args: argparse.Namespace) -> None:
    folder = args.folder.expanduser().resolve() if args.folder else Path(tempfile.gettempdir()) / "xlir-bench-mix-v1"
    files = make_mix(folder) if not args.folder else files_of(folder)
    for f in files:  # warm the page cache for every phase alike
        Path(f).read_bytes()
    mp = 0.0
    from PIL import Image

    for f in files:
        with Image.open(f) as im:
            mp += im.width * im.height / 1e6
    print(f"{len(files)} files, {mp:.0f} MP in all, {os.cpu_count()} CPU cores; each phase a fresh process\n")
    results = {}
    for phase in ("mix-xlir", "mix-xlir-8", "mix-unbounded-8"):
        results[phase] = r = run_phase(SCRIPT, phase, ["--folder", str(folder), "--device", args.device,
                                                       "--model", args.model])
        print(f"{phase:<16} {r['rate']:5.2f} images/s  ({r['images']} in {r['seconds']:.1f}s, workers "
              f"{r['workers']})  peak RSS {r['peak_rss_mb']:.0f} MB", flush=True)
    base, bounded, own = results["mix-unbounded-8"], results["mix-xlir-8"], results["mix-xlir"]
    print()
    print(f"peak RSS, 8 threads, budget / no budget = {bounded['peak_rss_mb']:.0f} / {base['peak_rss_mb']:.0f} MB "
          f"= {bounded['peak_rss_mb'] / base['peak_rss_mb']:.2f}")
    print(f"rate, 8 threads, budget / no budget     = {bounded['rate']:.2f} / {base['rate']:.2f} "
          f"= {bounded['rate'] / base['rate']:.2f}")
    print(f"peak RSS, default threads / 8 threads    = {own['peak_rss_mb']:.0f} / {bounded['peak_rss_mb']:.0f} MB "
          f"= {own['peak_rss_mb'] / bounded['peak_rss_mb']:.2f}")


if __name__ == "__main__":
    main()
