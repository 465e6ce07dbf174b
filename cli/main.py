"""The xlir command line: parse options, call the Index facade, render its records."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from xlir_qdrant import __version__
from xlir_qdrant.encoders.base import device_summary, offline_ready, registry
from xlir_qdrant.errors import XlirError
from xlir_qdrant.index import Index
from xlir_qdrant.ingest.pipeline import Event

from . import research
from .render import hits_table, print_json_lines, tags_table

ENV_HELP = (
    "Environment: XLIR_HOME (data dir), XLIR_STORE, XLIR_QDRANT_URL, XLIR_QDRANT_API_KEY, "
    "XLIR_COLLECTION, XLIR_MODEL, XLIR_DEVICE, XLIR_BATCH_SIZE, XLIR_CONFIG (TOML file)."
)

app = typer.Typer(
    name="xlir",
    help=(
        "Search and tag your photos in any language, on Qdrant.\n\n"
        "  xlir index ~/Pictures            embed photos into the local index\n\n"
        "  xlir search \"perro en la playa\"   find them with words in any language\n\n"
        "  xlir models                      the models you can use\n\n" + ENV_HELP
    ),
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
)
out = Console(soft_wrap=True)
err = Console(stderr=True)

StoreOpt = Annotated[Optional[Path], typer.Option("--store", help="Embedded index directory [default: XLIR_HOME/store].", show_default=False)]
UrlOpt = Annotated[Optional[str], typer.Option("--qdrant-url", help="Use a Qdrant server or cluster instead of the embedded engine (API key from XLIR_QDRANT_API_KEY).")]
CollectionOpt = Annotated[Optional[str], typer.Option("--collection", "-c", help="Collection (index) name [default: photos].", show_default=False)]
ModelOpt = Annotated[Optional[str], typer.Option("--model", "-m", help="Model id from `xlir models`, or a checkpoint folder [default: the collection's model, else the bundled one].", show_default=False)]
DeviceOpt = Annotated[Optional[str], typer.Option("--device", help="auto, cpu or cuda.", show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="One JSON object per line instead of a table.")]


def _open(store: Path | None, qdrant_url: str | None, collection: str | None, model: str | None,
          device: str | None = None, purpose: str = "xlir", **extra: object) -> Index:
    # ``purpose`` is written into the store's lock file, so a second process can say who holds it.
    return Index.open(purpose=purpose, store=store, qdrant_url=qdrant_url, collection=collection, model=model,
                      device=device, **extra)


def _first_use(idx: Index, *, needed: bool = True) -> contextlib.AbstractContextManager[object]:
    """A spinner while a model is prepared on its first use on this machine (~30 s, once)."""
    note = getattr(idx.encoder, "first_use_note", str)() if needed else ""
    return err.status(f"loading model ({note})") if note else contextlib.nullcontext()


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    """Domain errors become one red line and exit code 1; Ctrl-C exits 130 cleanly."""
    try:
        yield
    except XlirError as exc:
        err.print("[red]error:[/red]", escape(str(exc)), highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/yellow]: everything stored so far is kept; run the same command to resume")
        raise typer.Exit(130) from None


@app.command()
def index(
    paths: Annotated[list[Path], typer.Argument(help="Folders or image files to index (recursively).", show_default=False)],
    store: StoreOpt = None, qdrant_url: UrlOpt = None, collection: CollectionOpt = None, model: ModelOpt = None,
    device: DeviceOpt = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Images per model call [default: 32].", show_default=False)] = None,
    workers: Annotated[Optional[int], typer.Option("--workers", help="Decode threads [default: one per core, up to 8].", show_default=False)] = None,
    hidden: Annotated[bool, typer.Option("--hidden", help="Also index hidden files and folders (names starting with '.').")] = False,
    max_megapixels: Annotated[Optional[float], typer.Option("--max-megapixels", help="Skip images larger than this [default: 150].", show_default=False)] = None,
    keep_missing: Annotated[bool, typer.Option("--keep-missing", help="Keep entries of files that disappeared from these folders.")] = False,
    json: JsonOpt = False,
) -> None:
    """Embed photos and store them in the index; re-running only handles what changed.

    Unchanged files are skipped without being opened, moved or copied files reuse their
    stored vector, and files that vanished from an indexed folder are removed. A file that
    cannot be read is skipped with one line saying why. Interrupting loses nothing stored.

    Examples:  xlir index ~/Pictures     xlir index ./trip --device cuda --batch-size 128
    """
    with _errors():
        idx = _open(store, qdrant_url, collection, model, device, purpose="xlir index",
                    batch_size=batch_size, workers=workers, max_megapixels=max_megapixels)
        with idx:
            spec = idx.model_spec()
            enc = idx.encoder  # cheap: weights load only once there is something to embed
            err.print(f"model {spec.id} on {enc.device} {enc.precision} -> {idx.location} "
                      f"(collection {idx.settings.collection})", highlight=False, markup=False, soft_wrap=True)
            report = _run_index(idx, paths, hidden=hidden, prune=not keep_missing)
        if json:
            print_json_lines(out, [report.to_dict()])
        else:
            rate = (report.added + report.updated) / report.seconds if report.seconds else 0.0
            out.print(
                f"indexed {report.scanned} files in {report.seconds:.1f}s: {report.added} new, "
                f"{report.updated} changed, {report.reused} reused, {report.unchanged} unchanged, "
                f"{report.removed} removed, {report.failed} skipped ({rate:.1f} images/s)", highlight=False)


def _run_index(idx: Index, paths: list[Path], *, hidden: bool, prune: bool):  # noqa: ANN202
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err, transient=False) as bar:
        task = bar.add_task("embedding", total=None, rate="")
        started = [time.perf_counter(), 0]

        def on_event(ev: Event) -> None:
            if ev.kind == "found":
                bar.update(task, total=(bar.tasks[0].total or 0) + ev.n)
            elif ev.kind == "done":
                started[1] += ev.n
                elapsed = max(time.perf_counter() - started[0], 1e-6)
                bar.update(task, advance=ev.n, rate=f"{started[1] / elapsed:.1f} img/s")
            elif ev.kind == "skipped":
                bar.console.print("[yellow]skipped[/yellow]", escape(f"{ev.path}: {ev.reason}"), highlight=False,
                                  soft_wrap=True)
            elif ev.kind == "loading":
                bar.update(task, description=f"loading model ({ev.reason})" if ev.reason else "loading model")
            elif ev.kind == "loaded":
                bar.update(task, description="embedding")
            elif ev.kind == "optimizing":
                bar.update(task, description="building search index (HNSW)")
            elif ev.kind == "optimized":
                bar.update(task, description="done")

        return idx.index(paths, progress=on_event, include_hidden=hidden, prune=prune)


@app.command()
def search(
    query: Annotated[Optional[str], typer.Argument(help="What to look for, in any language the model knows.", show_default=False)] = None,
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="How many results.")] = 10,
    min_score: Annotated[Optional[float], typer.Option("--min-score", help="Drop results scoring below this (cosine).", show_default=False)] = None,
    lang: Annotated[Optional[str], typer.Option("--lang", help="Query language (ISO 639-1, e.g. de); models that need it detect it otherwise.", show_default=False)] = None,
    under: Annotated[Optional[list[Path]], typer.Option("--in", help="Only photos under this folder (repeatable).", show_default=False)] = None,
    image: Annotated[Optional[Path], typer.Option("--image", help="Find photos similar to this image (can be combined with QUERY).", show_default=False)] = None,
    negative: Annotated[Optional[list[str]], typer.Option("--not", help="Push results away from this (repeatable).", show_default=False)] = None,
    tag: Annotated[Optional[list[str]], typer.Option("--tag", help="Only photos tagged with this at index time: a tag id or a name in any vocabulary language (repeatable: any of them).", show_default=False)] = None,
    store: StoreOpt = None, qdrant_url: UrlOpt = None, collection: CollectionOpt = None, model: ModelOpt = None,
    device: DeviceOpt = None, json: JsonOpt = False,
) -> None:
    """Find photos by a description in any language, or by a similar image.

    Examples:  xlir search "perro en la playa"     xlir search "Katze" --in ~/Pictures/2024
    xlir search "a cup of coffee" --not "tea" --json     xlir search --image cat.jpg -k 5
    xlir search --tag Katze     xlir search "am Strand" --tag dog
    """
    with _errors():
        with _open(store, qdrant_url, collection, model, device, purpose="xlir search") as idx, \
                _first_use(idx, needed=image is not None):
            result = idx.search(query, image=image, negatives=negative or (), top_k=top_k, min_score=min_score,
                                lang=lang, under=under or (), tags=tag or ())
        if json:
            print_json_lines(out, (h.to_dict() for h in result.hits))
            return
        if result.lang and not lang:
            err.print(f"query language: {result.lang} (detected; set --lang to override)", highlight=False,
                      soft_wrap=True)
        if not result.hits:
            err.print("no matches" + (" above --min-score" if min_score is not None else ""))
            return
        out.print(hits_table(result.hits))


@app.command()
def tag(
    files: Annotated[list[Path], typer.Argument(help="Images to tag: indexed ones use their stored vector, others are embedded now (not stored).", show_default=False)],
    lang: Annotated[str, typer.Option("--lang", "-l", help="Tag language: en de fr es it ja ko pl ru tr zh (any language with --vocab).")] = "en",
    top_k: Annotated[Optional[int], typer.Option("--top-k", "-k", help="At most this many tags per image [default: per model].", show_default=False)] = None,
    min_score: Annotated[Optional[float], typer.Option("--min-score", help="Drop tags scoring below this [default: per model].", show_default=False)] = None,
    vocab: Annotated[Optional[Path], typer.Option("--vocab", help="Your own tags: a text file, one tag per line (optionally ID<TAB>tag), any language.", show_default=False)] = None,
    store: StoreOpt = None, qdrant_url: UrlOpt = None, collection: CollectionOpt = None, model: ModelOpt = None,
    device: DeviceOpt = None, json: JsonOpt = False,
) -> None:
    """Tag photos in a language of your choice, zero-shot.

    The built-in vocabulary has 500+ everyday concepts named in 11 languages; --vocab takes
    your own list in any language (scored with the paper's cross-lingual combination).

    Examples:  xlir tag cat.jpg --lang de     xlir tag ~/Pictures/*.jpg -l ja --json
    xlir tag beach.jpg --vocab my-tags.txt --lang pt
    """
    with _errors(), _open(store, qdrant_url, collection, model, device, purpose="xlir tag") as idx:
        with _first_use(idx):
            results = idx.tag(files, lang=lang, top_k=top_k, min_score=min_score, vocab=vocab)
        if json:
            print_json_lines(out, (row for r in results for row in r.to_dicts()))
            return
        for r in results:
            out.print(tags_table(r))


@app.command()
def remove(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders to forget (files on disk are not touched).", show_default=False)],
    store: StoreOpt = None, qdrant_url: UrlOpt = None, collection: CollectionOpt = None,
) -> None:
    """Remove images from the index (never from disk)."""
    with _errors(), _open(store, qdrant_url, collection, None, purpose="xlir remove") as idx:
        n = idx.remove(paths)
        out.print(f"removed {n} images from the index")


@app.command()
def info(
    store: StoreOpt = None, qdrant_url: UrlOpt = None, json: JsonOpt = False,
) -> None:
    """Where the index is, its collections, points per model, and the compute device."""
    with _errors(), _open(store, qdrant_url, None, None, purpose="xlir info") as idx:
        stats = idx.stats()
        stats["device"] = device_summary()
        if json:
            print_json_lines(out, [stats])
            return
        out.print(f"store: {stats['store']} at {stats['location']}", highlight=False)
        out.print(f"device: {stats['device']}", highlight=False)
        table = Table("collection", "model", "dim", "images", "HNSW-indexed", header_style="bold")
        for c in stats["collections"]:
            indexed = "" if c["indexed_vectors"] is None else str(c["indexed_vectors"])
            table.add_row(c["name"], c["model"], str(c["dim"]), str(c["points"]), indexed)
        if not stats["collections"]:
            out.print("no collections yet: run `xlir index PATH`")
        else:
            out.print(table)


@app.command()
def models(json: JsonOpt = False) -> None:
    """The model registry, and whether each model can run here right now, offline.

    Bundled models need no network; hub models download once on first use (see README).
    --json adds licence and description.
    """
    rows = []
    for spec in registry():
        ready, why = offline_ready(spec)
        rows.append({"id": spec.id, "dim": spec.dim, "languages": len(spec.languages), "licence": spec.licence,
                     "size_mb": spec.size_mb, "bundled": spec.bundled, "needs_lang": spec.needs_lang,
                     "offline_ready": ready, "status": why, "description": spec.description})
    if json:
        print_json_lines(out, rows)
        return
    table = Table(header_style="bold", caption="* needs the query language: --lang, else detected")
    table.add_column("model", no_wrap=True)
    for name in ("dim", "langs", "size", "source", "offline"):
        table.add_column(name, no_wrap=True)
    for r in rows:
        size = f"{r['size_mb'] / 1024:.1f} GB" if r["size_mb"] >= 1024 else f"{r['size_mb']} MB"
        table.add_row(r["id"] + (" *" if r["needs_lang"] else ""), str(r["dim"]), str(r["languages"]), size,
                      "bundled" if r["bundled"] else "hub",
                      "[green]yes[/green]" if r["offline_ready"] else "[red]no[/red]")
    out.print(table)


def _version(value: bool) -> None:
    if value:
        out.print(f"xlir {__version__}")
        raise typer.Exit()


research.register(app)  # xlir train, xlir eval


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")] = False,
) -> None:
    """Search and tag your photos in any language, on Qdrant."""
