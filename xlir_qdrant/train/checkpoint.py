"""Writing the checkpoints of `xlir train`: a folder that loads like any registered model.

The format and the loading live with the encoders (encoders/checkpoint.py, the "checkpoint"
family), so `xlir index/search --model path/to/checkpoint` never import the training code.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..encoders.checkpoint import FORMAT, META, WEIGHTS
from ..encoders.head import JointModel
from ..encoders.registry import get_spec
from ..records import jsonable


def final_metrics(history: list[dict[str, float]]) -> dict[str, float]:
    """The last epoch's row of a training history (a copy), or {} before any epoch."""
    return dict(history[-1]) if history else {}


def save(
    out: Path, model: JointModel, *, config: dict[str, Any], history: list[dict[str, float]], image_model: str,
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
        "description": f"trained by xlir train ({config.get('loss', '?')}): {text_encoder} text, "
                       f"{image_model} image features",
        "image_model": image_spec.id,
        "image_features": image_key,
        "text_encoder": text_ref,
        "text_features": text_key,
        "head": model.config.to_dict(),
        "weights": WEIGHTS,
        "sha256": digest,
    }
    _write_json(out / META, meta)
    _write_json(out / "train-config.json", {**config, "image_model": image_spec.id, "text_encoder": text_ref,
                                            "torch": torch.__version__})
    _write_json(out / "metrics.json", {"final": final_metrics(history), "history": history})
    return model_id


def _write_json(path: Path, data: object) -> None:
    # NaN (the untrained epoch's loss) is not JSON; null is.
    path.write_text(json.dumps(jsonable(data), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
