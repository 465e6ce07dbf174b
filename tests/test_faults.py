"""Nothing lost, nothing poisoned: every kind of bad file, name, derived file and damaged store
the tests can make ends in a correct index or one clear line, never a traceback or a hang."""

from __future__ import annotations

import glob
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import save
from xlir_qdrant.config import Overrides, Settings
from xlir_qdrant.errors import DiskFull, StoreDamaged
from xlir_qdrant.index import Index
from xlir_qdrant.records import IngestEvent
from xlir_qdrant.store.schema import file_path, point_id

REPO = Path(__file__).resolve().parents[1]
LATIN1 = os.fsdecode(b"caf\xe9")  # a name that is not UTF-8, as a FAT drive or an old copy has it


def _index(tmp: Path, **kw: object) -> Index:
    return Index(Settings.load(Overrides(store=tmp / "store", home=tmp / "home", model="fake-colour", batch_size=4,
                                         **kw)))


def _good_photos(folder: Path, n: int = 6) -> Path:
    for i in range(n):
        save(folder / f"good-{i}.png", (40 * i % 256, 200 - 20 * i, 90))
    return folder


def _fault_corpus(folder: Path) -> dict[str, str | None]:
    """Files of every usual kind of trouble; name -> a word its skip reason must contain, or
    None when xlir must index it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "zero.jpg").write_bytes(b"")
    full = io.BytesIO()
    Image.new("RGB", (300, 300), (10, 200, 10)).save(full, "JPEG", quality=95)
    (folder / "truncated.jpg").write_bytes(full.getvalue()[:400])
    (folder / "notes.jpg").write_text("not an image at all")
    Image.new("RGB", (30, 20), (200, 0, 0)).save(folder / "really-a-png.jpg", "PNG")  # wrong extension
    Image.new("CMYK", (30, 20), (0, 200, 200, 0)).save(folder / "cmyk.jpg", "JPEG")
    Image.fromarray(np.full((20, 30), 40000, np.uint16)).save(folder / "sixteen-bit.png")
    frames = [Image.new("RGB", (20, 20), c) for c in ((255, 0, 0), (0, 255, 0))]
    frames[0].save(folder / "animated.gif", save_all=True, append_images=frames[1:], duration=100)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (40, 20), (0, 0, 255)).save(folder / "rotated.jpg", exif=exif)
    os.mkfifo(folder / "pipe.jpg")  # a FIFO with an image's name: never opened (it would block)
    os.symlink("loop.jpg", folder / "loop.jpg")  # a link to itself: its stat fails
    os.symlink(folder / "gone.jpg", folder / "dangling.jpg")
    return {"zero.jpg": "empty", "truncated.jpg": "truncated", "notes.jpg": "not an image", "really-a-png.jpg": None,
            "cmyk.jpg": None, "sixteen-bit.png": None, "animated.gif": None, "rotated.jpg": None,
            "loop.jpg": "symbolic links", "dangling.jpg": "broken link"}


# -- per-file faults are skips, never the end of the run ------------------------------------------


def test_the_fault_corpus_indexes_the_good_and_skips_the_bad_with_one_line_each(tmp_path: Path) -> None:
    folder = _good_photos(tmp_path / "photos")
    expected = _fault_corpus(folder)
    events: list[IngestEvent] = []
    with _index(tmp_path) as idx:
        report = idx.index([folder], progress=events.append)
        stored = {Path(file_path(p.payload)).name for p in idx.collection.scroll()}
    skipped = {Path(e.path).name: e.reason for e in events if e.kind == "skipped"}
    indexable = {name for name, why in expected.items() if why is None}
    assert stored == {f"good-{i}.png" for i in range(6)} | indexable
    assert set(skipped) == {name for name, why in expected.items() if why is not None}
    for name, why in expected.items():
        if why is not None:
            assert why.lower() in skipped[name].lower(), (name, skipped[name])
            assert "\n" not in skipped[name]
    assert report.skipped == len(skipped) and report.added == len(stored)


def test_a_fifo_named_on_the_command_line_is_refused_not_read(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.jpg")
    events: list[IngestEvent] = []
    with _index(tmp_path) as idx:
        report = idx.index([tmp_path / "pipe.jpg"], progress=events.append)
    assert report.skipped == 1 and report.added == 0
    assert "not a regular file" in next(e.reason for e in events if e.kind == "skipped")


def test_names_that_are_not_utf8_are_indexed_found_removed_and_pruned(tmp_path: Path) -> None:
    folder = _good_photos(tmp_path / "photos", 2)
    odd_dir = folder / f"{LATIN1}-dir"
    odd = save(odd_dir / f"{LATIN1}.png", (230, 20, 20))
    save(folder / f"{LATIN1}-red.jpg", (235, 15, 15))
    with _index(tmp_path) as idx:
        report = idx.index([folder])
        assert report.added == 4 and report.skipped == 0
        hits = idx.search("red", top_k=2).hits
        assert {h.path for h in hits} == {str(folder).encode().decode() + "/caf\\xe9-dir/caf\\xe9.png",
                                          str(folder) + "/caf\\xe9-red.jpg"}
        json.dumps([h.to_dict() for h in hits])  # readable, and JSON carries it
        [point] = idx.collection.retrieve([point_id(str(odd))])
        assert file_path(point.payload) == str(odd)  # the exact bytes come back
        assert idx.index([folder]).unchanged == 4  # and the next run knows it
        assert idx.search("red", under=[odd_dir]).hits[0].path.endswith("caf\\xe9.png")
        os.unlink(folder / f"{LATIN1}-red.jpg")
        assert idx.index([folder]).removed == 1
        assert idx.remove([odd_dir]) == 1 and idx.count() == 2


def test_a_symlink_loop_does_not_switch_pruning_off(tmp_path: Path) -> None:
    folder = _good_photos(tmp_path / "photos", 3)
    os.symlink("loop.jpg", folder / "loop.jpg")
    with _index(tmp_path) as idx:
        idx.index([folder])
        (folder / "good-0.png").unlink()
        report = idx.index([folder])
        assert report.removed == 1 and idx.count() == 2


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to another user needs root")
def test_unreadable_files_and_folders_as_a_normal_user(tmp_path_factory: pytest.TempPathFactory) -> None:
    import tempfile

    # pytest's own temporary folders are root's alone: this one is reachable by others
    tmp_path = Path(tempfile.mkdtemp(prefix="xlir-faults-"))
    os.chmod(tmp_path, 0o755)
    folder = _good_photos(tmp_path / "photos", 3)
    save(folder / "locked" / "inside.png", (1, 2, 3))
    # Root reads everything, so the child indexes once as root (which also loads every module
    # it will need: the interpreter itself may be out of an unprivileged user's reach), then
    # drops to the user nobody for the run that meets files it may not read.
    code = f"""
