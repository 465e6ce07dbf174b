"""Embed files in bounded batches: the one loop behind ingest, training features and evaluation.

Worker threads read each file (and hash it, when asked), decode it at the smallest size the
model needs and run its preprocessing; the calling thread runs the model on full batches. At
most ``lookahead`` files are in flight, each reduced right after decoding, and the full-size
decoding itself shares one DecodeBudget: memory follows the pixels being decoded, not the
number of files or of threads.

On a CUDA device the workers only read, hash and probe JPEGs; each batch is decoded by nvjpeg
and preprocessed on the GPU (device.py), and any file nvjpeg refuses is decoded on the CPU into
the same batch.

With hashing on, files are deduplicated by content: a file whose bytes ``lookup`` already knows
is never decoded (``Known``), and a copy of a file embedded earlier in the same run rides on its
vector (``Copy``). Results come back in input order, batch by batch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from ..config import DEFAULT_MAX_MEGAPIXELS
from ..encoders.base import ImageSide
from . import device as on_device
from .budget import DEFAULT_DECODE_BYTES, DecodeBudget
from .decode import (
    RAW_EXTENSIONS, Decoded, DecodeError, Unsupported, decode, describe_failure, probe, read_file, sha256_file,
)
from .files import Kind
from .ocr import OCR_SIDE
from .workers import bounded_map, default_workers

J = TypeVar("J")  # the caller's job: a FileInfo, a path, an index...
K = TypeVar("K")  # what ``lookup`` finds for a content hash


@dataclass(frozen=True, slots=True)
class Skipped(Generic[J]):
    """A file that could not be used; ``reason`` is one line (and the flag that changes it).
    ``kind`` is set for a file of a kind xlir does not read, which is reported per kind."""

    job: J
    reason: str
    kind: Kind | None = None


@dataclass(frozen=True, slots=True)
class Known(Generic[J, K]):
    """A file whose content ``lookup`` knew: it was hashed, never decoded."""

    job: J
    sha256: str
    found: K


@dataclass(frozen=True, slots=True)
class Embedded(Generic[J]):
    job: J
    sha256: str | None
    decoded: Decoded  # size and date of the file; ``image`` only when the model took PIL images
    vector: NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class Batch(Generic[J]):
    """One model call's results, in input order."""

    items: tuple[Embedded[J], ...]


@dataclass(frozen=True, slots=True)
class Copy(Generic[J]):
    """A file with the same bytes as one embedded earlier in this run: no model run."""

    job: J
    sha256: str
    of: Embedded[J]


Outcome = Skipped[J] | Known[J, Any] | Batch[J] | Copy[J]


@dataclass(frozen=True, slots=True)
class _Hit:
    sha256: str
    found: Any


@dataclass(frozen=True, slots=True)
class _Ready:
    sha256: str | None
    decoded: Decoded
    pixels: Any  # preprocessed pixels, a RawJpeg for the GPU, or the PIL image itself


