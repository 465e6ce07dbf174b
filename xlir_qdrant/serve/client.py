"""RemoteIndex: the Index methods the CLI uses, answered by a running `xlir serve`.

While a server holds an embedded store, no other process can open it; `xlir search`, `tag`,
`info` and `index` then get a RemoteIndex from ``connect`` and print exactly what they would
have printed, from the same records. Paths are made absolute here, since the server does not
share the caller's working directory; files the server may not read (outside the folders it
indexed) are sent as bytes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import Any, Self

import httpx

from ..config import Settings
from ..errors import (
    BadQuery, BadValue, Cancelled, EmptyIndex, NotFound, StoreLocked, StoreUnavailable, XlirError,
)
from ..index import SearchResult
from ..records import (
    CollectionInfo, CollectionOptions, Hit, IndexStats, IngestEvent, IngestReport, Runtime, Tag, TagResult,
)
from .discovery import ServerFile, find

When = str | date | datetime | None
Progress = Callable[[IngestEvent], None]


def connect(settings: Settings, *, any_collection: bool = False) -> RemoteIndex | None:
    """A RemoteIndex when a live `xlir serve` holds the embedded store of ``settings``; a
    server that serves another collection or model than asked is refused in one line."""
    if settings.uses_server:
        return None
    server = find(settings.store_path)
    if server is None:
        return None
    other = settings.collection != server.collection or (settings.model and settings.model != server.model)
    if other and not any_collection:
        raise StoreLocked(
            f"store {server.store} is held by `xlir serve` (process {server.pid}) for collection "
            f"{server.collection!r} with model {server.model}; drop --collection/--model to use it, or stop the "
            f"server to open another collection")
    return RemoteIndex(server, settings)


class RemoteIndex:
    def __init__(self, server: ServerFile, settings: Settings) -> None:
        self.server = server
        self.settings = settings
        self.url = server.url
        self.location = server.store
        self._http = httpx.Client(base_url=server.url, headers=server.headers(),
                                  timeout=httpx.Timeout(120.0, connect=5.0))
        self._status: dict[str, Any] | None = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- what the server runs -------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        if self._status is None:
            self._status = self._call("GET", "/api/status")
        return self._status

    def runtime(self) -> Runtime:
        s = self.status()
        return Runtime(s["model"], s["device"], s["precision"])

    def first_use_note(self) -> str:
        return str(self.status().get("first_use_note") or "")

    def stats(self) -> IndexStats:
        data = self._call("GET", "/api/info")
        return IndexStats(store=data["store"], location=data["location"], device=data["device"],
                          collections=tuple(CollectionInfo(**c) for c in data["collections"]),
                          disk_bytes=data.get("disk_bytes"))

    # -- operations -----------------------------------------------------------------------------

    def search(self, query: str | None = None, *, image: str | os.PathLike[str] | None = None,
               negatives: Sequence[str] = (), top_k: int = 10, min_score: float | None = None,
               lang: str | None = None, under: Sequence[str | os.PathLike[str]] = (),
               tags: Sequence[str] = (), after: When = None, before: When = None,
               sort: str = "score") -> SearchResult:
        fields: dict[str, Any] = {"q": query or "", "top_k": top_k, "min_score": min_score, "lang": lang,
                                  "in": [_absolute(u) for u in under], "tag": list(tags), "not": list(negatives),
                                  "after": _iso(after), "before": _iso(before), "sort": sort}
        fields = {k: v for k, v in fields.items() if v is not None and v != []}
        if image is None:
            data = self._call("GET", "/api/search", params=fields)
        else:
            content = _read(image, missing=f"query image {image} does not exist",
                            unreadable=f"cannot use {image} as a query image")
            data = self._call("POST", "/api/search", data=fields, files={"image": (str(image), content)})
        return SearchResult(hits=[_hit(h) for h in data["hits"]], model=data["model"], lang=data.get("lang"),
                            calibrated=bool(data.get("calibrated")), min_score=data.get("min_score"))

    def tag(self, files: Sequence[str | os.PathLike[str]], *, lang: str = "en", top_k: int | None = None,
            min_score: float | None = None, vocab: str | os.PathLike[str] | None = None) -> list[TagResult]:
        paths = [_absolute(f) for f in files]
        if not paths:
            raise BadQuery("no files given: name one or more images to tag")
        options: dict[str, Any] = {"lang": lang, "top_k": top_k, "min_score": min_score, "vocab": None,
                                   "vocab_name": str(vocab) if vocab else ""}
        if vocab:
            try:
                options["vocab"] = Path(vocab).read_text(encoding="utf-8-sig")
            except OSError as exc:
                raise BadQuery(f"cannot read the tag list {vocab}: {exc.strerror or exc}") from None
        try:
            return self._tag_paths(paths, options)
        except _Outside as outside:  # files the server may not read: send their bytes
            elsewhere = set(outside.paths)
            inside = iter(self._tag_paths([p for p in paths if p not in elsewhere], options))
            return [self._tag_bytes(p, options) if p in elsewhere else next(inside) for p in paths]

    def index(self, paths: Sequence[str | os.PathLike[str]], *, progress: Progress | None = None,
              include_hidden: bool = False, prune: bool = True, read_text: bool = False,
              layout: CollectionOptions | None = None, ray: str | None = None,
              ray_actors: int | None = None) -> IngestReport:
        """Start an index job on the server and follow it; Ctrl-C stops the job too. The job
        runs in the server's process: a new collection's layout and Ray are not offered there."""
        if ray or ray_actors or (layout is not None and layout != CollectionOptions()):
            raise BadValue("--ray and the layout flags are not available while `xlir serve` owns this store: "
                           "stop the server, or index there without them")
        emit = progress or (lambda _e: None)
        job = self._call("POST", "/api/index", json={"paths": [_absolute(p) for p in paths],
                                                     "hidden": include_hidden, "prune": prune,
                                                     "read_text": read_text})
        try:
            final = self._follow(job["id"], emit)
        except KeyboardInterrupt:
            try:
                self._http.delete(f"/api/jobs/{job['id']}", timeout=5.0)
            except httpx.HTTPError:
                pass
            raise
        if final["state"] == "done":
            return IngestReport(**final["report"])
        if final["state"] == "cancelled":
            raise Cancelled(f"the index job was stopped on the server; {final.get('error') or 'what it stored is kept'}")
        raise XlirError(final.get("error") or "the index job failed")

    # -- helpers --------------------------------------------------------------------------------

    def _tag_paths(self, paths: list[str], options: dict[str, Any]) -> list[TagResult]:
        if not paths:
            return []
        data = self._call("POST", "/api/tag", json={"paths": paths, **options})
        return [_tag_result(r) for r in data["results"]]

    def _tag_bytes(self, path: str, options: dict[str, Any]) -> TagResult:
        content = _read(path, missing=f"cannot tag {path}: no such file", unreadable=f"cannot tag {path}")
        fields = {k: v for k, v in {**options, "path": path}.items() if v is not None}
        data = self._call("POST", "/api/tag/image", data=fields, files={"image": (os.path.basename(path), content)})
        return _tag_result(data["results"][0])

    def _follow(self, job_id: str, emit: Progress) -> dict[str, Any]:
        """Read the job's event stream until its end; the server writes at least every 10 s."""
        try:
            with self._http.stream("GET", f"/api/jobs/{job_id}/events",
                                   timeout=httpx.Timeout(60.0, connect=5.0)) as response:
                if response.status_code != 200:
                    response.read()
                    self._raise(response)
                for kind, data in _events(response.iter_lines()):
                    if kind == "progress":
                        emit(IngestEvent(**data))
                    elif kind == "end":
                        return data
        except httpx.HTTPError as exc:
            raise self._gone(exc) from None
        raise self._gone(None)

    def _call(self, method: str, url: str, **kw: Any) -> Any:
        try:
            response = self._http.request(method, url, **kw)
        except httpx.HTTPError as exc:
            raise self._gone(exc) from None
        if response.status_code >= 400:
            self._raise(response)
        return response.json()

    def _raise(self, response: httpx.Response) -> None:
        try:
            body = response.json()
        except ValueError:
            body = {}
        message = body.get("error") if isinstance(body, dict) else None
        message = message or f"the xlir server at {self.url} answered HTTP {response.status_code}"
        code = body.get("code") if isinstance(body, dict) else None
        if code == "outside":
            raise _Outside(message, body.get("paths") or [])
        if code == "empty_index":
            raise EmptyIndex(message)
        kind = {400: BadQuery, 404: NotFound, 413: BadQuery, 415: BadQuery, 503: StoreUnavailable}
        raise kind.get(response.status_code, XlirError)(message)

    def _gone(self, exc: BaseException | None) -> StoreUnavailable:
        why = f" ({type(exc).__name__}: {exc})" if exc is not None and str(exc) else ""
        return StoreUnavailable(f"the xlir server at {self.url} (process {self.server.pid}), which holds store "
                                f"{self.location}, stopped answering{why}; run the command again")


class _Outside(XlirError):
    def __init__(self, message: str, paths: list[str]) -> None:
        super().__init__(message)
        self.paths = paths


def _events(lines: Iterator[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(event, data) pairs of a server-sent event stream."""
    kind, data = "message", []
    for line in lines:
        if not line:
            if data:
                yield kind, json.loads("\n".join(data))
            kind, data = "message", []
        elif line.startswith("event:"):
            kind = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())


def _read(path: str | os.PathLike[str], *, missing: str, unreadable: str) -> bytes:
    """A file's bytes, to send; the same one-line errors as reading it locally."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise BadQuery(missing) from None
    except OSError as exc:
        raise BadQuery(f"{unreadable}: {exc.strerror or exc}") from None


def _absolute(path: str | os.PathLike[str]) -> str:
    return os.path.abspath(os.path.expanduser(path))


def _iso(when: When) -> str | None:
    return when.isoformat() if isinstance(when, (date, datetime)) else when


def _hit(data: dict[str, Any]) -> Hit:
    return Hit(**{**data, "tags": tuple(data.get("tags") or ())})


def _tag_result(data: dict[str, Any]) -> TagResult:
    return TagResult(path=data["path"], source=data["source"], tags=tuple(Tag(**t) for t in data["tags"]))
