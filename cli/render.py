"""Rendering: the library's records become rich tables and progress bars for people, or JSON
lines for scripts. Nothing here calls the library; it only draws what it is given."""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterable
from typing import Any, Self

from rich import box
from rich.cells import cell_len
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from xlir_qdrant.records import (
    RECALL_METRICS, CheckEvent, CheckReport, DuplicatesReport, Hit, IndexStats, IngestEvent, IngestReport, ModelRow,
    TagResult, TransferEvent, TransferReport,
)


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def display_path(path: str) -> str:
    """Paths under the working directory are shown relative to it: shorter, still copy-pasteable."""
    cwd = os.getcwd() + os.sep
    return path[len(cwd):] if path.startswith(cwd) else path


def print_plain_lines(console: Console, lines: Iterable[str]) -> None:
    """Lines exactly as given, for a pipe: rich would expand a tab into spaces."""
    for line in lines:
        console.file.write(line + "\n")
    console.file.flush()


def print_json_lines(console: Console, records: Iterable[dict[str, Any]]) -> None:
    for record in records:
        console.out(json.dumps(record, ensure_ascii=False), highlight=False)


# -- photos --------------------------------------------------------------------------------------


def fit_path(path: str, width: int) -> str:
    """``path`` in at most ``width`` terminal cells, never folded: folders are dropped from the
    left, whole, so the file name stays readable ("…/trip/IMG_1234.jpg"); only a name longer
    than the width loses its start ("…0_IMG_1234.jpg", the extension kept)."""
    if cell_len(path) <= width:
        return path
    head, _, name = path.rpartition(os.sep)
    if cell_len("…" + os.sep + name) > width:
        return "…" + _tail(name, width - 1)
    tail = name
    for folder in reversed(head.split(os.sep)):
        if cell_len("…" + os.sep + folder + os.sep + tail) > width:
            break
        tail = folder + os.sep + tail
    return "…" + os.sep + tail


def _tail(text: str, cells: int) -> str:
    out, used = "", 0
    for ch in reversed(text):
        if used + cell_len(ch) > cells:
            break
        out, used = ch + out, used + cell_len(ch)
    return out


def hits_table(hits: list[Hit], width: int | None = None) -> Table:
    """The hits as a table that fits ``width`` cells: long paths are shortened from the left
    (fit_path) instead of folding mid-name over several lines."""
    cells = [(str(h.rank), f"{h.score:.3f}", display_path(h.path), (h.date or "")[:10], human_size(h.size))
             for h in hits]
    headers = ("#", "score", "path", "date", "size")
    fixed = sum(max([len(head), *(cell_len(row[i]) for row in cells)]) for i, head in enumerate(headers) if i != 2)
    # every column is padded by one cell each side, and the box draws one more line per column
    room = max(12, (width or 10_000) - fixed - 3 * len(headers) - 1)
    table = Table(title_justify="left", header_style="bold")
    table.add_column("#", justify="right", style="dim", no_wrap=True)
    table.add_column("score", justify="right", no_wrap=True)
    table.add_column("path", no_wrap=True, overflow="ellipsis")
    table.add_column("date", no_wrap=True)
    table.add_column("size", justify="right", no_wrap=True)
    for rank, score, path, date, size in cells:
        table.add_row(rank, score, escape(fit_path(path, room)), date, size)
    return table


def hit_lines(hits: list[Hit], fmt: str) -> list[str]:
    """Plain lines for a pipe: ``paths``, one absolute path a line (xargs, an image viewer), or
    ``tsv``: rank, score, path, date, size in bytes, tab-separated, no header."""
    if fmt == "paths":
        return [h.path for h in hits]
    return [f"{h.rank}\t{h.score:.4f}\t{h.path}\t{h.date or ''}\t{h.size}" for h in hits]


