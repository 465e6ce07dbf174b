"""`xlir push` / `xlir pull` and the layout of new collections, against qdrant-client's local
mode acting as the server (and a real server when XLIR_QDRANT_URL is set)."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import numpy as np
import pytest

import fakes
from conftest import save
from test_store import SPEC, OTHER_MODEL, random_points
from xlir_qdrant.config import Overrides, Settings
from xlir_qdrant.errors import ConfigError, ModelMismatch, TransferIncomplete
from xlir_qdrant.index import Index
from xlir_qdrant.records import CollectionOptions, TransferEvent
from xlir_qdrant.store.edge import EdgeStore
from xlir_qdrant.store.server import ServerCollection, ServerStore
from xlir_qdrant.transfer import transfer

# Read before the autouse fixture clears every XLIR_* variable for the test.
REAL_URL = os.environ.get("XLIR_QDRANT_URL")


def _index(store: Path, **kw: object) -> Index:
    return Index(Settings.load(Overrides(store=store, model="fake-colour", batch_size=2, **kw)))


def _points(collection) -> dict[str, tuple[np.ndarray, dict]]:
    return {p.id: (p.vector, p.payload) for p in collection.scroll(with_vectors=True)}


def _same(a: dict[str, tuple[np.ndarray, dict]], b: dict[str, tuple[np.ndarray, dict]]) -> None:
    assert set(a) == set(b)
    for key, (vector, payload) in a.items():
        np.testing.assert_allclose(b[key][0], vector, atol=1e-6)
        assert b[key][1] == payload


# -- push and pull ---------------------------------------------------------------------------


def test_push_copies_every_point_with_its_vector_payload_and_model(tmp_path: Path, colour_photos: Path) -> None:
    events: list[TransferEvent] = []
    with _index(tmp_path / "store") as idx, ServerStore.local(":memory:") as server:
        idx.index([colour_photos])
        report = idx.push(server, progress=events.append)

        assert server.vectors("photos") == {fakes.FAKE.vector_name: fakes.DIM}  # the model binding
        _same(_points(idx.collection), _points(server.collection("photos", fakes.FAKE)))
        assert (report.points, report.copied, report.present, report.destination_points) == (4, 4, 0, 4)
        assert report.model == "fake-colour" and report.collection == "photos"
    assert events[0] == TransferEvent("total", n=4)
    assert sum(e.n for e in events if e.kind == "copied") == 4 and events[-1].kind == "verifying"


def test_pull_brings_an_index_back_and_search_uses_its_model(tmp_path: Path, colour_photos: Path) -> None:
    with ServerStore.local(tmp_path / "server") as server:
        with _index(tmp_path / "first") as idx:
            idx.index([colour_photos])
            idx.push(server)
        again = Index(Settings.load(Overrides(store=tmp_path / "second")))  # no --model: the collection's
        with again:
            report = again.pull(server)
            assert (report.copied, report.destination_points) == (4, 4)
            assert Path(again.search("rojo").hits[0].path).name == "red.jpg"
            assert again.model_spec() == fakes.FAKE


def test_a_copy_can_take_another_name_on_the_server(tmp_path: Path, colour_photos: Path) -> None:
    with ServerStore.local(":memory:") as server:
        with _index(tmp_path / "store") as idx:
            idx.index([colour_photos])
            assert idx.push(server, remote_collection="trips").collection == "trips"
        assert server.vectors("photos") == {} and server.vectors("trips") == {fakes.FAKE.vector_name: fakes.DIM}
        with Index(Settings.load(Overrides(store=tmp_path / "back", collection="mine"))) as back:
            assert back.pull(server, remote_collection="trips").destination_points == 4
            assert back.count() == 4


def test_an_interrupted_push_resumes_and_sends_only_what_is_missing(tmp_path: Path) -> None:
    points = random_points(300)
    with EdgeStore(tmp_path / "edge") as edge:
        source = edge.collection("photos", SPEC, create=True)
        source.upsert(points)

        copied = 0

        def interrupt(ev: TransferEvent) -> None:
            nonlocal copied
            if ev.kind == "copied":
                copied += ev.n
                if copied >= 64:
                    raise KeyboardInterrupt

        with ServerStore.local(tmp_path / "server") as server, pytest.raises(KeyboardInterrupt):
            transfer(source, server, name="photos", spec=SPEC, progress=interrupt, batch=16)
        with ServerStore.local(tmp_path / "server") as server:  # a new process, as after Ctrl-C
            stored = server.collection("photos", SPEC).count()
            assert 0 < stored < 300
            report = transfer(source, server, name="photos", spec=SPEC, batch=16)
            dest = server.collection("photos", SPEC)
            assert (report.present, report.copied) == (stored, 300 - stored)
            assert report.destination_points == 300 == dest.count()
            paths = [p.payload["path"] for p in dest.scroll()]
            assert len(paths) == len(set(paths)) == 300  # no duplicates
            _same(_points(source), _points(dest))


def test_a_point_changed_since_the_last_push_is_sent_again(tmp_path: Path) -> None:
    points = random_points(20)
    with EdgeStore(tmp_path / "edge") as edge, ServerStore.local(":memory:") as server:
        source = edge.collection("photos", SPEC, create=True)
        source.upsert(points)
        transfer(source, server, name="photos", spec=SPEC)
        changed = points[3]
        source.upsert([type(changed)(changed.id, points[4].vector, {**changed.payload, "size": 99})])

        report = transfer(source, server, name="photos", spec=SPEC)

        assert (report.copied, report.present) == (1, 19)
        (got,) = server.collection("photos", SPEC).retrieve([changed.id], with_vectors=True)
        assert got.payload["size"] == 99
        np.testing.assert_allclose(got.vector, points[4].vector, atol=1e-6)


def test_a_destination_made_for_another_model_is_refused(tmp_path: Path) -> None:
    with EdgeStore(tmp_path / "edge") as edge, ServerStore.local(":memory:") as server:
        source = edge.collection("photos", SPEC, create=True)
        source.upsert(random_points(5))
        server.collection("photos", OTHER_MODEL, create=True).upsert(random_points(2, seed=3))

        with pytest.raises(ModelMismatch, match="made for other-model .* --remote-collection"):
            transfer(source, server, name="photos", spec=SPEC)
        assert server.collection("photos", OTHER_MODEL).count() == 2  # untouched


def test_a_copy_that_ends_short_says_to_run_it_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = ServerCollection.upsert
    monkeypatch.setattr(ServerCollection, "upsert", lambda self, pts: real(self, pts[:-1]))  # loses one a batch
    with EdgeStore(tmp_path / "edge") as edge, ServerStore.local(":memory:") as server:
        source = edge.collection("photos", SPEC, create=True)
        source.upsert(random_points(10))

        with pytest.raises(TransferIncomplete) as err:
            transfer(source, server, name="photos", spec=SPEC)
    assert "holds 9 of the 10 points" in str(err.value) and "run the same command again" in str(err.value)


def test_pushing_to_the_server_the_index_is_on_is_refused(tmp_path: Path) -> None:
    idx = Index(Settings.load(Overrides(qdrant_url="http://127.0.0.1:9")))
    with pytest.raises(ConfigError, match="already"):
        idx.push("http://127.0.0.1:9/")


# -- the layout of the copy ---------------------------------------------------------------


def test_a_push_lays_the_copy_out_for_the_sources_size(tmp_path: Path) -> None:
    with EdgeStore(tmp_path / "edge") as edge, ServerStore.local(":memory:") as server:
        source = edge.collection("photos", SPEC, create=True)
        source.upsert(random_points(30))
        transfer(source, server, name="photos", spec=SPEC, options=CollectionOptions(quantization="int8"))
        transfer(source, server, name="small", spec=SPEC)

        quantized = server.client.get_collection("photos").config.params.vectors[SPEC.vector_name]
        plain = server.client.get_collection("small").config.params.vectors[SPEC.vector_name]
    assert quantized.quantization_config is not None and quantized.on_disk is True
    assert plain.quantization_config is None and not plain.on_disk


# -- a real server, when there is one ---------------------------------------------------------


@pytest.mark.skipif(not REAL_URL, reason="set XLIR_QDRANT_URL to run against a real Qdrant server")
def test_push_and_pull_through_a_real_server(tmp_path: Path, colour_photos: Path) -> None:
    name = f"xlir-test-{uuid.uuid4().hex[:8]}"
    key = os.environ.get("XLIR_QDRANT_API_KEY")
    with _index(tmp_path / "store", collection=name) as idx:
        idx.index([colour_photos])
        with ServerStore.connect(REAL_URL, api_key=key) as server:
            try:
                report = idx.push(server, options=CollectionOptions(quantization="int8"))
                assert report.destination_points == 4
                assert idx.push(server).present == 4  # a second push sends nothing
                with Index(Settings.load(Overrides(store=tmp_path / "back", collection=name))) as back:
                    assert back.pull(server).destination_points == 4
                    assert Path(back.search("azul").hits[0].path).name == "blue.jpg"
            finally:
                server.client.delete_collection(name)


def test_the_cli_pushes_and_pulls_through_a_url(tmp_path: Path, colour_photos: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from xlir_cli import main

    served = tmp_path / "server"
    urls: list[str] = []

    def connect(url: str, api_key: str | None = None, timeout: float = 10.0) -> ServerStore:
        urls.append(url)
        return ServerStore.local(served)  # the "server" at that URL

    monkeypatch.setattr(ServerStore, "connect", classmethod(lambda cls, *a, **k: connect(*a, **k)))
    runner = CliRunner()
    store = str(tmp_path / "s")
    assert runner.invoke(main.app, ["index", str(colour_photos), "--model", "fake-colour", "--store", store]).exit_code == 0

    pushed = runner.invoke(main.app, ["push", "--to", "http://qdrant:6333", "--store", store, "--json"])
    assert pushed.exit_code == 0, pushed.stderr
    assert json.loads(pushed.stdout)["destination_points"] == 4 and urls == ["http://qdrant:6333"]
    save(colour_photos / "more.png", (200, 0, 200))
    runner.invoke(main.app, ["index", str(colour_photos), "--store", store])
    again = runner.invoke(main.app, ["push", "--to", "http://qdrant:6333", "--store", store])
    assert again.exit_code == 0 and "1 copied, 4 already there" in again.stdout

    pulled = runner.invoke(main.app, ["pull", "--from", "http://qdrant:6333", "--store", str(tmp_path / "back")])
    assert pulled.exit_code == 0, pulled.stderr
    assert "5 copied" in pulled.stdout
    found = runner.invoke(main.app, ["search", "rojo", "--store", str(tmp_path / "back"), "--json", "-k", "1"])
    assert json.loads(found.stdout)["path"].endswith("red.jpg")
