"""One suite for every Store backend: EdgeStore (embedded) and ServerStore (qdrant-client).

Backend-specific behaviour (file locks, server connection) is tested at the end.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import uuid
from dataclasses import replace
from datetime import datetime
from pathlib import Path, PurePosixPath

import numpy as np
import pytest

from xlir_qdrant.errors import (
    BadQuery,
    ConfigError,
    EmptyIndex,
    ModelMismatch,
    StoreLocked,
    StoreUnavailable,
)
from xlir_qdrant.records import Filter, ModelSpec, Point
from xlir_qdrant.store import open_store
from xlir_qdrant.store import edge as edge_module
from xlir_qdrant.store.edge import EdgeStore
from xlir_qdrant.store.server import ServerStore

DIM = 8
SPEC = ModelSpec(
    id="test-model", family="none", dim=DIM, languages=("en",), licence="test", size_mb=0, bundled=False,
    needs_lang=False,
)
OTHER_MODEL = replace(SPEC, id="other-model")
OTHER_DIM = replace(SPEC, dim=16)
REPO = Path(__file__).resolve().parents[1]


# -- fixtures and data ----------------------------------------------------------------------


@pytest.fixture(params=["edge", "server"])
def opener(request, tmp_path):
    """open_(persistent=False) -> a fresh store handle; every handle is closed at teardown."""
    handles = []

    def open_(persistent: bool = False):
        if request.param == "edge":
            # A low threshold so the optimize test builds a real HNSW index on a few points.
            store = EdgeStore(tmp_path / "store", purpose="pytest", optimize_after=50)
        else:
            store = ServerStore.local(tmp_path / "qdrant" if persistent else ":memory:")
        handles.append(store)
        return store

    open_.backend = request.param
    yield open_
    for handle in handles:
        handle.close()


@pytest.fixture
def col(opener):
    """A handle on a new collection "photos" for SPEC."""
    return opener().collection("photos", SPEC, create=True)


def unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v)


def make_point(path: str, vector, **payload) -> Point:
    dirs = [str(p) for p in PurePosixPath(path).parents]
    base = {
        "path": path, "dirs": dirs, "size": 1234, "mtime_ns": 1_700_000_000_123_456_789,
        "sha256": f"sha-{path}", "width": 4, "height": 3, "taken_at": None, "tags": [],
    }
    return Point(str(uuid.uuid5(uuid.NAMESPACE_URL, path)), unit(vector), {**base, **payload})


def random_points(n: int, seed: int = 0, folder: str = "/a/photos") -> list[Point]:
    rng = np.random.default_rng(seed)
    return [make_point(f"{folder}/{i}.jpg", rng.standard_normal(DIM)) for i in range(n)]


def cosines(points: list[Point], query: np.ndarray) -> np.ndarray:
    return np.stack([p.vector for p in points]) @ unit(query)


# -- the shared contract -------------------------------------------------------------------


def test_query_returns_nearest_first_with_cosine_scores(col):
    points = random_points(40)
    col.upsert(points)
    query = np.random.default_rng(1).standard_normal(DIM).astype(np.float32)

    hits = col.query(query, limit=5)

    expected = cosines(points, query)
    order = np.argsort(-expected)[:5]
    assert [h.id for h in hits] == [points[i].id for i in order]
    assert [h.score for h in hits] == pytest.approx(expected[order].tolist(), abs=1e-5)
    assert hits[0].payload["path"] == points[order[0]].payload["path"]


def test_min_score_keeps_only_hits_at_or_above_it(col):
    points = random_points(40)
    col.upsert(points)
    query = np.random.default_rng(2).standard_normal(DIM).astype(np.float32)
    ranked = np.sort(cosines(points, query))[::-1]
    threshold = float(ranked[2] + ranked[3]) / 2  # between the 3rd and 4th best

    hits = col.query(query, limit=10, min_score=threshold)

    assert len(hits) == 3
    assert all(h.score >= threshold for h in hits)


def test_filter_under_takes_a_dir_and_its_subdirs_but_not_a_prefix_sibling(col):
    col.upsert([
        make_point("/a/photos/x.jpg", [1, 0, 0, 0, 0, 0, 0, 0]),
        make_point("/a/photos/sub/y.jpg", [1, 1, 0, 0, 0, 0, 0, 0]),
        make_point("/a/photos2/z.jpg", [1, 0.1, 0, 0, 0, 0, 0, 0]),
        make_point("/b/w.jpg", [1, 0.2, 0, 0, 0, 0, 0, 0]),
    ])
    under = Filter(under=("/a/photos",))

    hits = col.query(unit([1, 0, 0, 0, 0, 0, 0, 0]), limit=10, filter=under)

    assert {h.payload["path"] for h in hits} == {"/a/photos/x.jpg", "/a/photos/sub/y.jpg"}
    assert col.count(under) == 2
    assert {p.payload["path"] for p in col.scroll(filter=under)} == {
        "/a/photos/x.jpg", "/a/photos/sub/y.jpg"}
    both = Filter(under=("/a/photos/sub", "/b"))
    assert {p.payload["path"] for p in col.scroll(filter=both)} == {
        "/a/photos/sub/y.jpg", "/b/w.jpg"}


def test_filter_under_also_takes_a_single_file_and_tags_match_any(col):
    col.upsert([
        make_point("/a/photos/x.jpg", [1, 0, 0, 0, 0, 0, 0, 0], tags=["cat", "sofa"]),
        make_point("/a/photos/y.jpg", [1, 1, 0, 0, 0, 0, 0, 0], tags=["dog"]),
        make_point("/b/z.jpg", [1, 0.5, 0, 0, 0, 0, 0, 0], tags=["cat"]),
    ])
    one_file = Filter(under=("/a/photos/y.jpg", "/b"))
    assert {p.payload["path"] for p in col.scroll(filter=one_file)} == {"/a/photos/y.jpg", "/b/z.jpg"}
    cats = col.query(unit([1, 0, 0, 0, 0, 0, 0, 0]), limit=10, filter=Filter(tags=("cat",)))
    assert {h.payload["path"] for h in cats} == {"/a/photos/x.jpg", "/b/z.jpg"}
    assert col.count(Filter(tags=("cat", "dog"), under=("/a/photos",))) == 2


def test_filter_by_sha256_and_with_a_folder(col):
    points = random_points(10) + random_points(3, seed=4, folder="/c")
    col.upsert(points)
    query = points[0].vector
    sha = points[7].payload["sha256"]

    by_hash = col.query(query, limit=10, filter=Filter(sha256=sha))

    assert [h.id for h in by_hash] == [points[7].id]
    assert col.count(Filter(sha256=sha, under=("/a/photos",))) == 1
    assert col.count(Filter(sha256=sha, under=("/c",))) == 0  # conditions are ANDed


def _ns(when: str) -> int:
    return int(datetime.fromisoformat(when).timestamp() * 1e9)  # local time, as Hit.date shows mtimes


def test_filter_by_date_takes_the_exif_date_else_the_file_time(col):
    col.upsert([
        # taken in 2020, copied to this disk in 2023: its date is 2020
        make_point("/a/old.jpg", [1, 0, 0, 0, 0, 0, 0, 0], taken_at="2020-05-01T10:00:00",
                   mtime_ns=_ns("2023-01-01T00:00:00")),
        make_point("/a/scan.png", [1, 1, 0, 0, 0, 0, 0, 0], mtime_ns=_ns("2021-03-01T12:00:00")),  # no EXIF
        make_point("/a/eve.jpg", [1, 0.5, 0, 0, 0, 0, 0, 0], taken_at="2022-12-31T23:59:59",
                   mtime_ns=_ns("2020-01-01T00:00:00")),
    ])

    def paths(**kw) -> set[str]:
        return {PurePosixPath(p.payload["path"]).name for p in col.scroll(filter=Filter(**kw))}

    assert paths(after=datetime(2021, 1, 1)) == {"scan.png", "eve.jpg"}
    assert paths(before=datetime(2021, 1, 1)) == {"old.jpg"}
    assert paths(after=datetime(2021, 1, 1), before=datetime(2022, 1, 1)) == {"scan.png"}
    assert paths(after=datetime(2022, 12, 31, 23, 59, 59)) == {"eve.jpg"}  # after is inclusive
    assert paths(before=datetime(2022, 12, 31, 23, 59, 59)) == {"old.jpg", "scan.png"}  # before is not
    hits = col.query(unit([1, 0, 0, 0, 0, 0, 0, 0]), limit=10,
                     filter=Filter(after=datetime(2021, 1, 1), under=("/a",)))
    assert [PurePosixPath(h.payload["path"]).name for h in hits] == ["eve.jpg", "scan.png"]
    assert col.count(Filter(after=datetime(2021, 1, 1), tags=("cat",))) == 0  # ANDed with the rest


def test_recommend_with_a_negative_moves_results_away_from_it(col):
    e0, e1 = np.eye(DIM, dtype=np.float32)[:2]
    near_both = make_point("/a/photos/near_both.jpg", 0.85 * e0 + 0.5 * e1)
    away = make_point("/a/photos/away.jpg", 0.8 * e0 - 0.6 * e1)
    noise = [make_point(f"/a/noise/{i}.jpg", np.r_[0, 0, v]) for i, v in
             enumerate(np.random.default_rng(3).standard_normal((10, DIM - 2)))]  # orthogonal
    col.upsert([near_both, away, *noise])

    plain = col.recommend([e0], [], limit=2)
    steered = col.recommend([e0], [e1], limit=2)

    assert [h.id for h in plain] == [near_both.id, away.id]
    assert [h.id for h in steered] == [away.id, near_both.id]
    average = unit(2 * e0 - e1)  # Qdrant's average_vector: avg(pos) + (avg(pos) - avg(neg))
    assert steered[0].score == pytest.approx(float(away.vector @ average), abs=1e-5)
    with pytest.raises(BadQuery):
        col.recommend([], [e1], limit=2)


def test_recommend_honours_filter_and_min_score(col):
    points = random_points(20)
    col.upsert(points)
    pos = [points[0].vector, points[1].vector]
    only = Filter(under=(points[5].payload["path"], points[6].payload["path"]))

    hits = col.recommend(pos, [points[2].vector], limit=10, filter=only)
    strict = col.recommend(pos, [], limit=10, min_score=0.999)

    assert {h.id for h in hits} == {points[5].id, points[6].id}
    assert strict == []  # no stored point is (almost) the mean of two random ones


def test_retrieve_round_trips_vectors_and_payload_in_the_callers_order(col):
    points = random_points(6)
    col.upsert(points)
    missing = str(uuid.uuid4())

    got = col.retrieve([points[4].id, missing, points[1].id], with_vectors=True)
    bare = col.retrieve([points[2].id])

    assert [p.id for p in got] == [points[4].id, points[1].id]
    np.testing.assert_allclose(got[0].vector, points[4].vector, atol=1e-6)
    assert got[0].vector.dtype == np.float32
    assert got[0].payload == points[4].payload
    assert bare[0].vector is None and bare[0].payload["path"] == points[2].payload["path"]
    assert col.retrieve([]) == []


def test_upsert_of_an_existing_id_replaces_vector_and_payload(col):
    first = make_point("/a/photos/x.jpg", [1, 0, 0, 0, 0, 0, 0, 0], size=1)
    col.upsert([first])
    moved = make_point("/a/photos/x.jpg", [0, 1, 0, 0, 0, 0, 0, 0], size=2)

    col.upsert([moved])

    (got,) = col.retrieve([first.id], with_vectors=True)
    assert col.count() == 1
    assert got.payload["size"] == 2
    np.testing.assert_allclose(got.vector, moved.vector, atol=1e-6)


def test_scroll_pages_through_more_points_than_one_batch(col):
    points = random_points(30)
    col.upsert(points)

    seen = list(col.scroll(batch=7, with_vectors=True))

    assert sorted(p.id for p in seen) == sorted(p.id for p in points)
    assert all(p.vector is not None and p.vector.shape == (DIM,) for p in seen)
    assert all(p.vector is None for p in col.scroll(batch=7))


def test_count_with_and_without_filter(col):
    assert col.count() == 0
    col.upsert(random_points(12) + random_points(5, seed=9, folder="/c"))

    assert col.count() == 17
    assert col.count(Filter(under=("/c",))) == 5
    assert col.count(Filter()) == 17  # an empty filter is no filter


def test_delete_by_id_and_by_filter(col):
    points = random_points(10) + random_points(4, seed=5, folder="/a/photos/sub")
    col.upsert(points)

    col.delete([points[0].id, points[1].id])
    col.delete([])
    col.delete_where(Filter(under=("/a/photos/sub",)))

    assert col.count() == 8
    assert col.retrieve([points[0].id, points[2].id]) == col.retrieve([points[2].id])
    assert col.count(Filter(under=("/a/photos/sub",))) == 0
    with pytest.raises(ValueError):
        col.delete_where(Filter())  # would delete everything
    assert col.count() == 8


def test_a_collection_refuses_another_model(opener):
    store = opener()
    col = store.collection("photos", SPEC, create=True)
    col.upsert(random_points(3))

    with pytest.raises(ModelMismatch) as other_model:
        store.collection("photos", OTHER_MODEL, create=True)
    with pytest.raises(ModelMismatch) as other_dim:
        store.collection("photos", OTHER_DIM)

    message = str(other_model.value)
    assert "\n" not in message
    assert "'photos'" in message and "model test-model (8-d)" in message
    assert "--model test-model" in message and "other-model" in message
    assert "--collection" in message
    assert "(16-d)" in str(other_dim.value) and "(8-d)" in str(other_dim.value)
    assert col.count() == 3  # the open collection is untouched


def test_missing_collection_without_create_is_an_empty_index(opener):
    store = opener()

    with pytest.raises(EmptyIndex) as err:
        store.collection("photos", SPEC)

    assert "xlir index" in str(err.value) and "\n" not in str(err.value)
    assert store.collections() == [] and store.vectors("photos") == {}


def test_collections_lists_each_collection_with_model_dim_and_points(opener):
    store = opener()
    store.collection("photos", SPEC, create=True).upsert(random_points(5))
    wide = store.collection("wide", OTHER_DIM, create=True)
    wide.upsert([make_point(f"/w/{i}.jpg", np.arange(16) + i) for i in range(2)])

    infos = {info.name: info for info in store.collections()}

    assert set(infos) == {"photos", "wide"}
    assert (infos["photos"].model, infos["photos"].dim, infos["photos"].points) == (
        SPEC.vector_name, 8, 5)
    assert (infos["wide"].model, infos["wide"].dim, infos["wide"].points) == (
        OTHER_DIM.vector_name, 16, 2)
    assert store.vectors("wide") == {OTHER_DIM.vector_name: 16}
    # nothing is in an HNSW graph yet: Edge builds it only in optimize(), local mode never
    assert {i.indexed_vectors for i in infos.values()} == {0}


def test_reopen_keeps_points_and_payload(opener):
    points = random_points(25)
    with opener(persistent=True) as first:
        col = first.collection("photos", SPEC, create=True)
        col.upsert(points)
        before = col.query(points[3].vector, limit=3)

    with opener(persistent=True) as again:
        col = again.collection("photos", SPEC)
        after = col.query(points[3].vector, limit=3)
        assert col.count() == 25
        assert [h.id for h in after] == [h.id for h in before]
        assert after[0].payload == points[3].payload
        with pytest.raises(ModelMismatch):
            again.collection("photos", OTHER_MODEL)


def test_optimize_builds_the_index_and_search_stays_exact(opener):
    store = opener()
    col = store.collection("photos", SPEC, create=True)
    points = random_points(120)
    col.upsert(points)
    query = np.random.default_rng(7).standard_normal(DIM).astype(np.float32)
    before = col.query(query, limit=10)
    expects_index = opener.backend == "edge"  # a server indexes in the background

    assert col.needs_optimize() is expects_index
    col.optimize()

    after = col.query(query, limit=10)
    assert col.needs_optimize() is False
    assert [h.id for h in after] == [h.id for h in before]
    assert [h.score for h in after] == pytest.approx([h.score for h in before], abs=1e-5)
    if expects_index:
        (info,) = store.collections()
        assert info.indexed_vectors == 120
    col.upsert(random_points(5, seed=8, folder="/later"))
    assert col.count() == 125 and col.needs_optimize() is False


def test_close_is_idempotent_and_the_store_is_a_context_manager(opener):
    with opener() as store:
        col = store.collection("photos", SPEC, create=True)
        col.upsert(random_points(2))
        assert col.count() == 2
    store.close()

    with pytest.raises(RuntimeError):
        col.count()  # a handle does not outlive its store
    with pytest.raises(RuntimeError):
        store.collection("photos", SPEC)


def test_a_vectorless_point_is_refused(col):
    with pytest.raises(ValueError):
        col.upsert([Point(str(uuid.uuid4()), None, {"path": "/x.jpg"})])


def test_a_serialised_handle_lets_threads_share_a_collection(col):
    import threading

    from xlir_qdrant.store.base import Serialised

    shared = Serialised(col)
    shared.upsert(random_points(1200))  # more than two scroll pages
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            for _ in range(20):
                assert len(shared.query(unit(np.ones(DIM)), limit=5)) == 5
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def writer() -> None:
        try:
            for i in range(10):
                shared.upsert(random_points(20, seed=100 + i, folder=f"/w/{i}"))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(3)] + [threading.Thread(target=writer)]
    scrolled = 0
    for t in threads:
        t.start()
    for _ in shared.scroll(filter=Filter(under=("/a/photos",)), batch=500):
        scrolled += 1  # the other threads' calls run between its pages
    for t in threads:
        t.join()
    assert errors == [] and scrolled == 1200
    assert shared.count() == 1400 and shared.thread_safe


# -- EdgeStore: one process per store directory ---------------------------------------------

_HOLDER = """
import sys
from pathlib import Path
from xlir_qdrant.store.edge import EdgeStore
store = EdgeStore(Path(sys.argv[1]), purpose="xlir index")
print("ready", flush=True)
sys.stdin.readline()
store.close()
"""


def _spawn_holder(root: Path) -> subprocess.Popen:
    paths = [str(REPO), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    child = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(root)], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, text=True, env=env,
    )
    assert child.stdout.readline().strip() == "ready"
    return child


def test_edge_store_refuses_a_second_process_and_names_the_holder(tmp_path):
    root = tmp_path / "store"
    child = _spawn_holder(root)
    try:
        with pytest.raises(StoreLocked) as err:
            EdgeStore(root)
        message = str(err.value)
        assert message == (
            f"store {root} is in use by process {child.pid} (xlir index); "
            f"wait for it to finish or use --store to pick another directory"
        )
    finally:
        child.communicate("\n", timeout=30)
    assert child.returncode == 0

    with EdgeStore(root) as store:  # released on close
        assert store.collection("photos", SPEC, create=True).count() == 0


def test_edge_lock_dies_with_a_killed_process(tmp_path):
    root = tmp_path / "store"
    child = _spawn_holder(root)
    child.send_signal(signal.SIGKILL)
    child.communicate(timeout=30)

    with EdgeStore(root, purpose="xlir search") as store:
        assert (root / "xlir.lock").read_text().split() == [str(os.getpid()), "xlir", "search"]
        store.collection("photos", SPEC, create=True)


def test_edge_store_refuses_a_second_handle_in_the_same_process(tmp_path):
    first = EdgeStore(tmp_path, purpose="xlir index")
    with pytest.raises(StoreLocked, match=f"process {os.getpid()} \\(xlir index\\)"):
        EdgeStore(tmp_path)
    first.close()
    EdgeStore(tmp_path).close()


def test_edge_shard_held_outside_xlir_is_store_locked(tmp_path):
    import qdrant_edge

    with EdgeStore(tmp_path) as store:
        store.collection("photos", SPEC, create=True)
    raw = qdrant_edge.EdgeShard.load(str(tmp_path / "collections" / "photos"))  # no xlir.lock
    try:
        with EdgeStore(tmp_path) as store, pytest.raises(StoreLocked, match="is in use"):
            store.collection("photos", SPEC)
    finally:
        raw.close()


def _mapped_kb(prefix: Path) -> dict[str, int]:
    """Files under ``prefix`` that this process maps, with the resident KB of each mapping."""
    out, current = {}, None
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if not fields[0].endswith(":"):  # a mapping's header: address range, ..., and a path if any
            current = fields[5] if len(fields) >= 6 and fields[5].startswith(str(prefix)) else None
        elif current and fields[0] == "Rss:":
            out[current] = out.get(current, 0) + int(fields[1])
    return out


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the engine drops cached pages on Linux only")
def test_edge_load_holds_the_shards_small_files_resident_and_lets_go_after(tmp_path, monkeypatch):
    from xlir_qdrant.store.pagecache import SMALL, kept_in_cache

    store = EdgeStore(tmp_path / "store")
    store.collection("photos", SPEC, create=True).upsert(random_points(30))
    store.close()
    shard = tmp_path / "store" / "collections" / "photos"
    files = [p for p in (shard / "segments").rglob("*") if p.is_file()]
    small = {str(p): p.stat().st_size for p in files if 0 < p.stat().st_size <= SMALL}
    assert len(small) >= 10 and any(p.stat().st_size > SMALL for p in files)  # bitmaps, and vector pages
    with kept_in_cache(shard):
        mapped = _mapped_kb(shard)
        # each small file mapped with every page resident, so the kernel cannot drop it; no large one
        assert set(mapped) == set(small)
        assert all(mapped[path] * 1024 >= size for path, size in small.items())
    assert _mapped_kb(shard) == {}

    held = []  # the store opens the shard inside the holder, and it is let go after
    real = edge_module.kept_in_cache

    @contextlib.contextmanager
    def recording(path: Path):
        with real(path):
            held.append(len(_mapped_kb(shard)))
            yield
    monkeypatch.setattr(edge_module, "kept_in_cache", recording)
    with EdgeStore(tmp_path / "store") as again:
        assert again.collection("photos", SPEC).count() == 30
    assert held == [len(small)] and _mapped_kb(shard) == {}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the engine drops cached pages on Linux only")
def test_the_page_cache_holder_leaves_the_engine_file_descriptors(tmp_path):
    import resource

    from xlir_qdrant.store.pagecache import kept_in_cache

    store = EdgeStore(tmp_path / "store")
    store.collection("photos", SPEC, create=True).upsert(random_points(30))
    store.close()
    shard = tmp_path / "store" / "collections" / "photos"
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    used = len(os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (used + 40, hard))  # fewer than the shard's small files
    try:
        with kept_in_cache(shard):
            assert 0 < len(_mapped_kb(shard)) <= 20  # half of what is left, at most
        with EdgeStore(tmp_path / "store") as again:  # the engine still has descriptors to open it with
            assert again.collection("photos", SPEC).count() == 30
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_shard_is_probed_once_after_a_kill_and_trusted_only_once_verified(tmp_path, monkeypatch):
    from xlir_qdrant.store import health

    store = EdgeStore(tmp_path / "store")
    store.collection("photos", SPEC, create=True).upsert(random_points(20))
    store.close()
    shard = tmp_path / "store" / "collections" / "photos"
    health.write_state(shard, health.ShardState(clean=False))  # as a killed run leaves it
    probes = []
    real = health.probe
    monkeypatch.setattr(health, "probe", lambda path: probes.append(path) or real(path))

    def reopen() -> bool:
        with EdgeStore(tmp_path / "store") as again:
            col = again.collection("photos", SPEC)
            assert col.count() == 20
            trusted = col.trusted
            if len(probes) == 2:
                col.mark_verified()  # as an index run does once it has read every vector
            return trusted

    assert reopen() is False and len(probes) == 1  # opened in a child first, then not trusted
    assert reopen() is False and len(probes) == 1  # closed cleanly since, unchanged: not probed again
    os.utime(next(shard.rglob("*.dat")))  # a file changed from outside: probed again
    assert reopen() is False and len(probes) == 2
    assert reopen() is True and len(probes) == 2  # verified, then closed cleanly: trusted


def test_edge_store_refuses_an_unsafe_collection_name(tmp_path):
    with EdgeStore(tmp_path) as store, pytest.raises(ConfigError):
        store.collection("../escape", SPEC, create=True)


def test_edge_store_in_an_unusable_directory_is_unavailable(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")

    with pytest.raises(StoreUnavailable, match="--store"):
        EdgeStore(blocker / "store")


# -- ServerStore: connection and local-mode lock --------------------------------------------


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_server_is_one_line_naming_the_url():
    url = f"http://127.0.0.1:{_closed_port()}"

    with pytest.raises(StoreUnavailable) as err:
        ServerStore.connect(url, api_key=None, timeout=2)

    message = str(err.value)
    assert message.startswith(f"cannot reach Qdrant at {url}: ")
    assert "XLIR_QDRANT_URL" in message and "\n" not in message


def test_local_mode_folder_in_use_is_store_locked(tmp_path):
    with ServerStore.local(tmp_path / "qdrant"), pytest.raises(StoreLocked, match="is in use"):
        ServerStore.local(tmp_path / "qdrant")


def test_open_store_picks_the_backend(tmp_path):
    with open_store(tmp_path / "store", purpose="xlir info") as store:
        assert isinstance(store, EdgeStore)
        assert store.location == str(tmp_path / "store")
    with pytest.raises(StoreUnavailable):
        open_store(tmp_path, qdrant_url=f"http://127.0.0.1:{_closed_port()}", timeout=2)
