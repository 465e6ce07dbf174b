"""The embedding step of an index run on a Ray cluster (`xlir index --ray ADDRESS`).

The driver, this process, runs the index run exactly as on one machine (run.py): it lists the
roots, skips unchanged files by their size and mtime, finds what vanished, tags and upserts on
the store's write streams. Only "embed these files" moves: batches of paths go to Ray actors,
each holding one model replica (one GPU each where the cluster has GPUs), which read, hash,
decode and embed them with the same batch loop a single process uses (images/batches.py) and
send back the vectors and what the payload needs. The files must be readable at the same paths
on every node (a shared or mounted folder), and every node needs xlir installed.

Faults: nothing of a batch is stored until it has come back whole, and at most INFLIGHT
batches wait on each actor. An actor that dies loses those; they are sent again, to the next
live actor (Ray restarts a dead one up to MAX_RESTARTS times, reloading its model). A batch that
has killed TRIES actors is skipped, one line per file. Point ids come from the paths, so a batch
done twice is still one point per file.

Moved and copied files: a file whose bytes the store already holds under another path gets that
point's vector and payload, as on one machine. Here its hash is only known once an actor has
read it, so the actor embeds it anyway and the driver throws that vector away: the stored
point is the same, the cluster did work a single process would have skipped.
"""

from __future__ import annotations

import itertools
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..encoders.base import Encoder, resolve_device
from ..encoders.registry import family
from ..errors import ClusterUnavailable
from ..images.batches import Batch, BatchEmbedder, Copy, Embedded, Known, Outcome, Skipped
from ..images.decode import Decoded
from ..images.files import FileInfo
from ..records import IngestEvent, ModelSpec, Point
from .run import IngestOptions, Progress

INFLIGHT = 2  # batches queued on each actor: one running, one waiting
MAX_RESTARTS = 3  # times Ray brings a dead actor back
TRIES = 3  # actors a batch may kill before its files are skipped
LOOKUPS = 8  # content-hash lookups in flight at once (one request each, to a server)
ACTOR_PREFIX = "xlir-embed-"  # actors are named, so `ray list actors` shows whose they are

Lookup = Callable[[str], Point | None]
Loader = Callable[[ModelSpec, str], Encoder]


@dataclass(frozen=True, slots=True)
class OnRay:
    """Where and how wide: IngestRun's ``embedding`` for a run on Ray."""

    spec: ModelSpec
    address: str = "auto"  # "auto": the local Ray (a running one, else a new one); or a cluster's address
    actors: int | None = None  # default: one per GPU, else one per CPU of the cluster
    device: str = "auto"  # each actor resolves it on its own node

    def __call__(self, options: IngestOptions, lookup: Lookup, emit: Progress) -> RayEmbedding:
        return RayEmbedding(self, options, lookup, emit)


class _EmbedActor:
    """One model replica on one node (a Ray actor): paths in, per-file results out."""

    def __init__(self, spec: ModelSpec, device: str, load: Loader, batch_size: int, workers: int | None,
                 max_megapixels: float) -> None:
        self.encoder = load(spec, resolve_device(device))
        self.embedder: BatchEmbedder[str, Any] = BatchEmbedder(
            self.encoder.image_side(), batch_size=batch_size, workers=workers, max_megapixels=max_megapixels,
            hash_files=True)

    def ready(self) -> str:
        self.encoder.warm_up()
        return f"{self.encoder.device} {self.encoder.precision}"

    def embed(self, paths: list[str]) -> list[tuple[Any, ...]]:
        """("skip", reason) or ("ok", sha256, width, height, taken_at, vector) for each path."""
        out: dict[str, tuple[Any, ...]] = {}
        for outcome in self.embedder.run(paths, lambda p: p):
            if isinstance(outcome, Skipped):
                out[outcome.job] = ("skip", outcome.reason)
            elif isinstance(outcome, Batch):
                for item in outcome.items:
                    out[item.job] = _ok(item.sha256, item.decoded, item.vector)
            elif isinstance(outcome, Copy):  # the same bytes twice in one batch
                out[outcome.job] = _ok(outcome.sha256, outcome.of.decoded, outcome.of.vector)
        return [out[p] for p in paths]


