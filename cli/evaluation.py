"""`xlir eval`: recall@1/5/10 per language and model, the paper's numbers beside."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from xlir_qdrant import recipe
from xlir_qdrant.records import jsonable

from .app import Command, errors, ui
from .render import EvalProgress, eval_table, print_json_lines


def evaluate(
    xtd10: Annotated[Optional[Path], typer.Option("--xtd10", help="Folder with the MSCOCO 2014 images (train2014/val2014, searched recursively).", show_default=False)] = None,
    tsv: Annotated[Optional[Path], typer.Option("--tsv", help="Any caption set: image<TAB>language<TAB>caption per line.", show_default=False)] = None,
    model: Annotated[Optional[list[str]], typer.Option("--model", "-m", help="Model id or checkpoint folder (repeatable).", show_default=recipe.DEFAULT_MODEL)] = None,
    lang: Annotated[Optional[list[str]], typer.Option("--lang", help="Only these languages (repeatable, e.g. --lang en --lang ja).", show_default=False)] = None,
    xtd10_captions: Annotated[Optional[Path], typer.Option("--xtd10-captions", help="Folder with the XTD10 text files already downloaded.", show_default="fetch them into the cache")] = None,
    download_images: Annotated[bool, typer.Option("--download-images", help="Fetch XTD10 images missing from --xtd10 from images.cocodataset.org.")] = False,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per model call.")] = 32,
    workers: Annotated[Optional[int], typer.Option("--workers", help="Image decode threads.", show_default="one per core, up to 8")] = None,
    json: Annotated[bool, typer.Option("--json", help="One JSON object per line (paper rows have reference: true).")] = False,
) -> None:
    """Measure cross-lingual retrieval: recall@1/5/10 per language and model.

    XTD10 is 1000 MSCOCO-2014 images captioned in 11 languages. Its caption
    files are fetched from GitHub into the cache (their licence forbids shipping
    them); the images are read from your COCO folder. The paper's published
    numbers print beside yours ("paper:" rows); "avg" is the mean over the
    paper's eight languages. Any other caption set works as a TSV of
    image<TAB>language<TAB>caption lines.

    Examples:
    xlir eval --xtd10 ~/data/coco --model ckpt --model default
    xlir eval --xtd10 ~/data/coco --lang en --lang ja --json
    xlir eval --tsv my-captions.tsv -m ckpt
    """
    with errors():
        with EvalProgress(ui.err) as bar:
            dataset = recipe.eval_set(xtd10=xtd10, tsv=tsv, langs=lang, captions_dir=xtd10_captions,
                                      fetch_missing_images=download_images, on_advance=bar.advance)
            rows = recipe.evaluate(dataset, model or [], langs=lang, device=device, batch_size=batch_size,
                                   workers=workers, progress=bar.on_event)
        if json:
            print_json_lines(ui.out, (jsonable(r.to_dict()) for r in rows))
            return
        ui.out.print(eval_table(rows, dataset.name))


def register(app: typer.Typer) -> None:
    app.command("eval", cls=Command, rich_help_panel="Research")(evaluate)