import json, os, subprocess
from pathlib import Path
from PIL import Image
import fakes
from xlir_qdrant.encoders import registry
registry.MODELS = registry.MODELS + fakes.SPECS
registry.FAMILIES["fake"] = fakes.FAMILY
from xlir_qdrant.config import Overrides, Settings
from xlir_qdrant.index import Index
root, folder = Path("{tmp_path}"), Path("{folder}")
s = Settings.load(Overrides(store=root / "store", home=root / "home", model="fake-colour"))
events = []
with Index(s) as idx:
    first = idx.index([folder]).to_dict()
    idx.search("red")
subprocess.run(["chmod", "-R", "a+rwX", str(root)], check=True)
Image.new("RGB", (8, 8), (9, 9, 9)).save(folder / "secret.png")  # new since: it must be read
os.chmod(folder / "secret.png", 0o000)
os.chmod(folder / "locked", 0o000)
os.unlink(folder / "good-0.png")
os.setgid(65534)
os.setuid(65534)
with Index(s) as idx:
    second = idx.index([folder], progress=events.append).to_dict()
    left = sorted(Path(p.payload["path"]).name for p in idx.collection.scroll())
print(json.dumps({{"first": first, "second": second, "left": left,
                  "skipped": [[e.path, e.reason] for e in events if e.kind in ("skipped", "unreadable")]}}))
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")]),
           "XLIR_CACHE": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    shutil.rmtree(tmp_path, ignore_errors=True)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["first"]["added"] == 4
    reasons = {Path(p).name: r for p, r in out["skipped"]}
    assert "permission denied" in reasons["secret.png"] and "cannot read folder" in reasons["locked"]
    # the deleted photo is pruned; what could not be read (the file, the folder's content) is kept
    assert out["second"]["removed"] == 1
    assert out["left"] == ["good-1.png", "good-2.png", "inside.png"]


