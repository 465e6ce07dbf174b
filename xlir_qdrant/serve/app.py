"""The ASGI app: the JSON API (the CLI's --json records) and the web page, over one Service.

Every error is ``{"error": "one line"}`` with a status that says what kind it is; nothing
sends a traceback. Work that touches the model or the store runs on worker threads with a
deadline (Limits.request_seconds), so a slow call answers 504 instead of hanging the page.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import mimetypes
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import anyio
from fastapi import FastAPI, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from .. import __version__
from ..errors import (
    BadQuery, BadValue, Cancelled, DiskFull, EmptyIndex, ModelMismatch, ModelUnavailable, NotFound, StoreLocked,
    StoreUnavailable, XlirError,
)
from .jobs import JobConflict
from .security import ASGIApp, Guard, Message, Receive, Scope, Send, send_error
from .service import Busy, NotAnImage, Outside, Service, TooLarge
from .thumbs import Unreadable

log = logging.getLogger(__name__)
T = TypeVar("T")


class Timeout(XlirError):
    """A call ran past the request deadline."""


WEB = Path(__file__).resolve().parent / "web"
UPLOADS = {"/api/search", "/api/tag/image"}  # the paths whose bodies may be an image
THUMB_MAKERS = threading.BoundedSemaphore(2)  # new thumbnails are CPU work: searches come first
STATUS: tuple[tuple[type[XlirError], int], ...] = (  # first match wins: subclasses before bases
    (NotFound, 404), (EmptyIndex, 404), (Outside, 403), (TooLarge, 413), (NotAnImage, 415), (BadQuery, 400),
    (BadValue, 400), (JobConflict, 409), (ModelMismatch, 409), (StoreLocked, 409), (Cancelled, 409),
    (Busy, 503), (ModelUnavailable, 503), (StoreUnavailable, 503), (DiskFull, 507), (Unreadable, 422),
    (Timeout, 504),
)
MAX_TOP_K = 500
TopK = Annotated[int, Query(ge=1, le=MAX_TOP_K)]
Many = Annotated[list[str], Query()]
CODES = {EmptyIndex: "empty_index", Outside: "outside", Busy: "busy"}
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"default-src 'self'; img-src 'self' blob: data:; object-src 'none'; "
                                 b"base-uri 'none'; frame-ancestors 'none'; form-action 'self'"),
]


class IndexRequest(BaseModel):
    paths: list[str] = Field(max_length=1000)
    hidden: bool = False
    prune: bool = True
    read_text: bool = False  # also read the text in each photo (OCR)


class TagRequest(BaseModel):
    paths: list[str] = Field(max_length=10_000)
    lang: str = "en"
    top_k: int | None = Field(None, ge=0, le=1000)
    min_score: float | None = None
    vocab: str | None = None  # the text of a tag list, one tag per line
    vocab_name: str = ""  # what to call it in messages (the client's file name)


def create_app(service: Service, *, token: str | None = None, loopback: bool = True) -> FastAPI:
    limits = service.limits
    app = FastAPI(title="xlir", version=__version__, docs_url=None, redoc_url=None,
                  openapi_url="/api/openapi.json")  # the interactive docs would load scripts from a CDN

    async def blocking(fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        """``fn`` on a worker thread; after the deadline the request answers 504 (the call
        finishes on its own and its result is dropped)."""
        with anyio.move_on_after(limits.request_seconds) as scope:
            return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kw), abandon_on_cancel=True)
        assert scope.cancelled_caught
        raise Timeout(f"the request took over {limits.request_seconds:g} s; try again (is an index job "
                      f"building its search index?)")

    # -- errors -------------------------------------------------------------------------------

    @app.exception_handler(XlirError)
    async def domain_error(_request: Request, exc: XlirError) -> JSONResponse:
        status = next((code for kind, code in STATUS if isinstance(exc, kind)), 500)
        body: dict[str, Any] = {"error": str(exc)}
        if (code := next((c for kind, c in CODES.items() if isinstance(exc, kind)), None)) is not None:
            body["code"] = code
        if isinstance(exc, Outside):
            body["paths"] = exc.paths
        return JSONResponse(body, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def bad_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("query", "body", "path"))
        return JSONResponse({"error": f"{where or 'request'}: {first.get('msg', 'invalid')}"}, status_code=400)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        message = exc.detail if exc.status_code != 404 else f"not found: {request.url.path}"
        return JSONResponse({"error": str(message)}, status_code=exc.status_code, headers=exc.headers)

    # -- search -------------------------------------------------------------------------------

    @app.get("/api/search")
    async def search_text(q: str = "", lang: str | None = None, top_k: TopK = 10, min_score: float | None = None,
                          in_: Annotated[list[str], Query(alias="in")] = [],  # noqa: B006 - FastAPI copies it
                          tag: Many = [],  # noqa: B006
                          not_: Annotated[list[str], Query(alias="not")] = [],  # noqa: B006
                          after: str | None = None, before: str | None = None,
                          sort: str = "score") -> dict[str, Any]:
        result = await blocking(service.search, q, negatives=not_, top_k=top_k, min_score=min_score, lang=lang,
                                under=in_, tags=tag, after=after, before=before, sort=sort)
        return result.to_dict()

    @app.post("/api/search")
    async def search_image(image: Annotated[UploadFile | None, File()] = None, q: Annotated[str, Form()] = "",
                           lang: Annotated[str | None, Form()] = None,
                           top_k: Annotated[int, Form(ge=1, le=MAX_TOP_K)] = 10,
                           min_score: Annotated[float | None, Form()] = None,
                           in_: Annotated[list[str], Form(alias="in")] = [],  # noqa: B006
                           tag: Annotated[list[str], Form()] = [],  # noqa: B006
                           not_: Annotated[list[str], Form(alias="not")] = [],  # noqa: B006
                           after: Annotated[str | None, Form()] = None,
                           before: Annotated[str | None, Form()] = None,
                           sort: Annotated[str, Form()] = "score") -> dict[str, Any]:
        data = await image.read() if image is not None else None
        name = (image.filename or "") if image is not None else ""
        result = await blocking(service.search, q, image=data, image_name=name, negatives=not_, top_k=top_k,
                                min_score=min_score, lang=lang, under=in_, tags=tag, after=after, before=before,
                                sort=sort)
        return result.to_dict()

    @app.get("/api/similar/{photo_id}")
    async def similar(photo_id: str, top_k: TopK = 10, min_score: float | None = None,
                      in_: Annotated[list[str], Query(alias="in")] = [],  # noqa: B006
                      tag: Many = [],  # noqa: B006
                      after: str | None = None, before: str | None = None) -> dict[str, Any]:
        result = await blocking(service.similar, photo_id, top_k=top_k, min_score=min_score, under=in_, tags=tag,
                                after=after, before=before)
        return result.to_dict()

    # -- tags ---------------------------------------------------------------------------------

    @app.get("/api/tags/{photo_id}")
    async def tags(photo_id: str, lang: str = "en", top_k: Annotated[int | None, Query(ge=0, le=1000)] = None,
                   min_score: float | None = None) -> dict[str, Any]:
        return (await blocking(service.tags, photo_id, lang=lang, top_k=top_k, min_score=min_score)).to_dict()

    @app.post("/api/tag")
    async def tag_paths(body: TagRequest) -> dict[str, Any]:
        results = await blocking(service.tag_paths, body.paths, lang=body.lang, top_k=body.top_k,
                                 min_score=body.min_score, vocab=body.vocab, vocab_name=body.vocab_name)
        return {"results": [r.to_dict() for r in results]}

    @app.post("/api/tag/image")
    async def tag_image(image: Annotated[UploadFile, File()], path: Annotated[str, Form()] = "",
                        lang: Annotated[str, Form()] = "en",
                        top_k: Annotated[int | None, Form(ge=0, le=1000)] = None,
                        min_score: Annotated[float | None, Form()] = None,
                        vocab: Annotated[str | None, Form()] = None,
                        vocab_name: Annotated[str, Form()] = "") -> dict[str, Any]:
        data = await image.read()
        result = await blocking(service.tag_image, data, path or image.filename or "", lang=lang, top_k=top_k,
                                min_score=min_score, vocab=vocab, vocab_name=vocab_name)
        return {"results": [result.to_dict()]}

    # -- the index ----------------------------------------------------------------------------

    @app.get("/api/info")
    async def info() -> dict[str, Any]:
        return (await blocking(service.info)).to_dict()

    @app.get("/api/status")
    async def status() -> dict[str, Any]:
        return await blocking(service.status)

    @app.post("/api/index", status_code=202)
    async def start_index(body: IndexRequest) -> dict[str, Any]:
        job = await blocking(service.start_index, body.paths, hidden=body.hidden, prune=body.prune,
                               read_text=body.read_text)
        return job.to_dict()

    @app.get("/api/jobs")
    async def jobs() -> dict[str, Any]:
        return {"jobs": [j.to_dict() for j in service.jobs.all()]}

    @app.get("/api/jobs/{job_id}")
    async def job(job_id: str) -> dict[str, Any]:
        return service.jobs.get(job_id).to_dict()

    @app.delete("/api/jobs/{job_id}", status_code=202)
    async def stop_job(job_id: str) -> dict[str, Any]:
        return service.jobs.stop(job_id).to_dict()

    @app.get("/api/jobs/{job_id}/events")
    async def job_events(job_id: str, request: Request, after: Annotated[int, Query(ge=0)] = 0) -> StreamingResponse:
        """Server-sent events: ``progress`` (an IngestEvent, numbered), ``status`` (the job, when
        it changed, at most once a second) and a last ``end`` (the job, with its report)."""
        job = service.jobs.get(job_id)
        resume = request.headers.get("last-event-id", "")
        seq = int(resume) if resume.isdigit() else after

        async def stream() -> AsyncIterator[str]:
            nonlocal seq
            shown, beat = None, time.monotonic()
            while True:
                events, ended = job.events_after(seq)
                for n, event in events:
                    yield f"id: {n}\nevent: progress\ndata: {json.dumps(event, ensure_ascii=False)}\n\n"
                    seq = n
                status = job.to_dict()
                if ended:
                    yield f"event: end\ndata: {json.dumps(status, ensure_ascii=False)}\n\n"
                    return
                if status != shown or time.monotonic() - beat > 10:
                    yield f"event: status\ndata: {json.dumps(status, ensure_ascii=False)}\n\n"
                    shown, beat = status, time.monotonic()
                await asyncio.sleep(0.25 if events else 0.5)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"cache-control": "no-store", "x-accel-buffering": "no"})

    # -- files --------------------------------------------------------------------------------

    @app.get("/api/thumb/{photo_id}")
    async def thumb(photo_id: str, size: Annotated[int, Query()] = 256) -> FileResponse:
        def make() -> Path:
            with THUMB_MAKERS:
                return service.thumbnail(photo_id, size)

        path = await blocking(make)
        return FileResponse(path, media_type="image/jpeg", headers={"cache-control": "private, max-age=300"})

    @app.get("/api/image/{photo_id}")
    async def original(photo_id: str) -> FileResponse:
        path = await blocking(service.photo_file, photo_id)
        kind = mimetypes.guess_type(path)[0] or "application/octet-stream"
        return FileResponse(path, media_type=kind, headers={"cache-control": "private, max-age=300"})

    # -- the page -----------------------------------------------------------------------------

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(WEB / "index.html", media_type="text/html", headers={"cache-control": "no-cache"})

    app.mount("/static", StaticFiles(directory=WEB), name="static")

    # Outermost last: Boundary(Guard(BodyLimit(the app))).
    app.add_middleware(BodyLimit, upload_bytes=limits.upload_bytes + 2**16, body_bytes=limits.body_bytes)
    app.add_middleware(Guard, token=token, loopback=loopback)
    app.add_middleware(Boundary)
    return app


class TooLargeBody(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is over the {limit / 2**20:g} MB limit")


class BodyLimit:
    """Refuses a request body over its limit: by its Content-Length, or while it arrives."""

    def __init__(self, app: ASGIApp, *, upload_bytes: int, body_bytes: int) -> None:
        self.app, self.upload_bytes, self.body_bytes = app, upload_bytes, body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        limit = self.upload_bytes if scope["path"] in UPLOADS else self.body_bytes
        length = dict(scope.get("headers", [])).get(b"content-length", b"")
        if length.isdigit() and int(length) > limit:
            await send_error(send, 413, TooLargeBody(limit).detail)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                raise TooLargeBody(limit)  # an HTTPException: FastAPI answers it as it is
            return message

        await self.app(scope, counted, send)


class Boundary:
    """The outermost layer: the security headers on every answer (API answers are not cached
    unless they say so), and an unexpected error as one JSON line (and one log line), never a
    traceback."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = [*message.get("headers", []), *SECURITY_HEADERS]
                if scope["path"].startswith("/api/") and not any(k.lower() == b"cache-control" for k, _ in headers):
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception as exc:  # noqa: BLE001 - answered in one line below
            log.warning("%s %s failed: %s: %s", scope.get("method"), scope.get("path"), type(exc).__name__, exc)
            if not started:
                await send_error(tracked, 500, f"internal error ({type(exc).__name__}): {exc}")
