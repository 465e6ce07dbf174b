"""The default model, with its real weights: people seen and counted, queries for people in eleven
languages, calibrated scores that drop what is not there, and its shipped concept bank."""

from __future__ import annotations

import shutil
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import skimage.data
from PIL import Image

from xlir_qdrant.config import Overrides, Settings
from xlir_qdrant.encoders import concepts
from xlir_qdrant.encoders.registry import DEFAULT_MODEL, load_encoder
from xlir_qdrant.index import Index

SKIMAGE = Path(skimage.data.__file__).parent
GRACE = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
PHOTOS = ["chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "astronaut.png", "horse.png",
          "camera.png", "coins.png"]
WITH_A_PERSON = {"astronaut", "camera", "grace_hopper"}
PEOPLE_QUERIES = {
    "person": ["a person", "eine Person", "une personne", "una persona", "una persona", "人", "사람", "osoba",
               "человек", "bir kişi", "一个人"],
    "woman": ["a woman", "eine Frau", "une femme", "una mujer", "una donna", "女性", "여자", "kobieta", "женщина",
              "bir kadın", "一个女人"],
    "man with a camera": ["a man with a camera", "ein Mann mit einer Kamera", "un homme avec un appareil photo",
                          "un hombre con una cámara", "un uomo con una macchina fotografica", "カメラを持った男性",
                          "카메라를 든 남자", "mężczyzna z aparatem", "мужчина с фотоаппаратом",
                          "fotoğraf makineli bir adam", "拿着相机的男人"],
    "astronaut": ["an astronaut", "ein Astronaut", "un astronaute", "un astronauta", "un astronauta", "宇宙飛行士",
                  "우주비행사", "astronauta", "космонавт", "bir astronot", "宇航员"],
}
# Things none of the photos above shows, in four languages.
ABSENT = ["sushi", "雪だるま", "a birthday cake", "un mariage"]