def test_the_pixel_limit_is_the_flags_not_pillows(tmp_path: Path) -> None:
    from xlir_qdrant.images.decode import DecodeError, probe

    buf = io.BytesIO()
    Image.new("L", (10_000, 10_000)).save(buf, "PNG")  # a valid 100 MP picture; Pillow's own limit is 89 MP
    data = buf.getvalue()
    assert (probe(data).width, probe(data).height) == (10_000, 10_000)
    with pytest.raises(DecodeError, match=r"100 MP, over the 50 MP limit \(raise --max-megapixels\)"):
        probe(data, max_megapixels=50)
    folder = tmp_path / "photos"
    save(folder / "wide.png", (10, 10, 10), size=(1200, 900))
    events: list[IngestEvent] = []
    with _index(tmp_path, max_megapixels=1.0) as idx:
        assert idx.index([folder], progress=events.append).skipped == 1
    assert "1 MP, over the 1 MP limit (raise --max-megapixels)" in events[-1].reason or \
        "over the 1 MP limit" in next(e.reason for e in events if e.kind == "skipped")


# -- derived files are verified before use --------------------------------------------------------


def test_a_poisoned_tag_matrix_is_rebuilt_with_one_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    from xlir_qdrant.cache import _digest

    monkeypatch.setenv("XLIR_CACHE", str(tmp_path / "cache"))
    folder = _good_photos(tmp_path / "photos", 2)
    save(folder / "red.png", (240, 10, 10))
    with _index(tmp_path) as idx:
        idx.index([folder])
    [matrix] = (tmp_path / "cache").glob("tags-fake-colour-en-*.npz")
    with np.load(matrix) as stored:
        nan = np.full_like(stored["data"], np.nan)
    with open(matrix, "wb") as fh:  # the right shape and a matching checksum: only its values are wrong
        np.savez(fh, data=nan, sha256=np.array(_digest(nan)))
    caplog.clear()
    with _index(tmp_path / "again") as idx:
        idx.index([folder])
        assert "red" in idx.search("red", top_k=1, tags=["red"]).hits[0].path
    warnings = [r.getMessage() for r in caplog.records if "damaged" in r.getMessage()]
    assert len(warnings) == 1 and matrix.name in warnings[0] and "not finite" in warnings[0]
    with np.load(matrix) as stored:
        assert np.isfinite(stored["data"]).all()


def test_a_full_cache_disk_is_a_warning_and_the_run_goes_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    import errno

    from xlir_qdrant import cache

    monkeypatch.setenv("XLIR_CACHE", str(tmp_path / "cache"))

    def full(*_a: object, **_k: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache.np, "savez", full)
    with _index(tmp_path) as idx:
        assert idx.index([_good_photos(tmp_path / "photos", 2)]).added == 2
    assert any("disk full" in r.getMessage() and "going on without it" in r.getMessage() for r in caplog.records)


def test_stale_temporaries_of_a_killed_export_are_swept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from xlir_qdrant import cache

    old = tmp_path / "tmpab12.onnx.tmp"
    old.write_bytes(b"half an export")
    fresh = tmp_path / "tmpcd34.onnx.tmp"
    fresh.write_bytes(b"an export in progress")
    os.utime(old, (0, 0))
    monkeypatch.setenv("XLIR_CACHE", str(tmp_path))
    cache._sweep.cache_clear()
    cache.cache_dir()
    assert not old.exists() and fresh.exists()