def tags_table(result: TagResult, width: int | None = None) -> Table:
    where = "" if result.source == "index" else " (not indexed: embedded now)"
    title = fit_path(display_path(result.path), max(12, (width or 10_000) - len(where)))
    table = Table(title=escape(title) + where, title_justify="left", header_style="bold")
    table.add_column("#", justify="right", style="dim")
    table.add_column("tag")
    table.add_column("score", justify="right")
    table.add_column("id", style="dim")
    names = {t.id: t.name for t in result.tags}
    for t in result.tags:  # a more general tag says which specific one brought it
        name = escape(t.name) + (f" [dim](from {escape(names.get(t.via, t.via))})[/dim]" if t.via else "")
        table.add_row(str(t.rank), name, f"{t.score:.3f}", t.id)
    if not result.tags:
        table.add_row("", "(no tag above --min-score)", "", "")
    return table


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def index_summary(report: IngestReport) -> str:
    """One line whose counts add up to the files found; points of vanished files after it."""
    rate = (report.added + report.updated) / report.seconds if report.seconds else 0.0
    line = (f"indexed {plural(report.scanned, 'file')} in {report.seconds:.1f}s: {report.added} new, "
            f"{report.updated} changed, {report.reused} reused, {report.unchanged} unchanged, "
            f"{report.skipped} skipped ({rate:.1f} images/s)")
    if report.removed:
        line += f"; {plural(report.removed, 'file')} gone from disk, removed from the index"
    return line


def info_lines(stats: IndexStats) -> list[str]:
    lines = [f"store: {stats.store} at {stats.location}"]
    if stats.disk_bytes is not None:
        lines.append(f"size on disk: {human_size(stats.disk_bytes)}")
    return [*lines, f"device: {stats.device}"]


def collections_table(stats: IndexStats) -> Table:
    table = Table("collection", "model", "dim", "images", "HNSW-indexed", "last indexed", header_style="bold")
    for c in stats.collections:
        points = "[red]damaged[/red]" if c.problem else str(c.points)
        last = (c.last_indexed or "never").replace("T", " ")[:16]
        table.add_row(c.name, c.model, str(c.dim), points, "" if c.indexed_vectors is None else str(c.indexed_vectors),
                      last)
    return table


def models_table(rows: list[ModelRow]) -> Table:
    table = Table(header_style="bold", caption="* needs the query language: --lang, else detected")
    table.add_column("model", no_wrap=True)
    for name in ("dim", "langs", "size", "source", "offline"):
        table.add_column(name, no_wrap=True)
    for r in rows:
        size = f"{r.size_mb / 1024:.1f} GB" if r.size_mb >= 1024 else f"{r.size_mb} MB"
        table.add_row(r.id + (" *" if r.needs_lang else ""), str(r.dim), str(r.languages), size,
                      "bundled" if r.bundled else "hub", "[green]yes[/green]" if r.offline_ready else "[red]no[/red]")
    return table


def skipped_line(console: Console, path: str, reason: str) -> None:
    console.print("[yellow]skipped[/yellow]", escape(f"{path}: {reason}"), highlight=False, soft_wrap=True)


class _Bar:
    """A front end around one rich Progress, entered and left with it."""

    bar: Progress

    def __enter__(self) -> Self:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.__exit__(*exc)  # type: ignore[arg-type]


