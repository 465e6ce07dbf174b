"""Rendering: the same records become a rich table for people or JSON lines for scripts."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from typing import Any

from rich.console import Console
from rich.table import Table

from xlir_qdrant.records import Hit
from xlir_qdrant.tagging import TagResult


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


def hits_table(hits: list[Hit]) -> Table:
    table = Table(title_justify="left", header_style="bold")
    table.add_column("#", justify="right", style="dim")
    table.add_column("score", justify="right")
    table.add_column("path", overflow="fold")
    table.add_column("date", no_wrap=True)
    table.add_column("size", justify="right", no_wrap=True)
    for h in hits:
        table.add_row(str(h.rank), f"{h.score:.3f}", display_path(h.path), (h.date or "")[:10], human_size(h.size))
    return table


def print_json_lines(console: Console, records: Iterable[dict[str, Any]]) -> None:
    for record in records:
        console.out(json.dumps(record, ensure_ascii=False), highlight=False)


def tags_table(result: TagResult) -> Table:
    where = "" if result.source == "index" else " (not indexed: embedded now)"
    table = Table(title=display_path(result.path) + where, title_justify="left", header_style="bold")
    table.add_column("#", justify="right", style="dim")
    table.add_column("tag")
    table.add_column("score", justify="right")
    table.add_column("id", style="dim")
    for t in result.tags:
        table.add_row(str(t.rank), t.name, f"{t.score:.3f}", t.id)
    if not result.tags:
        table.add_row("", "(no tag above --min-score)", "", "")
    return table