def _ok(sha: str | None, decoded: Decoded, vector: Any) -> tuple[Any, ...]:
    return ("ok", sha, decoded.width, decoded.height, decoded.taken_at, np.asarray(vector, np.float32))


@dataclass
class _Sent:
    """A batch on its way: which actor has it, and how many actors it has been on."""

    jobs: list[FileInfo]
    actor: int
    tries: int = 1


class RayEmbedding:
    """The Embedding (run.py) of a run on Ray; ``run`` yields what BatchEmbedder.run yields."""

    def __init__(self, where: OnRay, options: IngestOptions, lookup: Lookup, emit: Progress) -> None:
        self.where, self.options, self._lookup, self._emit = where, options, lookup, emit
        self.name = ACTOR_PREFIX + uuid.uuid4().hex[:8]
        self._lookups: ThreadPoolExecutor | None = None  # while run() runs

    def run(self, jobs: Iterable[FileInfo], path: Callable[[FileInfo], str]) -> Iterator[Outcome[FileInfo]]:
        ray = _ray()
        started = self._connect(ray)
        try:
            # A batch's lookups go out together: one at a time, they would cap the driver at
            # one round trip per file however many GPUs there are.
            with ThreadPoolExecutor(LOOKUPS, thread_name_prefix="xlir-lookup") as self._lookups:
                yield from self._run(ray, iter(jobs), path)
            self._lookups = None
        finally:
            if started:
                ray.shutdown()

    # -- the cluster ---------------------------------------------------------------------------

    def _connect(self, ray: Any) -> bool:
        """Join the cluster; True when this run started the Ray it uses (and so stops it)."""
        if ray.is_initialized():
            return False
        address = None if self.where.address == "auto" else self.where.address
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False,
                     configure_logging=False)
        except Exception as exc:  # noqa: BLE001 - Ray raises ConnectionError, RuntimeError, ValueError...
            raise ClusterUnavailable(f"cannot join Ray at {self.where.address}: {_last_line(exc)}; check --ray "
                                     f"(an address such as ray://head:10001, or auto for this machine)") from None
        return True

    def _start_actors(self, ray: Any) -> list[Any]:
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        capacity = gpus or max(1, int(resources.get("CPU", 1)))
        count = self.where.actors or capacity
        if count > capacity:  # Ray would wait forever for the resources of the ones that do not fit
            raise ClusterUnavailable(f"--ray-actors {count} is more than the cluster's {capacity} "
                                     f"{'GPUs' if gpus else 'CPUs'}, one per actor; ask for at most {capacity}")
        opts = self.options
        actor = ray.remote(_EmbedActor)
        # On a GPU the workers only read and hash (nvjpeg decodes); on a CPU one decode thread
        # per actor, since each actor is given one CPU.
        per = {"num_gpus": 1} if gpus else {"num_cpus": 1}
        workers = opts.workers or (None if gpus else 1)
        load = family(self.where.spec).load  # a model known to the driver is known to the actors
        actors = [actor.options(name=f"{self.name}-{i}", max_restarts=MAX_RESTARTS, max_task_retries=0, **per).remote(
            self.where.spec, self.where.device, load, opts.batch_size, workers, opts.max_megapixels)
            for i in range(count)]
        self._emit(IngestEvent("loading", reason=f"{count} Ray actor(s), one model each"))
        try:
            ray.get([a.ready.remote() for a in actors])
        except Exception as exc:  # noqa: BLE001 - the model failed to load on an actor
            raise ClusterUnavailable(f"the model did not load on the Ray actors: {_last_line(exc)}") from None
        self._emit(IngestEvent("loaded"))
        return actors

    # -- batches out, outcomes in --------------------------------------------------------------

    def _run(self, ray: Any, jobs: Iterator[FileInfo], path: Callable[[FileInfo], str]) -> Iterator[Outcome[FileInfo]]:
        first = list(itertools.islice(jobs, self.options.batch_size))
        if not first:
            return
        actors = self._start_actors(ray)
        alive = set(range(len(actors)))
        deaths = [0] * len(actors)
        pending: dict[Any, _Sent] = {}
        turn = itertools.count()
        recent: OrderedDict[str, Embedded[FileInfo]] = OrderedDict()

        def send(batch: list[FileInfo], tries: int = 1) -> None:
            live = sorted(alive)
            if not live:
                raise ClusterUnavailable("every Ray actor died; check the cluster's nodes and logs, then run the "
                                         "same command again: what was stored is kept")
            # the least busy live actor, ties in turn
            load = {i: 0 for i in live}
            for sent in pending.values():
                if sent.actor in load:
                    load[sent.actor] += 1
            start = next(turn)
            i = min(live, key=lambda a: (load[a], (a - start) % len(actors)))
            ref = actors[i].embed.remote([path(j) for j in batch])
            pending[ref] = _Sent(batch, i, tries)

        def refill() -> None:
            while len(pending) < INFLIGHT * max(1, len(alive)):
                batch = list(itertools.islice(jobs, self.options.batch_size))
                if not batch:
                    return
                send(batch)

        send(first)
        refill()
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            sent = pending.pop(ref)
            try:
                results = ray.get(ref)
            except ray.exceptions.RayActorError as exc:
                yield from self._redo(sent, exc, deaths, alive, send)
                refill()
                continue
            refill()  # the next batches are on their way before this one is stored
            yield from self._outcomes(sent.jobs, results, recent)

    def _redo(self, sent: _Sent, exc: BaseException, deaths: list[int], alive: set[int],
              send: Callable[[list[FileInfo], int], None]) -> Iterator[Outcome[FileInfo]]:
        deaths[sent.actor] += 1
        if deaths[sent.actor] > MAX_RESTARTS:
            alive.discard(sent.actor)  # Ray will not bring it back again
        why = _last_line(exc)
        if sent.tries >= TRIES:
            for job in sent.jobs:
                yield Skipped(job, f"the Ray actors embedding it died {sent.tries} times ({why})")
            return
        self._emit(IngestEvent("retried", n=len(sent.jobs), reason=f"a Ray actor died ({why})"))
        send(sent.jobs, sent.tries + 1)

    def _outcomes(self, jobs: list[FileInfo], results: list[tuple[Any, ...]],
                  recent: OrderedDict[str, Embedded[FileInfo]]) -> Iterator[Outcome[FileInfo]]:
        """One returned batch as the outcomes BatchEmbedder gives, with its content rules."""
        items: list[Embedded[FileInfo]] = []
        assert self._lookups is not None
        stored = list(self._lookups.map(lambda r: self._lookup(r[1]) if r[0] == "ok" else None, results))
        for job, result, found in zip(jobs, results, stored, strict=True):
            if result[0] == "skip":
                yield Skipped(job, result[1])
                continue
            _, sha, width, height, taken_at, vector = result
            if found is not None:
                yield Known(job, sha, found)
            elif sha in recent:
                yield Copy(job, sha, recent[sha])
            else:
                item = Embedded(job, sha, Decoded(None, width, height, taken_at), vector)
                recent[sha] = item
                items.append(item)
        if items:
            yield Batch(tuple(items))
        while len(recent) > 4 * max(self.options.batch_size, 8):
            recent.popitem(last=False)


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ClusterUnavailable("--ray needs the Ray package, which is not installed: pip install 'xlir[ray]'") from None
    return ray


def _last_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return (lines[-1] if lines else type(exc).__name__)[:300]
