"""The web API through an in-process client: the CLI's records, errors, files, limits, jobs."""

from __future__ import annotations

import io
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

import fakes
from conftest import save
from xlir_qdrant.config import Overrides, Settings
from xlir_qdrant.encoders.registry import get_spec
from xlir_qdrant.index import Index
from xlir_qdrant.records import Point
from xlir_qdrant.serve.app import create_app
from xlir_qdrant.serve.security import resolve_token
from xlir_qdrant.serve.service import Limits, Service
from xlir_qdrant.serve.thumbs import Thumbnails
from xlir_qdrant.store.schema import image_payload, point_id

BASE = "http://127.0.0.1:8765"


def settings(tmp_path: Path, **kw: object) -> Settings:
    return Settings.load(Overrides(store=tmp_path / "store", model="fake-colour", **kw))


@pytest.fixture
def idx(colour_photos: Path, tmp_path: Path) -> Iterator[Index]:
    index = Index(settings(tmp_path))
    index.index([colour_photos])
    yield index
    index.close()


def client_for(index: Index, *, token: str | None = None, limits: Limits | None = None) -> tuple[TestClient, Service]:
    service = Service(index, limits=limits)
    return TestClient(create_app(service, token=token), base_url=BASE), service


@pytest.fixture
def api(idx: Index) -> Iterator[TestClient]:
    client, service = client_for(idx)
    with client:
        yield client
    service.close()


def hit_ids(response) -> list[str]:  # noqa: ANN001
    assert response.status_code == 200, response.text
    return [Path(h["path"]).name for h in response.json()["hits"]]


def one_line_error(response, status: int) -> str:  # noqa: ANN001
    assert response.status_code == status, response.text
    message = response.json()["error"]
    assert "\n" not in message and "Traceback" not in message
    return message


def png(colour: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, "PNG")
    return out.getvalue()


# -- search, similar, tags, info: the CLI's records ---------------------------------------------


def test_search_answers_the_records_the_cli_prints(api: TestClient, idx: Index) -> None:
    response = api.get("/api/search", params={"q": "rojo", "top_k": 3})
    assert hit_ids(response)[0] == "red.jpg"
    expected = [h.to_dict() for h in idx.search("rojo", top_k=3).hits]
    assert response.json()["hits"] == json.loads(json.dumps(expected))
    first = response.json()["hits"][0]
    assert first["id"] == point_id(first["path"]) and "red" in first["tags"] and first["taken_at"] is None


def test_search_filters_by_folder_tag_and_date(api: TestClient, colour_photos: Path) -> None:
    trip = str(colour_photos / "trip")
    assert set(hit_ids(api.get("/api/search", params={"q": "red", "in": trip}))) == {"blue.jpg", "white.webp"}
    assert hit_ids(api.get("/api/search", params={"q": "red", "tag": "blau"})) == ["blue.jpg"]  # a German tag name
    past = 1_500_000_000  # 2017: move one photo back in time
    os.utime(colour_photos / "green.png", (past, past))
    assert api.post("/api/index", json={"paths": [str(colour_photos)]}).status_code == 202
    _wait_for_jobs(api)
    assert hit_ids(api.get("/api/search", params={"q": "green", "before": "2018-01-01"})) == ["green.png"]
    assert "green.png" not in hit_ids(api.get("/api/search", params={"q": "green", "after": "2018-01-01"}))


def test_search_by_uploaded_image(api: TestClient) -> None:
    response = api.post("/api/search", files={"image": ("query.png", png((10, 30, 240)), "image/png")},
                        data={"top_k": "2"})
    assert hit_ids(response) == ["blue.jpg", "white.webp"]


def test_similar_ranks_by_the_stored_vector_and_leaves_the_photo_out(api: TestClient) -> None:
    red = api.get("/api/search", params={"q": "red", "top_k": 1}).json()["hits"][0]
    names = hit_ids(api.get(f"/api/similar/{red['id']}"))
    assert "red.jpg" not in names and len(names) == 3