# -- a damaged store says so in one line, and `xlir check --repair` repairs it --------------------


def _segment(tmp: Path) -> str:
    return glob.glob(str(tmp / "store" / "collections" / "photos" / "segments" / "*"))[0]


def _damage(tmp: Path, kind: str) -> None:
    seg = _segment(tmp)
    if kind == "vectors":  # random bytes over stored vectors
        with open(glob.glob(seg + "/vector_storage-*/vectors/chunk_0.mmap")[0], "r+b") as fh:
            fh.write(np.random.default_rng(0).bytes(600))
    elif kind == "truncated":
        os.truncate(glob.glob(seg + "/vector_storage-*/vectors/chunk_0.mmap")[0], 100)
    elif kind == "id-tracker":  # the engine would ask for tens of GB and abort: a child finds out
        path = seg + "/mutable_id_tracker.mappings"
        with open(path, "r+b") as fh:
            fh.seek(os.path.getsize(path) * 9 // 10)
            fh.write(np.random.default_rng(1).bytes(100))
    elif kind == "payload":
        for page in glob.glob(seg + "/payload_storage/page_*"):
            with open(page, "r+b") as fh:
                fh.seek(200)
                fh.write(np.random.default_rng(2).bytes(2000))
    elif kind == "wal":
        for log in glob.glob(str(tmp / "store" / "collections" / "photos" / "wal" / "open-*")):
            with open(log, "r+b") as fh:
                fh.write(np.random.default_rng(3).bytes(64))


@pytest.mark.parametrize("kind", ["vectors", "truncated", "id-tracker", "payload", "wal"])
def test_a_damaged_store_is_one_line_and_check_repair_restores_every_photo(tmp_path: Path, kind: str) -> None:
    from typer.testing import CliRunner

    from xlir_cli.main import app

    folder = _good_photos(tmp_path / "photos", 24)
    with _index(tmp_path) as idx:
        idx.index([folder])
    _damage(tmp_path, kind)
    runner = CliRunner()
    store = ["--store", str(tmp_path / "store")]
    env = {"XLIR_HOME": str(tmp_path / "home")}

    # Damaged vectors a search can still read are re-embedded by the next `xlir index`; any
    # other damage stops every command until `xlir check --repair`.
    refusing = [["search", "red"], ["check"]] + ([] if kind == "vectors" else [["index", str(folder)]])
    for command in refusing:
        result = runner.invoke(app, [*command, *store], env=env)
        assert result.exit_code == 1, (command, result.output)
        assert "xlir check --repair" in result.stderr and "Traceback" not in result.output, result.stderr
    if kind == "vectors":
        damaged = json.loads(runner.invoke(app, ["check", "--json", *store], env=env).stdout)["bad_vector"]
        result = runner.invoke(app, ["index", str(folder), "--json", *store], env=env)
        assert result.exit_code == 0 and json.loads(result.stdout)["updated"] == damaged > 0
        _damage(tmp_path, kind)
    result = runner.invoke(app, ["check", "--repair", "--json", *store], env=env)
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["healthy"] is True
    if kind == "wal":
        assert "wal.damaged-" in report["set_aside"] and not report["rebuilt"]
    elif kind != "vectors":
        assert ".damaged-" in report["set_aside"] and report["rebuilt"]
        assert Path(report["set_aside"]).is_dir()  # kept, never deleted
    else:
        assert report["repaired"] == report["bad_vector"] > 0
    result = runner.invoke(app, ["check", "--json", *store], env=env)
    again = json.loads(result.stdout)
    assert result.exit_code == 0 and again["points"] == again["sound"] == 24
    with _index(tmp_path) as idx:
        assert idx.index([folder]).unchanged == 24 and len(idx.search("red", top_k=30).hits) == 24


def test_check_finds_every_kind_of_bad_point_and_repair_fixes_them(tmp_path: Path) -> None:
    from xlir_qdrant.records import Point

    folder = _good_photos(tmp_path / "photos", 8)
    with _index(tmp_path) as idx:
        idx.index([folder])
        col = idx.collection
        points = {Path(p.payload["path"]).name: p for p in col.scroll(with_vectors=True)}
        nan = points["good-0.png"]
        col.upsert([Point(nan.id, np.full(8, np.nan, np.float32), nan.payload)])
        moved = points["good-1.png"]
        col.delete([moved.id])
        col.upsert([Point(point_id("/nowhere/else.png"), moved.vector, moved.payload)])  # wrong id
        bare = points["good-2.png"]
        col.upsert([Point(bare.id, bare.vector, {"note": "payload lost"})])
        (folder / "good-3.png").unlink()
        save(folder / "good-4.png", (1, 1, 1), size=(70, 50))
        report = idx.check()
        assert (report.bad_vector, report.wrong_id, report.bad_payload, report.missing_file,
                report.changed_file) == (1, 1, 1, 1, 1)
        assert report.sound == 3 and not report.healthy
        fixed = idx.check(repair=True)
        assert fixed.healthy and fixed.removed == 4 and fixed.repaired == 3
        after = idx.check()
        assert after.healthy and after.points == after.sound == 6  # good-2 comes back with the next index
        assert idx.index([folder]).added == 1 and idx.check().sound == 7


def test_a_store_that_lost_points_since_it_was_closed_cleanly_is_damaged(tmp_path: Path) -> None:
    from xlir_qdrant.store import health

    with _index(tmp_path) as idx:
        idx.index([_good_photos(tmp_path / "photos", 6)])
    shard = tmp_path / "store" / "collections" / "photos"
    state = health.read_state(shard)
    health.write_state(shard, health.ShardState(True, "changed outside", state.points + 5))
    with _index(tmp_path) as idx, pytest.raises(StoreDamaged, match="holds 6 of the 11 points"):
        idx.search("red")


# -- durability and full disks ----------------------------------------------------------------------


def test_the_writer_flushes_every_few_seconds_and_at_the_end(tmp_path: Path) -> None:
    import contextlib
    import time

    from xlir_qdrant.ingest.writer import Writer
    from xlir_qdrant.records import Point

    class Recorder:
        write_streams, thread_safe, name, location = 1, False, "photos", "memory"

        def __init__(self) -> None:
            self.log: list[str] = []

        def upsert(self, points: list[Point]) -> None:
            time.sleep(0.03)
            self.log.append("upsert")

        def flush(self) -> None:
            self.log.append("flush")

    col = Recorder()
    writer = Writer(col, contextlib.nullcontext(), lambda n: None, flush_every=0.05)
    for i in range(10):
        writer.put([Point(str(i), np.ones(2, np.float32))])
        time.sleep(0.03)
    writer.close()
    assert col.log[-1] == "flush" and col.log.count("flush") >= 3
    gaps = "".join("u" if e == "upsert" else "f" for e in col.log).split("f")
    assert max(len(g) for g in gaps) <= 3  # never more than ~0.1 s of upserts unflushed


def test_writing_with_too_little_free_space_is_one_line_and_loses_nothing(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from xlir_qdrant.store import health

    folder = _good_photos(tmp_path / "photos", 6)
    with _index(tmp_path) as idx:
        idx.index([folder])
    _good_photos(tmp_path / "photos" / "more", 4)
    with monkeypatch.context() as m:
        m.setattr(health, "free_mb", lambda _p: 30.0)
        with _index(tmp_path) as idx, pytest.raises(DiskFull, match=r"30 MB free at .*at least 64 MB"):
            idx.index([folder])
    with _index(tmp_path) as idx:
        report = idx.index([folder])
        assert report.unchanged == 6 and report.added + report.reused == 4 and idx.count() == 10


@pytest.fixture
def small_disk(tmp_path: Path):  # noqa: ANN201
    """A real 256 MB filesystem (tmpfs), mounted for the test; skipped where mounting is not allowed."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip("mounting a small filesystem is not allowed here")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(disk: Path, leave_mb: int) -> None:
    free = shutil.disk_usage(disk).free // 2**20
    with open(disk / "filler", "wb") as fh:
        fh.truncate(0)
        for _ in range(max(0, free - leave_mb)):
            fh.write(b"\0" * 2**20)


def test_a_really_full_disk_is_one_line_for_every_command_never_a_bus_error(small_disk: Path, tmp_path: Path) -> None:
    folder = _good_photos(tmp_path / "photos", 6)
    env = {**os.environ, "XLIR_HOME": str(small_disk / "home"), "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}
    script = ("import sys, fakes; from xlir_qdrant.encoders import registry; "
              "registry.MODELS += fakes.SPECS; registry.FAMILIES['fake'] = fakes.FAMILY; "
              "from xlir_cli.main import app; sys.argv[0] = 'xlir'; app()")

    def xlir(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", script, *args, "--store", str(small_disk / "store")],
                              env=env, capture_output=True, text=True, timeout=120)

    first = xlir("index", str(folder), "--model", "fake-colour")
    assert first.returncode == 0, first.stderr
    _fill(small_disk, leave_mb=2)
    _good_photos(tmp_path / "photos" / "more", 4)
    for args in (("index", str(folder)), ("search", "red"), ("info",)):
        done = xlir(*args)
        assert done.returncode == 1, (args, done.returncode, done.stderr)  # 135 would be the bus error
        assert "disk full" in done.stderr and "Traceback" not in done.stderr
    (small_disk / "filler").unlink()
    done = xlir("index", str(folder), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["added"] + json.loads(done.stdout)["reused"] == 4
    done = xlir("check", "--json")
    assert done.returncode == 0 and json.loads(done.stdout)["sound"] == 10


# -- a Qdrant server that fails after it answered --------------------------------------------------


def test_transient_server_errors_are_retried_and_lasting_ones_are_one_line() -> None:
    import httpx
    from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

    from xlir_qdrant.errors import StoreUnavailable
    from xlir_qdrant.store.server import retrying

    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise UnexpectedResponse(500, "Internal Server Error", b"oops", httpx.Headers())
        return "stored"

    assert retrying("http://q:6333", "store points", flaky, pause=0) == "stored" and len(calls) == 3
    timeout = ResponseHandlingException(httpx.ReadTimeout("timed out"))
    with pytest.raises(StoreUnavailable, match=r"Qdrant at http://q:6333 failed to store points 4 times .*run the "
                                               r"same command again"):
        retrying("http://q:6333", "store points", lambda: (_ for _ in ()).throw(timeout), pause=0)
    refused = UnexpectedResponse(403, "Forbidden", b"no", httpx.Headers())
    with pytest.raises(StoreUnavailable, match="refused to search \\(HTTP 403"):
        retrying("http://q:6333", "search", lambda: (_ for _ in ()).throw(refused), pause=0)


class _FlakyQdrant:
    """A tiny HTTP server in the test that answers like Qdrant until told to fail: with 500s,
    by stalling, or with garbage."""

    def __init__(self, mode: str) -> None:
        import http.server
        import threading

        self.mode = mode
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *_a: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                if self.path.startswith("/collections") and self.path.rstrip("/") == "/collections":
                    return self._json({"result": {"collections": []}, "status": "ok", "time": 0})
                return outer.fail(self)

            do_POST = do_PUT = do_DELETE = do_GET  # noqa: N815

            def _json(self, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def fail(self, handler) -> None:  # noqa: ANN001
        import time

        if self.mode == "500":
            handler.send_response(500)
            handler.send_header("Content-Length", "5")
            handler.end_headers()
            handler.wfile.write(b"oops!")
        elif self.mode == "stall":
            time.sleep(4)
        else:
            handler.send_response(200)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", "9")
            handler.end_headers()
            handler.wfile.write(b"<garbage>")

    def close(self) -> None:
        self.server.shutdown()


@pytest.mark.parametrize("mode", ["500", "stall", "garbage"])
def test_a_server_that_fails_after_connecting_is_one_line_naming_it(mode: str, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from xlir_cli.main import app
    from xlir_qdrant.store import server

    monkeypatch.setattr(server, "BACKOFF_S", 0.01)
    fake = _FlakyQdrant(mode)
    try:
        folder = _good_photos(tmp_path / "photos", 2)
        result = CliRunner().invoke(app, ["index", str(folder), "--model", "fake-colour", "--qdrant-url", fake.url],
                                    env={"XLIR_TIMEOUT": "1"})
    finally:
        fake.close()
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.output and lines[-1].startswith("error: Qdrant at " + fake.url)
    assert "4 times" in lines[-1] and "run the same command again" in lines[-1]


# -- kills ------------------------------------------------------------------------------------------


KILLED_RUN = """
import sys, fakes
from pathlib import Path
from xlir_qdrant.encoders import registry
registry.MODELS += fakes.SPECS
registry.FAMILIES["fake"] = fakes.FAMILY
from xlir_qdrant.config import Overrides, Settings
from xlir_qdrant.index import Index
root = Path(sys.argv[1])
with Index(Settings.load(Overrides(store=root / "store", home=root / "home", model="fake-colour", batch_size=4))) as idx:
    idx.index([root / "photos"], progress=lambda e: print(e.kind, e.n, flush=True))
"""


def test_sigkill_at_spread_moments_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    import signal
    import time

    folder = _good_photos(tmp_path / "photos", 40)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}
    for delay in (0.3, 0.8, 1.3, 2.0):
        child = subprocess.Popen([sys.executable, "-c", KILLED_RUN, str(tmp_path)], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(delay)
        child.send_signal(signal.SIGKILL)
        out, _ = child.communicate(timeout=60)
        stored = sum(int(line.split()[1]) for line in out.splitlines() if line.startswith("done "))
        with _index(tmp_path) as idx:
            if not idx.store.vectors(idx.settings.collection):  # killed before it made its collection
                assert stored == 0
                continue
            paths = [p.payload["path"] for p in idx.collection.scroll()]
            assert len(paths) == len(set(paths)) and len(paths) >= stored  # nothing it counted is lost
            assert idx.check().healthy
    with _index(tmp_path) as idx:
        report = idx.index([folder])
        assert idx.count() == 40 and report.added + report.unchanged == 40


def test_library_warnings_reach_the_user_as_one_line_each(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import warnings

    from rich.console import Console
    from typer.testing import CliRunner

    from xlir_cli import app as cli_app
    from xlir_cli.main import app
    from xlir_qdrant.cache import _digest

    monkeypatch.setenv("XLIR_CACHE", str(tmp_path / "cache"))
    folder = _good_photos(tmp_path / "photos", 2)
    runner = CliRunner()
    assert runner.invoke(app, ["index", str(folder), "--model", "fake-colour", "--store", str(tmp_path / "s")]).exit_code == 0
    [matrix] = (tmp_path / "cache").glob("tags-*.npz")
    from xlir_qdrant.vocab import load_vocabulary

    nan = np.full((len(load_vocabulary()), 8), np.nan, np.float32)
    with open(matrix, "wb") as fh:
        np.savez(fh, data=nan, sha256=np.array(_digest(nan)))
    monkeypatch.setattr(cli_app, "_warned", set())
    result = runner.invoke(app, ["index", str(folder), "--model", "fake-colour", "--store", str(tmp_path / "t")])
    assert result.exit_code == 0, result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("warning:")]
    assert len(lines) == 1 and "damaged" in lines[0] and "Traceback" not in result.stderr
    # Python warnings (Pillow's, qdrant-client's) become one line, once per kind, no source line
    buf = io.StringIO()
    monkeypatch.setattr(cli_app.ui, "err", Console(file=buf, width=200, no_color=True))
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        cli_app.quiet_libraries()
        for n in (2, 3):
            warnings.warn(f"Corrupt EXIF data.  Expecting to read 12 bytes but only got {n}.", UserWarning, stacklevel=1)
    assert buf.getvalue().splitlines() == ["warning: Corrupt EXIF data.  Expecting to read 12 bytes but only got 2."]
