"""Evaluation: recall by hand, the XTD10 files as they really are (CRLF, no final newline, BOM),
the fetchers against a mock server, evaluation runs, and `xlir train` / `xlir eval` end to end."""

from __future__ import annotations

import io
import json
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import save
from PIL import Image, ImageDraw

from xlir_qdrant.eval.recall import query_ranks, recall_at, retrieval_recall, text_to_image_ranks
from xlir_qdrant.eval.run import PAPER_AVG_LANGS, average_row, evaluate, reference_rows
from xlir_qdrant.eval.xtd10 import (
    DatasetError, coco_url, fetch_captions, load_tsv, load_xtd10, read_lines,
)

# ---------------------------------------------------------------- recall, by hand


def test_recall_matches_hand_computed_ranks() -> None:
    # 4 captions x 3 images; captions 0, 1 describe image 0, caption 2 image 1, caption 3 image 2.
    sim = np.array([
        [0.9, 0.1, 0.2],   # c0 -> image 0 first: rank 0
        [0.3, 0.5, 0.4],   # c1 -> image 0 behind 1 and 2: rank 2
        [0.7, 0.6, 0.1],   # c2 -> image 1 behind image 0: rank 1
        [0.2, 0.2, 0.2],   # c3 -> a three-way tie counts against the model: rank 2
    ])
    owners = np.array([0, 0, 1, 2])
    assert text_to_image_ranks(sim, owners).tolist() == [0, 2, 1, 2]
    # image 0: best caption c0 (0.9), nobody else >= 0.9 -> 0
    # image 1: its caption c2 scores 0.6; c1 (0.5) and c3 (0.2) are below -> 0
    # image 2: its caption c3 scores 0.2; c1 (0.4) and c0 (0.2, a tie) are at or above -> 2
    assert _image_to_text_ranks(sim, owners).tolist() == [0, 0, 2]
    assert recall_at([0, 2, 1, 2], ks=(1, 2, 3)) == {1: 25.0, 2: 50.0, 3: 100.0}


def test_recall_from_embeddings_agrees_with_the_similarity_matrix() -> None:
    rng = np.random.default_rng(0)
    text, image = rng.normal(size=(50, 8)).astype(np.float32), rng.normal(size=(20, 8)).astype(np.float32)
    owners = rng.integers(0, 20, 50)
    owners[:20] = np.arange(20)  # every image has a caption
    got = retrieval_recall(text, image, owners)
    sim = text @ image.T
    assert got["t2i_r5"] == recall_at(text_to_image_ranks(sim, owners))[5]
    assert got["i2t_r1"] == recall_at(_image_to_text_ranks(sim, owners))[1]


def _image_to_text_ranks(sim: np.ndarray, owners: np.ndarray) -> np.ndarray:
    """Image queries over captions: an image matches all of its captions, the best one counts."""
    images = np.unique(owners)
    return query_ranks(sim.T[images], images[:, None] == owners[None, :])


# ---------------------------------------------------------------- XTD10 files and fetchers


NAMES = ["COCO_train2014_000000000011.jpg", "COCO_val2014_000000000022.jpg", "COCO_train2014_000000000033.jpg"]
COLOURS = [(220, 20, 20), (20, 200, 20), (20, 20, 220)]
CAPTIONS = {"en": ["a red square", "a green square", "a blue square"],
            "de": ["ein rotes Quadrat", "ein grünes Quadrat", "ein blaues Quadrat"],
            "ja": ["赤い四角", "緑の四角", "青い四角"],
            "es": ["un cuadrado rojo", "un cuadrado verde", "un cuadrado azul"]}


def as_published(lines: list[str], *, bom: bool = False) -> bytes:
    """How the repository serves them: CRLF between lines and no newline at the end."""
    return (b"\xef\xbb\xbf" if bom else b"") + "\r\n".join(lines).encode("utf-8")


def test_read_lines_handles_crlf_missing_final_newline_and_bom() -> None:
    raw = as_published(["first caption", "zweite Zeile", "第三"], bom=True)
    assert raw.endswith("第三".encode()) and b"\r\n" in raw
    assert read_lines(raw) == ["first caption", "zweite Zeile", "第三"]
    assert read_lines(b"a\nb\n") == ["a", "b"] and read_lines(b"a\rb") == ["a", "b"] and read_lines(b"") == []
    # A line separator inside a caption must not shift later lines onto other images.
    assert read_lines("one\u2028still one\r\ntwo".encode()) == ["one\u2028still one", "two"]