def test_tags_of_a_photo_in_the_asked_language(api: TestClient) -> None:
    red = api.get("/api/search", params={"q": "red", "top_k": 1}).json()["hits"][0]
    result = api.get(f"/api/tags/{red['id']}", params={"lang": "de"}).json()
    assert result["source"] == "index" and result["path"] == red["path"]
    assert "Rot" in [t["name"] for t in result["tags"]] and {t["lang"] for t in result["tags"]} == {"de"}


def test_info_and_status(api: TestClient, idx: Index, colour_photos: Path) -> None:
    assert api.get("/api/info").json() == json.loads(json.dumps(idx.stats().to_dict()))
    status = api.get("/api/status").json()
    assert status["model"] == "fake-colour" and status["photos"] == 4 and status["roots"] == [str(colour_photos)]
    assert status["job"] is None and status["pid"] == os.getpid()


BAD_REQUESTS = [
    ("/api/search?q=", 400, "empty query"),
    ("/api/search?q=%20%20", 400, "empty query"),
    ("/api/search?q=red&top_k=0", 400, "top_k"),
    ("/api/search?q=red&top_k=lots", 400, "top_k"),
    ("/api/search?q=red&after=yesterday", 400, "not a date"),
    ("/api/search?q=red&after=2024-02-01&before=2024-01-01", 400, "earlier"),
    ("/api/search?q=red&tag=no-such-tag-anywhere", 400, "unknown tag"),
    ("/api/similar/not-an-id", 404, "no photo"),
    ("/api/similar/00000000-0000-5000-8000-000000000000", 404, "no photo"),
    ("/api/tags/00000000-0000-5000-8000-000000000000?lang=de", 404, "no photo"),
    ("/api/thumb/00000000-0000-5000-8000-000000000000", 404, "no photo"),
    ("/api/image/00000000-0000-5000-8000-000000000000", 404, "no photo"),
    ("/api/jobs/nope", 404, "no index job"),
    ("/api/nothing-here", 404, "not found"),
]


def test_bad_requests_are_one_line_json_errors(api: TestClient) -> None:
    for url, status, says in BAD_REQUESTS:
        assert says in one_line_error(api.get(url), status), url


def test_tags_in_an_unknown_language_and_a_bad_thumbnail_size(api: TestClient) -> None:
    red = api.get("/api/search", params={"q": "red", "top_k": 1}).json()["hits"][0]
    assert "--vocab" in one_line_error(api.get(f"/api/tags/{red['id']}", params={"lang": "pt"}), 400)
    assert "size" in one_line_error(api.get(f"/api/thumb/{red['id']}", params={"size": 5000}), 400)


def test_an_empty_index_says_so(tmp_path: Path) -> None:
    with Index(settings(tmp_path)) as empty:
        client, service = client_for(empty)
        response = client.get("/api/search", params={"q": "red"})
        assert "xlir index" in one_line_error(response, 404) and response.json()["code"] == "empty_index"
        assert client.get("/api/status").json()["photos"] is None
        service.close()


# -- uploads ----------------------------------------------------------------------------------


def test_uploads_that_are_not_images_too_big_or_too_many_pixels(idx: Index) -> None:
    client, service = client_for(idx, limits=Limits(upload_bytes=200_000, upload_megapixels=1.0))
    text = client.post("/api/search", files={"image": ("notes.txt", b"not a picture", "text/plain")})
    assert "not an image" in one_line_error(text, 415)
    empty = client.post("/api/search", files={"image": ("empty.png", b"", "image/png")})
    assert "empty" in one_line_error(empty, 415)
    huge = client.post("/api/search", files={"image": ("huge.png", png((1, 2, 3), (1500, 1000)), "image/png")})
    assert "MP limit" in one_line_error(huge, 413)  # a small file, but 1.5 MP once decoded
    body = client.post("/api/search", files={"image": ("big.bin", os.urandom(400_000), "image/png")})
    assert "limit" in one_line_error(body, 413)
    json_body = client.post("/api/index", content=b"[" * 2_000_000, headers={"content-type": "application/json"})
    assert "limit" in one_line_error(json_body, 413)
    service.close()


# -- thumbnails and originals ---------------------------------------------------------------------


