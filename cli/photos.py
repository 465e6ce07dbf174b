"""The photo commands: index, search, tag, remove, info, check, models, push, pull. Each parses
its options, calls one facade method and renders the record it returns."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from xlir_qdrant.config import Overrides, defaults
from xlir_qdrant.index import DUPLICATE_THRESHOLD, index_roots, list_models

from .app import (
    CollectionOpt, Command, DeviceOpt, JsonOpt, ModelOpt, OnDiskOpt, QuantizationOpt, RemoteCollectionOpt, ReplicasOpt,
    ShardsOpt, StoreOpt, UrlOpt, WriteConsistencyOpt, banner, errors, first_use, layout_options, open_index,
    open_shared, ui,
)
from .render import (
    CheckProgress, IndexProgress, TransferProgress, check_notes, check_table, collections_table, duplicates_summary,
    duplicates_table, hit_lines, hits_table, index_summary, info_lines, models_table, print_json_lines,
    print_plain_lines, tags_table, transfer_summary,
)
from .viewer import NoViewer, open_files


_D = defaults()


def index(
    paths: Annotated[list[Path], typer.Argument(help="Folders or image files to index (recursively).", show_default=False)],
    store: StoreOpt = None, qdrant_url: UrlOpt = None, collection: CollectionOpt = None, model: ModelOpt = None,
    device: DeviceOpt = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", min=1, help="Images per model call.", show_default=str(_D["batch_size"]))] = None,
    workers: Annotated[Optional[int], typer.Option("--workers", min=1, help="Decode threads.", show_default="one per core, up to 8")] = None,
    hidden: Annotated[bool, typer.Option("--hidden", help="Also index hidden files and folders (names starting with '.').")] = False,
    max_megapixels: Annotated[Optional[float], typer.Option("--max-megapixels", min=0, help="Skip images larger than this.", show_default=f"{_D['max_megapixels']:g}")] = None,
    keep_missing: Annotated[bool, typer.Option("--keep-missing", help="Keep entries of files that disappeared from these folders.")] = False,
    read_text: Annotated[bool, typer.Option("--read-text", help="Also read the text in each photo (signs, documents, screenshots) so that searching its words finds it: about 1 s a photo more on a CPU, so off unless asked. Photos indexed without it are read on the next run with it.")] = False,
    ray: Annotated[Optional[str], typer.Option("--ray", rich_help_panel="Embedding on a Ray cluster", help="Embed on a Ray cluster at this address (auto: this machine's Ray), one model replica per actor; needs xlir\\[ray].", show_default=False)] = None,
    ray_actors: Annotated[Optional[int], typer.Option("--ray-actors", min=1, rich_help_panel="Embedding on a Ray cluster", help="Ray actors.", show_default="one per GPU of the cluster, else one per CPU")] = None,
    expected_points: Annotated[Optional[int], typer.Option("--expected-points", min=1, rich_help_panel="Layout of a new collection", help="Size a new collection for this many photos.", show_default="a small library")] = None,
    shards: ShardsOpt = None, replicas: ReplicasOpt = None, write_consistency: WriteConsistencyOpt = None,
    quantization: QuantizationOpt = None, on_disk: OnDiskOpt = None,
    json: JsonOpt = False,
) -> None:
    """Embed photos and store them in the index; re-running only handles what changed.

    Reads JPEG, PNG, WebP, HEIC/HEIF, AVIF, TIFF, GIF, BMP and camera RAW files (through
    their embedded previews). Unchanged files are skipped without being opened, moved or
    copied files reuse their stored vector, and files that vanished from an indexed folder
    are removed. A file that cannot be read is skipped with one line saying why; files of a
    kind xlir does not read (SVG, videos, ...) get one line per kind. Interrupting loses
    nothing stored.

    Examples:
    xlir index ~/Pictures
    xlir index ./trip ./scans --device cuda --batch-size 128
    xlir index ~/Documents/scans --read-text
    xlir index /media/camera --keep-missing
    xlir index /archive --qdrant-url http://qdrant:6333 --ray auto --expected-points 20000000
    """
    settings = Overrides(store=store, qdrant_url=qdrant_url, collection=collection, model=model, device=device,
                         batch_size=batch_size, workers=workers, max_megapixels=max_megapixels)
    layout = layout_options(expected_points=expected_points, shards=shards, replicas=replicas,
                            write_consistency=write_consistency, quantization=quantization, on_disk=on_disk)
    with errors():
        index_roots(paths)  # all missing: refused before the banner, and before a store is made
        with open_shared("xlir index", settings) as idx:
            banner(idx, f"Ray actors ({ray})" if ray else None)
            with IndexProgress(ui.err) as bar:
                report = idx.index(paths, progress=bar.on_event, include_hidden=hidden, prune=not keep_missing,
                                   read_text=read_text, layout=layout, ray=ray, ray_actors=ray_actors)
        if json:
            print_json_lines(ui.out, [report.to_dict()])
        else:
            ui.out.print(index_summary(report), highlight=False)


class Sort(str, Enum):
    score = "score"
    date = "date"


class Format(str, Enum):
    table = "table"
    tsv = "tsv"
    json = "json"
    paths = "paths"


def search(
    query: Annotated[Optional[str], typer.Argument(help="What to look for, in any language the model knows.", show_default=False)] = None,
    top_k: Annotated[int, typer.Option("--top-k", "-k", min=1, help="How many results.")] = 10,
    min_score: Annotated[Optional[float], typer.Option("--min-score", min=0, max=1, help="Drop results scoring below this. The default model's scores are calibrated, 0 to 1: at 0.5 weak matches are dropped and a search may answer 'no good match'; 0 lists the nearest photos anyway. Other models' scores are cosines.", show_default="0.5 for the default model, none for others")] = None,
    lang: Annotated[Optional[str], typer.Option("--lang", help="Query language (ISO 639-1, e.g. de); only models that need it use it.", show_default="detected, when the model needs it")] = None,
    under: Annotated[Optional[list[Path]], typer.Option("--in", help="Only photos under this folder (repeatable).", show_default=False)] = None,
    image: Annotated[Optional[Path], typer.Option("--image", help="Find photos similar to this image (can be combined with QUERY).", show_default=False)] = None,
    negative: Annotated[Optional[list[str]], typer.Option("--not", help="Push results away from this (repeatable).", show_default=False)] = None,
    tag: Annotated[Optional[list[str]], typer.Option("--tag", help="Only photos tagged with this at index time: a tag id or a name in any vocabulary language (repeatable: any of them).", show_default=False)] = None,
    after: Annotated[Optional[str], typer.Option("--after", metavar="DATE", help="Only photos taken on or after this date (YYYY-MM-DD or YYYY-MM-DDTHH:MM): the EXIF date, else the file's modification time.", show_default=False)] = None,
    before: Annotated[Optional[str], typer.Option("--before", metavar="DATE", help="Only photos taken before this date (same forms as --after).", show_default=False)] = None,
    sort: Annotated[Sort, typer.Option("--sort", help="Order of the results: score (best first), or date (the best -k, newest first).")] = Sort.score,
    fmt: Annotated[Optional[Format], typer.Option("--format", help="table; tsv (rank, score, path, date, bytes: one line each, no header); json (one object per line); paths (one per line, for xargs or a viewer).", show_default="table on a terminal, else tsv")] = None,
    json: Annotated[bool, typer.Option("--json", help="The same as --format json.")] = False,
    open_hits: Annotated[bool, typer.Option("--open", help="Open the results in the system's image viewer (xdg-open, open; -k sets how many).")] = False,
    store: StoreOpt = None, qdrant_url: UrlOpt = None, collection: CollectionOpt = None, model: ModelOpt = None,
    device: DeviceOpt = None,
) -> None:
    """Find photos by a description in any language, or by a similar image.

    Examples:
    xlir search "perro en la playa"
    xlir search "Katze" --in ~/Pictures/2024
    xlir search "a cup of coffee" --not "tea" --json
    xlir search --image cat.jpg -k 5
    xlir search --tag Katze
    xlir search "am Strand" --tag dog
    xlir search "beach" --after 2023-06-01 --before 2023-09-01 --sort date
    xlir search "fireworks" -k 3 --open
    xlir search "receipt" --format paths | xargs -d '\\n' cp -t ~/receipts
    """
    if json and fmt not in (None, Format.json):
        raise typer.BadParameter(f"--json is --format json; it cannot go with --format {fmt.value}",
                                 param_hint="--json")
    shown = Format.json if json else fmt or (Format.table if ui.out.is_terminal else Format.tsv)
    settings = Overrides(store=store, qdrant_url=qdrant_url, collection=collection, model=model, device=device)
    with errors():
        with open_shared("xlir search", settings) as idx, first_use(idx, needed=image is not None):
            result = idx.search(query, image=image, negatives=negative or (), top_k=top_k, min_score=min_score,
                                lang=lang, under=under or (), tags=tag or (), after=after, before=before,
                                sort=sort.value)
        if result.lang and not lang and shown is not Format.json:
            ui.err.print(f"query language: {result.lang} (detected; set --lang to override)", highlight=False,
                         soft_wrap=True)
        if not result.hits:
            if result.calibrated:
                ui.err.print(f"no good match: no photo scores {result.min_score:g} or more "
                             "(--min-score 0 lists the nearest photos anyway)", highlight=False, soft_wrap=True)
            else:
                ui.err.print("no matches" + (" above --min-score" if min_score is not None else ""))
        elif shown is Format.json:
            print_json_lines(ui.out, (h.to_dict() for h in result.hits))
        elif shown is Format.table:
            ui.out.print(hits_table(result.hits, width=ui.out.width))
        else:
            print_plain_lines(ui.out, hit_lines(result.hits, shown.value))
        if open_hits and result.hits:
            try:
                open_files([h.path for h in result.hits])
            except NoViewer as exc:
                ui.err.print("[red]error:[/red]", escape(str(exc)), highlight=False, soft_wrap=True)
                raise typer.Exit(1) from None


def tag(
    files: Annotated[list[Path], typer.Argument(help="Images to tag: indexed ones use their stored vector, others are embedded now (not stored).", show_default=False)],
    lang: Annotated[str, typer.Option("--lang", "-l", help="Tag language: {tag_language_codes} (any language with --vocab).")] = "en",
    top_k: Annotated[Optional[int], typer.Option("--top-k", "-k", min=1, help="At most this many tags per image.", show_default="{tag_top_k}")] = None,
    min_score: Annotated[Optional[float], typer.Option("--min-score", min=0, max=1, help="Drop tags scoring below this.", show_default="{tag_min_score}")] = None,
    vocab: Annotated[Optional[Path], typer.Option("--vocab", help="Your own tags: a text file, one tag per line (optionally ID<TAB>tag), any language.", show_default=False)] = None,
    store: StoreOpt = None, qdrant_url: UrlOpt = None, collection: CollectionOpt = None, model: ModelOpt = None,
    device: DeviceOpt = None, json: JsonOpt = False,
) -> None:
    """Tag photos in a language of your choice, zero-shot.

    The built-in vocabulary has {concepts} everyday concepts named in {tag_languages} languages;
    --vocab takes your own list in any language (scored with the paper's cross-lingual
    combination).

    Examples:
    xlir tag cat.jpg --lang de
    xlir tag ~/Pictures/*.jpg -l ja --json
    xlir tag beach.jpg --vocab my-tags.txt --lang pt
    """
    settings = Overrides(store=store, qdrant_url=qdrant_url, collection=collection, model=model, device=device)
    with errors(), open_shared("xlir tag", settings) as idx:
        with first_use(idx):
            results = idx.tag(files, lang=lang, top_k=top_k, min_score=min_score, vocab=vocab)
        if json:
            print_json_lines(ui.out, (row for r in results for row in r.to_dicts()))
            return
        for r in results:
            ui.out.print(tags_table(r, width=ui.out.width))


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
    with errors(), open_shared("xlir info", Overrides(store=store, qdrant_url=qdrant_url), any_collection=True) as idx:
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

    Examples:
    xlir check
    xlir check --repair
    xlir check --json
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


def duplicates(
    paths: Annotated[Optional[list[Path]], typer.Argument(help="Only photos under these folders.", show_default="every indexed photo")] = None,
    threshold: Annotated[float, typer.Option("--threshold", min=0, max=1, help="How close two photos' vectors must be (cosine) for their files to be compared.")] = DUPLICATE_THRESHOLD,
    store: StoreOpt = None, qdrant_url: UrlOpt = None, collection: CollectionOpt = None, json: JsonOpt = False,
) -> None:
    """Copies of the same photo: exact copies and near-copies.

    Exact copies have the same bytes (the same content hash). Near-copies are resized,
    recompressed, lightly cropped or edited versions: the store's nearest-neighbour search
    proposes photos whose stored vectors are within --threshold (cosine) of each other, and
    a look at both files (a perceptual signature) confirms them. Nothing is embedded or
    deleted; the first photo of each group has the most pixels.

    Examples:
    xlir duplicates
    xlir duplicates ~/Pictures/2024 --threshold 0.95
    xlir duplicates --json
    """
    with errors(), open_index("xlir duplicates", Overrides(store=store, qdrant_url=qdrant_url, collection=collection)) as idx:
        with CheckProgress(ui.err, "finding duplicates", transient=True) as bar:
            report = idx.duplicates(paths or (), threshold=threshold, progress=bar.on_event)
        if json:
            print_json_lines(ui.out, ({"group": i, **g.to_dict()} for i, g in enumerate(report.groups, start=1)))
            return
        ui.err.print(duplicates_summary(report), highlight=False, soft_wrap=True)
        if report.groups:
            ui.out.print(duplicates_table(report, width=ui.out.width))


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

    Examples:
    xlir push --to http://localhost:6333
    xlir push --to http://q:6333 -c trips
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

    Examples:
    xlir pull --from http://localhost:6333
    xlir pull --from http://q:6333 -c trips
    """
    with errors(), open_index("xlir pull", Overrides(store=store, collection=collection)) as idx:
        with TransferProgress(ui.err, "pulling") as bar:
            report = idx.pull(source, remote_collection=remote_collection, progress=bar.on_event)
        if json:
            print_json_lines(ui.out, [report.to_dict()])
        else:
            ui.out.print(transfer_summary(report, "pulled"), highlight=False, markup=False)


def register(app: typer.Typer) -> None:
    for command in (index, search, tag, remove, info, check, duplicates, models, push, pull):
        app.command(cls=Command)(command)
