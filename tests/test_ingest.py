"""Indexing end to end on the embedded store with the colour fake: incremental behaviour."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from conftest import save
from xlir_qdrant.config import Overrides, Settings
from xlir_qdrant.errors import BadValue, EmptyIndex, ModelMismatch
from xlir_qdrant.index import Index
from xlir_qdrant.records import IngestEvent as Event
from xlir_qdrant.store.schema import point_id


def _index(tmp_path: Path, model: str = "fake-colour") -> Index:
    return Index(Settings.load(Overrides(store=tmp_path / "store", model=model, batch_size=2)))


def test_first_run_adds_everything_and_search_finds_by_colour(tmp_path: Path, colour_photos: Path) -> None:
    with _index(tmp_path) as idx:
        report = idx.index([colour_photos])
        assert (report.scanned, report.added, report.skipped) == (4, 4, 0)
        assert Path(idx.search("red").hits[0].path).name == "red.jpg"
        assert Path(idx.search("azul").hits[0].path).name == "blue.jpg"
        hit = idx.search("緑").hits[0]
        assert Path(hit.path).name == "green.png" and hit.size == (colour_photos / "green.png").stat().st_size


def test_unchanged_files_are_not_opened_again(tmp_path: Path, colour_photos: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with _index(tmp_path) as idx:
        idx.index([colour_photos])
    import xlir_qdrant.images.batches as batches

    def no_open(*_a: object, **_k: object) -> None:
        raise AssertionError("an unchanged file was read")

    monkeypatch.setattr(batches, "sha256_file", no_open)
    monkeypatch.setattr(batches, "decode", no_open)
    with _index(tmp_path) as idx:
        report = idx.index([colour_photos])
    assert (report.unchanged, report.added, report.updated) == (4, 0, 0)


def test_changed_file_is_reembedded(tmp_path: Path, colour_photos: Path) -> None:
    with _index(tmp_path) as idx:
        idx.index([colour_photos])
        save(colour_photos / "red.jpg", (10, 10, 240))  # now blue
        os.utime(colour_photos / "red.jpg", (1, 1))
        report = idx.index([colour_photos])
        assert report.updated == 1 and report.unchanged == 3
        blues = [Path(h.path).name for h in idx.search("blue", top_k=2).hits]
        assert set(blues) == {"red.jpg", "blue.jpg"}


def test_moved_file_reuses_its_vector_and_vanished_file_is_removed(tmp_path: Path, colour_photos: Path) -> None:
    with _index(tmp_path) as idx:
        idx.index([colour_photos])
        calls = idx.encoder.calls
        shutil.move(colour_photos / "red.jpg", colour_photos / "trip" / "moved-red.jpg")
        report = idx.index([colour_photos])
        assert report.reused == 1 and report.removed == 1 and report.added == 0
        assert idx.encoder.calls == calls  # nothing was embedded again
        assert Path(idx.search("red").hits[0].path).name == "moved-red.jpg"
        assert idx.count() == 4


def test_copied_file_reuses_vector(tmp_path: Path, colour_photos: Path) -> None:
    with _index(tmp_path) as idx:
        idx.index([colour_photos])
        calls = idx.encoder.calls
        shutil.copy(colour_photos / "green.png", colour_photos / "copy.png")
        report = idx.index([colour_photos])
        assert report.reused == 1 and idx.encoder.calls == calls and idx.count() == 5


def test_missing_root_never_empties_the_index(tmp_path: Path, colour_photos: Path) -> None:
    with _index(tmp_path) as idx:
        idx.index([colour_photos])
        shutil.move(colour_photos, tmp_path / "elsewhere")
        with pytest.raises(BadValue, match="does not exist"):
            idx.index([colour_photos])
        other = save(tmp_path / "other" / "x.png", (1, 1, 1)).parent
        report = idx.index([colour_photos, other])
        assert (report.missing, report.skipped, report.removed) == (1, 0, 0) and idx.count() == 5


def test_keep_missing_keeps_entries(tmp_path: Path, colour_photos: Path) -> None:
    with _index(tmp_path) as idx:
        idx.index([colour_photos])
        (colour_photos / "red.jpg").unlink()
        assert idx.index([colour_photos], prune=False).removed == 0 and idx.count() == 4


def test_bad_files_are_skipped_with_reasons_and_the_rest_indexed(tmp_path: Path, colour_photos: Path) -> None:
    (colour_photos / "empty.jpg").write_bytes(b"")
    (colour_photos / "text.png").write_text("not an image")
    full = save(tmp_path / "full.jpg", (1, 2, 3), size=(200, 200))
    (colour_photos / "cut.jpg").write_bytes(full.read_bytes()[:300])
    events: list[Event] = []
    with _index(tmp_path) as idx:
        report = idx.index([colour_photos], progress=events.append)
        assert report.added == 4 and report.skipped == 3 and idx.count() == 4
    skipped = {Path(e.path).name: e.reason for e in events if e.kind == "skipped"}
    assert set(skipped) == {"empty.jpg", "text.png", "cut.jpg"}
    assert all(reason and "\n" not in reason for reason in skipped.values())


def test_interrupted_run_keeps_stored_batches_and_resumes(tmp_path: Path, colour_photos: Path) -> None:
    for i in range(6):
        save(colour_photos / "more" / f"{i}.png", (i * 40, 100, 100))
    stop_after = 2

    def interrupt(ev: Event) -> None:
        if ev.kind == "done":
            nonlocal stop_after
            stop_after -= 1
            if stop_after == 0:
                raise KeyboardInterrupt

    with _index(tmp_path) as idx, pytest.raises(KeyboardInterrupt):
        idx.index([colour_photos], progress=interrupt)
    with _index(tmp_path) as idx:
        stored = idx.count()
        assert 0 < stored < 10
        report = idx.index([colour_photos])
        assert report.unchanged == stored and report.added == 10 - stored and idx.count() == 10


def test_point_id_is_uuid5_of_absolute_path(tmp_path: Path, colour_photos: Path) -> None:
    with _index(tmp_path) as idx:
        idx.index([colour_photos])
        path = str((colour_photos / "red.jpg").resolve())
        [point] = idx.collection.retrieve([point_id(path)])
        assert point.payload["path"] == path and point.payload["sha256"]
        assert point.payload["width"] == 64 and point.payload["height"] == 48


def test_search_in_folder_filter(tmp_path: Path, colour_photos: Path) -> None:
    save(tmp_path / "photos-other" / "red2.jpg", (240, 10, 10))
    with _index(tmp_path) as idx:
        idx.index([colour_photos, tmp_path / "photos-other"])
        hits = idx.search("red", under=[colour_photos / "trip"]).hits
        assert {Path(h.path).parent.name for h in hits} == {"trip"}
        hits = idx.search("red", under=[colour_photos]).hits
        assert "red2.jpg" not in {Path(h.path).name for h in hits}


def test_negative_terms_push_results_away(tmp_path: Path, colour_photos: Path) -> None:
    with _index(tmp_path) as idx:
        idx.index([colour_photos])
        plain = {Path(h.path).name: h.score for h in idx.search("white").hits}
        pushed = [Path(h.path).name for h in idx.search("white", negatives=["red", "green"]).hits]
        # Without negatives red, green and blue tie behind white; "not red, not green" leaves blue.
        assert abs(plain["red.jpg"] - plain["blue.jpg"]) < 0.05
        assert pushed[:2] == ["white.webp", "blue.jpg"]


def test_image_query_finds_similar_photo(tmp_path: Path, colour_photos: Path) -> None:
    probe = save(tmp_path / "probe.jpg", (20, 210, 40))
    with _index(tmp_path) as idx:
        idx.index([colour_photos])
        assert Path(idx.search(image=probe).hits[0].path).name == "green.png"


def test_search_before_index_and_with_other_model_are_refused(tmp_path: Path, colour_photos: Path) -> None:
    with _index(tmp_path) as idx, pytest.raises(EmptyIndex, match="xlir index"):
        idx.search("red")
    with _index(tmp_path) as idx:
        idx.index([colour_photos])
    with _index(tmp_path, model="fake-colour-wide") as idx, pytest.raises(ModelMismatch, match="fake-colour"):
        idx.search("red")


def test_search_of_an_emptied_index_says_so_and_a_filtered_miss_does_not(tmp_path: Path, colour_photos: Path) -> None:
    with _index(tmp_path) as idx:
        idx.index([colour_photos])
        (tmp_path / "elsewhere").mkdir()
        assert idx.search("red", under=[str(tmp_path / "elsewhere")]).hits == []  # no match, not empty
        idx.remove([colour_photos])
        with pytest.raises(EmptyIndex, match="is empty"):
            idx.search("red")


def test_search_without_model_uses_the_collections_model(tmp_path: Path, colour_photos: Path) -> None:
    with _index(tmp_path, model="fake-colour-wide") as idx:
        idx.index([colour_photos])
    with Index(Settings.load(Overrides(store=tmp_path / "store"))) as idx:
        assert idx.model_spec().id == "fake-colour-wide"
        assert Path(idx.search("red").hits[0].path).name == "red.jpg"


def test_remove_forgets_folder_but_not_files(tmp_path: Path, colour_photos: Path) -> None:
    with _index(tmp_path) as idx:
        idx.index([colour_photos])
        assert idx.remove([colour_photos / "trip"]) == 2
        assert idx.count() == 2 and (colour_photos / "trip" / "blue.jpg").exists()


def test_index_made_before_tagging_gets_tags_without_reembedding(tmp_path: Path, colour_photos: Path) -> None:
    from xlir_qdrant.records import Filter

    with _index(tmp_path) as idx:
        idx.index([colour_photos])
        # Simulate an older index: strip the tags and their key from every point.
        points = list(idx.collection.scroll(with_vectors=True))
        idx.collection.upsert([type(p)(p.id, p.vector, {k: v for k, v in p.payload.items() if k not in ("tags", "tags_key")})
                          for p in points])
        assert idx.collection.count(Filter(tags=("red",))) == 0
        calls = idx.encoder.calls
        report = idx.index([colour_photos])
        assert report.unchanged == 4 and idx.encoder.calls == calls
        assert [Path(p.payload["path"]).name for p in idx.collection.scroll(filter=Filter(tags=("red",)))] == ["red.jpg"]


def test_copies_in_one_run_are_embedded_once(tmp_path: Path, colour_photos: Path) -> None:
    for i in range(5):
        shutil.copy(colour_photos / "red.jpg", colour_photos / f"red-copy-{i}.jpg")
    with _index(tmp_path) as idx:
        report = idx.index([colour_photos])
        assert idx.encoder.calls == 4  # red, green, blue, white: the copies ride on red's vector
        assert report.added == 4 and report.reused == 5 and idx.count() == 9
        reds = {Path(h.path).name for h in idx.search("red", top_k=6).hits}
        assert reds == {"red.jpg", *(f"red-copy-{i}.jpg" for i in range(5))}


class _ConcurrentStore:
    """An Edge collection behind a handle that says it takes concurrent calls (as a server
    does), with slow upserts that record how many overlapped."""

    thread_safe = True
    trusted = True

    def __init__(self, inner, streams: int, fail_on: int = 0) -> None:  # noqa: ANN001
        import threading

        self.inner, self.write_streams, self.fail_on = inner, streams, fail_on
        self.location, self.name = inner.location, inner.name
        self._edge = threading.Lock()  # the real shard under it still takes one call at a time
        self._count = threading.Lock()
        self.active = self.most = self.calls = 0
        self.sizes: list[int] = []
        # With several streams, the first upsert waits (up to 10 s) for a second one to start:
        # they overlap however slowly the machine decodes, and a single stream cannot fake it.
        self._overlap = threading.Barrier(2) if streams > 1 else None

    def upsert(self, points) -> None:  # noqa: ANN001
        import contextlib
        import threading
        import time

        with self._count:
            self.sizes.append(len(points))
            self.calls += 1
            call = self.calls
            self.active += 1
            self.most = max(self.most, self.active)
        try:
            if self._overlap is not None and call <= 2:
                with contextlib.suppress(threading.BrokenBarrierError):
                    self._overlap.wait(timeout=10)
            time.sleep(0.05)
            if call == self.fail_on:
                from xlir_qdrant.errors import StoreUnavailable

                raise StoreUnavailable("cannot reach Qdrant at http://qdrant:6333: connection refused")
            with self._edge:
                self.inner.upsert(points)
        finally:
            with self._count:
                self.active -= 1

    def __getattr__(self, name: str):  # noqa: ANN204 - scroll, delete, count, ... go to the shard
        method = getattr(self.inner, name)

        def locked(*a, **k):  # noqa: ANN002, ANN003, ANN202
            with self._edge:
                return method(*a, **k)
        return locked


def _many(folder: Path, n: int) -> Path:
    for i in range(n):
        save(folder / f"{i:02d}.png", (i * 20 % 256, 200 - i * 10, 60))
    return folder


@pytest.mark.parametrize("streams", [1, 3])
def test_upserts_run_on_writer_streams_and_store_everything(tmp_path: Path, streams: int) -> None:
    from xlir_qdrant.encoders.registry import get_spec, load_encoder
    from xlir_qdrant.ingest import IngestOptions, IngestRun
    from xlir_qdrant.store.edge import EdgeStore

    folder = _many(tmp_path / "photos", 12)
    edge = EdgeStore(tmp_path / "store")
    collection = edge.collection("photos", get_spec("fake-colour"), create=True)
    store = _ConcurrentStore(collection, streams)
    done = []
    report = IngestRun(load_encoder("fake-colour"), store, IngestOptions(batch_size=2, workers=2),
                       lambda e: done.append(e.n) if e.kind == "done" else None).run([folder])
    assert report.added == 12 and sum(done) == 12 and collection.count() == 12
    if streams == 1:
        assert store.most == 1
        assert max(store.sizes) > 2  # batches that waited for the slow store went up together
    else:  # a server's uploads overlap
        assert store.most >= 2
    edge.close()


def test_a_failed_upsert_stops_the_run_with_the_stores_error(tmp_path: Path) -> None:
    from xlir_qdrant.encoders.registry import get_spec, load_encoder
    from xlir_qdrant.errors import StoreUnavailable
    from xlir_qdrant.ingest import IngestOptions, IngestRun
    from xlir_qdrant.store.edge import EdgeStore

    folder = _many(tmp_path / "photos", 12)
    edge = EdgeStore(tmp_path / "store")
    collection = edge.collection("photos", get_spec("fake-colour"), create=True)
    store = _ConcurrentStore(collection, 1, fail_on=2)
    with pytest.raises(StoreUnavailable, match="connection refused"):
        IngestRun(load_encoder("fake-colour"), store, IngestOptions(batch_size=2, workers=2)).run([folder])
    # what went up before the failure is kept; nothing after it is written
    assert collection.count() == store.sizes[0] < 12
    edge.close()


def test_progress_total_is_known_first_and_every_count_adds_up(tmp_path: Path, colour_photos: Path) -> None:
    with _index(tmp_path) as idx:
        idx.index([colour_photos])
        save(colour_photos / "red.jpg", (10, 10, 240))  # changed
        os.utime(colour_photos / "red.jpg", (1, 1))
        shutil.copy(colour_photos / "green.png", colour_photos / "trip" / "green-copy.png")  # reused
        save(colour_photos / "new" / "grey.png", (128, 128, 128))  # new
        (colour_photos / "new" / "broken.jpg").write_bytes(b"garbage")  # skipped, one line
        (colour_photos / "new" / "logo.svg").write_text("<svg/>")  # skipped, one line for the kind
        (colour_photos / "trip" / "white.webp").unlink()  # removed
        events: list[Event] = []
        report = idx.index([colour_photos, colour_photos / "trip"], progress=events.append)  # roots overlap
    kinds = [e.kind for e in events]
    found = next(e for e in events if e.kind == "found")
    assert kinds.index("found") < kinds.index("loading") < kinds.index("done")
    assert kinds.index("scanning") < kinds.index("found") and kinds.count("found") == 1
    assert (report.added, report.updated, report.reused, report.unchanged, report.skipped, report.removed) == \
        (1, 1, 1, 2, 2, 1)
    assert found.n == report.scanned == 7 == sum((report.added, report.updated, report.reused, report.unchanged,
                                                  report.skipped))
    settled = sum(e.n for e in events if e.kind in ("passed", "done")) + kinds.count("skipped")
    assert settled == found.n  # the bar ends full, having moved for skipped files too


def test_a_run_asked_to_stop_keeps_what_it_stored_and_the_next_resumes(tmp_path: Path) -> None:
    import threading

    from xlir_qdrant.errors import Cancelled

    folder = _many(tmp_path / "photos", 12)
    stop = threading.Event()

    def progress(ev: Event) -> None:
        if ev.kind == "done":  # a batch is stored: ask the run to stop
            stop.set()

    with Index(Settings.load(Overrides(store=tmp_path / "store", model="fake-colour", batch_size=2))) as idx:
        with pytest.raises(Cancelled, match="kept"):
            idx.index([folder], progress=progress, cancel=stop)
        stored = idx.count()
        assert 2 <= stored < 12
        report = idx.index([folder])
        assert report.unchanged == stored and report.added == 12 - stored


def test_similar_photos_a_photos_file_and_the_indexed_roots(tmp_path: Path, colour_photos: Path) -> None:
    from xlir_qdrant.errors import NotFound

    with Index(Settings.load(Overrides(store=tmp_path / "store", model="fake-colour"))) as idx:
        idx.index([colour_photos / "trip", colour_photos / "red.jpg"])
        red = idx.search("red", top_k=1).hits[0]
        assert idx.photo_path(red.id) == str(colour_photos / "red.jpg")
        like = idx.similar(red.id, top_k=5).hits
        assert red.id not in [h.id for h in like] and len(like) == 2 and [h.rank for h in like] == [1, 2]
        assert [h.path for h in idx.similar(red.id, under=[colour_photos / "trip" / "blue.jpg"]).hits] == [
            str(colour_photos / "trip" / "blue.jpg")]
        assert idx.roots() == [str(colour_photos / "trip"), str(colour_photos / "red.jpg")]
        for unknown in ("not-an-id", "00000000-0000-5000-8000-000000000000"):
            with pytest.raises(NotFound, match="no photo with id"):
                idx.similar(unknown)
            with pytest.raises(NotFound):
                idx.photo_path(unknown)
