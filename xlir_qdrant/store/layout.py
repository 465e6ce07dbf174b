"""How a new collection is laid out for the number of points it will hold.

Choices, by expected points (README, "Store"; docs/scale.md has the arithmetic):

    < QUANTIZE_FROM   float32 vectors and HNSW graph in RAM, payload in RAM, no quantization:
                      exact scores, and 10^6 points x 512-d is 2 GB, which any machine has.
    >= QUANTIZE_FROM  int8 scalar quantization (quantile 0.99) kept in RAM, the float32
                      originals memory-mapped from disk and read only to rescore the best
                      candidates (oversampled RESCORE_OVERSAMPLING times), payload on disk
                      (it is read only for the hits): RAM per point drops from ~2.3 KB to
                      ~0.7 KB at 512-d, and bench/scale.py measures what it costs in recall.
    shards            a multiple of the cluster's nodes, and enough that no shard holds more
                      than SHARD_POINTS: a shard is what the cluster moves, replicates and
                      re-indexes as one piece, so it stays small enough to do that in minutes.
    replicas          2 on a cluster of 2+ nodes (one node can be lost without losing points
                      or searches), 1 on a single node; writes are acknowledged by a majority
                      of replicas, so an acknowledged point survives the loss of any one node.
    payload indexes   keyword indexes on path, dirs, sha256 and tags (what xlir filters by); with
                      the on-disk layout, those on path and sha256 (one value per point, looked
                      up one at a time) live on disk too, while dirs and tags (few values, long
                      lists, read by every filtered search) stay in RAM.
    HNSW              m = 16 (each link costs 4 bytes per point per layer-0 neighbour, and 16
                      keeps recall@10 high at 10^6, see bench/scale.py); ef_construct 100, and
                      200 from LARGE_FROM points, where a better-built graph is worth the
                      longer build.

The embedded engine is one shard on one machine: it uses the quantization, disk and HNSW
choices and ignores shards, replicas and write consistency. It keeps the path and sha256 indexes
on disk at every size (``EMBEDDED_ON_DISK``): the engine rebuilds an in-RAM keyword index every
time it opens a shard, and every `xlir search` is a new process that opens it. At 100k points
the two cost 0.5-0.6 s of each cold search in RAM and ~0.05 s memory-mapped, for +0.5-1 ms on a
folder filter (which also matches files by path) and nothing measurable elsewhere (by hand,
100k points, median of 180 queries each).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import ConfigError
from ..records import CollectionOptions

QUANTIZE_FROM = 1_000_000
LARGE_FROM = 10_000_000
SHARD_POINTS = 10_000_000
RESCORE_OVERSAMPLING = 2.0
QUANTIZATIONS = ("int8", "none")
UNIQUE_KEYWORDS = ("path", "sha256")  # one value per point: their index may live on disk
EMBEDDED_ON_DISK = UNIQUE_KEYWORDS  # where the embedded engine keeps them at every size (above)


@dataclass(frozen=True, slots=True)
class Layout:
    """A collection's layout with every choice made."""

    shards: int = 1
    replicas: int = 1
    write_consistency: int = 1
    quantization: str = "none"
    on_disk: bool = False
    hnsw_m: int = 16
    hnsw_ef_construct: int = 100

    @property
    def quantized(self) -> bool:
        return self.quantization == "int8"

    def index_on_disk(self, field: str) -> bool:
        """Whether the keyword index on payload ``field`` lives on disk (module docstring)."""
        return self.on_disk and field in UNIQUE_KEYWORDS


def plan(options: CollectionOptions | None = None, *, nodes: int = 1) -> Layout:
    """The layout for ``options`` on a Qdrant of ``nodes`` nodes: each field given is kept,
    each one left out is chosen by the expected size (module docstring)."""
    o = options or CollectionOptions()
    _check(o)
    points = o.expected_points or 0
    nodes = max(1, nodes)
    quantization = o.quantization or ("int8" if points >= QUANTIZE_FROM else "none")
    on_disk = o.on_disk if o.on_disk is not None else quantization == "int8"
    shards = o.shards or nodes * max(1, math.ceil(math.ceil(points / SHARD_POINTS) / nodes))
    replicas = o.replicas or (2 if nodes >= 2 else 1)
    write_consistency = o.write_consistency or replicas // 2 + 1
    if write_consistency > replicas:
        raise ConfigError(f"--write-consistency {write_consistency} is more than the {replicas} replica(s) "
                          f"that could acknowledge a write; use at most --replicas")
    return Layout(shards=shards, replicas=replicas, write_consistency=write_consistency, quantization=quantization,
                  on_disk=on_disk, hnsw_m=o.hnsw_m or 16,
                  hnsw_ef_construct=o.hnsw_ef_construct or (200 if points >= LARGE_FROM else 100))


def _check(o: CollectionOptions) -> None:
    for flag, value in (("--shards", o.shards), ("--replicas", o.replicas),
                        ("--write-consistency", o.write_consistency), ("--hnsw-m", o.hnsw_m),
                        ("--hnsw-ef-construct", o.hnsw_ef_construct)):
        if value is not None and value < 1:
            raise ConfigError(f"{flag} must be at least 1, not {value}")
    if o.quantization is not None and o.quantization not in QUANTIZATIONS:
        raise ConfigError(f"--quantization {o.quantization!r} is not known; use int8 or none")
