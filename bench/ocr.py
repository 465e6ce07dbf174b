"""What reading the text in photos (`xlir index --read-text`) costs and finds, on real photos.

    python bench/photos/fetch.py
    python bench/ocr.py

For every photo of bench/photos: the time to read its text, against the time to embed it with
the default model (both measured here, one photo at a time, one thread: the ratio is what the
flag adds to an index run); whether text was found, for the photos of the "text" category
(signs, pages, screenshots) and for the others; and, for the text photos, whether a query made
of two words read in the photo ranks it first among all photos once the text is searchable.
"""

from __future__ import annotations

import argparse
import statistics
import time
import tomllib
from pathlib import Path

import numpy as np

from xlir_qdrant.encoders.registry import DEFAULT_MODEL, load_encoder
from xlir_qdrant.images.decode import decode
from xlir_qdrant.images.ocr import OCR_SIDE, TextReader

HERE = Path(__file__).parent / "photos"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=Path, default=HERE / "cache")
    args = ap.parse_args()
    category = {p["id"]: p.get("category", "") for p in tomllib.loads((HERE / "sources.toml").read_text())["photo"]}
    files = sorted(p for p in args.photos.iterdir() if p.stem in category)
    reader, encoder = TextReader(), load_encoder(DEFAULT_MODEL, device="cpu")
    encoder.warm_up()
    reader.read(decode(str(files[0]), min_side=OCR_SIDE).image)  # engines loaded before timing
    read_s, embed_s, texts = [], [], {}
    for path in files:
        image = decode(str(path), min_side=OCR_SIDE).image
        t = time.perf_counter()
        texts[path.stem] = reader.read(image)
        read_s.append(time.perf_counter() - t)
        t = time.perf_counter()
        encoder.embed_images([image])
        embed_s.append(time.perf_counter() - t)
    text_ids = [i for i in texts if category[i] == "text"]
    others = [i for i in texts if category[i] != "text"]
    print(f"{len(files)} photos; read {statistics.median(read_s):.2f} s median, {np.mean(read_s):.2f} s mean a photo; "
          f"embed {statistics.median(embed_s):.3f} s median: reading costs {np.mean(read_s) / np.mean(embed_s):.0f}x "
          f"the embedding")
    print(f"text found in {sum(bool(texts[i]) for i in text_ids)} of {len(text_ids)} text photos, "
          f"and in {sum(bool(texts[i]) for i in others)} of {len(others)} others")
    # two read words as the query: found by the text index (every word present) vs by the vector
    vectors = np.concatenate([encoder.embed_images([decode(str(p), min_side=300).image]) for p in files])
    ids = [p.stem for p in files]
    by_vector = by_text = asked = 0
    for pid in text_ids:
        words = [w for w in texts[pid].split() if len(w) > 3 and w.isalpha()][:2]
        if len(words) < 2:
            continue
        asked += 1
        query = " ".join(words)
        sims = vectors @ encoder.embed_texts([query])[0]
        by_vector += ids[int(np.argmax(sims))] == pid
        holders = [i for i in ids if all(w.lower() in texts[i].lower() for w in words)]
        by_text += bool(holders) and max(holders, key=lambda i: sims[ids.index(i)]) == pid
    print(f"queries of two words read in a text photo ({asked}): ranked first by the vector alone {by_vector}, "
          f"with the text searchable {by_text}")
    for pid in text_ids:
        print(f"  {pid}: {texts[pid][:70]!r}")


if __name__ == "__main__":
    main()