@pytest.fixture(scope="module")
def people_index(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    root = tmp_path_factory.mktemp("sight")
    photos = root / "photos"
    photos.mkdir()
    for name in PHOTOS:
        shutil.copy(SKIMAGE / name, photos / name)
    shutil.copy(GRACE, photos / GRACE.name)
    with Index(Settings.load(Overrides(store=root / "store"))) as idx:
        report = idx.index([photos])
        assert report.added == len(PHOTOS) + 1 and report.skipped == 0
        yield idx


def test_queries_for_people_rank_a_photo_of_a_person_first_in_eight_languages_or_more(people_index: Index) -> None:
    for concept, queries in PEOPLE_QUERIES.items():
        firsts = []
        for q in queries:  # at the default --min-score: a right answer must also survive the cut
            hits = people_index.search(q, top_k=1).hits
            firsts.append(Path(hits[0].path).stem if hits else None)
        found = sum(stem in WITH_A_PERSON for stem in firsts)
        assert found >= 8, (concept, list(zip(queries, firsts, strict=True)))


def test_scores_are_calibrated_and_absent_things_find_nothing(people_index: Index) -> None:
    cat = people_index.search("eine Katze", top_k=3)
    assert cat.calibrated and cat.min_score == 0.5
    assert Path(cat.hits[0].path).stem == "chelsea" and cat.hits[0].score >= 0.5
    assert all(h.cosine is not None and 0 < h.score < 1 for h in cat.hits)
    for q in ABSENT:
        result = people_index.search(q)
        assert result.hits == [], (q, [(Path(h.path).name, h.score) for h in result.hits])
    nearest = people_index.search(ABSENT[0], min_score=0, top_k=3)  # asked for: the nearest anyway
    assert len(nearest.hits) == 3 and all(h.score < 0.5 for h in nearest.hits)
    assert [h.score for h in nearest.hits] == sorted((h.score for h in nearest.hits), reverse=True)


def test_a_person_photo_is_tagged_person_and_its_specific_tags_bring_their_parents(people_index: Index) -> None:
    (result,) = people_index.tag([str(GRACE)], lang="de", top_k=8)
    ids = [t.id for t in result.tags]
    assert "person" in ids  # among uniform, cap and tie: the clothes weigh as much as the sitter
    for tag in result.tags:
        if tag.via is not None:  # an ancestor, brought by a tag listed before it
            assert tag.via in ids[: ids.index(tag.id)]


def _collage(*names: str) -> Image.Image:
    tiles = [Image.open(SKIMAGE / n).convert("RGB").resize((512, 512)) for n in names]
    out = Image.new("RGB", (512 * len(tiles), 512))
    for i, tile in enumerate(tiles):
        out.paste(tile, (512 * i, 0))
    return out


def test_people_are_seen_and_counted() -> None:
    source = concepts.CocoSource()
    keys = [c.key for c in source.concepts]

    def seen(image: Image.Image) -> set[str]:
        weights = source.weights(np.stack([source.prepare(image)]))[0]
        return {keys[i] for i in np.nonzero(weights)[0]}

    assert {"1", "portrait"} <= seen(Image.open(GRACE))  # one person filling the frame
    assert {"1", "people", "two_people"} <= seen(_collage("astronaut.png", "camera.png"))
    coffee = seen(Image.open(SKIMAGE / "coffee.png"))
    assert "1" not in coffee and "47" in coffee  # a cup, and nobody


def test_the_shipped_concept_bank_matches_the_names_it_is_made_of() -> None:
    """Editing a concept name (or the vocabulary) needs `python -m xlir_qdrant.encoders.concepts`."""
    layout, digest = concepts.bank_layout()
    rows = sum(n for _, n, _ in layout) + 1000
    assert concepts._shipped_bank(digest, rows) is not None


def test_the_bank_is_read_from_the_cache_after_its_first_use(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("XLIR_CACHE", str(tmp_path))
    layout, digest = concepts.bank_layout()
    rows = sum(n for _, n, _ in layout) + 1000
    from xlir_qdrant.cache import save_array

    # a sound cache of the same names unpacked from another shipped file: never used, cleared away
    other = tmp_path / f"concept-bank-{digest}-000000000000.npz"
    save_array(other, np.zeros((rows, 512), np.float32))
    concepts.concept_bank.cache_clear()
    try:
        first = concepts.load_bank()  # from the shipped file, kept in the cache as float32
        (kept,) = tmp_path.glob("concept-bank-*.npz")
        assert digest in kept.name and kept != other
        assert np.abs(first.names).sum() > 0
        with monkeypatch.context() as m:
            m.setattr(concepts, "_shipped_bank", lambda *_a: pytest.fail("the shipped file read again"))
            again = concepts.load_bank()
        np.testing.assert_array_equal(again.names, first.names)
        assert again.names.shape == (rows - 1000, 512) and again.names.dtype == np.float32
        assert np.shares_memory(again.names, again.per_lang["vocabulary"])  # views, not copies
        for name in concepts.SETS:
            np.testing.assert_array_equal(again.centroid[name], first.centroid[name])
        kept.write_bytes(kept.read_bytes()[:-1000])  # torn: rebuilt from the shipped file, one warning
        caplog.clear()
        np.testing.assert_array_equal(concepts.load_bank().names, first.names)
        assert any("damaged" in r.getMessage() for r in caplog.records)
    finally:
        concepts.concept_bank.cache_clear()


def test_a_damaged_or_foreign_shipped_bank_is_not_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    layout, digest = concepts.bank_layout()
    rows = sum(n for _, n, _ in layout) + 1000
    shipped = Path(str(concepts.resources.files(concepts._DATA).joinpath(concepts.BANK_FILE)))
    with np.load(shipped) as stored:
        parts = {k: stored[k] for k in stored.files}
    monkeypatch.setattr(concepts.resources, "files", lambda _package: tmp_path)
    flipped = parts["q"].copy()
    flipped[5, :10] = -flipped[5, :10]
    np.savez(tmp_path / concepts.BANK_FILE, **{**parts, "q": flipped})
    assert concepts._shipped_bank(digest, rows) is None
    assert any("checksum" in r.getMessage() for r in caplog.records)
    np.savez(tmp_path / concepts.BANK_FILE, **parts)
    assert concepts._shipped_bank(digest, rows) is not None
    assert concepts._shipped_bank("another-mUSE-or-names", rows) is None
    (tmp_path / concepts.BANK_FILE).write_bytes(b"torn")
    assert concepts._shipped_bank(digest, rows) is None


def test_tags_are_scored_unexpanded_and_queries_expanded() -> None:
    encoder = load_encoder(DEFAULT_MODEL, device="cpu")
    label, query = encoder.embed_labels(["Strand"]), encoder.embed_texts(["Strand"])
    assert float(label[0] @ query[0]) < 0.999  # the query was pulled towards concepts
    beach = encoder.embed_labels(["beach", "plage"])
    assert float(query[0] @ beach[0]) > float(label[0] @ beach[0])  # ... towards "beach" in any language