def test_thumbnails_are_upright_bounded_jpegs_cached_on_disk(api: TestClient, idx: Index, colour_photos: Path,
                                                           isolated_home: Path) -> None:
    turned = colour_photos / "turned.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, to be shown rotated 90°: portrait
    Image.new("RGB", (600, 300), (200, 30, 30)).save(turned, exif=exif)
    api.post("/api/index", json={"paths": [str(colour_photos)]})
    _wait_for_jobs(api)
    response = api.get(f"/api/thumb/{point_id(str(turned))}", params={"size": 128})
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    thumb = Image.open(io.BytesIO(response.content))
    assert thumb.format == "JPEG" and thumb.size == (64, 128)  # upright, longer side 128
    cached = list((isolated_home / "thumbs").rglob("*.jpg"))
    assert len(cached) == 1
    assert api.get(f"/api/thumb/{point_id(str(turned))}", params={"size": 128}).content == response.content
    assert list((isolated_home / "thumbs").rglob("*.jpg")) == cached  # served from the cache
    Image.new("RGB", (300, 600), (30, 200, 30)).save(turned)  # the photo changed: a new thumbnail
    os.utime(turned, ns=(time.time_ns() + 10**9,) * 2)
    again = Image.open(io.BytesIO(api.get(f"/api/thumb/{point_id(str(turned))}", params={"size": 128}).content))
    assert again.getpixel((32, 64))[1] > 150
    original = api.get(f"/api/image/{point_id(str(colour_photos / 'red.jpg'))}")
    assert original.status_code == 200 and original.content == (colour_photos / "red.jpg").read_bytes()


def test_the_thumbnail_cache_stays_within_its_bound(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    photos = []
    for i in range(12):  # noise: thumbnails of the same size, give or take
        photos.append(tmp_path / f"p{i}.png")
        Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)).save(photos[-1])
    one = len(Thumbnails(tmp_path / "probe").get(str(photos[0]), 128).read_bytes())
    bound = 4 * one
    thumbs = Thumbnails(tmp_path / "thumbs", max_bytes=bound)
    made = []
    for photo in photos:
        made.append(thumbs.get(str(photo), 128))
        assert made[-1].exists()  # the one just made is always kept
        assert thumbs.total_bytes() <= bound
    kept = [p.exists() for p in made]
    assert 1 < sum(kept) < 12 and kept[-1] and not kept[0]  # the least recently used went first


# -- what may be served: only files under the indexed folders --------------------------------------


TRAVERSALS = [
    "/api/image/..%2F..%2F..%2Fetc%2Fpasswd",
    "/api/thumb/..%2F..%2F..%2Fetc%2Fpasswd",
    "/api/image/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/api/image/../../../etc/passwd",
    "/static/../../pyproject.toml",
    "/static/..%2F..%2Fpyproject.toml",
    "/static/%2e%2e/%2e%2e/pyproject.toml",
    "/api/image/" + point_id("/etc/passwd"),
]


def test_path_traversal_never_reaches_a_file(api: TestClient) -> None:
    for url in TRAVERSALS:
        response = api.get(url)
        assert response.status_code in (400, 404), (url, response.status_code)
        assert b"root:" not in response.content and b"[project]" not in response.content, url


def _point_for(idx: Index, path: Path) -> str:
    """Store a point for ``path`` directly, as if it had been indexed."""
    st = os.stat(path)
    payload = image_payload(str(path), size=st.st_size, mtime_ns=st.st_mtime_ns, sha256="x", width=1, height=1,
                            taken_at=None)
    vector = np.full(8, 0.35, np.float32)
    idx.collection.upsert([Point(point_id(str(path)), vector / np.linalg.norm(vector), payload)])
    return point_id(str(path))


