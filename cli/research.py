"""`xlir train` and `xlir eval`: the paper's training recipe and its evaluation, as thin commands.

Wired into the app by ``register(app)``; each command parses options, calls one library
function (xlir_qdrant.train.run, xlir_qdrant.eval.evaluate) and renders its records.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Optional, Self

import typer
from rich import box
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from xlir_qdrant.encoders.specs import DEFAULT_MODEL

def register(app: typer.Typer) -> None:
    """Add `train` and `eval` to ``app`` (idempotent: a second call adds nothing)."""
    names = {c.name for c in app.registered_commands}
    if "train" not in names:
        app.command("train", rich_help_panel="Research")(train)
    if "eval" not in names:
        app.command("eval", rich_help_panel="Research")(evaluate)


def _cli() -> Any:
    # Imported at call time: main imports this module to register it, and tests swap its consoles.
    from . import main

    return main


def train(
    out: Annotated[Path, typer.Option("--out", "-o", help="Checkpoint folder to write (created).", show_default=False)],
    coco_json: Annotated[Optional[Path], typer.Option("--coco-json", help="MSCOCO captions file (captions_train2014.json); needs --images.", show_default=False)] = None,
    images: Annotated[Optional[Path], typer.Option("--images", help="Folder holding the COCO images (searched recursively).", show_default=False)] = None,
    pairs: Annotated[Optional[Path], typer.Option("--pairs", help="TSV (path<TAB>caption) or JSONL ({\"image\", \"caption\"}) of English pairs.", show_default=False)] = None,
    loss: Annotated[str, typer.Option("--loss", help="patr, or m3 (PATR + push captions of other images apart).")] = "m3",
    margin: Annotated[float, typer.Option("--margin", help="Image margin m: negatives pushed to cosine distance >= m.")] = 0.4,
    text_margin: Annotated[float, typer.Option("--text-margin", help="M3 text margin: captions of other images pushed to distance >= this.")] = 0.6,
    m3_weight: Annotated[float, typer.Option("--m3-weight", help="Weight of M3's text-text term.")] = 0.5,
    mining: Annotated[str, typer.Option("--mining", help="Which in-batch negative: hardest, semihard or all.")] = "hardest",
    lr: Annotated[float, typer.Option("--lr", help="Peak AdamW learning rate.")] = 1e-3,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Captions per step (in-batch negatives).")] = 256,
    epochs: Annotated[int, typer.Option("--epochs", help="Passes over the training captions.")] = 10,
    warmup: Annotated[float, typer.Option("--warmup", help="Linear warm-up: a fraction of all steps (<1) or a step count (>=1).")] = 0.05,
    seed: Annotated[int, typer.Option("--seed", help="Seed for the split, initialisation, dropout and batch order.")] = 0,
    dim: Annotated[int, typer.Option("--dim", help="Joint embedding dimension.")] = 512,
    hidden: Annotated[int, typer.Option("--hidden", help="Width of the text head's hidden layer.")] = 1024,
    image_projection: Annotated[bool, typer.Option("--image-projection/--no-image-projection", help="Train a projection of the image features (off: they must already be --dim wide).")] = True,
    val_fraction: Annotated[float, typer.Option("--val-fraction", help="Share of images held out for validation recall.")] = 0.05,
    image_model: Annotated[str, typer.Option("--image-model", help="Frozen image tower: a model id from `xlir models`.")] = DEFAULT_MODEL,
    text_encoder: Annotated[str, typer.Option("--text-encoder", help="Frozen text encoder: muse (bundled), or a Hugging Face name or folder.")] = "muse",
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    workers: Annotated[Optional[int], typer.Option("--workers", help="Image decode threads \\[default: one per core, up to 8].", show_default=False)] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Recompute frozen features instead of reusing the cache.")] = False,
    json: Annotated[bool, typer.Option("--json", help="Print the training report as one JSON object.")] = False,
) -> None:
    """Train a cross-lingual image-text model on English captions only.

    The paper's recipe: two frozen towers (an image model's features and a
    multilingual text encoder) run once, their outputs cached; a small text head
    and image projection then learn with the PATR or M3 ranking loss. The text
    encoder is multilingual and stays frozen, so the result answers queries in
    its other languages zero-shot. Recall on held-out images prints every epoch
    (epoch 0: untrained). The checkpoint folder works wherever a model id does.

    Examples:

      xlir train --coco-json captions_train2014.json --images coco/ --out ckpt

      xlir train --pairs pairs.tsv --out ckpt --loss patr --epochs 3

      xlir index ~/Pictures --model ckpt && xlir search "perro en la playa"

      xlir eval --xtd10 coco/ --model ckpt --model default
    """
    from xlir_qdrant.errors import ConfigError
    from xlir_qdrant.train import TrainConfig, load_coco, load_pairs, run

    cli = _cli()
    with cli._errors():
        if (pairs is None) == (coco_json is None) or (coco_json is not None and images is None):
            raise ConfigError("give either --pairs FILE, or --coco-json FILE with --images FOLDER")
        config = TrainConfig(loss=loss, margin=margin, text_margin=text_margin, m3_weight=m3_weight, mining=mining,
                             lr=lr, batch_size=batch_size, epochs=epochs, warmup=warmup, seed=seed, dim=dim,
                             hidden=hidden, image_projection=image_projection, val_fraction=val_fraction)
        config.validate()
        data = load_pairs(pairs) if pairs is not None else load_coco(coco_json, images)  # type: ignore[arg-type]
        cli.err.print(f"{len(data.captions)} captions of {len(data.images)} images; loss {loss}, mining {mining}",
                      highlight=False)
        with _TrainProgress(cli.err) as bar:
            report = run(data, out, config, image_model=image_model, text_encoder=text_encoder, device=device,
                         workers=workers, use_cache=not no_cache, progress=bar.on_event)
        if json:
            from xlir_qdrant.eval.recall import nan_to_none

            from .render import print_json_lines

            print_json_lines(cli.out, [nan_to_none(report.to_dict())])
            return
        final = report.metrics
        cli.out.print(
            f"saved {report.model_id} to {report.out} ({report.train_images} training images, "
            f"{report.val_images} held out, {report.skipped} skipped; {report.seconds:.1f}s on "
            f"{report.device} {report.precision})", highlight=False)
        if "t2i_r10" in final:
            cli.out.print("validation " + _recall_line(final), highlight=False)
        cli.out.print(f"use it: xlir index PHOTOS --model {report.out}   xlir eval --xtd10 COCO --model {report.out}",
                      highlight=False, markup=False)


def _recall_line(m: dict[str, float]) -> str:
    return f"text->image R@1/5/10 {_triple(m, 't2i')}, image->text {_triple(m, 'i2t')}"


class _Bar:
    """A front end around one rich Progress, entered and left with it."""

    bar: Progress

    def __enter__(self) -> Self:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.__exit__(*exc)  # type: ignore[arg-type]


class _TrainProgress(_Bar):
    """Renders TrainEvents: one bar per stage; loss and samples/s while training."""

    def __init__(self, console: Any) -> None:
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=console)
        self.task: Any = None

    def on_event(self, ev: Any) -> None:
        bar = self.bar
        if ev.kind == "stage":
            if self.task is not None:  # close the previous stage's bar where it stopped
                prev = next(t for t in bar.tasks if t.id == self.task)
                bar.update(self.task, total=prev.total or prev.completed)
            self.task = bar.add_task(ev.stage, total=ev.total or None, info="")
        elif ev.kind == "advance" and self.task is not None:
            bar.advance(self.task, ev.n)
        elif ev.kind == "skipped":
            bar.console.print("[yellow]skipped[/yellow]", escape(f"{ev.path}: {ev.reason}"), highlight=False,
                              soft_wrap=True)
        elif ev.kind == "step" and self.task is not None:
            bar.update(self.task, completed=ev.step, info=f"epoch {ev.epoch}  loss {ev.loss:.4f}  {ev.rate:,.0f}/s")
        elif ev.kind == "epoch" and "t2i_r10" in ev.metrics:
            m = ev.metrics
            head = "epoch 0 (untrained)" if ev.epoch == 0 else f"epoch {ev.epoch}: loss {m.get('loss', math.nan):.4f}"
            bar.console.print(f"{head}  val R@1/5/10 t→i {_triple(m, 't2i')}  i→t {_triple(m, 'i2t')}",
                              highlight=False)


def _triple(m: dict[str, float], direction: str) -> str:
    return "/".join(f"{m[f'{direction}_r{k}']:.1f}" for k in (1, 5, 10))


def evaluate(
    xtd10: Annotated[Optional[Path], typer.Option("--xtd10", help="Folder with the MSCOCO 2014 images (train2014/val2014, searched recursively).", show_default=False)] = None,
    tsv: Annotated[Optional[Path], typer.Option("--tsv", help="Any caption set: image<TAB>language<TAB>caption per line.", show_default=False)] = None,
    model: Annotated[Optional[list[str]], typer.Option("--model", "-m", help="Model id or checkpoint folder (repeatable) \\[default: the bundled model].", show_default=False)] = None,
    lang: Annotated[Optional[list[str]], typer.Option("--lang", help="Only these languages (repeatable, e.g. --lang en --lang ja).", show_default=False)] = None,
    xtd10_captions: Annotated[Optional[Path], typer.Option("--xtd10-captions", help="Folder with the XTD10 text files already downloaded \\[default: fetch into the cache].", show_default=False)] = None,
    download_images: Annotated[bool, typer.Option("--download-images", help="Fetch XTD10 images missing from --xtd10 from images.cocodataset.org.")] = False,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per model call.")] = 32,
    workers: Annotated[Optional[int], typer.Option("--workers", help="Image decode threads.", show_default=False)] = None,
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
    from xlir_qdrant.errors import ConfigError
    from xlir_qdrant.eval import evaluate as run_eval
    from xlir_qdrant.eval import load_tsv, load_xtd10, reference_rows

    cli = _cli()
    with cli._errors():
        if (xtd10 is None) == (tsv is None):
            raise ConfigError("give exactly one of --xtd10 COCO_FOLDER or --tsv FILE")
        with _EvalProgress(cli.err) as bar:
            if xtd10 is not None:
                dataset = load_xtd10(xtd10, langs=lang, captions_dir=xtd10_captions,
                                     fetch_missing_images=download_images, on_advance=bar.advance)
            else:
                dataset = load_tsv(tsv)  # type: ignore[arg-type]
            rows = run_eval(dataset, model or [DEFAULT_MODEL], langs=lang, device=device, batch_size=batch_size,
                            workers=workers, progress=bar.on_event)
        rows += reference_rows(dataset.name, lang or list(dataset.langs))
        if json:
            from xlir_qdrant.eval.recall import nan_to_none

            from .render import print_json_lines

            print_json_lines(cli.out, (nan_to_none(r.to_dict()) for r in rows))
            return
        cli.out.print(eval_table(rows, dataset.name))


def eval_table(rows: list[Any], dataset: str) -> Table:
    """One section per language: measured models first, then the paper's rows (dim)."""
    from xlir_qdrant.eval.run import METRICS

    # Borderless: ten columns fit an 80-column terminal without folding model ids.
    table = Table(title=f"{dataset}: recall@K (%), n = captions", title_justify="left", header_style="bold",
                  box=box.SIMPLE, pad_edge=False)
    table.add_column("lang", no_wrap=True)
    table.add_column("model", overflow="fold", min_width=min(24, max(len(r.model) for r in rows)) if rows else None)
    for label in ("T→I@1", "@5", "@10", "I→T@1", "@5", "@10"):
        table.add_column(label, justify="right", no_wrap=True)
    table.add_column("n", justify="right")
    order = list(dict.fromkeys(r.lang for r in rows if not r.reference))
    order += [lang for lang in dict.fromkeys(r.lang for r in rows) if lang not in order and lang != "avg"]
    if "avg" in {r.lang for r in rows}:
        order = [lang for lang in order if lang != "avg"] + ["avg"]
    for i, lang in enumerate(order):
        if i:
            table.add_section()
        group = [r for r in rows if r.lang == lang]
        for r in sorted(group, key=lambda r: r.reference):
            cells = [_cell(getattr(r, m)) for m in METRICS]
            table.add_row(lang, r.model, *cells, "" if r.reference else str(r.captions),
                          style="dim italic" if r.reference else None)
    return table


def _cell(value: float | None) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:.1f}"


class _EvalProgress(_Bar):
    def __init__(self, console: Any) -> None:
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                            console=console, transient=True)
        self.task = self.bar.add_task("XTD10 images", total=None, visible=False)

    def advance(self, n: int) -> None:
        self.bar.update(self.task, visible=True, description="downloading XTD10 images")
        self.bar.advance(self.task, n)

    def on_event(self, ev: Any) -> None:
        if ev.kind == "stage":
            self.bar.update(self.task, description=f"{ev.model}: {ev.stage}", total=ev.total, completed=0, visible=True)
        elif ev.kind == "advance":
            self.bar.advance(self.task, ev.n)