class IndexProgress(_Bar):
    """Renders IngestEvents: one bar over every file found (the total is known before the first
    batch), advanced by stored, unchanged and skipped files alike; the step in words while the
    count cannot move (walking, decoding the first batch, loading the model); one line per
    skipped file, and one per kind of file xlir does not read."""

    def __init__(self, console: Console) -> None:
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn())
        self.bar = Progress(*columns, console=console, transient=False)
        self.task = self.bar.add_task("scanning", total=None, rate="", visible=False)  # shown by the first event
        self._start = time.perf_counter()
        self._done = 0

    def on_event(self, ev: IngestEvent) -> None:
        bar, task = self.bar, self.task
        bar.update(task, visible=True)
        if ev.kind == "scanning":
            bar.update(task, description="scanning")
        elif ev.kind == "found":
            # Files are stored a batch at a time: until the first one is, say what is going on.
            bar.update(task, total=ev.n, description="reading and decoding")
        elif ev.kind == "passed":
            bar.update(task, advance=ev.n)
        elif ev.kind == "done":
            self._done += ev.n
            elapsed = max(time.perf_counter() - self._start, 1e-6)
            bar.update(task, advance=ev.n, rate=f"{self._done / elapsed:.1f} img/s", description="embedding")
        elif ev.kind == "skipped":
            skipped_line(bar.console, ev.path, ev.reason)
            bar.update(task, advance=1)
        elif ev.kind in ("missing", "unreadable"):
            skipped_line(bar.console, ev.path, ev.reason)
        elif ev.kind == "unread":
            bar.console.print(escape(plural(ev.n, f"{ev.path} file")), "[yellow]skipped:[/yellow]", escape(ev.reason),
                              highlight=False, soft_wrap=True)
        elif ev.kind == "tagging":
            bar.update(task, description=f"updating the tags of {plural(ev.n, 'unchanged file')}")
        elif ev.kind == "retried":
            bar.console.print("[yellow]retried[/yellow]", escape(f"{ev.n} files: {ev.reason}; sent to another actor"),
                              highlight=False, soft_wrap=True)
        elif ev.kind == "loading":
            bar.update(task, description=f"loading model ({ev.reason})" if ev.reason else "loading model")
        elif ev.kind == "loaded":
            bar.update(task, description="embedding")
        elif ev.kind == "removing":
            bar.update(task, description=f"removing {plural(ev.n, 'vanished file')} from the index")
        elif ev.kind == "optimizing":
            bar.update(task, description="building search index (HNSW)")
        elif ev.kind in ("removed", "optimized"):
            bar.update(task, description="done")


class CheckProgress(_Bar):
    """Renders CheckEvents: a bar over the points, the first faults one line each."""

    SHOWN = 20  # fault lines printed; the summary table counts every one

    def __init__(self, console: Console, description: str = "checking", *, transient: bool = False) -> None:
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                            console=console, transient=transient)
        self.task = self.bar.add_task(description, total=None, visible=False)  # shown by the first event
        self.faults = 0

    def on_event(self, ev: CheckEvent) -> None:
        self.bar.update(self.task, visible=True)
        if ev.kind == "total":
            self.bar.update(self.task, total=ev.n)
        elif ev.kind == "checked":
            self.bar.advance(self.task, ev.n)
        elif ev.kind == "fault":
            self.faults += 1
            if self.faults <= self.SHOWN:
                self.bar.console.print("[yellow]fault[/yellow]", escape(f"{ev.path}: {ev.reason}"), highlight=False,
                                       soft_wrap=True)
        elif ev.kind == "stage":
            self.bar.update(self.task, description=ev.reason)


def duplicates_summary(report: DuplicatesReport) -> str:
    unread = (f"; {report.unconfirmed} close pair(s) not compared: a file could not be read"
              if report.unconfirmed else "")
    return (f"{report.exact} group(s) of exact copies, {report.near} of near-copies among {report.scanned} photos "
            f"(--threshold {report.threshold:g}){unread}")


def duplicates_table(report: DuplicatesReport, width: int | None = None) -> Table:
    """One section per group, its best copy first (most pixels, then the biggest file)."""
    table = Table(header_style="bold", caption="first of each group: the most pixels, then the biggest file")
    table.add_column("#", justify="right", style="dim", no_wrap=True)
    table.add_column("kind", no_wrap=True)
    table.add_column("path", no_wrap=True, overflow="ellipsis")
    table.add_column("pixels", justify="right", no_wrap=True)
    table.add_column("size", justify="right", no_wrap=True)
    table.add_column("date", no_wrap=True)
    table.add_column("cos", justify="right", no_wrap=True)
    fixed = len(str(len(report.groups))) + 5 + 11 + 9 + 10 + 5  # every column but the path, at their widest
    room = max(12, (width or 10_000) - fixed - 3 * 7 - 1)
    for number, group in enumerate(report.groups, start=1):
        if number > 1:
            table.add_section()
        for i, m in enumerate(group.members):
            pixels = f"{m.width}×{m.height}" if m.width and m.height else ""
            table.add_row(str(number) if i == 0 else "", group.kind if i == 0 else "",
                          escape(fit_path(display_path(m.path), room)), pixels, human_size(m.size),
                          (m.date or "")[:10], "" if group.kind == "exact" else f"{m.similarity:.3f}",
                          style="bold" if i == 0 else None)
    return table


