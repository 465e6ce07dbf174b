"""The paper's recipe behind one facade: train on English captions (train/), measure recall per
language on XTD10 or any caption set (eval/). The CLI's `xlir train` and `xlir eval` talk only
to this. Torch is imported when a function here runs, not when this module is imported.

    from xlir_qdrant import recipe
    report = recipe.train(recipe.training_pairs(pairs="pairs.tsv"), "ckpt", recipe.TrainConfig(epochs=3))
    rows = recipe.evaluate(recipe.eval_set(tsv="captions.tsv"), ["default", "ckpt"])
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .encoders.registry import DEFAULT_MODEL
from .errors import ConfigError
from .train.config import TrainConfig

if TYPE_CHECKING:
    from .eval import EvalRow, EvalSet
    from .train.data import PairSet
    from .train.loop import TrainReport

__all__ = ["DEFAULT_MODEL", "TrainConfig", "eval_set", "evaluate", "train", "training_pairs"]


def training_pairs(*, pairs: Path | None = None, coco_json: Path | None = None, images: Path | None = None) -> PairSet:
    """English (image, caption) pairs: a pairs file, or an MSCOCO captions JSON with its images."""
    from .train.data import load_coco, load_pairs

    if (pairs is None) == (coco_json is None) or (coco_json is not None and images is None):
        raise ConfigError("give either --pairs FILE, or --coco-json FILE with --images FOLDER")
    return load_pairs(pairs) if pairs is not None else load_coco(coco_json, images)  # type: ignore[arg-type]


def train(pairs: PairSet, out: Path | str, config: TrainConfig, *, image_model: str = DEFAULT_MODEL,
          text_encoder: str = "muse", device: str = "auto", workers: int | None = None, use_cache: bool = True,
          progress: Callable[[Any], None] | None = None) -> TrainReport:
    """Frozen features, split by image, train the head, save a checkpoint folder at ``out``."""
    from .train.loop import run

    config.validate()
    return run(pairs, Path(out), config, image_model=image_model, text_encoder=text_encoder, device=device,
               workers=workers, use_cache=use_cache, progress=progress)


def eval_set(*, xtd10: Path | None = None, tsv: Path | None = None, langs: Sequence[str] | None = None,
             captions_dir: Path | None = None, fetch_missing_images: bool = False,
             on_advance: Callable[[int], None] | None = None) -> EvalSet:
    """XTD10 (captions fetched into the cache, images from a COCO folder) or a caption TSV."""
    from .eval import load_tsv, load_xtd10

    if (xtd10 is None) == (tsv is None):
        raise ConfigError("give exactly one of --xtd10 COCO_FOLDER or --tsv FILE")
    if xtd10 is not None:
        return load_xtd10(xtd10, langs=langs, captions_dir=captions_dir,
                          fetch_missing_images=fetch_missing_images, on_advance=on_advance)
    return load_tsv(tsv)  # type: ignore[arg-type]


def evaluate(dataset: EvalSet, models: Sequence[str], *, langs: Iterable[str] | None = None, device: str = "auto",
             batch_size: int = 32, workers: int | None = None, progress: Callable[[Any], None] | None = None,
             ) -> list[EvalRow]:
    """Rows per model and language, then the paper's published rows for the same languages."""
    from .eval import evaluate as run_eval
    from .eval import reference_rows as paper_rows

    rows = run_eval(dataset, models or [DEFAULT_MODEL], langs=langs, device=device, batch_size=batch_size,
                    workers=workers, progress=progress)
    return rows + paper_rows(dataset.name, list(langs) if langs else list(dataset.langs))
