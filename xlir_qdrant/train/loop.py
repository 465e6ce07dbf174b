"""Training: AdamW, linear warm-up then cosine decay, bf16 autocast on CUDA, seeded throughout.

``train`` runs on feature arrays (the frozen towers' outputs) and reports through a progress
callback; ``run`` is the whole recipe from (image, caption) pairs to a checkpoint folder.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from ..encoders.base import resolve_device
from ..encoders.head import HeadConfig, JointModel
from ..errors import ConfigError
from ..eval.recall import retrieval_recall
from .checkpoint import final_metrics, save
from .data import DataError, PairSet, split_images
from .features import image_features, image_tower, text_features, text_tower
from .config import TrainConfig
from .losses import ranking_loss


@dataclass(frozen=True)
class FeatureSet:
    """Frozen-tower features: ``caption_image[i]`` is the row of ``image`` that ``text[i]`` describes."""

    text: NDArray[np.float32]
    image: NDArray[np.float32]
    caption_image: NDArray[np.int64]

    def subset(self, image_indices: Sequence[int]) -> FeatureSet:
        """The given images (in that order) and their captions, images renumbered from 0."""
        keep = np.asarray(image_indices, np.int64)
        renumber = np.full(len(self.image), -1, np.int64)
        renumber[keep] = np.arange(len(keep))
        mapped = renumber[self.caption_image]
        rows = np.flatnonzero(mapped >= 0)
        return FeatureSet(self.text[rows], self.image[keep], mapped[rows])

    def limit_images(self, n: int) -> FeatureSet:
        """The first ``n`` images and their captions."""
        if n >= len(self.image):
            return self
        rows = np.flatnonzero(self.caption_image < n)
        return FeatureSet(self.text[rows], self.image[:n], self.caption_image[rows])


@dataclass(frozen=True, slots=True)
class TrainEvent:
    """Progress for a front end.

    kind: 'stage' (stage, total), 'advance' (n), 'skipped' (path, reason), 'step' (epoch, step,
    total_steps, loss, lr, rate in samples/s), 'epoch' (epoch, metrics; epoch 0 is the untrained
    head), 'saved' (path).
    """

    kind: str
    stage: str = ""
    total: int = 0
    n: int = 0
    path: str = ""
    reason: str = ""
    epoch: int = 0
    step: int = 0
    total_steps: int = 0
    loss: float = math.nan
    lr: float = 0.0
    rate: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)


Progress = Callable[[TrainEvent], None]


@dataclass
class TrainResult:
    model: JointModel
    history: list[dict[str, float]]  # one row per epoch: epoch, loss, validation recall
    device: str
    precision: str
    seconds: float


def lr_lambda(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """Linear warm-up to 1, then cosine decay to 0 at ``total_steps``."""

    def factor(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        span = max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup_steps) / span)))

    return factor


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@contextlib.contextmanager
def deterministic(device: str) -> Iterator[None]:
    """Deterministic kernels for the run, restored afterwards (a library must not leave global
    torch state changed). warn_only: an op without a deterministic kernel warns, never fails."""
    if device.startswith("cuda"):
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    was = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was)


def precision_for(device: str) -> str:
    return "bf16" if device.startswith("cuda") and torch.cuda.is_bf16_supported() else "fp32"


def _autocast(device: str, precision: str) -> contextlib.AbstractContextManager[object]:
    if precision != "bf16":
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=torch.bfloat16)


@torch.no_grad()
def embed_features(model: JointModel, features: FeatureSet, device: str, chunk: int = 8192
                   ) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """(text, image) joint-space embeddings of frozen features, in eval mode, as float32."""
    model.eval()

    def run(fn: Callable[[torch.Tensor], torch.Tensor], x: NDArray[np.float32]) -> NDArray[np.float32]:
        parts = [fn(torch.from_numpy(x[s : s + chunk]).to(device)).float().cpu().numpy()
                 for s in range(0, len(x), chunk)]
        return np.concatenate(parts) if parts else np.zeros((0, model.config.dim), np.float32)

    return run(model.embed_text, features.text), run(model.embed_image, features.image)


def validation_recall(model: JointModel, val: FeatureSet, device: str) -> dict[str, float]:
    text, image = embed_features(model, val, device)
    return retrieval_recall(text, image, val.caption_image)


def train(
    train_set: FeatureSet, val_set: FeatureSet | None, config: TrainConfig, *, device: str = "cpu",
    progress: Progress | None = None, log_every: int = 10, precision: str | None = None,
) -> TrainResult:
    """Train the text head and image projection on ``train_set``; validate each epoch.

    ``precision`` defaults to bf16 autocast on a CUDA GPU that has it, else fp32.
    """
    config.validate()
    emit = progress or (lambda _e: None)
    n = len(train_set.caption_image)
    if n < 2 or len(train_set.image) < 2:
        raise DataError("training needs at least two images with captions")
    precision = precision or precision_for(device)
    if precision not in {"bf16", "fp32"} or (precision == "bf16" and not device.startswith("cuda")):
        raise ConfigError(f"precision {precision!r} on {device}: use fp32, or bf16 on a CUDA GPU")
    start = time.perf_counter()
    with deterministic(device):
        seed_everything(config.seed)
        model = JointModel(HeadConfig(
            text_in=train_set.text.shape[1], image_in=train_set.image.shape[1], dim=config.dim,
            hidden=config.hidden, dropout=config.dropout, image_projection=config.image_projection,
        )).to(device)
        batch = min(config.batch_size, n)
        steps_per_epoch = max(1, n // batch)  # the ragged tail is dropped: tiny batches have no negatives
        total_steps = steps_per_epoch * config.epochs
        warmup = int(config.warmup) if config.warmup >= 1 else int(round(config.warmup * total_steps))
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(warmup, total_steps))
        text = torch.from_numpy(np.ascontiguousarray(train_set.text, np.float32)).to(device)
        image = torch.from_numpy(np.ascontiguousarray(train_set.image, np.float32)).to(device)
        owners = torch.from_numpy(np.asarray(train_set.caption_image, np.int64)).to(device)
        rng = np.random.default_rng(config.seed)
        emit(TrainEvent("stage", stage=f"training ({device} {precision})", total=total_steps))

        history: list[dict[str, float]] = []
        val = val_set if val_set is not None and len(val_set.image) else None  # None: no validation
        if val is not None:
            val = val.limit_images(config.val_max_images)  # the same subset every epoch
            untrained = validation_recall(model, val, device)
            history.append({"epoch": 0, "loss": math.nan, **untrained})
            emit(TrainEvent("epoch", epoch=0, metrics=untrained))

        step = 0
        for epoch in range(1, config.epochs + 1):
            model.train()
            order = torch.from_numpy(rng.permutation(n)).to(device)
            running = torch.zeros((), device=device)
            seen, window_start, epoch_loss = 0, time.perf_counter(), 0.0
            for b in range(steps_per_epoch):
                idx = order[b * batch : (b + 1) * batch]
                ids = owners[idx]
                with _autocast(device, precision):
                    t = model.embed_text(text[idx])
                    v = model.embed_image(image[ids])
                loss = ranking_loss(config.loss, t, v, ids, margin=config.margin, text_margin=config.text_margin,
                                    weight=config.m3_weight, mining=config.mining)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                step += 1
                running += loss.detach()
                seen += len(idx)
                # Reading the loss forces a GPU sync; do it every few steps, not every step.
                if (b + 1) % log_every == 0 or b + 1 == steps_per_epoch:
                    count = (b % log_every) + 1
                    mean = float(running) / count
                    epoch_loss += mean * count
                    elapsed = max(time.perf_counter() - window_start, 1e-9)
                    emit(TrainEvent("step", epoch=epoch, step=step, total_steps=total_steps, loss=mean,
                                    lr=schedule.get_last_lr()[0], rate=seen / elapsed, n=count))
                    running.zero_()
                    seen, window_start = 0, time.perf_counter()
            row = {"epoch": epoch, "loss": epoch_loss / steps_per_epoch}
            if val is not None:
                row.update(validation_recall(model, val, device))
            history.append(row)
            emit(TrainEvent("epoch", epoch=epoch, metrics=row))
    model.eval()
    return TrainResult(model, history, device, precision, time.perf_counter() - start)


@dataclass(frozen=True)
class TrainReport:
    out: Path
    model_id: str
    history: list[dict[str, float]]
    train_images: int
    train_captions: int
    val_images: int
    skipped: int
    device: str
    precision: str
    seconds: float

    @property
    def metrics(self) -> dict[str, float]:
        return final_metrics(self.history)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "out": str(self.out), "metrics": self.metrics}


def run(
    pairs: PairSet, out: Path, config: TrainConfig, *, image_model: str | None = None, text_encoder: str = "muse",
    device: str = "auto", workers: int | None = None, use_cache: bool = True, progress: Progress | None = None,
) -> TrainReport:
    """The paper's recipe end to end: frozen features, split by image, train, save a checkpoint."""
    from ..encoders.registry import DEFAULT_MODEL

    config.validate()
    emit = progress or (lambda _e: None)
    start = time.perf_counter()
    device = resolve_device(device)
    image_model = image_model or DEFAULT_MODEL
    emit(TrainEvent("stage", stage="loading frozen towers"))
    img = image_tower(image_model, device)
    txt = text_tower(text_encoder, device)

    emit(TrainEvent("stage", stage="image features", total=len(pairs.images)))
    skipped: list[str] = []

    def on_skip(path: str, reason: str) -> None:
        skipped.append(path)
        emit(TrainEvent("skipped", path=path, reason=reason))

    def advance(k: int) -> None:
        emit(TrainEvent("advance", n=k))

    feats, ok = image_features(pairs.images, img, workers=workers, use_cache=use_cache, on_advance=advance,
                               on_skip=on_skip)
    usable = np.flatnonzero(ok)
    if len(usable) < 2:
        raise DataError(f"only {len(usable)} of {len(pairs.images)} images could be read; need at least 2")
    # All captions at once, in the data file's order: the cache then survives a new --seed or
    # --val-fraction, which only re-split the rows below.
    emit(TrainEvent("stage", stage="text features", total=len(pairs.captions)))
    text = text_features(pairs.captions, txt, use_cache=use_cache, on_advance=advance)
    everything = FeatureSet(text, feats, pairs.caption_image).subset(usable)
    train_idx, val_idx = split_images(len(usable), config.val_fraction, config.seed)
    train_set = everything.subset(train_idx)
    val_set = everything.subset(val_idx) if val_idx else None
    result = train(train_set, val_set, config, device=device, progress=emit)
    model_id = save(out, result.model, config=config.to_dict(), history=result.history, image_key=img.key,
                    image_model=image_model, text_encoder=text_encoder, text_key=txt.key,
                    languages=txt.languages)
    emit(TrainEvent("saved", path=str(out)))
    return TrainReport(out=Path(out), model_id=model_id, history=result.history,
                       train_images=len(train_set.image), train_captions=len(train_set.text),
                       val_images=len(val_idx), skipped=len(skipped), device=result.device,
                       precision=result.precision, seconds=time.perf_counter() - start)
