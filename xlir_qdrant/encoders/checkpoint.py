"""The "checkpoint" family: folders written by `xlir train`, loaded like any registered model.

    model.safetensors   the trainable layers (text head, image projection; head.py)
    xlir-model.json     the model's id and dim, the frozen towers it builds on, the head's shapes
    train-config.json   the TrainConfig and the data/tower choices that produced the weights
    metrics.json        validation recall per epoch (epoch 0: the untrained head)

The frozen towers are not copied: the checkpoint names them (a registered model id for the
image side, ``muse`` or a Hugging Face name/folder for the text side) and loads them by name,
so a checkpoint is a few MB. Nothing in a checkpoint names code to run: it is data for this
family, and its image tower must be a registered model.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from ..errors import ModelUnavailable
from ..records import ModelSpec
from .base import CROP_MARGIN, Encoder, EncoderBase, ImageSide
from .text import TextSide, text_side

FORMAT = 1
META = "xlir-model.json"
WEIGHTS = "model.safetensors"

LoadTower = Callable[..., Encoder]


def is_checkpoint(path: Path) -> bool:
    return (path / META).is_file()


def read_meta(path: Path) -> dict[str, Any]:
    """The checkpoint's xlir-model.json, checked for the fields this family needs."""
    try:
        meta = json.loads((path / META).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelUnavailable(f"{path}: not a usable xlir checkpoint ({_first_line(exc)}); re-run `xlir train`") from None
    missing = [k for k in ("id", "dim", "image_model", "text_encoder", "head") if k not in meta] \
        if isinstance(meta, dict) else ["an object"]
    if missing:
        raise ModelUnavailable(f"{path}: not a usable xlir checkpoint ({META} lacks {', '.join(missing)}); "
                               f"re-run `xlir train`")
    if int(meta.get("format", 0)) > FORMAT:
        raise ModelUnavailable(f"{path}: checkpoint format {meta['format']} is newer than this xlir; upgrade xlir")
    return meta


def read_spec(path: Path) -> ModelSpec:
    meta = read_meta(path)
    try:
        return ModelSpec(
            id=str(meta["id"]), family="checkpoint", dim=int(meta["dim"]),
            languages=tuple(str(x) for x in meta.get("languages", ())),
            licence=str(meta.get("licence", "see checkpoint")), size_mb=int(meta.get("size_mb", 0)),
            bundled=False, needs_lang=False, description=str(meta.get("description", "")),
            options={"path": str(path.resolve())},
        )
    except (TypeError, ValueError) as exc:
        raise ModelUnavailable(f"{path}: not a usable xlir checkpoint ({_first_line(exc)}); re-run `xlir train`") from None


class CheckpointEncoder(EncoderBase):
    """Frozen towers + trained layers behind the Encoder protocol.

    Towers load on first use: `xlir search` embeds a query and never needs the image tower.
    """

    def __init__(self, spec: ModelSpec, device: str, model: Any, meta: dict[str, Any], load_tower: LoadTower) -> None:
        self.spec = spec
        self.device = device
        self.model = model
        self.meta = meta
        self._load_tower = load_tower

    @functools.cached_property
    def image_tower(self) -> ImageSide:
        name = str(self.meta["image_model"])
        if Path(name).expanduser().is_dir():
            raise ModelUnavailable(f"checkpoint {self.spec.id}: its image tower {name!r} must be a registered model id")
        tower = self._load_tower(name, device=self.device).feature_side()
        return _checked("image", tower, self.model.config.image_in, name)

    @functools.cached_property
    def text_tower(self) -> TextSide:
        name = str(self.meta["text_encoder"])
        return _checked("text", text_side(name, self.device), self.model.config.text_in, name)

    @property
    def takes_pixels(self) -> bool:  # type: ignore[override]
        return self.image_tower.pixels

    @property
    def input_size(self) -> int:  # type: ignore[override]
        return self.image_tower.min_side - CROP_MARGIN

    def warm_up(self) -> None:
        _ = self.image_tower, self.text_tower

    def preprocess(self, image: Image.Image) -> Any:
        return self.image_tower.preprocess(image)

    def pixel_spec(self) -> Any:
        return self.image_tower.pixel_spec

    def embed_pixels(self, pixels: Any) -> NDArray[np.float32]:
        return self._run(self.model.embed_image, self.image_tower.embed(pixels))

    def embed_images(self, images: Sequence[Image.Image]) -> NDArray[np.float32]:
        if not images:
            return self.empty()
        tower = self.image_tower
        rows = [tower.preprocess(im.convert("RGB")) for im in images]
        batch = np.stack([np.asarray(r) for r in rows]) if tower.pixels else rows
        return self._run(self.model.embed_image, tower.embed(batch))

    def embed_texts(self, texts: Sequence[str], *, lang: str | None = None) -> NDArray[np.float32]:
        # The frozen text encoders here are language-agnostic; ``lang`` is accepted and unused.
        if not texts:
            return self.empty()
        return self._run(self.model.embed_text, self.text_tower.features(list(texts)))

    def _run(self, layer: Callable[[Any], Any], x: NDArray[np.float32]) -> NDArray[np.float32]:
        import torch

        with torch.inference_mode():
            out = layer(torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(self.device))
        return out.float().cpu().numpy().astype(np.float32, copy=False)


def _checked(side: str, tower: Any, want: int, name: str) -> Any:
    """``tower`` if it still gives the feature width the checkpoint was trained on."""
    if tower.dim != want:
        raise ModelUnavailable(f"checkpoint was trained on {want}-d {side} features, but {name!r} now gives "
                               f"{tower.dim}-d")
    return tower


def load(spec: ModelSpec, device: str, *, load_tower: LoadTower) -> CheckpointEncoder:
    """Build a checkpoint's encoder; ``load_tower`` builds its frozen image tower by model id."""
    from safetensors.torch import load_file

    from .head import HeadConfig, JointModel

    path = Path(spec.options["path"])
    meta = read_meta(path)
    try:
        head = HeadConfig.from_dict(meta["head"])
        state = load_file(str(path / str(meta.get("weights", WEIGHTS))), device="cpu")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelUnavailable(f"{path}: not a usable xlir checkpoint ({_first_line(exc)}); re-run `xlir train`") from None
    model = JointModel(head)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelUnavailable(f"{path}: weights do not fit the recorded head ({_first_line(exc)})") from None
    return CheckpointEncoder(spec, device, model.to(device).eval(), meta, load_tower)


def available_offline(spec: ModelSpec) -> tuple[bool, str]:
    path = Path(spec.options.get("path", ""))
    return ((path / WEIGHTS).is_file(), "checkpoint folder" if (path / WEIGHTS).is_file() else "weights missing")


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:160]
