"""Training throughput at the paper's scale of batch: bf16 autocast vs fp32, same process.

Trains the real loop (xlir_qdrant.train.loop.train: M3 loss, hardest in-batch negatives, AdamW,
warm-up + cosine) on synthetic frozen features shaped like the default towers (512-d mUSE
text, 1280-d EfficientNet-Lite0 image) at batch 4096 for 200 steps on CUDA, then the same in
fp32 for a baseline, and prints steps/s, samples/s and the ratio. Without a GPU it says so and
runs a small CPU smoke version (batch 256, 20 steps). Well under 2 minutes on an H100.

    python bench/train_gpu.py
"""

from __future__ import annotations

import time

import numpy as np
import torch

from xlir_qdrant.train.config import TrainConfig
from xlir_qdrant.train.loop import FeatureSet, TrainEvent, train


def features(n_images: int, caps: int = 5, text_dim: int = 512, image_dim: int = 1280, seed: int = 0) -> FeatureSet:
    rng = np.random.default_rng(seed)
    owners = np.repeat(np.arange(n_images), caps)
    latent = rng.standard_normal((n_images, 64), dtype=np.float32)
    text = latent[owners] @ rng.standard_normal((64, text_dim), dtype=np.float32)
    text += rng.standard_normal(text.shape, dtype=np.float32)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    image = np.maximum(latent @ rng.standard_normal((64, image_dim), dtype=np.float32), 0)
    return FeatureSet(text.astype(np.float32), image.astype(np.float32), owners)


def measure(data: FeatureSet, config: TrainConfig, device: str, precision: str) -> tuple[float, float]:
    """(steps/s, samples/s) between the first and the last progress report (both GPU-synced)."""
    marks: list[tuple[float, int]] = []

    def on_event(ev: TrainEvent) -> None:
        if ev.kind == "step":
            marks.append((time.perf_counter(), ev.step))

    train(data, None, config, device=device, precision=precision, progress=on_event, log_every=10)
    (t0, s0), (t1, s1) = marks[0], marks[-1]
    steps_per_s = (s1 - s0) / (t1 - t0)
    return steps_per_s, steps_per_s * config.batch_size


def main() -> None:
    if torch.cuda.is_available():
        device, batch, steps = "cuda:0", 4096, 200
        print(f"device: {torch.cuda.get_device_name(0)}")
    else:
        device, batch, steps = "cpu", 256, 20
        print("no CUDA GPU: running a small CPU smoke version (batch 256, 20 steps); numbers are not the GPU's")
    steps_per_epoch = 20
    data = features(batch * steps_per_epoch // 5)
    config = TrainConfig(loss="m3", mining="hardest", batch_size=batch, epochs=steps // steps_per_epoch)
    precisions = ["bf16", "fp32"] if device.startswith("cuda") and torch.cuda.is_bf16_supported() else ["fp32"]
    results = {}
    for precision in precisions:
        measure(data, TrainConfig(**{**config.to_dict(), "epochs": 1}), device, precision)  # warm-up: kernels, allocator
        results[precision] = measure(data, config, device, precision)
        sps, samples = results[precision]
        print(f"{device} {precision}: batch {batch}, {steps} steps: {sps:.1f} steps/s, {samples:,.0f} samples/s")
    if len(results) == 2:
        print(f"bf16 / fp32 throughput: {results['bf16'][0] / results['fp32'][0]:.2f}x")


if __name__ == "__main__":
    main()
