"""The photo commands: index, search, tag, remove, info, check, models, push, pull. Each parses
its options, calls one facade method and renders the record it returns."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from xlir_qdrant.config import Overrides
from xlir_qdrant.index import list_models

from .app import (
    CollectionOpt, DeviceOpt, JsonOpt, ModelOpt, OnDiskOpt, QuantizationOpt, RemoteCollectionOpt, ReplicasOpt, ShardsOpt,
    StoreOpt, UrlOpt, WriteConsistencyOpt, errors, first_use, layout_options, open_index, ui,
)
from .render import (
    CheckProgress, IndexProgress, TransferProgress, check_notes, check_table, collections_table, hits_table,
    index_summary, info_lines, models_table, print_json_lines, tags_table, transfer_summary,
)


def index(
    paths: Annotated[list[Path], typer.Argument(help="Folders or image files to index (recursively).", show_default=False)],
    store: StoreOpt = None, qdrant_url: UrlOpt = None, collection: CollectionOpt = None, model: ModelOpt = None,
    device: DeviceOpt = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Images per model call \\[default: 32].", show_default=False)] = None,
    workers: Annotated[Optional[int], typer.Option("--workers", help="Decode threads \\[default: one per core, up to 8].", show_default=False)] = None,
    hidden: Annotated[bool, typer.Option("--hidden", help="Also index hidden files and folders (names starting with '.').")] = False,
    max_megapixels: Annotated[Optional[float], typer.Option("--max-megapixels", help="Skip images larger than this \\[default: 150].", show_default=False)] = None,
    keep_missing: Annotated[bool, typer.Option("--keep-missing", help="Keep entries of files that disappeared from these folders.")] = False,
    ray: Annotated[Optional[str], typer.Option("--ray", rich_help_panel="Embedding on a Ray cluster", help="Embed on a Ray cluster at this address (auto: this machine's Ray), one model replica per actor; needs xlir\\[ray].", show_default=False)] = None,
    ray_actors: Annotated[Optional[int], typer.Option("--ray-actors", min=1, rich_help_panel="Embedding on a Ray cluster", help="Ray actors \\[default: one per GPU of the cluster, else one per CPU].", show_default=False)] = None,
    expected_points: Annotated[Optional[int], typer.Option("--expected-points", min=1, rich_help_panel="Layout of a new collection", help="Size a new collection for this many photos \\[default: a small library].", show_default=False)] = None,
    shards: ShardsOpt = None, replicas: ReplicasOpt = None, write_consistency: WriteConsistencyOpt = None,
    quantization: QuantizationOpt = None, on_disk: OnDiskOpt = None,
    json: JsonOpt = False,
) -> None:
    """Embed photos and store them in the index; re-running only handles what changed.

    Unchanged files are skipped without being opened, moved or copied files reuse their
    stored vector, and files that vanished from an indexed folder are removed. A file that
    cannot be read is skipped with one line saying why. Interrupting loses nothing stored.

    Examples:  xlir index ~/Pictures     xlir index ./trip --device cuda --batch-size 128
    xlir index /archive --qdrant-url http://qdrant:6333 --ray auto --expected-points 20000000
    """
    settings = Overrides(store=store, qdrant_url=qdrant_url, collection=collection, model=model, device=device,
                         batch_size=batch_size, workers=workers, max_megapixels=max_megapixels)
    layout = layout_options(expected_points=expected_points, shards=shards, replicas=replicas,
                            write_consistency=write_consistency, quantization=quantization, on_disk=on_disk)
    with errors():
        with open_index("xlir index", settings) as idx:
            run = idx.runtime()
            where = f"Ray actors ({ray})" if ray else f"{run.device} {run.precision}"
            ui.err.print(f"model {run.model} on {where} -> {idx.location} "
                         f"(collection {idx.settings.collection})", highlight=False, markup=False, soft_wrap=True)
            with IndexProgress(ui.err) as bar:
                report = idx.index(paths, progress=bar.on_event, include_hidden=hidden, prune=not keep_missing,
                                   layout=layout, ray=ray, ray_actors=ray_actors)
        if json:
            print_json_lines(ui.out, [report.to_dict()])
        else:
            ui.out.print(index_summary(report), highlight=False)


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
    settings = Overrides(store=store, qdrant_url=qdrant_url, collection=collection, model=model, device=device)
    with errors():
        with open_index("xlir search", settings) as idx, first_use(idx, needed=image is not None):
            result = idx.search(query, image=image, negatives=negative or (), top_k=top_k, min_score=min_score,
                                lang=lang, under=under or (), tags=tag or ())
        if json:
            print_json_lines(ui.out, (h.to_dict() for h in result.hits))
            return
        if result.lang and not lang:
            ui.err.print(f"query language: {result.lang} (detected; set --lang to override)", highlight=False,
                         soft_wrap=True)
        if not result.hits:
            ui.err.print("no matches" + (" above --min-score" if min_score is not None else ""))
            return
        ui.out.print(hits_table(result.hits))


def tag(
    files: Annotated[list[Path], typer.Argument(help="Images to tag: indexed ones use their stored vector, others are embedded now (not stored).", show_default=False)],
    lang: Annotated[str, typer.Option("--lang", "-l", help="Tag language: en de fr es it ja ko pl ru tr zh (any language with --vocab).")] = "en",
    top_k: Annotated[Optional[int], typer.Option("--top-k", "-k", help="At most this many tags per image \\[default: per model].", show_default=False)] = None,
    min_score: Annotated[Optional[float], typer.Option("--min-score", help="Drop tags scoring below this \\[default: per model].", show_default=False)] = None,
    vocab: Annotated[Optional[Path], typer.Option("--vocab", help="Your own tags: a text file, one tag per line (optionally ID<TAB>tag), any language.", show_default=False)] = None,
    store: StoreOpt = None, qdrant_url: UrlOpt = None, collection: CollectionOpt = None, model: ModelOpt = None,
    device: DeviceOpt = None, json: JsonOpt = False,
) -> None:
    """Tag photos in a language of your choice, zero-shot.

    The built-in vocabulary has 665 everyday concepts named in 11 languages; --vocab takes
    your own list in any language (scored with the paper's cross-lingual combination).

    Examples:  xlir tag cat.jpg --lang de     xlir tag ~/Pictures/*.jpg -l ja --json
    xlir tag beach.jpg --vocab my-tags.txt --lang pt
    """
    settings = Overrides(store=store, qdrant_url=qdrant_url, collection=collection, model=model, device=device)
    with errors(), open_index("xlir tag", settings) as idx:
        with first_use(idx):
            results = idx.tag(files, lang=lang, top_k=top_k, min_score=min_score, vocab=vocab)
        if json:
            print_json_lines(ui.out, (row for r in results for row in r.to_dicts()))
            return
        for r in results:
            ui.out.print(tags_table(r))


def remove(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders to forget (files on disk are not touched).", show_default=False)],
    store: StoreOpt = None, qdrant_url: UrlOpt = None, collection: CollectionOpt = None,
) -> None:
    """Remove images from the index (never from disk)."""
    with errors(), open_index("xlir remove", Overrides(store=store, qdrant_url=qdrant_url, collection=collection)) as idx:
        n = idx.remove(paths)
        ui.out.print(f"removed {n} images from the index")


def info(store: StoreOpt = None, qdrant_url: UrlOpt = None, json: JsonOpt = False) -> None:
    """Where the index is, its collections, points per model, and the compute device."""
    with errors(), open_index("xlir info", Overrides(store=store, qdrant_url=qdrant_url)) as idx:
        stats = idx.stats()
        if json:
            print_json_lines(ui.out, [stats.to_dict()])
            return
        for line in info_lines(stats):
            ui.out.print(line, highlight=False)
        if stats.collections:
            ui.out.print(collections_table(stats))
            for c in stats.collections:
                if c.problem:
                    ui.err.print("[red]damaged:[/red]", escape(c.problem), highlight=False, soft_wrap=True)
        else:
            ui.out.print("no collections yet: run `xlir index PATH`")


def check(
    repair: Annotated[bool, typer.Option("--repair", help="Fix what is wrong: embed damaged points again from their files, remove points whose file is gone, set a store that cannot be opened aside and build it again.")] = False,
    store: StoreOpt = None, qdrant_url: UrlOpt = None, collection: CollectionOpt = None, json: JsonOpt = False,
) -> None:
    """Verify every point of the index against its photo, and repair what is wrong.

    A point is sound when its vector is finite and of unit length, its payload is readable,
    its id is its path's, and its file is still there unchanged. --repair never deletes your
    data first: a damaged store or log is moved aside, renamed with the date. Exit code 1
    when problems remain.

    Examples:  xlir check     xlir check --repair     xlir check --json
    """
    with errors(), open_index("xlir check", Overrides(store=store, qdrant_url=qdrant_url, collection=collection)) as idx:
        with CheckProgress(ui.err) as bar, IndexProgress(ui.err) as rebuild:
            report = idx.check(repair=repair, progress=bar.on_event, index_progress=rebuild.on_event)
        if json:
            print_json_lines(ui.out, [report.to_dict()])
        else:
            ui.out.print(check_table(report))
            for line in check_notes(report):
                ui.out.print(line, highlight=False)
        if not report.healthy:
            if not repair:
                ui.err.print("run `xlir check --repair` to fix it", highlight=False)
            raise typer.Exit(1)


def models(json: JsonOpt = False) -> None:
    """The model registry, and whether each model can run here right now, offline.

    Bundled models need no network; hub models download once on first use (see README).
    --json adds licence and description.
    """
    rows = list_models()
    if json:
        print_json_lines(ui.out, (r.to_dict() for r in rows))
        return
    ui.out.print(models_table(rows))


def push(
    to: Annotated[str, typer.Option("--to", help="The Qdrant server or cluster to copy the index to, e.g. http://qdrant:6333 (API key from XLIR_QDRANT_API_KEY or the config file).", show_default=False)],
    store: StoreOpt = None, collection: CollectionOpt = None, remote_collection: RemoteCollectionOpt = None,
    shards: ShardsOpt = None, replicas: ReplicasOpt = None, write_consistency: WriteConsistencyOpt = None,
    quantization: QuantizationOpt = None, on_disk: OnDiskOpt = None, json: JsonOpt = False,
) -> None:
    """Copy the index to a Qdrant server or cluster, bound to the same model.

    The copy gets the same name, or --remote-collection's, and is laid out for the index's
    size unless the layout options say otherwise. Interrupted, it resumes: run the same
    command again and it sends only what is missing. Both sides are counted at the end.

    Examples:  xlir push --to http://localhost:6333     xlir push --to http://q:6333 -c trips
    """
    layout = layout_options(shards=shards, replicas=replicas, write_consistency=write_consistency,
                            quantization=quantization, on_disk=on_disk)
    with errors(), open_index("xlir push", Overrides(store=store, collection=collection)) as idx:
        with TransferProgress(ui.err, "pushing") as bar:
            report = idx.push(to, remote_collection=remote_collection, options=layout, progress=bar.on_event)
        if json:
            print_json_lines(ui.out, [report.to_dict()])
        else:
            ui.out.print(transfer_summary(report, "pushed"), highlight=False, markup=False)


def pull(
    source: Annotated[str, typer.Option("--from", help="The Qdrant server or cluster to copy the index from (API key from XLIR_QDRANT_API_KEY or the config file).", show_default=False)],
    store: StoreOpt = None, collection: CollectionOpt = None, remote_collection: RemoteCollectionOpt = None,
    json: JsonOpt = False,
) -> None:
    """Copy an index from a Qdrant server or cluster into the embedded store.

    The model binding comes along: searching the copy uses the model that built it.
    Interrupted, it resumes: run the same command again.

    Examples:  xlir pull --from http://localhost:6333     xlir pull --from http://q:6333 -c trips
    """
    with errors(), open_index("xlir pull", Overrides(store=store, collection=collection)) as idx:
        with TransferProgress(ui.err, "pulling") as bar:
            report = idx.pull(source, remote_collection=remote_collection, progress=bar.on_event)
        if json:
            print_json_lines(ui.out, [report.to_dict()])
        else:
            ui.out.print(transfer_summary(report, "pulled"), highlight=False, markup=False)


def register(app: typer.Typer) -> None:
    for command in (index, search, tag, remove, info, check, models, push, pull):
        app.command()(command)
