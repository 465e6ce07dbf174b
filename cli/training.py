"""`xlir train`: the paper's training recipe as one command.

Its training options are not written out here: each field of TrainConfig (with its default and
help) becomes an option, so the command and the library cannot drift apart.
"""

from __future__ import annotations

import inspect
import typing
from dataclasses import fields
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from xlir_qdrant import recipe
from xlir_qdrant.records import jsonable

from .app import Command, errors, ui
from .render import TrainProgress, print_json_lines, recall_line

HELP = """Train a cross-lingual image-text model on English captions only.

The paper's recipe: two frozen towers (an image model's features and a multilingual text
encoder) run once, their outputs cached; a small text head and image projection then learn
with the PATR or M3 ranking loss. The text encoder is multilingual and stays frozen, so the
result answers queries in its other languages zero-shot. Recall on held-out images prints
every epoch (epoch 0: untrained). The checkpoint folder works wherever a model id does.

Examples:
xlir train --coco-json captions_train2014.json --images coco/ --out ckpt
xlir train --pairs pairs.tsv --out ckpt --loss patr --epochs 3
xlir index ~/Pictures --model ckpt && xlir search "perro en la playa"
xlir eval --xtd10 coco/ --model ckpt --model default
"""

# The options that are not TrainConfig fields: the data, the towers, where the result goes.
_DATA_OPTIONS = [
    ("out", Annotated[Path, typer.Option("--out", "-o", help="Checkpoint folder to write (created).", show_default=False)], inspect.Parameter.empty),
    ("coco_json", Annotated[Optional[Path], typer.Option("--coco-json", help="MSCOCO captions file (captions_train2014.json); needs --images.", show_default=False)], None),
    ("images", Annotated[Optional[Path], typer.Option("--images", help="Folder holding the COCO images (searched recursively).", show_default=False)], None),
    ("pairs", Annotated[Optional[Path], typer.Option("--pairs", help="TSV (path<TAB>caption) or JSONL ({\"image\", \"caption\"}) of English pairs.", show_default=False)], None),
    ("image_model", Annotated[str, typer.Option("--image-model", help="Frozen image tower: a model id from `xlir models`.")], recipe.DEFAULT_MODEL),
    ("text_encoder", Annotated[str, typer.Option("--text-encoder", help="Frozen text encoder: muse (bundled), or a Hugging Face name or folder.")], "muse"),
    ("device", Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")], "auto"),
    ("workers", Annotated[Optional[int], typer.Option("--workers", help="Image decode threads.", show_default="one per core, up to 8")], None),
    ("no_cache", Annotated[bool, typer.Option("--no-cache", help="Recompute frozen features instead of reusing the cache.")], False),
    ("json", Annotated[bool, typer.Option("--json", help="Print the training report as one JSON object.")], False),
]


def _config_options() -> list[inspect.Parameter]:
    """One option per TrainConfig field: --text-margin for text_margin, --x/--no-x for a flag."""
    hints = typing.get_type_hints(recipe.TrainConfig)
    defaults = recipe.TrainConfig()
    params = []
    for f in fields(recipe.TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        if hints[f.name] is bool:
            flag = f"{flag}/--no-{f.name.replace('_', '-')}"
        option = typer.Option(flag, help=f.metadata["help"])
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=getattr(defaults, f.name),
                                        annotation=Annotated[hints[f.name], option]))
    return params


def train(**options: Any) -> None:
    config = recipe.TrainConfig(**{f.name: options[f.name] for f in fields(recipe.TrainConfig)})
    with errors():
        config.validate()
        data = recipe.training_pairs(pairs=options["pairs"], coco_json=options["coco_json"], images=options["images"])
        ui.err.print(f"{len(data.captions)} captions of {len(data.images)} images; loss {config.loss}, "
                     f"mining {config.mining}", highlight=False)
        with TrainProgress(ui.err) as bar:
            report = recipe.train(data, options["out"], config, image_model=options["image_model"],
                                  text_encoder=options["text_encoder"], device=options["device"],
                                  workers=options["workers"], use_cache=not options["no_cache"], progress=bar.on_event)
        if options["json"]:
            print_json_lines(ui.out, [jsonable(report.to_dict())])
            return
        final = report.metrics
        ui.out.print(
            f"saved {report.model_id} to {report.out} ({report.train_images} training images, "
            f"{report.val_images} held out, {report.skipped} skipped; {report.seconds:.1f}s on "
            f"{report.device} {report.precision})", highlight=False)
        if "t2i_r10" in final:
            ui.out.print("validation " + recall_line(final), highlight=False)
        ui.out.print(f"use it: xlir index PHOTOS --model {report.out}   xlir eval --xtd10 COCO --model {report.out}",
                     highlight=False, markup=False)


_params = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
          for name, annotation, default in _DATA_OPTIONS] + _config_options()
train.__signature__ = inspect.Signature(_params)  # type: ignore[attr-defined]
train.__annotations__ = {p.name: p.annotation for p in _params}
train.__doc__ = HELP


def register(app: typer.Typer) -> None:
    app.command("train", cls=Command, rich_help_panel="Research")(train)
