"""Text in photos: read at index time when asked (--read-text), stored and full-text indexed, and
a query with the words of a sign ranks its photo first."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from xlir_qdrant.config import Overrides, Settings
from xlir_qdrant.images.ocr import TextReader
from xlir_qdrant.index import Index


def _sign(path: Path, *lines: str) -> Path:
    image = Image.new("RGB", (900, 120 + 110 * len(lines)), (250, 246, 235))
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(lines):
        draw.text((50, 60 + 110 * i), line, fill=(20, 20, 60), font=ImageFont.load_default(size=72))
    image.save(path)
    return path


def test_the_reader_reads_a_sign_and_nothing_in_a_plain_picture(tmp_path: Path) -> None:
    reader = TextReader()
    image = Image.open(_sign(tmp_path / "sign.png", "ROUTE 66 DINER", "open daily"))
    assert reader.read(image).split("\n") == ["ROUTE 66 DINER", "open daily"]
    assert reader.read(Image.new("RGB", (400, 300), (90, 140, 200))) == ""


def test_read_text_is_stored_indexed_and_ranks_the_sign_first(colour_photos: Path, tmp_path: Path) -> None:
    _sign(colour_photos / "diner.png", "ROUTE 66 DINER", "open daily")
    with Index(Settings.load(Overrides(store=tmp_path / "store", model="fake-colour"))) as idx:
        idx.index([colour_photos])  # without --read-text: nothing read, nothing stored
        assert all("text" not in p.payload for p in idx.collection.scroll())
        assert idx.search("route 66 diner", top_k=3).hits[0].text is None

        report = idx.index([colour_photos], read_text=True)  # the photos stored without it are read now
        assert report.updated == report.scanned and report.added == 0
        texts = {Path(p.payload["path"]).name: p.payload["text"] for p in idx.collection.scroll()}
        assert texts["diner.png"] == "ROUTE 66 DINER\nopen daily"
        assert all(t == "" for name, t in texts.items() if name != "diner.png")

        again = idx.index([colour_photos], read_text=True)
        assert again.unchanged == again.scanned  # read once
        for query in ("Route 66", "diner daily"):  # every word, any case, any order
            hits = idx.search(query, top_k=3).hits
            assert Path(hits[0].path).name == "diner.png" and "DINER" in (hits[0].text or ""), query
        hits = idx.search("route 67", top_k=3).hits  # a word that is not there: vector order only
        assert all(h.text is None or "67" not in h.text for h in hits)
