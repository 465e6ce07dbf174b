"""Service: what the web API offers, over one Index, safe to call from many threads at once.

The Index takes one store call at a time (index.py), so searches run between an index job's
batches. What a browser may read is decided here: a photo's file is served only when its
point is in the index and its real path (symlinks resolved) lies under a folder this
collection was indexed from; uploads are checked for size and pixels before any decoding.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import BadQuery, NotFound, XlirError
from ..images.decode import DecodeError, probe
from ..index import Index, SearchResult
from ..records import IndexStats, TagResult
from .jobs import STAGES, Job, Jobs
from .thumbs import Thumbnails


@dataclass(frozen=True, slots=True)
class Limits:
    upload_bytes: int = 32 * 2**20  # an image sent to search by, or to tag
    upload_megapixels: float = 64.0
    body_bytes: int = 2**20  # any other request body (JSON)
    request_seconds: float = 30.0  # then 504; an event stream is not cut
    thumb_cache_bytes: int = 512 * 2**20


class Busy(XlirError):
    """The store is blocked for a while (an index job builds its search index)."""


class Outside(XlirError):
    """Paths that are not under a folder this index was built from."""

    def __init__(self, message: str, paths: Sequence[str]) -> None:
        super().__init__(message)
        self.paths = list(paths)


class TooLarge(XlirError):
    """An upload over the byte or pixel limit."""


class NotAnImage(XlirError):
    """An upload that is not an image xlir can read."""


class Service:
    def __init__(self, index: Index, *, limits: Limits | None = None, thumbs: Thumbnails | None = None) -> None:
        self.index = index
        self.limits = limits or Limits()
        self.thumbs = thumbs or Thumbnails(index.settings.home / "thumbs", max_bytes=self.limits.thumb_cache_bytes,
                                           max_megapixels=index.settings.max_megapixels)
        self.jobs = Jobs()
        self.pid = os.getpid()

    def warm_up(self) -> None:
        """Load the model's text side now, so the first search is as fast as the next."""
        with contextlib.suppress(XlirError):
            self.index.search("photo", top_k=1)

    # -- searching ------------------------------------------------------------------------------

    def search(self, query: str | None = None, *, image: bytes | None = None, image_name: str = "",
               **options: Any) -> SearchResult:
        """``Index.search``; ``image`` is an uploaded query image's bytes."""
        self._not_blocked()
        if image is None:
            return self.index.search(query, **options)
        with self._upload(image, image_name) as path:
            return self.index.search(query, image=path, **options)

    def similar(self, photo_id: str, **options: Any) -> SearchResult:
        self._not_blocked()
        return self.index.similar(photo_id, **options)

    def tags(self, photo_id: str, *, lang: str = "en", top_k: int | None = None,
             min_score: float | None = None) -> TagResult:
        """The tags of one indexed photo, from its stored vector."""
        self._not_blocked()
        [result] = self.index.tag([self.index.photo_path(photo_id)], lang=lang, top_k=top_k, min_score=min_score)
        return result

    def tag_paths(self, paths: Sequence[str], *, vocab: str | None = None, vocab_name: str = "",
                  **options: Any) -> list[TagResult]:
        """Tags of files by path: indexed photos from their stored vector, other files under an
        indexed folder embedded now. Files elsewhere are refused (send their bytes instead)."""
        self._not_blocked()
        for path in paths:
            _absolute(path)
        tops = self._tops()
        outside = [p for p in paths if self._servable(p, tops) is None]
        if outside:
            raise Outside(f"{outside[0]} is not a file under a folder this index was built from"
                          + (f" (and {len(outside) - 1} more)" if len(outside) > 1 else ""), outside)
        with self._vocab_file(vocab, vocab_name) as vocab_path:
            return self.index.tag(list(paths), vocab=vocab_path, **options)

    def tag_image(self, image: bytes, name: str = "", *, vocab: str | None = None, vocab_name: str = "",
                  **options: Any) -> TagResult:
        """Tags of an uploaded image (embedded now, never stored)."""
        self._not_blocked()
        with self._upload(image, name) as path, self._vocab_file(vocab, vocab_name) as vocab_path:
            [result] = self.index.tag([path], vocab=vocab_path, **options)
        return replace(result, path=name or "uploaded image")

    # -- what the index is ----------------------------------------------------------------------

    def info(self) -> IndexStats:
        return self.index.stats()

    def status(self) -> dict[str, Any]:
        """What the page and other xlir processes need to know about this server."""
        idx = self.index
        run = idx.runtime()
        current = self.jobs.current()
        try:
            photos: int | None = idx.count()
        except XlirError:  # no collection yet
            photos = None
        return {"version": __version__, "pid": self.pid, "store": idx.location, "collection": idx.settings.collection,
                "model": run.model, "device": run.device, "precision": run.precision,
                "first_use_note": idx.first_use_note(), "photos": photos, "roots": idx.roots(),
                "job": current.to_dict() if current is not None else None}

    # -- files ----------------------------------------------------------------------------------

    def photo_file(self, photo_id: str) -> str:
        """The real path of an indexed photo that may be served (see the module docstring)."""
        path = self.index.photo_path(photo_id)
        real = self._servable(path)
        if real is None:
            raise NotFound(f"photo {photo_id} cannot be shown: its file is gone, or not under a folder this "
                           f"index was built from")
        return real

    def thumbnail(self, photo_id: str, size: int) -> Path:
        return self.thumbs.get(self.photo_file(photo_id), size)

    def _servable(self, path: str, tops: Sequence[str] | None = None) -> str | None:
        """``path`` resolved, if it is a regular file under one of the collection's roots
        (``tops``, from _tops(): pass them when checking many paths, the ledger is read once)."""
        real = os.path.realpath(path)
        try:
            if not stat.S_ISREG(os.stat(real).st_mode):
                return None
        except OSError:
            return None
        for top in self._tops() if tops is None else tops:
            if real == top or real.startswith(top.rstrip(os.sep) + os.sep):
                return real
        return None

    def _tops(self) -> list[str]:
        """The collection's roots (from the ledger), resolved."""
        return [os.path.realpath(root) for root in self.index.roots()]

    # -- indexing -------------------------------------------------------------------------------

    def start_index(self, paths: Sequence[str], *, hidden: bool = False, prune: bool = True,
                    read_text: bool = False) -> Job:
        if not paths:
            raise BadQuery("no paths: name one or more folders to index")
        roots = []
        for path in paths:
            roots.append(os.path.normpath(_absolute(os.path.expanduser(path.strip()), shown=path)))
        return self.jobs.start(roots, lambda progress, cancel: self.index.index(
            roots, progress=progress, include_hidden=hidden, prune=prune, read_text=read_text, cancel=cancel))

    def close(self) -> None:
        """Stop a running job and wait until it is done with the store."""
        self.jobs.close()

    # -- helpers --------------------------------------------------------------------------------

    def _not_blocked(self) -> None:
        current = self.jobs.current()
        if current is not None and current.stage == STAGES["optimizing"]:
            raise Busy("the index job is building the search index (HNSW), which holds the store for a minute "
                       "or two after a large run; search again when its stage says done")

    @contextlib.contextmanager
    def _upload(self, data: bytes, name: str) -> Iterator[Path]:
        """The upload, checked, in a temporary file; errors name it as the client does."""
        limits = self.limits
        what = name or "the uploaded file"
        if not data:
            raise NotAnImage(f"{what} is empty (0 bytes)")
        if len(data) > limits.upload_bytes:
            raise TooLarge(f"{what} is {len(data) / 2**20:.1f} MB, over the {limits.upload_bytes / 2**20:g} MB "
                           f"limit for uploads")
        try:
            head = probe(data, max_megapixels=float("inf"))
        except DecodeError as exc:
            raise NotAnImage(f"{what} is not an image xlir can read ({exc})") from None
        megapixels = head.width * head.height / 1e6
        if megapixels > limits.upload_megapixels:
            raise TooLarge(f"{what} is {head.width}x{head.height} ({megapixels:.0f} MP), over the "
                           f"{limits.upload_megapixels:g} MP limit for uploads")
        with tempfile.TemporaryDirectory(prefix="xlir-upload-") as tmp:
            path = Path(tmp) / f"upload.{(head.format or 'img').lower()}"
            path.write_bytes(data)
            try:
                yield path
            except XlirError as exc:
                raise type(exc)(str(exc).replace(str(path), name or "the uploaded image")) from None

    @contextlib.contextmanager
    def _vocab_file(self, text: str | None, name: str) -> Iterator[Path | None]:
        if text is None:
            yield None
            return
        with tempfile.TemporaryDirectory(prefix="xlir-vocab-") as tmp:
            path = Path(tmp) / "vocab.txt"
            path.write_text(text, encoding="utf-8")
            try:
                yield path
            except XlirError as exc:
                raise type(exc)(str(exc).replace(str(path), name or "the vocabulary")) from None
            except ValueError as exc:  # a malformed line: the parser names the file and the line
                raise BadQuery(str(exc).replace(str(path), name or "the vocabulary")) from None


def _absolute(path: str, *, shown: str | None = None) -> str:
    """``path``, refused unless absolute: the server does not know the client's directory."""
    if not os.path.isabs(path):
        raise BadQuery(f"paths must be absolute (the server does not know your working directory): "
                       f"{path if shown is None else shown}")
    return path
