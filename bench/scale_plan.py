"""Writes docs/scale.md from bench/scale.py's JSON: the arithmetic is done here and shown there.

    python bench/scale.py --points 200000 --json /tmp/scale.json
    python bench/scale_plan.py /tmp/scale.json docs/scale.md

Per-point memory and disk are taken from the measured run as they are; build times are scaled
from the measured size to each shard's as N log N.
"""

import json
import math
import sys
from pathlib import Path

CPU_RATE = 20  # images/s end to end for 12 MP JPEGs, default model, 2 cores (README, bench/ingest.py)

rows = json.loads(Path(sys.argv[1]).read_text())
f, q = rows["float"], rows["int8"]
N = f["points"]
mb = 1e6
# measured per point, bytes
f_heap = (f["rss_built_anon_mb"] - f["rss_before_mb"]) * 1048576 / N
q_heap = (q["rss_built_anon_mb"] - q["rss_before_mb"]) * 1048576 / N
f_rss = (f["rss_built_mb"] - f["rss_before_mb"]) * 1048576 / N
q_rss = (q["rss_built_mb"] - q["rss_before_mb"]) * 1048576 / N
f_disk = f["disk_mb"] * mb / N
q_disk = q["disk_mb"] * mb / N
# planning figure for RAM per point with int8: the measured heap (quantized vectors, graph, payload
# indexes) plus the mapped pages a search touches; take the RSS after the build as the bound
plan_q = q_rss
plan_f = f_rss
def gb(x): return x / 1e9
def fmt(x, d=1): return f"{x:,.{d}f}"

T1 = q["optimize_s"]  # seconds to build HNSW for N int8 points on 2 (shared) cores
Tf = f["optimize_s"]
def nlogn(n): return n * math.log(n)
scale7 = nlogn(1e7 / 3) / nlogn(N)   # one of 3 shards at 10^7
scale8 = nlogn(1e8 / 12) / nlogn(N)  # one of 12 shards at 10^8

scaled_note = "" if N >= 1_000_000 else f"""
This run had {N:,} points, not 10^6: on these 2 cores the float32 build of 10^6 alone would
take about {fmt(Tf * nlogn(1e6) / nlogn(N) / 60, 0)} min (N log N from the {fmt(Tf/60,1)} min measured), more than the
machine could be given. `bench/scale.py` runs 10^6 by default where there is the time. The plan
below takes memory and disk per point as measured here (they grow slowly with N: the graph's
upper layers, the payload indexes' dictionaries; the plan rounds them up) and scales build
times as N log N.
"""

