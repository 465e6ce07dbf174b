"""Index jobs: ``Index.index`` on a background thread, one at a time, with progress to watch.

A job keeps its IngestEvents in order (what `xlir index` draws its progress bar from, and
what the event stream sends) and counts them into a status the page shows. Searches go on
meanwhile: the Index takes one store call at a time, so they run between the job's batches.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import Cancelled, NotFound, XlirError
from ..records import IngestEvent, IngestReport

log = logging.getLogger(__name__)

MAX_EVENTS = 50_000  # kept for the event stream; past this only the counts go on
KEPT_JOBS = 20
STAGES = {"found": "scanning", "loading": "loading the model", "loaded": "embedding",
          "optimizing": "building the search index (HNSW)", "optimized": "finishing"}

# Runs one job: given its progress callback and its cancel event, returns the run's report.
Runner = Callable[[Callable[[IngestEvent], None], threading.Event], IngestReport]


class JobConflict(XlirError):
    """An index job is already running: one at a time."""


@dataclass
class Job:
    id: str
    paths: tuple[str, ...]
    state: str = "running"  # running, done, failed, cancelled
    stage: str = "scanning"
    found: int = 0  # files to embed (new or changed)
    done: int = 0  # of those, embedded or reused and stored
    skipped: int = 0
    removed: int = 0
    report: dict[str, Any] | None = None
    error: str | None = None
    started: float = field(default_factory=time.time)
    finished: float | None = None
    skips: deque[dict[str, str]] = field(default_factory=lambda: deque(maxlen=50))  # the latest
    events: list[dict[str, Any]] = field(default_factory=list)
    cancel: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def running(self) -> bool:
        return self.state == "running"

    def on_event(self, ev: IngestEvent) -> None:
        """The run's progress callback (called from the run's threads)."""
        with self.lock:
            if ev.kind == "found":
                self.found += ev.n
            elif ev.kind == "done":
                self.done += ev.n
            elif ev.kind == "skipped":
                self.skipped += 1
                self.skips.append({"path": ev.path, "reason": ev.reason})
            elif ev.kind == "removed":
                self.removed += ev.n
            self.stage = STAGES.get(ev.kind, self.stage)
            if len(self.events) < MAX_EVENTS:
                self.events.append(ev.to_dict())

    def events_after(self, seq: int) -> tuple[list[tuple[int, dict[str, Any]]], bool]:
        """Events numbered after ``seq`` (1-based), and whether the job has ended."""
        with self.lock:
            start = max(0, seq)
            return [(i + 1, e) for i, e in enumerate(self.events[start:], start=start)], not self.running

    def finish(self, state: str, *, report: IngestReport | None = None, error: str | None = None) -> None:
        with self.lock:
            self.state, self.error, self.finished = state, error, time.time()
            self.report = report.to_dict() if report is not None else None
            self.stage = {"done": "done", "cancelled": "stopped"}.get(state, "failed")

    def to_dict(self) -> dict[str, Any]:
        with self.lock:
            return {"id": self.id, "paths": list(self.paths), "state": self.state, "stage": self.stage,
                    "found": self.found, "done": self.done, "skipped": self.skipped, "removed": self.removed,
                    "skips": list(self.skips), "report": self.report, "error": self.error,
                    "started": self.started, "finished": self.finished, "events": len(self.events)}


class Jobs:
    """The server's index jobs: at most one running; the last few kept for their summaries."""

    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()

    def start(self, paths: Sequence[str], runner: Runner) -> Job:
        with self._lock:
            if (current := self.current()) is not None:
                raise JobConflict(f"an index job is already running (id {current.id}, {current.stage}); "
                                  f"wait for it or stop it first")
            job = Job(id=uuid.uuid4().hex[:12], paths=tuple(paths))
            self._jobs[job.id] = job
            for old in list(self._jobs)[:-KEPT_JOBS]:
                if not self._jobs[old].running:
                    del self._jobs[old]
            # A daemon: a second Ctrl-C must be able to end the process; what it stored is kept.
            thread = threading.Thread(target=self._run, args=(job, runner), name=f"xlir-job-{job.id}", daemon=True)
            self._threads[job.id] = thread
            thread.start()
            return job

    def get(self, job_id: str) -> Job:
        job = self._jobs.get(job_id)
        if job is None:
            raise NotFound(f"no index job {job_id[:40]!r} (the server keeps the last {KEPT_JOBS})")
        return job

    def current(self) -> Job | None:
        return next((j for j in self._jobs.values() if j.running), None)

    def all(self) -> list[Job]:
        return list(self._jobs.values())

    def stop(self, job_id: str) -> Job:
        job = self.get(job_id)
        job.cancel.set()
        return job

    def close(self, timeout: float | None = None) -> None:
        """Stop the running job and wait for it: it must be done with the store before it closes."""
        for job in self.all():
            job.cancel.set()
        for thread in list(self._threads.values()):
            thread.join(timeout)

    def _run(self, job: Job, runner: Runner) -> None:
        try:
            report = runner(job.on_event, job.cancel)
        except Cancelled:
            job.finish("cancelled", error="stopped; everything stored so far is kept")
        except XlirError as exc:
            job.finish("failed", error=str(exc))
        except Exception as exc:  # noqa: BLE001 - the job's summary says it, in one line
            log.warning("index job %s failed: %s: %s", job.id, type(exc).__name__, exc)
            job.finish("failed", error=f"internal error ({type(exc).__name__}): {exc}")
        else:
            job.finish("done", report=report)
        finally:
            self._threads.pop(job.id, None)
