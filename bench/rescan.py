"""Rescan of an unchanged library: `xlir index` over N files that are all already indexed.

Creates N small image files (creation not measured) in 100-file folders. To keep the first,
untimed index short on 2 CPU cores without any fake, the files are copies of --distinct small
photos: the real pipeline embeds each distinct content once with the bundled model and stores
every copy through its content-hash reuse path (a real point with a real payload per file).
Pass --distinct N for all-distinct files (the first index then embeds every file: ~25 img/s).

Then times a second index over the unchanged files two ways:
  library  Index.index on a freshly opened store, model already loaded (the scan/stat/compare)
  CLI      `xlir index DIR` as a new process: wall time including imports and model load
and prints PASS/FAIL lines against the 2 s target (no assertion).

    python bench/rescan.py              # 10,000 files
    python bench/rescan.py --n 2000
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import PHOTOS, median, time_cli  # noqa: E402

TARGET_S = 2.0


def make_files(root: Path, n: int, distinct: int) -> None:
    from PIL import Image

    sources = sorted(PHOTOS.glob("*.jpg"))
    blobs = []
    for k in range(distinct):
        im = Image.open(sources[k % len(sources)]).convert("RGB")
        im.thumbnail((320, 320))
        if k >= len(sources):  # more distinct files than photos: vary the pixels
            im = im.rotate(k % 360, expand=False)
            im.putpixel((k % im.width, (k // im.width) % im.height), (k % 256, 0, 0))
        import io

        buf = io.BytesIO()
        if k % 10 == 9:
            im.save(buf, "PNG")
            ext = ".png"
        else:
            im.save(buf, "JPEG", quality=85)
            ext = ".jpg"
        blobs.append((buf.getvalue(), ext))
    for i in range(n):
        data, ext = blobs[i % distinct]
        d = root / f"{2000 + i // 1000}" / f"set{(i // 100) % 10:02d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"IMG_{i:06d}{ext}").write_bytes(data)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--distinct", type=int, default=80, help="distinct image contents among the N files")
    ap.add_argument("--runs", type=int, default=3, help="timed rescans of each kind (median reported)")
    args = ap.parse_args()
    distinct = max(1, min(args.distinct, args.n))

    from xlir_qdrant import Index
    from xlir_qdrant.config import Overrides, Settings

    tmp = Path(tempfile.mkdtemp(prefix="xlir-bench-rescan-"))
    try:
        photos, home, store = tmp / "photos", tmp / "home", tmp / "store"
        t0 = time.perf_counter()
        make_files(photos, args.n, distinct)
        print(f"made {args.n} files ({distinct} distinct contents) in {time.perf_counter() - t0:.1f}s (not measured)")

        settings = Settings.load(Overrides(home=home, store=store, device="cpu"))
        with Index(settings) as idx:
            idx.encoder.warm_up()
            t0 = time.perf_counter()
            rep = idx.index([str(photos)])
            first = time.perf_counter() - t0
            print(f"first index: {rep.scanned} scanned, {rep.added} embedded, {rep.reused} reused, "
                  f"{rep.skipped} skipped in {first:.1f}s (not the measured figure)")
            encoder = idx.encoder
            if rep.added + rep.reused != args.n:
                print(f"WARNING: expected {args.n} stored, got {rep.added + rep.reused}")

        lib = []
        for _ in range(args.runs):
            # a freshly opened store each time, as a new `xlir index` would; model kept warm
            with Index(Settings.load(Overrides(home=home, store=store, device="cpu")), encoder=encoder) as idx:
                t0 = time.perf_counter()
                rep = idx.index([str(photos)])
                lib.append(time.perf_counter() - t0)
                assert_note = "" if rep.unchanged == args.n and rep.added + rep.updated + rep.reused == 0 else \
                    f"  (UNEXPECTED: {rep.to_dict()})"
        print(f"\nrescan, library Index.index (model loaded): median {median(lib):.2f}s "
              f"over {args.runs} runs {[round(x, 2) for x in lib]}; {rep.unchanged} unchanged{assert_note}")

        cli, proc = time_cli([["index", str(photos), "--store", str(store), "--device", "cpu"]] * args.runs, home)
        last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-300:]
        print(f"rescan, `xlir index` process wall time: median {median(cli):.2f}s "
              f"over {args.runs} runs {[round(x, 2) for x in cli]}")
        print(f"  CLI said: {last}")

        for name, value in (("library rescan", median(lib)), ("CLI rescan", median(cli))):
            verdict = "PASS" if value < TARGET_S else "FAIL"
            print(f"{verdict}: {name} of {args.n} unchanged files {value:.2f}s vs {TARGET_S:.0f} s target")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