out = f"""# Scale: planning 10^7 and 10^8 photos

A family library is 10^4–10^5 photos and fits the embedded engine on a laptop. This page plans
an archive of 10^7 and one of 10^8 on a Qdrant cluster, embedded on N GPUs or CPU machines:
memory, disk, shards, machines and hours, with the arithmetic shown. **Measured** figures come
from this project's reference machine (2 CPU cores shared with other work, no GPU); every other
figure is an **assumption**, said so where it is used. Photos are 12 MP camera JPEGs of
~3.9 MB, the model's vectors 512-d (the bundled model and ViT-B/32; for 768-d or 1024-d models
scale the vector bytes by 1.5 or 2).

## What was measured

`nice -n 5 python bench/scale.py --points {N} --json scale.json` (this page is then written by
`python bench/scale_plan.py scale.json docs/scale.md`) loads {N:,} synthetic 512-d points with xlir's
payload (path, dirs, size, mtime, sha256, width, height, taken_at, 5 tags) and its keyword
indexes into the embedded engine, each layout in a fresh process. The vectors are drawn from a
{f['latent']}-dimensional latent space mapped into 512-d, plus noise: real embeddings vary in
few directions, and on isotropic noise no graph index finds true neighbours (at 10^5 isotropic
points HNSW's recall@10 was 0.12, which says nothing about photos). Recall@10 is against the
exact nearest neighbours, computed by brute force in the bench.

| {N:,} points × 512-d | float32 in RAM | int8 in RAM, originals + payload on disk | int8 / float |
| --- | --- | --- | --- |
| upsert (batches of 1000, one stream) | {fmt(f['upsert_per_s'],0)} points/s | {fmt(q['upsert_per_s'],0)} points/s | {q['upsert_per_s']/f['upsert_per_s']:.2f} |
| RSS after the HNSW build (less the bench's own {fmt(f['rss_before_mb'],0)} MB) | {fmt(f['rss_built_mb']-f['rss_before_mb'],0)} MB | {fmt(q['rss_built_mb']-q['rss_before_mb'],0)} MB | {(q['rss_built_mb']-q['rss_before_mb'])/(f['rss_built_mb']-f['rss_before_mb']):.2f} |
| of which heap / mapped files | {fmt(f['rss_built_anon_mb']-f['rss_before_mb'],0)} / {fmt(f['rss_built_file_mb'],0)} MB | {fmt(q['rss_built_anon_mb']-q['rss_before_mb'],0)} / {fmt(q['rss_built_file_mb'],0)} MB | |
| peak RSS | {fmt(f['peak_rss_mb'],0)} MB | {fmt(q['peak_rss_mb'],0)} MB | {q['peak_rss_mb']/f['peak_rss_mb']:.2f} |
| disk | {fmt(f['disk_mb'],0)} MB | {fmt(q['disk_mb'],0)} MB | {q['disk_mb']/f['disk_mb']:.2f} |
| exact scan (before the graph), p50 / p99 | {f['exact_p50_ms']:.0f} / {f['exact_p99_ms']:.0f} ms | {q['exact_p50_ms']:.0f} / {q['exact_p99_ms']:.0f} ms | |
| optimize() (the blocking HNSW build, m 16, ef_construct 100) | {fmt(f['optimize_s']/60,1)} min | {fmt(q['optimize_s']/60,1)} min | {q['optimize_s']/f['optimize_s']:.2f} |
| HNSW query p50 / p99 (limit 10, with payload) | {f['hnsw_p50_ms']:.2f} / {f['hnsw_p99_ms']:.2f} ms | {q['hnsw_p50_ms']:.2f} / {q['hnsw_p99_ms']:.2f} ms | {q['hnsw_p50_ms']/f['hnsw_p50_ms']:.2f} |
| recall@10 after the build | {f['hnsw_recall']:.3f} | {q['hnsw_recall']:.3f} (rescored, oversampling 2) | |
| HNSW / exact query p50 | {f['hnsw_p50_ms']/f['exact_p50_ms']:.3f} | {q['hnsw_p50_ms']/q['exact_p50_ms']:.3f} | |

The build times are the least certain figure: the 2 cores were shared with other work (a
test suite ran beside it), and the bench ran niced.
{scaled_note}
Per point, from the table: float32 in RAM costs {fmt(f_rss,0)} bytes of RSS after the build
({fmt(f_heap,0)} of heap), int8 with the originals on disk {fmt(q_rss,0)} bytes ({fmt(q_heap,0)} of
heap); on disk a point takes {fmt(f_disk,0)} and {fmt(q_disk,0)} bytes (vectors, int8 copies, the
graph, payload, payload indexes, write-ahead log). By construction: a float32 vector is 2,048
bytes, its int8 copy 512, the graph's base layer 2m × 4 = 128 bytes at m = 16. The RSS of the
on-disk layout includes the mapped pages of originals the searches and the build touched: the
kernel keeps them while memory is free and drops them under pressure, so it is an upper bound
for what a node needs, not a floor.

The CPU figures for embedding are the README's (`bench/ingest.py`, default model, 2 cores):
**{CPU_RATE:g} images/s** end to end for 12 MP JPEGs (the ImageNet network and the COCO detector
on every photo; 19.0–20.6 over three runs, at the bound that decoding and both networks
sharing the cores allow). A
rescan stats 10,000 unchanged files in 0.31 s.

## Memory and disk per point, as planned

Planning uses the measured RSS per point (the upper bound above), rounded up:

- float32 layout: **{fmt(math.ceil(plan_f/100)*100,0)} bytes of RAM** per point per replica;
- int8 layout (xlir's from 10^6 points): **{fmt(math.ceil(plan_q/100)*100,0)} bytes of RAM** and
  **{fmt(math.ceil(q_disk/100)*100,0)} bytes of disk** per point per replica.

Sizing on the heap alone ({fmt(q_heap,0)} bytes a point with int8) would take less than half
of that: the rest is mapped pages of the files, which the kernel may drop, at the price of disk
reads when searches rescore with the originals. The plan takes the upper bound.

A server keeps its data the same way as the embedded engine (the same segment code); the
server adds its own process and per-shard overhead, which is not measured here: add 1 GB per
node and 20 % headroom.
"""
ram_q = math.ceil(plan_q / 100) * 100
ram_f = math.ceil(plan_f / 100) * 100
disk_q = math.ceil(q_disk / 100) * 100

