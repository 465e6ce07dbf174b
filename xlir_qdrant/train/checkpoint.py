"""Checkpoints of `xlir train`: a folder that loads like any registered model.

    model.safetensors   the trainable layers (text head, image projection)
    xlir-model.json     the ModelSpec fields, the frozen towers it builds on, the head's shapes
    train-config.json   the TrainConfig and the data/tower choices that produced the weights
    metrics.json        validation recall per epoch (epoch 0: the untrained head)

The frozen towers are not copied: the checkpoint names them (a registry id for the image side,
``muse`` or a Hugging Face name/folder for the text side) and loads them by name, so a
checkpoint is a few MB. `get_spec` recognises the folder by its xlir-model.json, whose "loader"
points here, so `xlir index/search --model path/to/checkpoint` work unchanged.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from PIL import Image

from ..encoders.base import ModelSpec, get_spec
from ..errors import ModelUnavailable
from ..eval.recall import nan_to_none
from .loop import final_metrics
from .model import HeadConfig, JointModel

FORMAT = 1
WEIGHTS = "model.safetensors"
LOADER = "xlir_qdrant.train.checkpoint:load"


def save(
    out: Path, model: JointModel, *, config: Any, history: list[dict[str, float]], image_model: str,
    image_key: str, text_encoder: str, text_key: str, languages: Sequence[str],
) -> str:
    """Write the checkpoint folder and return its model id.

    The id carries a hash of the weights: the store keys collections by model id, so two
    different trainings saved under the same folder name must not share a collection.
    """
    from safetensors.torch import save as to_bytes

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    # Bytes through write_bytes: the file gets the user's usual permissions (save_file's are 0600).
    blob = to_bytes(state, metadata={"format": str(FORMAT)})
    (out / WEIGHTS).write_bytes(blob)
    digest = hashlib.sha256(blob).hexdigest()
    model_id = f"xlir-{re.sub(r'[^A-Za-z0-9_.-]+', '-', out.resolve().name).strip('-') or 'model'}-{digest[:8]}"
    text_path = Path(text_encoder).expanduser()
    text_ref = str(text_path.resolve()) if text_path.is_dir() else text_encoder
    image_spec = get_spec(image_model)
    meta = {
        "format": FORMAT,
        "id": model_id,
        "dim": model.config.dim,
        "languages": list(languages),
        "licence": f"weights: the training data's terms; frozen towers: {image_spec.licence} (image), "
                   f"{'Apache-2.0' if text_encoder == 'muse' else 'see the text encoder'} (text)",
        "size_mb": max(1, round(len(blob) / 2**20)),
        "needs_lang": False,
        "loader": LOADER,
        "description": f"trained by xlir train ({getattr(config, 'loss', '?')}): {text_encoder} text, "
                       f"{image_model} image features",
        "image_model": image_spec.id,
        "image_features": image_key,
        "text_encoder": text_ref,
        "text_features": text_key,
        "head": model.config.to_dict(),
        "weights": WEIGHTS,
        "sha256": digest,
    }
    _write_json(out / "xlir-model.json", meta)
    cfg = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    _write_json(out / "train-config.json", {**cfg, "image_model": image_spec.id, "text_encoder": text_ref,
                                            "torch": torch.__version__})
    _write_json(out / "metrics.json", {"final": final_metrics(history), "history": history})
    return model_id


def _write_json(path: Path, data: object) -> None:
    # NaN (the untrained epoch's loss) is not JSON; null is.
    path.write_text(json.dumps(nan_to_none(data), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


class CheckpointEncoder:
    """Frozen towers + trained layers behind the Encoder protocol.

    Towers load on first use: `xlir search` embeds a query and never needs the image tower.
    """

    precision = "fp32"

    def __init__(self, spec: ModelSpec, device: str, model: JointModel, meta: dict[str, Any]) -> None:
        self.spec = spec
        self.device = device
        self.model = model
        self.meta = meta

    @functools.cached_property
    def image_tower(self) -> Any:
        from .features import image_featurizer

        name = self.meta["image_model"]
        return _checked("image", image_featurizer(name, self.device), self.model.config.image_in, name)

    @functools.cached_property
    def text_tower(self) -> Any:
        from .features import text_featurizer

        name = self.meta["text_encoder"]
        return _checked("text", text_featurizer(name, self.device), self.model.config.text_in, name)

    @property
    def input_size(self) -> int:
        return int(self.image_tower.min_side) - 32

    def warm_up(self) -> None:
        _ = self.image_tower, self.text_tower

    @property
    def preprocess(self) -> Callable[[Image.Image], Any] | None:
        # The ingest pipeline preprocesses on worker threads and stacks the results when an
        # encoder has ``preprocess``; towers that take PIL images as they are (None here) go
        # through embed_images instead.
        return self.image_tower.preprocess if self.image_tower.pixels else None

    def embed_pixels(self, pixels: Any) -> NDArray[np.float32]:
        return self._project_images(self.image_tower.features(list(pixels)))

    def embed_images(self, images: Sequence[Image.Image]) -> NDArray[np.float32]:
        if not images:
            return np.zeros((0, self.spec.dim), np.float32)
        tower = self.image_tower
        return self._project_images(tower.features([tower.preprocess(im.convert("RGB")) for im in images]))

    def embed_texts(self, texts: Sequence[str], *, lang: str | None = None) -> NDArray[np.float32]:
        # The frozen text encoders here are language-agnostic; ``lang`` is accepted and unused.
        if not texts:
            return np.zeros((0, self.spec.dim), np.float32)
        return self._run(self.model.embed_text, self.text_tower.features(list(texts)))

    def _project_images(self, features: NDArray[np.float32]) -> NDArray[np.float32]:
        return self._run(self.model.embed_image, features)

    @torch.inference_mode()
    def _run(self, layer: Callable[[torch.Tensor], torch.Tensor], x: NDArray[np.float32]) -> NDArray[np.float32]:
        out = layer(torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(self.device)).float().cpu().numpy()
        return out.astype(np.float32, copy=False)


def _checked(side: str, tower: Any, want: int, name: str) -> Any:
    """``tower`` if it still gives the feature width the checkpoint was trained on."""
    if tower.dim != want:
        raise ModelUnavailable(f"checkpoint was trained on {want}-d {side} features, but {name!r} now gives "
                               f"{tower.dim}-d")
    return tower


def load(spec: ModelSpec, device: str) -> CheckpointEncoder:
    """The registry's loader for checkpoint folders (``spec.options['path']``)."""
    from safetensors.torch import load_file

    path = Path(spec.options["path"])
    try:
        meta = json.loads((path / "xlir-model.json").read_text(encoding="utf-8"))
        head = HeadConfig.from_dict(meta["head"])
        state = load_file(str(path / meta.get("weights", WEIGHTS)), device="cpu")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelUnavailable(f"{path}: not a usable xlir checkpoint ({exc}); re-run `xlir train`") from None
    if int(meta.get("format", 0)) > FORMAT:
        raise ModelUnavailable(f"{path}: checkpoint format {meta['format']} is newer than this xlir; upgrade xlir")
    model = JointModel(head)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelUnavailable(f"{path}: weights do not fit the recorded head ({str(exc).splitlines()[0]})") from None
    return CheckpointEncoder(spec, device, model.to(device).eval(), meta)