class BatchEmbedder(Generic[J, K]):
    """Decode ahead on workers, embed in batches; see the module docstring.

    ``lookup(sha256)`` runs on the worker threads (guard a store that takes one call at a time);
    ``before_first_batch`` runs once, right before the model is first needed, so a run with
    nothing to embed never loads it.
    """

    def __init__(self, side: ImageSide, *, batch_size: int = 32, workers: int | None = None,
                 max_megapixels: float = DEFAULT_MAX_MEGAPIXELS, gpu_decode: bool | None = None,
                 hash_files: bool = False, lookup: Callable[[str], K | None] | None = None,
                 before_first_batch: Callable[[], None] | None = None,
                 decode_bytes: int = DEFAULT_DECODE_BYTES,
                 read_text: Callable[[Image.Image], str] | None = None) -> None:
        self.side = side
        self.batch_size = max(1, batch_size)
        self.workers = workers or default_workers()
        self.lookahead = max(2 * self.batch_size, 8)
        self.max_megapixels = max_megapixels
        self.budget = DecodeBudget(decode_bytes)  # shared by the worker threads
        self.hash_files = hash_files or lookup is not None
        self._lookup = lookup
        self._before_first_batch = before_first_batch
        self._read_text = read_text  # on the workers, from the decoded image, before preprocessing
        # Decode JPEGs on the model's GPU: by default exactly when it runs on CUDA (the text is
        # read from a CPU decode).
        wanted = str(side.device).startswith("cuda") if gpu_decode is None else gpu_decode
        self._gpu = side.pixel_spec if wanted and side.pixels and read_text is None else None

    def run(self, jobs: Iterable[J], path: Callable[[J], str]) -> Iterator[Outcome[J]]:
        batch: list[tuple[J, _Ready]] = []
        waiting: dict[str, list[J]] = {}  # copies of images in the open batch
        recent: OrderedDict[str, Embedded[J]] = OrderedDict()  # bounded: the last embedded ones
        for job, result in bounded_map(lambda j: self.read(path(j)), jobs, self.workers,
                                       lookahead=self.lookahead, name="xlir-decode"):
            if isinstance(result, Unsupported):
                yield Skipped(job, result.reason, Kind(result.kind, result.reason))
            elif isinstance(result, BaseException):
                yield Skipped(job, describe_failure(result))
            elif isinstance(result, _Hit):
                yield Known(job, result.sha256, result.found)
            elif result.sha256 is not None and result.sha256 in recent:
                yield Copy(job, result.sha256, recent[result.sha256])
            elif result.sha256 is not None and result.sha256 in waiting:
                waiting[result.sha256].append(job)
            else:
                if result.sha256 is not None:
                    waiting[result.sha256] = []
                batch.append((job, result))
                if len(batch) >= self.batch_size:
                    yield from self._flush(batch, waiting, recent, path)
        if batch:
            yield from self._flush(batch, waiting, recent, path)

    # -- the model's side ---------------------------------------------------------------------

    def _flush(self, batch: list[tuple[J, _Ready]], waiting: dict[str, list[J]],
               recent: OrderedDict[str, Embedded[J]], path: Callable[[J], str]) -> Iterator[Outcome[J]]:
        if self._before_first_batch is not None:
            self._before_first_batch()
            self._before_first_batch = None
        if self._gpu is not None:
            kept, pixels, failed = self._gpu_pixels(batch, path)
            for (job, ready), reason in failed:
                yield Skipped(job, reason)
                for copy in waiting.pop(ready.sha256, []) if ready.sha256 else []:
                    yield Skipped(copy, reason)
        else:
            kept, pixels = list(batch), self._stack([ready.pixels for _, ready in batch])
        batch.clear()
        if not kept:
            return
        vectors = self.side.embed(pixels)
        items = tuple(Embedded(job, ready.sha256, ready.decoded, vec)
                      for (job, ready), vec in zip(kept, vectors, strict=True))
        yield Batch(items)
        for item in items:
            if item.sha256 is None:
                continue
            recent[item.sha256] = item
            for copy in waiting.pop(item.sha256, []):
                yield Copy(copy, item.sha256, item)
        while len(recent) > self.lookahead:
            recent.popitem(last=False)

    def _stack(self, rows: list[Any]) -> Any:
        if self.side.pixels:
            return np.stack([np.asarray(r) for r in rows])
        return rows  # PIL images, for a model that takes them as they are

    # -- the workers' side --------------------------------------------------------------------

    def _known(self, sha: str | None) -> _Hit | None:
        if sha is None or self._lookup is None:
            return None
        found = self._lookup(sha)
        return None if found is None else _Hit(sha, found)

    def read(self, file: str) -> _Ready | _Hit:
        """The workers' step for one file (also what bench/ingest.py times as decode-only)."""
        return self._prepare_gpu(file) if self._gpu is not None else self._prepare(file)

    def _prepare(self, file: str) -> _Ready | _Hit:
        sha = sha256_file(file) if self.hash_files else None
        return self._known(sha) or self._decoded(file, sha)

    def _prepare_gpu(self, file: str) -> _Ready | _Hit:
        if os.path.splitext(file)[1].lower() in RAW_EXTENSIONS:  # its preview is decoded on the CPU
            return self._prepare(file)
        data = read_file(file)  # read once: hashed here, decoded on the GPU
        sha = hashlib.sha256(data).hexdigest() if self.hash_files else None
        if (hit := self._known(sha)) is not None:
            return hit
        head = probe(data, max_megapixels=self.max_megapixels)
        if head.format != "JPEG":
            return self._decoded(file, sha)
        raw = on_device.raw_jpeg(data, head.orientation, str(self.side.device))
        return _Ready(sha, Decoded(None, head.width, head.height, head.taken_at), raw)

    def _decoded(self, file: str, sha: str | None) -> _Ready:
        min_side = self.side.min_side if self._read_text is None else max(self.side.min_side, OCR_SIDE)
        decoded = decode(file, min_side=min_side, max_megapixels=self.max_megapixels, budget=self.budget)
        if self._read_text is not None:
            assert decoded.image is not None
            decoded = dataclasses.replace(decoded, text=self._read_text(decoded.image))
        if not self.side.pixels:
            return _Ready(sha, decoded, decoded.image)
        # Preprocessing on the worker keeps the calling thread free for the model; the decoded
        # image is not kept once its pixels exist.
        return _Ready(sha, dataclasses.replace(decoded, image=None), self.side.preprocess(decoded.image))

    def _gpu_pixels(self, batch: list[tuple[J, _Ready]], path: Callable[[J], str]
                    ) -> tuple[list[tuple[J, _Ready]], Any, list[tuple[tuple[J, _Ready], str]]]:
        """Decode a batch's JPEGs on the device; a file nvjpeg refuses is decoded on the CPU.

        Returns the entries that have pixels, their (n, 3, S, S) batch on the device, and
        (entry, reason) for files no decoder could read.
        """
        assert self._gpu is not None
        device = str(self.side.device)
        raw_at = [i for i, (_, r) in enumerate(batch) if isinstance(r.pixels, on_device.RawJpeg)]
        images = on_device.decode_jpegs([batch[i][1].pixels for i in raw_at], device)
        good = [i for i, im in zip(raw_at, images, strict=True) if im is not None]
        resized = on_device.to_pixels([im for im in images if im is not None], self._gpu, device) if good else None
        row = {i: k for k, i in enumerate(good)}
        kept: list[tuple[J, _Ready]] = []
        parts: list[Any] = []
        failed: list[tuple[tuple[J, _Ready], str]] = []
        for i, (job, ready) in enumerate(batch):
            if i in row:
                parts.append(resized[row[i] : row[i] + 1])
            elif isinstance(ready.pixels, on_device.RawJpeg):
                try:
                    decoded = decode(path(job), min_side=self.side.min_side, max_megapixels=self.max_megapixels)
                except DecodeError as exc:  # no budget: this runs on the model's thread, one file at a time
                    failed.append(((job, ready), str(exc)))
                    continue
                parts.append(self.side.preprocess(decoded.image))
            else:
                parts.append(ready.pixels)
            kept.append((job, ready))
        return kept, on_device.stack_pixels(parts, device) if parts else None, failed