def cluster(points, nodes, shards, replicas=2):
    per_shard = points / shards
    replicas_per_node = shards * replicas / nodes
    ram_node = replicas_per_node * per_shard * ram_q
    disk_node = replicas_per_node * per_shard * disk_q
    return per_shard, replicas_per_node, ram_node, disk_node

p7 = cluster(1e7, 3, 3)
p8 = cluster(1e8, 6, 12)
p8b = cluster(1e8, 12, 12)
def need(ram):  # RAM to buy: +20 % and 1 GB per node, next power-of-two-ish size
    x = ram * 1.2 / 1e9 + 1
    for size in (8, 16, 32, 64, 128, 256):
        if x <= size:
            return size, x
    return 512, x

n7, x7 = need(p7[2]); n8, x8 = need(p8[2]); n8b, x8b = need(p8b[2])
out += f"""
## 10^7 photos on a cluster

xlir's layout (`store/layout.py`) for 10^7 expected points on the 3-node cluster of
`docker/compose.cluster.yml`: int8 in RAM, originals and payload on disk, shards =
3 × ⌈⌈10^7 / 10^7⌉ / 3⌉ = **3**, **2 replicas**, write consistency 2, ef_construct 200.

- Points per shard: 10^7 / 3 = {fmt(p7[0]/1e6,2)} M. Shard replicas per node: 3 × 2 / 3 = {p7[1]:.0f}.
- RAM per node: {p7[1]:.0f} × {fmt(p7[0]/1e6,2)} M × {ram_q:,} B = **{fmt(gb(p7[2]),1)} GB**; with 20 % and
  1 GB: {fmt(x7,1)} GB → **{n7} GB nodes**. (The float32 layout would need {p7[1]:.0f} × {fmt(p7[0]/1e6,2)} M × {ram_f:,} B =
  {fmt(gb(p7[1]*p7[0]*ram_f),1)} GB per node.)
- Disk per node: {p7[1]:.0f} × {fmt(p7[0]/1e6,2)} M × {disk_q:,} B = **{fmt(gb(p7[3]),0)} GB** (SSD: rescoring reads originals at random).
- Whole cluster: {fmt(gb(3*p7[2]),0)} GB of RAM and {fmt(gb(3*p7[3]),0)} GB of disk for 2 copies of everything.

## 10^8 photos on a cluster

Shards = nodes × ⌈⌈10^8 / 10^7⌉ / nodes⌉: on 6 nodes, 6 × ⌈10 / 6⌉ = **12** shards of
{fmt(p8[0]/1e6,2)} M points, 2 replicas each, 12 × 2 / 6 = {p8[1]:.0f} shard replicas per node.

- RAM per node: {p8[1]:.0f} × {fmt(p8[0]/1e6,2)} M × {ram_q:,} B = **{fmt(gb(p8[2]),0)} GB** → with 20 % and 1 GB
  {fmt(x8,0)} GB → **{n8} GB nodes**; or 12 nodes ({p8b[1]:.0f} shard replicas each):
  {fmt(gb(p8b[2]),0)} GB, {fmt(x8b,0)} GB with headroom → **{n8b} GB nodes**.
- Disk per node (6 nodes): {p8[1]:.0f} × {fmt(p8[0]/1e6,2)} M × {disk_q:,} B = **{fmt(gb(p8[3]),0)} GB**; whole cluster
  {fmt(gb(6*p8[3])/1000,2)} TB.
- Float32 vectors in RAM instead would be 10^8 × {ram_f:,} B × 2 replicas = {fmt(2e8*ram_f/1e12,2)} TB of RAM: the
  reason xlir quantizes from 10^6 points.

## Building the graphs

HNSW build work grows about as N log N. Measured: {fmt(T1/60,1)} min for {N:,} int8 points on 2
shared cores ({fmt(Tf/60,1)} min float32). Per shard, in units of that build:

- 10^7 (3 shards of 3.33 M): 3.33 M log 3.33 M / ({N:,} log {N:,}) = {scale7:.2f} builds per shard
  replica → {scale7:.2f} × {fmt(T1/60,1)} min = {fmt(scale7*T1/60,0)} min of 2-core time each; a node
  builds its {p7[1]:.0f} replicas, on 8 cores (an assumption: 4× the 2 cores here, building
  scales with cores) in {p7[1]:.0f} × {fmt(scale7*T1/60,0)} / 4 ≈ **{fmt(p7[1]*scale7*T1/60/4,0)} min**.
- 10^8 (12 shards of 8.33 M): {scale8:.2f} builds per shard replica → {fmt(scale8*T1/60,0)} min each;
  {p8[1]:.0f} replicas per node on 8 cores: {p8[1]:.0f} × {fmt(scale8*T1/60,0)} / 4 ≈ **{fmt(p8[1]*scale8*T1/60/4/60,1)} h**.

A server builds in the background while points arrive (segments are indexed as they fill), so
most of it overlaps the embedding below; it also splits a shard into segments, each a smaller
graph, so these are upper bounds. Capping shards at 10^7 points bounds the rebuild of any one
shard: {fmt(scale8*T1/60/4,0)} min on 8 cores for the 8.33 M-point shards of 10^8.

## Embedding hours

**CPU, measured**: {CPU_RATE:g} images/s per 2-core machine.

- 10^7: 10^7 / {CPU_RATE:g} = {fmt(1e7/CPU_RATE,0)} s = **{fmt(1e7/CPU_RATE/3600,0)} h** on one 2-core machine; on a Ray
  cluster of N such machines, {fmt(1e7/CPU_RATE/3600,0)} / N h (16 cores ≈ 8 of them: {fmt(1e7/CPU_RATE/3600/8,0)} h).
- 10^8: **{fmt(1e8/CPU_RATE/3600,0)} h** ({fmt(1e8/CPU_RATE/86400,0)} days) on one; {fmt(1e8/CPU_RATE/3600,0)} / N h.

**GPU, assumed** (no GPU was measured here; `bench/gpu.sh` measures one): a data-centre GPU
node embeds **G = 250 12-MP JPEGs/s** with nvjpeg decoding, bounded by decoding, not by the
ImageNet network (its int8 version alone does 250/s on 2 CPU cores; ViT-B/32 does thousands
per second under bf16). The default model's COCO detector runs on the CPU through OpenCV
(about 20 ms a photo per core here), so at 250/s it needs about 5 of the node's cores.
Take G between 100 and 500 until `bench/gpu.sh` has run.

| photos | 1 GPU | 8 GPUs | 32 GPUs | bytes read |
| --- | --- | --- | --- | --- |
| 10^7 | 10^7 / 250 = 40,000 s = 11.1 h | 1.4 h | 21 min | 39 TB |
| 10^8 | 111 h | 13.9 h | 3.5 h | 390 TB |

Each GPU reads 250 × 3.9 MB = **0.98 GB/s** of photos; 8 GPUs need 7.8 GB/s from the shared
folder every node reads, which a single NFS server does not give: past a few GPUs, storage
bandwidth is the limit, not the GPUs.

**The driver** runs the scan and the upserts for the whole cluster. The scan is a stat walk:
0.31 s per 10^4 unchanged files here → 10^7 files in ~5 min, 10^8 in ~52 min (on a local disk;
a network filesystem is slower). The upserts go on 4 streams of 256 points; a cluster's upsert
rate was not measured here. Assuming 10,000 points/s (the embedded engine alone took
{fmt(f['upsert_per_s'],0)}/s on one stream), 10^8 points take 2.8 h, so a single driver keeps up with up
to 10,000 / 250 = 40 GPUs; beyond that, run one driver per top-level folder.

## The two plans

| | 10^7 photos | 10^8 photos |
| --- | --- | --- |
| collection | 3 shards × 2 replicas, int8 + originals on disk | 12 shards × 2 replicas, int8 + originals on disk |
| Qdrant nodes | 3 × {n7} GB RAM, {fmt(gb(p7[3])*1.2,0)} GB SSD | 6 × {n8} GB RAM, {fmt(gb(p8[3])*1.2/1000,1)} TB SSD (or 12 × {n8b} GB) |
| embedding, 8 GPUs at 250/s (assumed) | 1.4 h | 13.9 h |
| embedding, 2-core CPUs at {CPU_RATE:g}/s (measured) | {fmt(1e7/CPU_RATE/3600,0)} h / machines | {fmt(1e8/CPU_RATE/3600,0)} h / machines |
| graph build per node, 8 cores | ~{fmt(p7[1]*scale7*T1/60/4,0)} min, mostly during ingest | ~{fmt(p8[1]*scale8*T1/60/4/60,1)} h, mostly during ingest |

What would change the plan: the model's width (768-d or 1024-d: vectors and their int8 copies
grow with it); a measured GPU rate (`bench/gpu.sh`); the cluster's real upsert rate; and the
storage the photos are read from.
"""
Path(sys.argv[2]).write_text(out)