def test_only_files_under_an_indexed_folder_are_served(api: TestClient, idx: Index, tmp_path: Path,
                                                       colour_photos: Path) -> None:
    secret = save(tmp_path / "private" / "secret.png", (1, 2, 3))
    escape = colour_photos / "escape.png"
    escape.symlink_to(secret)  # a link inside the folder to a file outside it
    stray = _point_for(idx, secret)  # a point whose file is outside every indexed folder
    linked = _point_for(idx, escape)
    for photo_id in (stray, linked):
        assert "cannot be shown" in one_line_error(api.get(f"/api/image/{photo_id}"), 404)
        assert "cannot be shown" in one_line_error(api.get(f"/api/thumb/{photo_id}"), 404)
    inside = save(colour_photos / "trip" / "again.png", (9, 9, 9))
    (colour_photos / "link-in.png").symlink_to(inside)  # a link that stays inside is fine
    assert api.get(f"/api/image/{_point_for(idx, colour_photos / 'link-in.png')}").status_code == 200
    red = point_id(str(colour_photos / "red.jpg"))
    (colour_photos / "red.jpg").unlink()
    (colour_photos / "red.jpg").symlink_to(secret)  # replaced by a link after indexing
    assert api.get(f"/api/image/{red}").status_code == 404


def test_tagging_by_path_is_limited_to_the_indexed_folders(api: TestClient, tmp_path: Path,
                                                           colour_photos: Path) -> None:
    inside = api.post("/api/tag", json={"paths": [str(colour_photos / "red.jpg")], "lang": "de"})
    assert inside.status_code == 200 and inside.json()["results"][0]["source"] == "index"
    outside = save(tmp_path / "elsewhere" / "x.png", (200, 10, 10))
    refused = api.post("/api/tag", json={"paths": [str(outside)]})
    assert one_line_error(refused, 403) and refused.json()["paths"] == [str(outside)]
    assert "absolute" in one_line_error(api.post("/api/tag", json={"paths": ["red.jpg"]}), 400)
    sent = api.post("/api/tag/image", files={"image": ("x.png", outside.read_bytes(), "image/png")},
                    data={"path": str(outside), "lang": "de"})
    assert sent.status_code == 200 and sent.json()["results"][0]["path"] == str(outside)
    assert sent.json()["results"][0]["source"] == "file"


# -- who may ask ------------------------------------------------------------------------------------


