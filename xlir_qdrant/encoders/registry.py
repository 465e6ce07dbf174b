"""Models as data: the built-in specs are one literal tuple, each naming a family that builds it.

Adding a model of a known family is adding an entry to MODELS; a new kind of model is a new
family (a loader and an offline check). Nothing registers itself by being imported, and a
family's module (torch, open_clip) is imported only when one of its models is loaded.
Checkpoints written by `xlir train` are folders; they are the "checkpoint" family.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelUnavailable
from ..records import ModelRow, ModelSpec
from .base import Encoder, resolve_device
from .lang import MUSE_LANGUAGES, NLLB_LANGUAGES, XLMR_LANGUAGES

DEFAULT_MODEL = "sight-lite0-ssd-muse"
ALIASES = {"default": DEFAULT_MODEL, "bundled": DEFAULT_MODEL}


def _conse(model_id: str, variant: str, size_mb: int, description: str) -> ModelSpec:
    return ModelSpec(id=model_id, family="conse", dim=512, languages=MUSE_LANGUAGES, licence="Apache-2.0",
                     size_mb=size_mb, bundled=True, needs_lang=False, description=description,
                     options={"variant": variant})


def _openclip(model_id: str, pretrained: str, hub: str, dim: int, size_mb: int, licence: str, *,
              languages: tuple[str, ...], needs_lang: bool, description: str) -> ModelSpec:
    # Downloaded from the Hugging Face hub on first use, then cached. ``hub`` is the repository
    # open_clip's pretrained config names for the weights (a test checks they agree), so that
    # `xlir models` can look in the cache without importing open_clip and torch.
    return ModelSpec(id=model_id, family="openclip", dim=dim, languages=languages, licence=licence,
                     size_mb=size_mb, bundled=False, needs_lang=needs_lang, description=description,
                     options={"arch": model_id, "pretrained": pretrained, "hf_hub": hub})


MODELS: tuple[ModelSpec, ...] = (
    ModelSpec(id=DEFAULT_MODEL, family="sight", dim=512, languages=MUSE_LANGUAGES, licence="Apache-2.0",
              size_mb=129, bundled=True, needs_lang=False, options={"variant": "lite0"},
              description="EfficientNet-Lite0 (ImageNet) + SSD-MobileNet-v2 (COCO objects, people counted) in "
                          "mUSE v3, calibrated scores; offline, CPU-friendly"),
    _conse("conse-lite0-muse", "lite0", 52,
           "EfficientNet-Lite0 (ImageNet) bridged into mUSE v3 by ConSE; offline (the earlier default)"),
    _conse("conse-lite2-muse", "lite2", 58,
           "EfficientNet-Lite2 (ImageNet, 260 px) bridged into mUSE v3 by ConSE; offline"),
    _openclip("xlm-roberta-base-ViT-B-32", "laion5b_s13b_b90k",
              "laion/CLIP-ViT-B-32-xlm-roberta-base-laion5B-s13B-b90k", 512, 1100, "MIT",
              languages=XLMR_LANGUAGES, needs_lang=False, description="open_clip ViT-B/32 + XLM-RoBERTa base, LAION-5B"),
    _openclip("nllb-clip-base-siglip", "mrl", "visheratin/nllb-siglip-mrl-base", 768, 2000, "CC-BY-NC-4.0",
              languages=NLLB_LANGUAGES, needs_lang=True,
              description="SigLIP ViT-B + NLLB text encoder; needs the query language (detected)"),
    _openclip("nllb-clip-large-siglip", "mrl", "visheratin/nllb-siglip-mrl-large", 1152, 5000, "CC-BY-NC-4.0",
              languages=NLLB_LANGUAGES, needs_lang=True,
              description="SigLIP SO400M + NLLB text encoder; needs the query language (detected)"),
    _openclip("xlm-roberta-large-ViT-H-14", "frozen_laion5b_s13b_b90k",
              "laion/CLIP-ViT-H-14-frozen-xlm-roberta-large-laion5B-s13B-b90k", 1024, 4500, "MIT",
              languages=XLMR_LANGUAGES, needs_lang=False, description="open_clip ViT-H/14 + XLM-RoBERTa large, LAION-5B"),
)


@dataclass(frozen=True, slots=True)
class Family:
    """The code behind one kind of model: build an encoder, and say whether it can run offline."""

    load: Callable[[ModelSpec, str], Encoder]
    status: Callable[[ModelSpec], tuple[bool, str]]


def _load_conse(spec: ModelSpec, device: str) -> Encoder:
    from . import bundled

    return bundled.load(spec, device)


def _conse_status(spec: ModelSpec) -> tuple[bool, str]:
    from . import bundled

    return bundled.available_offline(spec)


def _load_sight(spec: ModelSpec, device: str) -> Encoder:
    from . import sight

    return sight.load(spec, device)


def _sight_status(spec: ModelSpec) -> tuple[bool, str]:
    from . import sight

    return sight.available_offline(spec)


def _load_openclip(spec: ModelSpec, device: str) -> Encoder:
    try:
        from . import openclip
    except ImportError as exc:
        raise ModelUnavailable(f"model {spec.id!r} needs the package {exc.name!r}, which is not installed; "
                               f"install it or use the bundled default model") from exc
    return openclip.load(spec, device)


def _openclip_status(spec: ModelSpec) -> tuple[bool, str]:
    if spec.options.get("hf_hub"):  # where the weights are is known: a look in the cache will do
        from .hub import OPEN_CLIP_WEIGHTS, in_cache

        if importlib.util.find_spec("open_clip") is None:
            return False, "package open_clip missing"
        if in_cache(spec.options["hf_hub"], OPEN_CLIP_WEIGHTS):
            return True, "in the Hugging Face cache"
        return False, "not downloaded yet"
    try:
        from . import openclip
    except ImportError as exc:
        return False, f"package {exc.name} missing"
    return openclip.available_offline(spec)


def _load_checkpoint(spec: ModelSpec, device: str) -> Encoder:
    from . import checkpoint

    return checkpoint.load(spec, device, load_tower=load_encoder)


def _checkpoint_status(spec: ModelSpec) -> tuple[bool, str]:
    from . import checkpoint

    return checkpoint.available_offline(spec)


FAMILIES: dict[str, Family] = {
    "sight": Family(_load_sight, _sight_status),
    "conse": Family(_load_conse, _conse_status),
    "openclip": Family(_load_openclip, _openclip_status),
    "checkpoint": Family(_load_checkpoint, _checkpoint_status),
}


def registry() -> list[ModelSpec]:
    return list(MODELS)


def get_spec(model_id: str) -> ModelSpec:
    """The spec of a model id, an alias, or a checkpoint folder made by `xlir train`."""
    key = ALIASES.get(model_id, model_id)
    for spec in MODELS:
        if spec.id == key:
            return spec
    path = Path(model_id).expanduser()
    if path.is_dir():
        from . import checkpoint

        if checkpoint.is_checkpoint(path):
            return checkpoint.read_spec(path)
    known = ", ".join(sorted(s.id for s in MODELS))
    raise ModelUnavailable(f"unknown model {model_id!r}; known models: {known} (see `xlir models`)")


def spec_for_vector(vector_name: str) -> ModelSpec | None:
    """The registered model whose vectors are called ``vector_name`` in a collection."""
    return next((spec for spec in MODELS if spec.vector_name == vector_name), None)


def family(spec: ModelSpec) -> Family:
    try:
        return FAMILIES[spec.family]
    except KeyError:
        raise ModelUnavailable(f"model {spec.id!r} is of an unknown family {spec.family!r}; "
                               f"known: {', '.join(sorted(FAMILIES))}") from None


def load_encoder(model: str | ModelSpec, *, device: str = "auto") -> Encoder:
    """Build the encoder of ``model`` (an id, alias or checkpoint folder, or a resolved spec)."""
    spec = model if isinstance(model, ModelSpec) else get_spec(model)
    return family(spec).load(spec, resolve_device(device))


def model_rows() -> list[ModelRow]:
    """Every registered model and whether it can be loaded right now without a network."""
    rows = []
    for spec in MODELS:
        ready, why = family(spec).status(spec)
        rows.append(ModelRow(id=spec.id, dim=spec.dim, languages=len(spec.languages), licence=spec.licence,
                             size_mb=spec.size_mb, bundled=spec.bundled, needs_lang=spec.needs_lang,
                             offline_ready=ready, status=why, description=spec.description))
    return rows
