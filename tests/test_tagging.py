"""Zero-shot tagging: the real bundled model on real photos, and the wiring with the fake."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import skimage.data

from xlir_qdrant.config import Overrides, Settings
from xlir_qdrant.errors import BadQuery, BadValue
from xlir_qdrant.index import Index
from xlir_qdrant.store.schema import point_id

SKIMAGE = Path(skimage.data.__file__).parent


@pytest.fixture(scope="module")
def bundled(tmp_path_factory: pytest.TempPathFactory) -> Index:
    idx = Index(Settings.load(Overrides(store=tmp_path_factory.mktemp("store"))))
    yield idx
    idx.close()


def names(idx: Index, path: Path, lang: str, **kw: object) -> list[str]:
    [result] = idx.tag([path], lang=lang, **kw)
    return [t.name for t in result.tags]


def test_chelsea_is_a_katze_in_german_top3(bundled: Index) -> None:
    assert "Katze" in names(bundled, SKIMAGE / "chelsea.png", "de", top_k=3)


def test_specific_tags_bring_their_parents_and_stored_tags_find_them(tmp_path: Path) -> None:
    from xlir_qdrant.encoders.registry import load_encoder
    from xlir_qdrant.records import Tag
    from xlir_qdrant.tagging.tagger import Tagger
    from xlir_qdrant.vocab import load_vocabulary

    tagger = Tagger(load_encoder("fake-colour"), load_vocabulary())
    tags = tagger._with_ancestors([Tag(1, "daisy", "Gänseblümchen", "de", 0.7),
                                   Tag(2, "rose", "Rose", "de", 0.6)], "de")
    assert [(t.id, t.via, t.score) for t in tags[2:]] == [("flower", "daisy", 0.7), ("plant", "daisy", 0.7)]
    assert tags[2].name == "Blume" and [t.rank for t in tags] == [1, 2, 3, 4]


def test_equal_scores_keep_vocabulary_order() -> None:
    """Tags that tie (here: every concept without a colour word) come in vocabulary order, so
    stored tags and the table are the same on every machine, whatever sort numpy picks."""
    from xlir_qdrant.encoders.registry import load_encoder
    from xlir_qdrant.tagging.tagger import Tagger
    from xlir_qdrant.vocab import load_vocabulary

    encoder = load_encoder("fake-colour")
    vocabulary = load_vocabulary()
    tagger = Tagger(encoder, vocabulary)
    [tags] = tagger.tag(encoder.embed_texts(["blue"]), top_k=len(vocabulary), min_score=-1.0, free=vocabulary)
    position = {c.id: i for i, c in enumerate(vocabulary)}
    by_score: dict[float, list[int]] = {}
    for tag in tags:
        by_score.setdefault(tag.score, []).append(position[tag.id])
    ties = [group for group in by_score.values() if len(group) > 1]
    assert sum(len(group) for group in ties) > 100  # the case is really there
    assert all(group == sorted(group) for group in ties)


def test_coffee_has_japanese_coffee_tag(bundled: Index) -> None:
    assert "コーヒー" in names(bundled, SKIMAGE / "coffee.png", "ja")


def test_same_concepts_in_every_language(bundled: Index) -> None:
    [en] = bundled.tag([SKIMAGE / "rocket.jpg"], lang="en")
    [zh] = bundled.tag([SKIMAGE / "rocket.jpg"], lang="zh")
    assert [t.id for t in en.tags] == [t.id for t in zh.tags] and en.tags[0].id == "rocket"
    assert zh.tags[0].name == "火箭"


def test_free_vocabulary_in_a_language_without_alignment(bundled: Index, tmp_path: Path) -> None:
    vocab = tmp_path / "tags.txt"
    vocab.write_text("# my tags\nKatze\nHund\nAuto\nKaffee\nRakete\n", encoding="utf-8")
    assert names(bundled, SKIMAGE / "chelsea.png", "de", vocab=vocab, min_score=0)[0] == "Katze"
    assert names(bundled, SKIMAGE / "coffee.png", "pt", vocab=vocab, min_score=0)[0] == "Kaffee"


def test_language_without_names_lists_the_ones_that_exist(bundled: Index) -> None:
    with pytest.raises(BadValue, match="--lang 'pt'.*en, de, fr.*--vocab"):
        bundled.tag([SKIMAGE / "chelsea.png"], lang="pt")


def test_indexed_images_use_their_stored_vector_and_tags_are_searchable(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("chelsea.png", "coffee.png", "rocket.jpg"):
        shutil.copy(SKIMAGE / name, photos / name)
    with Index(Settings.load(Overrides(store=tmp_path / "store"))) as idx:
        idx.index([photos])
        [point] = idx.collection.retrieve([point_id(str(photos / "chelsea.png"))])
        assert "cat" in point.payload["tags"]
        [result] = idx.tag([photos / "chelsea.png"], lang="ko")
        assert result.source == "index" and "고양이" in [t.name for t in result.tags]
        for name in ("Katze", "猫", "cat"):
            hits = idx.search(tags=[name]).hits
            assert [Path(h.path).name for h in hits] == ["chelsea.png"]
        with pytest.raises(BadQuery, match="unknown tag"):
            idx.search("x", tags=["no-such-tag-anywhere"])


def test_cli_tag_json_and_search_tag(tmp_path: Path, colour_photos: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rich.console import Console
    from typer.testing import CliRunner

    from xlir_cli import app, main

    monkeypatch.setattr(app.ui, "out", Console(width=100, no_color=True, soft_wrap=True))
    runner = CliRunner()
    store = str(tmp_path / "s")
    assert runner.invoke(main.app, ["index", str(colour_photos), "--model", "fake-colour", "--store", store]).exit_code == 0
    res = runner.invoke(main.app, ["tag", str(colour_photos / "red.jpg"), "--lang", "de", "--store", store, "--json"])
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert res.exit_code == 0 and {"source": "index", "id": "red", "name": "Rot"}.items() <= next(
        r for r in rows if r["id"] == "red").items()
    res = runner.invoke(main.app, ["search", "--tag", "rojo", "--store", store, "--json"])
    found = [Path(json.loads(line)["path"]).name for line in res.stdout.splitlines()]
    assert res.exit_code == 0 and found[0] == "red.jpg" and not {"green.png", "blue.jpg"} & set(found)
    res = runner.invoke(main.app, ["tag", str(colour_photos / "red.jpg"), "--lang", "xx", "--store", store])
    assert res.exit_code == 2 and "--vocab" in res.stderr  # a value --lang does not take: a usage error


def test_a_new_tag_format_makes_new_matrices_and_marks_stored_tags_stale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fakes import FAKE, FakeEncoder
    from xlir_qdrant.tagging import tagger
    from xlir_qdrant.vocab import load_vocabulary

    monkeypatch.setenv("XLIR_CACHE", str(tmp_path))
    encoder, vocabulary = FakeEncoder(FAKE), load_vocabulary()[:20]
    before = tagger.Tagger(encoder, vocabulary)
    before.english  # noqa: B018 - computes and caches the matrix
    monkeypatch.setattr(tagger, "TAG_FORMAT", "next")
    after = tagger.Tagger(encoder, vocabulary)
    after.english  # noqa: B018
    assert before.key != after.key  # tags stored under the old format are computed again
    assert len(list(tmp_path.glob("tags-*.npz"))) == 2  # the old matrix is not reused
