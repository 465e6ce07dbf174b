"""`xlir index --ray`: the embedding step on Ray actors, on a local Ray instance with 2 CPUs
started here, with the colour fake (its family travels to the actors by reference, so the
tests folder is on their PYTHONPATH)."""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import fakes
from conftest import save
from xlir_qdrant.config import Overrides, Settings
from xlir_qdrant.errors import ClusterUnavailable
from xlir_qdrant.index import Index
from xlir_qdrant.ingest.distributed import ACTOR_PREFIX
from xlir_qdrant.records import IngestEvent
from xlir_qdrant.store.server import ServerStore

TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    paths = [str(TESTS), str(TESTS.parent), os.environ.get("PYTHONPATH", "")]
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(p for p in paths if p)}})
    yield ray
    ray.shutdown()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """24 photos in two folders, one copy of another's bytes (named to sort next to it, so that
    both paths find it by content whatever the timing), and one file that is not an image."""
    root = tmp_path / "photos"
    for i in range(24):
        save(root / ("a" if i % 2 else "b") / f"{i:02d}.png", (i * 10, 255 - i * 10, (i * 37) % 256))
    (root / "a" / "03-copy.png").write_bytes((root / "a" / "03.png").read_bytes())
    (root / "b" / "broken.jpg").write_bytes(b"not a jpeg")
    return root


def _index(store: Path) -> Index:
    return Index(Settings.load(Overrides(store=store, model="fake-colour", batch_size=2)))


def _points(idx: Index) -> dict[str, tuple[np.ndarray, dict]]:
    return {p.id: (p.vector, p.payload) for p in idx.collection.scroll(with_vectors=True)}


def _assert_same(one: dict, other: dict) -> None:
    assert set(one) == set(other)
    for key, (vector, payload) in one.items():
        np.testing.assert_allclose(other[key][0], vector, atol=1e-6)
        assert other[key][1] == payload


def _counts(report) -> dict:
    return {k: v for k, v in report.to_dict().items() if k != "seconds"}


def test_a_ray_run_stores_the_same_points_as_one_process(local_ray, folder: Path, tmp_path: Path) -> None:
    with _index(tmp_path / "one") as single:
        alone = single.index([folder])
        expected = _points(single)
    server = ServerStore.local(":memory:")  # the driver upserts to "the server"
    with Index(Settings.load(Overrides(model="fake-colour", batch_size=2)), store=server) as idx:
        on_ray = idx.index([folder], ray="auto", ray_actors=2)
        _assert_same(expected, _points(idx))
        again = idx.index([folder], ray="auto", ray_actors=2)  # the incremental rules hold on Ray too
    assert _counts(on_ray) == _counts(alone)
    assert (on_ray.added, on_ray.reused, on_ray.skipped) == (24, 1, 1)
    assert (again.unchanged, again.added) == (25, 0)


def test_a_killed_actors_batch_is_redone_and_stored_once(local_ray, folder: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from xlir_qdrant.encoders import registry

    with _index(tmp_path / "one") as single:
        single.index([folder])
        expected = _points(single)
    monkeypatch.setitem(registry.FAMILIES, "fake", fakes.SLOW_FAMILY)  # each batch takes a while
    events: list[IngestEvent] = []
    killed: list[str] = []
    lock = threading.Lock()

    def progress(ev: IngestEvent) -> None:
        events.append(ev)
        with lock:
            if ev.kind == "done" and not killed:  # one batch is stored: kill an actor mid-run
                name = sorted(n for n in local_ray.util.list_named_actors() if n.startswith(ACTOR_PREFIX))[0]
                local_ray.kill(local_ray.get_actor(name), no_restart=False)
                killed.append(name)

    with _index(tmp_path / "ray") as idx:
        report = idx.index([folder], ray="auto", ray_actors=2, progress=progress)
        got = _points(idx)
        paths = [p.payload["path"] for p in idx.collection.scroll()]

    assert killed
    retried = [e for e in events if e.kind == "retried"]
    assert retried and all(e.n == 2 and "Ray actor died" in e.reason for e in retried)
    _assert_same(expected, got)
    assert len(paths) == len(set(paths)) == 25  # no duplicates
    assert (report.added, report.reused, report.skipped) == (24, 1, 1)  # each file counted once


def test_the_command_line_indexes_on_ray(local_ray, folder: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from xlir_cli import main

    store = str(tmp_path / "s")
    result = CliRunner().invoke(main.app, ["index", str(folder), "--model", "fake-colour", "--store", store,
                                           "--ray", "auto", "--ray-actors", "2", "--json"])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["added"] == 24
    assert "on Ray actors (auto)" in result.stderr and "broken.jpg" in result.stderr


def test_more_actors_than_the_cluster_can_hold_is_one_line(local_ray, folder: Path, tmp_path: Path) -> None:
    with _index(tmp_path / "s") as idx, pytest.raises(ClusterUnavailable, match="--ray-actors 3 .* 2 CPUs"):
        idx.index([folder], ray="auto", ray_actors=3)


def test_without_ray_installed_the_run_says_how_to_get_it(folder: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails
    with _index(tmp_path / "s") as idx, pytest.raises(ClusterUnavailable, match=r"pip install 'xlir\[ray\]'"):
        idx.index([folder], ray="auto")