class TransferProgress(_Bar):
    """Renders TransferEvents: one bar over the source's points (sent, or found already there)."""

    def __init__(self, console: Console, verb: str) -> None:
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TimeRemainingColumn())
        self.bar = Progress(*columns, console=console, transient=False)
        self.verb = verb
        self.task = self.bar.add_task(verb, total=None)

    def on_event(self, ev: TransferEvent) -> None:
        if ev.kind == "total":
            self.bar.update(self.task, total=ev.n)
        elif ev.kind in ("copied", "present"):
            self.bar.advance(self.task, ev.n)
        elif ev.kind == "optimizing":
            self.bar.update(self.task, description="building search index (HNSW)")
        elif ev.kind == "verifying":
            self.bar.update(self.task, description="counting the copy")


def transfer_summary(report: TransferReport, verb: str) -> str:
    line = (f"{verb} collection {report.collection} ({report.model}, {report.points} points) to "
            f"{report.destination} in {report.seconds:.1f}s: {report.copied} copied, {report.present} already "
            f"there; it holds {report.destination_points}")
    if report.extra:
        line += f" ({report.extra} that the source does not have: a copy never deletes)"
    return line


def check_table(report: CheckReport) -> Table:
    table = Table(title=f"collection {report.collection}", title_justify="left", header_style="bold")
    table.add_column("points", justify="left")
    table.add_column("", justify="right")
    rows = [("checked", report.points), ("sound", report.sound), ("damaged vector", report.bad_vector),
            ("unreadable payload", report.bad_payload), ("wrong id", report.wrong_id),
            ("file gone", report.missing_file), ("file changed", report.changed_file),
            ("embedded again", report.repaired), ("removed", report.removed)]
    for label, n in rows:
        table.add_row(label, str(n), style="yellow" if n and label not in ("checked", "sound") else None)
    return table


def check_notes(report: CheckReport) -> list[str]:
    notes = []
    if report.problem:
        notes.append(f"problem: {report.problem}")
    if report.set_aside:
        notes.append(f"set aside (kept, not deleted): {report.set_aside}")
    if report.rebuilt:
        notes.append(f"built again from the indexed folders: {report.points} images")
    notes.append("healthy" if report.healthy else f"{report.faults} fault(s) remain")
    return notes


# -- training and evaluation ---------------------------------------------------------------------


def _triple(m: dict[str, float], direction: str) -> str:
    return "/".join(f"{m[f'{direction}_r{k}']:.1f}" for k in (1, 5, 10))


def recall_line(m: dict[str, float]) -> str:
    return f"text->image R@1/5/10 {_triple(m, 't2i')}, image->text {_triple(m, 'i2t')}"


class TrainProgress(_Bar):
    """Renders TrainEvents: one bar per stage; loss and samples/s while training."""

    def __init__(self, console: Console) -> None:
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
            skipped_line(bar.console, ev.path, ev.reason)
        elif ev.kind == "step" and self.task is not None:
            bar.update(self.task, completed=ev.step, info=f"epoch {ev.epoch}  loss {ev.loss:.4f}  {ev.rate:,.0f}/s")
        elif ev.kind == "epoch" and "t2i_r10" in ev.metrics:
            m = ev.metrics
            head = "epoch 0 (untrained)" if ev.epoch == 0 else f"epoch {ev.epoch}: loss {m.get('loss', math.nan):.4f}"
            bar.console.print(f"{head}  val R@1/5/10 t→i {_triple(m, 't2i')}  i→t {_triple(m, 'i2t')}",
                              highlight=False)


class EvalProgress(_Bar):
    def __init__(self, console: Console) -> None:
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


def eval_table(rows: list[Any], dataset: str) -> Table:
    """One section per language: measured models first, then the paper's rows (dim)."""
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
        for r in sorted((r for r in rows if r.lang == lang), key=lambda r: r.reference):
            cells = [_cell(getattr(r, m)) for m in RECALL_METRICS]
            table.add_row(lang, r.model, *cells, "" if r.reference else str(r.captions),
                          style="dim italic" if r.reference else None)
    return table


def _cell(value: float | None) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:.1f}"