def test_a_token_is_needed_when_one_is_set(idx: Index) -> None:
    client, service = client_for(idx, token="s3cret-token")
    assert "token" in one_line_error(client.get("/api/status"), 401)
    assert client.get("/api/status", headers={"authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/api/status", headers={"authorization": "Bearer s3cret-token"}).status_code == 200
    assert client.get("/", params={"token": "wrong"}, follow_redirects=False).status_code == 401
    assert client.get("/").status_code == 401 and client.get("/static/app.js").status_code == 401
    opened = client.get("/", params={"token": "s3cret-token"}, follow_redirects=False)
    assert opened.status_code == 303 and opened.headers["location"] == "/"
    assert "HttpOnly" in opened.headers["set-cookie"] and "SameSite=Strict" in opened.headers["set-cookie"]
    assert client.get("/api/status").status_code == 200  # the cookie now carries it
    assert client.get("/").status_code == 200
    service.close()


def test_tokens_are_needed_off_loopback_and_generated_when_not_given() -> None:
    assert resolve_token("127.0.0.1", None) == (None, False)
    assert resolve_token("localhost", None) == (None, False)
    assert resolve_token("::1", None) == (None, False)
    token, generated = resolve_token("0.0.0.0", None)
    assert generated and len(token or "") >= 24 and token != resolve_token("0.0.0.0", None)[0]
    assert resolve_token("192.168.1.5", "mine") == ("mine", False)
    assert resolve_token("127.0.0.1", "mine") == ("mine", False)  # asked for: required even here


def test_loopback_answers_only_loopback_host_names_and_same_origin_writes(api: TestClient) -> None:
    assert one_line_error(api.get("/api/status", headers={"host": "evil.example:8765"}), 403)
    assert api.get("/api/status", headers={"host": "localhost:8765"}).status_code == 200
    assert api.get("/api/status", headers={"host": "[::1]:8765"}).status_code == 200
    cross = api.post("/api/index", json={"paths": ["/tmp"]}, headers={"origin": "http://evil.example"})
    assert "another site" in one_line_error(cross, 403)
    plain = api.post("/api/index", content=json.dumps({"paths": ["/tmp"]}), headers={"content-type": "text/plain"})
    assert plain.status_code == 400  # a cross-site form's body is not read as JSON
    reply = api.get("/api/status", headers={"origin": "http://evil.example"})
    assert "access-control-allow-origin" not in reply.headers  # no CORS: other sites cannot read answers


def test_the_qdrant_api_key_never_reaches_the_browser(tmp_path: Path, colour_photos: Path) -> None:
    from xlir_qdrant.store.server import ServerStore

    key = "qdrant-api-key-that-must-stay-home"
    with_key = Settings.load(Overrides(qdrant_url="http://qdrant.example:6333", model="fake-colour"))
    with_key = type(with_key)(**{**with_key.__dict__, "qdrant_api_key": key})
    with Index(with_key, store=ServerStore.local(":memory:")) as index:
        index.index([colour_photos])
        client, service = client_for(index)
        red = client.get("/api/search", params={"q": "red"}).json()["hits"][0]["id"]
        for url in ("/", "/static/app.js", "/api/status", "/api/info", "/api/search?q=red", f"/api/tags/{red}",
                    "/api/jobs", "/api/openapi.json"):
            response = client.get(url)
            assert response.status_code == 200 and key not in response.text, url
        service.close()


def test_every_answer_carries_the_security_headers(api: TestClient) -> None:
    for url in ("/", "/api/status", "/api/nothing"):
        headers = api.get(url).headers
        assert headers["x-content-type-options"] == "nosniff" and headers["x-frame-options"] == "DENY"
        assert "default-src 'self'" in headers["content-security-policy"]


def test_the_page_and_its_files_come_from_the_package(api: TestClient) -> None:
    page = api.get("/")
    assert page.status_code == 200 and 'id="q"' in page.text and "/static/app.js" in page.text
    assert "http" not in page.text.replace("http-equiv", "")  # nothing loaded from elsewhere
    for name in ("app.js", "app.css", "icon.svg"):
        response = api.get(f"/static/{name}")
        assert response.status_code == 200 and "https://" not in response.text


# -- index jobs ---------------------------------------------------------------------------------------


def _wait_for_jobs(api: TestClient, deadline: float = 120.0) -> dict:
    """Wait (not a timing assertion: a bound on a hang) until no job runs; the last job."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        jobs = api.get("/api/jobs").json()["jobs"]
        if jobs and all(j["state"] != "running" for j in jobs):
            return jobs[-1]
        time.sleep(0.05)
    raise AssertionError("the index job did not finish")


def test_an_index_job_reports_progress_skips_and_its_summary(api: TestClient, colour_photos: Path) -> None:
    save(colour_photos / "new" / "black.png", (0, 0, 0))
    (colour_photos / "new" / "broken.jpg").write_bytes(b"not a jpeg")
    started = api.post("/api/index", json={"paths": [str(colour_photos)]})
    assert started.status_code == 202 and started.json()["state"] == "running"
    stream = api.get(f"/api/jobs/{started.json()['id']}/events")
    assert stream.headers["content-type"].startswith("text/event-stream")
    blocks = [b for b in stream.text.split("\n\n") if b.strip()]
    kinds = [line.split(": ", 1)[1] for b in blocks for line in b.splitlines() if line.startswith("event: ")]
    progress = [json.loads(b.split("data: ", 1)[1]) for b in blocks if "event: progress" in b]
    assert kinds[-1] == "end"
    assert {"kind": "skipped", "n": 0, "path": str(colour_photos / "new" / "broken.jpg"),
            "reason": "not an image Pillow can read"} in progress
    assert sum(e["n"] for e in progress if e["kind"] == "done") == 1
    end = json.loads(blocks[-1].split("data: ", 1)[1])
    assert end["state"] == "done" and end["report"]["added"] == 1 and end["report"]["skipped"] == 1
    assert end["skips"][0]["path"].endswith("broken.jpg")
    assert api.get(f"/api/jobs/{end['id']}").json()["report"] == end["report"]
    resumed = api.get(f"/api/jobs/{end['id']}/events", headers={"last-event-id": str(len(progress))})
    assert "event: progress" not in resumed.text and "event: end" in resumed.text


def test_index_job_errors(api: TestClient, tmp_path: Path) -> None:
    assert "absolute" in one_line_error(api.post("/api/index", json={"paths": ["photos"]}), 400)
    assert "no paths" in one_line_error(api.post("/api/index", json={"paths": []}), 400)
    assert "paths" in one_line_error(api.post("/api/index", json={"folders": ["/x"]}), 400)
    missing = api.post("/api/index", json={"paths": [str(tmp_path / "gone")]})
    job = _wait_for_jobs(api)
    assert missing.status_code == 202 and job["state"] == "failed" and "does not exist" in job["error"]


class GatedEncoder(fakes.FakeEncoder):
    """The fake, with its second image batch held until the test opens the gate."""

    def __init__(self) -> None:
        super().__init__(get_spec("fake-colour"))
        self.gate = threading.Event()
        self.batches = 0

    def embed_images(self, images):  # noqa: ANN001, ANN201
        self.batches += 1
        if self.batches == 2:
            assert self.gate.wait(120), "the test never opened the gate"
        return super().embed_images(images)


def test_searches_run_while_an_index_job_runs(tmp_path: Path) -> None:
    folder = tmp_path / "many"
    for i in range(8):
        save(folder / f"{i}.png", (250 - i * 5, 10, 10 + i * 5))
    encoder = GatedEncoder()
    with Index(settings(tmp_path, batch_size=2), encoder=encoder) as index:
        client, service = client_for(index)
        with client:
            job = client.post("/api/index", json={"paths": [str(folder)]}).json()
            end = time.monotonic() + 60
            while client.get(f"/api/jobs/{job['id']}").json()["done"] < 2:  # the first batch is stored
                assert time.monotonic() < end, "the first batch was never stored"
                time.sleep(0.02)
            assert client.get(f"/api/jobs/{job['id']}").json()["state"] == "running"  # held at batch two
            answers: list[tuple[int, int]] = []

            def searches() -> None:
                for _ in range(5):
                    response = client.get("/api/search", params={"q": "red", "top_k": 20})
                    answers.append((response.status_code, len(response.json().get("hits", []))))

            threads = [threading.Thread(target=searches) for _ in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            status = client.get(f"/api/jobs/{job['id']}").json()
            assert status["state"] == "running" and status["done"] < 8  # all of them ran during the job
            assert len(answers) == 20 and all(code == 200 and 2 <= n < 8 for code, n in answers)
            second = client.post("/api/index", json={"paths": [str(folder)]})
            assert "already running" in one_line_error(second, 409)
            encoder.gate.set()
            final = _wait_for_jobs(client)
            assert final["state"] == "done" and final["report"]["added"] == 8
            assert len(client.get("/api/search", params={"q": "red", "top_k": 20}).json()["hits"]) == 8
        service.close()


def test_a_stopped_job_keeps_what_it_stored(tmp_path: Path) -> None:
    folder = tmp_path / "many"
    for i in range(8):
        save(folder / f"{i}.png", (10, 250 - i * 5, 10))
    encoder = GatedEncoder()
    with Index(settings(tmp_path, batch_size=2), encoder=encoder) as index:
        client, service = client_for(index)
        job = client.post("/api/index", json={"paths": [str(folder)]}).json()
        end = time.monotonic() + 60
        while client.get(f"/api/jobs/{job['id']}").json()["done"] < 2:
            assert time.monotonic() < end
            time.sleep(0.02)
        assert client.delete(f"/api/jobs/{job['id']}").status_code == 202
        encoder.gate.set()
        final = _wait_for_jobs(client)
        assert final["state"] == "cancelled" and "kept" in final["error"]
        stored = index.count()
        assert 2 <= stored < 8  # the batches embedded before the stop are stored
        again = client.post("/api/index", json={"paths": [str(folder)]}).json()
        assert _wait_for_jobs(client)["report"]["added"] == 8 - stored and again["state"] == "running"
        service.close()