def _jpeg(colour: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), colour).save(buf, "JPEG")
    return buf.getvalue()


class MockServer:
    """GitHub raw files laid out as in the repository (en/de in MIC/, ja as STAIR/..._jp), one
    language only under the XTD10/ fallback, and COCO images; records every request."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        files = {"XTD10/test_image_names.txt": as_published(NAMES)}
        files["MIC/test_1kcaptions_en.txt"] = as_published(CAPTIONS["en"], bom=True)
        files["XTD10/test_1kcaptions_de.txt"] = as_published(CAPTIONS["de"])  # not in MIC/ here
        files["STAIR/test_1kcaptions_jp.txt"] = as_published(CAPTIONS["ja"])
        files["XTD10/test_1kcaptions_es.txt"] = as_published(CAPTIONS["es"])
        self.files = files

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(str(request.url))
        if request.url.host == "images.cocodataset.org":
            name = request.url.path.rsplit("/", 1)[-1]
            split = request.url.path.split("/")[1]
            if name in NAMES and split in name:
                return httpx.Response(200, content=_jpeg(COLOURS[NAMES.index(name)]))
            return httpx.Response(404)
        path = request.url.path.split("/main/", 1)[-1]
        return httpx.Response(200, content=self.files[path]) if path in self.files else httpx.Response(404)

    def client(self) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(self))


def test_fetcher_follows_the_repository_layout_and_caches(tmp_path: Path) -> None:
    server = MockServer()
    with server.client() as client:
        dest = fetch_captions(["en", "de", "jp"], dest=tmp_path, client=client)
        assert sorted(p.name for p in dest.iterdir()) == [
            "test_1kcaptions_de.txt", "test_1kcaptions_en.txt", "test_1kcaptions_jp.txt", "test_image_names.txt"]
        paths = [u.split("/main/")[1] for u in server.requests]
        assert paths == ["XTD10/test_image_names.txt", "MIC/test_1kcaptions_en.txt", "MIC/test_1kcaptions_de.txt",
                         "XTD10/test_1kcaptions_de.txt", "STAIR/test_1kcaptions_jp.txt"]
        assert all(u.startswith("https://raw.githubusercontent.com/adobe-research/Cross-lingual-Test-Dataset-XTD10/")
                   for u in server.requests)
        assert (dest / "test_1kcaptions_en.txt").read_bytes().startswith(b"\xef\xbb\xbf")  # stored as served
        fetch_captions(["en", "de", "ja"], dest=tmp_path, client=client)
        assert len(server.requests) == 5  # all cached now
        with pytest.raises(DatasetError, match=r"test_1kcaptions_ko.txt not found .*HTTP 404"):
            fetch_captions(["ko"], dest=tmp_path, client=client)


def test_network_failure_names_the_offline_flag(tmp_path: Path) -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("no route to host", request=request)

    with httpx.Client(transport=httpx.MockTransport(down)) as client, pytest.raises(DatasetError, match="--xtd10-captions"):
        fetch_captions(["en"], dest=tmp_path, client=client)


def test_load_xtd10_finds_images_recursively_or_downloads_them(tmp_path: Path) -> None:
    server = MockServer()
    coco = tmp_path / "coco"
    save(coco / "train2014" / NAMES[0], COLOURS[0])
    save(coco / "val2014" / NAMES[1], COLOURS[1])
    with server.client() as client:
        captions = fetch_captions(["en", "ja"], dest=tmp_path / "xtd", client=client)
        with pytest.raises(DatasetError, match=r"1 of 3 XTD10 images .*--download-images"):
            load_xtd10(coco, langs=["en"], captions_dir=captions, client=client)
        before = len(server.requests)
        data = load_xtd10(coco, langs=["en", "jp"], captions_dir=captions, client=client, fetch_missing_images=True)
    assert server.requests[before:] == [coco_url(NAMES[2])] == ["http://images.cocodataset.org/train2014/" + NAMES[2]]
    assert data.name == "xtd10" and [Path(p).name for p in data.images] == NAMES
    assert data.langs["en"].texts == tuple(CAPTIONS["en"]) and data.langs["ja"].texts[2] == "青い四角"
    assert data.langs["en"].image_index.tolist() == [0, 1, 2]
    assert Path(data.images[2]).parent == coco and Image.open(data.images[2]).size == (40, 30)


def test_caption_file_of_the_wrong_length_is_refused(tmp_path: Path) -> None:
    (tmp_path / "test_image_names.txt").write_bytes(as_published(NAMES))
    (tmp_path / "test_1kcaptions_en.txt").write_bytes(as_published(CAPTIONS["en"][:2]))
    with pytest.raises(DatasetError, match="2 lines for 3 images"):
        load_xtd10(tmp_path, langs=["en"], captions_dir=tmp_path)


# ---------------------------------------------------------------- evaluation runs


@pytest.fixture
def colour_tsv(tmp_path: Path) -> Path:
    rows = ["image\tlang\tcaption"]
    for name, rgb, en, de in [("r.png", (230, 20, 20), "red", "rot"), ("g.png", (20, 220, 30), "green", "grün"),
                              ("b.png", (10, 30, 240), "blue", "blau")]:
        save(tmp_path / "imgs" / name, rgb)
        rows += [f"imgs/{name}\ten\t{en}", f"imgs/{name}\tde\t{de}", f"imgs/{name}\ten\t{en} {en}"]
    path = tmp_path / "set.tsv"
    path.write_text("\n".join(rows) + "\n")
    return path


def test_tsv_set_and_evaluation_with_a_known_answer(colour_tsv: Path) -> None:
    data = load_tsv(colour_tsv)
    assert data.name == "set" and len(data.images) == 3 and set(data.langs) == {"en", "de"}
    assert data.langs["en"].image_index.tolist() == [0, 0, 1, 1, 2, 2]
    rows = evaluate(data, ["fake-colour"], device="cpu")
    assert [(r.model, r.lang, r.captions, r.images) for r in rows] == [("fake-colour", "en", 6, 3),
                                                                       ("fake-colour", "de", 3, 3)]
    assert all(r.t2i_r1 == 100.0 and r.i2t_r1 == 100.0 for r in rows)
    with pytest.raises(DatasetError, match="no captions in 'ko'"):
        evaluate(data, ["fake-colour"], langs=["ko"])


def test_paper_rows_and_the_eight_language_average() -> None:
    ref = reference_rows("xtd10", ["en", "ko"])
    assert {(r.model, r.lang, r.t2i_r10) for r in ref} == {
        ("paper: mUSE+PATR", "en", 83.6), ("paper: mUSE+PATR", "avg", 74.1), ("paper: mUSE+M3", "en", 85.3),
        ("paper: mUSE+M3", "ko", 67.8), ("paper: mUSE+M3", "avg", 76.0)}
    assert all(r.reference and r.t2i_r1 is None for r in ref) and reference_rows("set") == []
    from xlir_qdrant.eval.run import PAPER_T2I_R10, EvalRow

    paper = PAPER_T2I_R10["paper: mUSE+M3"]
    rows = [EvalRow("m", "xtd10", lang, t2i_r10=paper[lang], **{k: 0.0 for k in ("t2i_r1", "t2i_r5", "i2t_r1", "i2t_r5", "i2t_r10")})
            for lang in PAPER_AVG_LANGS]
    assert round(average_row(rows).t2i_r10, 1) == paper["avg"]  # the published avg is this mean
    assert average_row(rows[:-1]) is None


# ---------------------------------------------------------------- the commands


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    from rich.console import Console
    from typer.testing import CliRunner

    from xlir_cli import app, main

    monkeypatch.setattr(app.ui, "out", Console(width=150, no_color=True, force_terminal=False, soft_wrap=True))
    monkeypatch.setattr(app.ui, "err", Console(width=150, no_color=True, force_terminal=False, stderr=True))
    runner = CliRunner()

    def run(*args: str) -> tuple[int, str, str]:
        result = runner.invoke(main.app, list(args))
        return result.exit_code, result.stdout, result.stderr

    return run


def _shape_pairs(root: Path) -> Path:
    """12 images (6 colours x 2 shapes) with three English captions each."""
    colours = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (20, 40, 230), "yellow": (240, 230, 30),
               "black": (10, 10, 10), "purple": (140, 30, 160)}
    lines = []
    for i, (colour, rgb) in enumerate(colours.items()):
        for shape in ("circle", "square"):
            im = Image.new("RGB", (96, 80), (255, 255, 255))
            draw = ImageDraw.Draw(im)
            (draw.ellipse if shape == "circle" else draw.rectangle)((20, 15, 76, 70), fill=rgb)
            name = f"{colour}_{shape}.jpg"
            im.save(root / name)
            lines += [f"{name}\ta {colour} {shape}", f"{name}\ta {shape} that is {colour}",
                      f"{name}\t{colour} {shape} on white"]
    path = root / "pairs.tsv"
    path.write_text("\n".join(lines))
    return path


def test_xlir_train_then_eval_end_to_end(cli, tmp_path: Path) -> None:  # noqa: ANN001
    pairs = _shape_pairs(tmp_path)
    out = tmp_path / "ckpt"
    code, stdout, stderr = cli("train", "--pairs", str(pairs), "--out", str(out), "--dim", "32", "--hidden", "32",
                               "--epochs", "1", "--batch-size", "8", "--val-fraction", "0.25", "--device", "cpu")
    assert code == 0, stderr
    assert "saved xlir-ckpt-" in stdout and "cpu fp32" in stdout and "validation text->image R@1/5/10" in stdout
    assert "epoch 0 (untrained)  val R@1/5/10 t→i" in stderr and "epoch 1: loss" in stderr
    assert (out / "xlir-model.json").is_file()

    evalset = tmp_path / "eval.tsv"
    evalset.write_text("\n".join(f"{n}.jpg\t{lang}\t{text}" for n, lang, text in [
        ("red_circle", "en", "a red circle"), ("red_circle", "de", "ein roter Kreis"),
        ("blue_square", "en", "a blue square"), ("blue_square", "de", "ein blaues Quadrat")]))
    code, stdout, stderr = cli("eval", "--tsv", str(evalset), "--model", str(out), "--device", "cpu")
    assert code == 0, stderr
    assert "T→I@1" in stdout and "xlir-ckpt-" in stdout and " de " in stdout and "paper" not in stdout

    code, stdout, _ = cli("eval", "--tsv", str(evalset), "-m", str(out), "-m", "fake-colour", "--lang", "de", "--json")
    rows = [json.loads(line) for line in stdout.splitlines()]
    assert [(r["model"].split("-")[0], r["lang"]) for r in rows] == [("xlir", "de"), ("fake", "de")]
    assert {"t2i_r1", "t2i_r10", "i2t_r5", "captions", "reference"} <= set(rows[0])


def test_xlir_eval_xtd10_prints_the_paper_beside(cli, tmp_path: Path) -> None:  # noqa: ANN001
    captions = tmp_path / "xtd"
    captions.mkdir()
    (captions / "test_image_names.txt").write_bytes(as_published(NAMES))
    (captions / "test_1kcaptions_en.txt").write_bytes(as_published(["red", "green", "blue"], bom=True))
    for name, rgb in zip(NAMES, COLOURS, strict=True):
        save(tmp_path / "coco" / "val2014" / name, rgb)
    code, stdout, stderr = cli("eval", "--xtd10", str(tmp_path / "coco"), "--xtd10-captions", str(captions),
                               "-m", "fake-colour", "--lang", "en")
    assert code == 0, stderr
    lines = stdout.splitlines()
    mine = next(line for line in lines if "fake-colour" in line)
    assert mine.split()[2:5] == ["100.0", "100.0", "100.0"]
    assert any("paper: mUSE+M3" in line and "85.3" in line for line in lines)
    assert any("avg" in line and "76.0" in line for line in lines)


def test_commands_refuse_ambiguous_data_and_teach_in_help(cli, tmp_path: Path) -> None:  # noqa: ANN001
    code, _, stderr = cli("train", "--out", str(tmp_path / "x"))
    assert code == 2 and "either --pairs FILE, or --coco-json FILE with --images FOLDER" in stderr  # usage errors
    code, _, stderr = cli("eval", "--tsv", "a.tsv", "--xtd10", "coco")
    assert code == 2 and "exactly one of --xtd10" in stderr
    for command in ("train", "eval"):
        code, stdout, _ = cli(command, "--help")
        assert code == 0 and "Examples" in stdout
