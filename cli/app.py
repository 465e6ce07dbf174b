"""The one xlir app: the Typer object, the two consoles, the error boundary, and the options
every command shares. Command groups (photos.py, training.py, evaluation.py) register on it;
main.py puts them together."""

from __future__ import annotations

import contextlib
import logging
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape

from xlir_qdrant import __version__
from xlir_qdrant.config import Overrides
from xlir_qdrant.records import CollectionOptions
from xlir_qdrant.errors import XlirError
from xlir_qdrant.index import Index

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


@dataclass
class Consoles:
    """Results go to ``out``; progress, notes and errors to ``err`` (tests swap both)."""

    out: Console
    err: Console


ui = Consoles(out=Console(soft_wrap=True), err=Console(stderr=True))


class _WarningLine(logging.Handler):
    """The library's warnings (a cache file rebuilt, a runtime fallen back) as one yellow line."""

    def emit(self, record: logging.LogRecord) -> None:
        _warn_once(record.getMessage())


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    # One line per kind of warning: Pillow says "Corrupt EXIF data" once per damaged photo.
    key = re.sub(r"\d+", "N", message.strip().splitlines()[0] if message.strip() else "")
    if key and key not in _warned:
        _warned.add(key)
        ui.err.print("[yellow]warning:[/yellow]", escape(message.strip().splitlines()[0]), highlight=False,
                     soft_wrap=True)


def quiet_libraries() -> None:
    """Route Python warnings and the library's log through one-line messages, with no source
    lines or tracebacks (idempotent)."""
    logger = logging.getLogger("xlir_qdrant")
    if not any(isinstance(h, _WarningLine) for h in logger.handlers):
        logger.addHandler(_WarningLine(level=logging.WARNING))
        logger.propagate = False
    warnings.showwarning = lambda message, *_args, **_kw: _warn_once(str(message))


@contextlib.contextmanager
def errors() -> Iterator[None]:
    """Domain errors become one red line and exit code 1; Ctrl-C exits 130 cleanly."""
    try:
        yield
    except XlirError as exc:
        ui.err.print("[red]error:[/red]", escape(str(exc)), highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        ui.err.print("[yellow]interrupted[/yellow]: everything stored so far is kept; run the same command to resume")
        raise typer.Exit(130) from None


# -- options shared by the commands ---------------------------------------------------------------
# Help texts are rich markup: a literal "[" is written "\\[".

StoreOpt = Annotated[Optional[Path], typer.Option("--store", help="Embedded index directory \\[default: XLIR_HOME/store].", show_default=False)]
UrlOpt = Annotated[Optional[str], typer.Option("--qdrant-url", help="Use a Qdrant server or cluster instead of the embedded engine (API key from XLIR_QDRANT_API_KEY).")]
CollectionOpt = Annotated[Optional[str], typer.Option("--collection", "-c", help="Collection (index) name \\[default: photos].", show_default=False)]
ModelOpt = Annotated[Optional[str], typer.Option("--model", "-m", help="Model id from `xlir models`, or a checkpoint folder \\[default: the collection's model, else the bundled one].", show_default=False)]
DeviceOpt = Annotated[Optional[str], typer.Option("--device", help="auto, cpu or cuda.", show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="One JSON object per line instead of a table.")]
RemoteCollectionOpt = Annotated[Optional[str], typer.Option("--remote-collection", help="The collection's name on the server \\[default: the same as --collection].", show_default=False)]


class Quantization(str, Enum):
    int8 = "int8"
    none = "none"


# How a new collection is laid out (xlir_qdrant/store/layout.py chooses what is not given).
_LAYOUT = "Layout of a new collection"
ShardsOpt = Annotated[Optional[int], typer.Option("--shards", min=1, rich_help_panel=_LAYOUT, help="Shards on a server or cluster \\[default: a multiple of its nodes, one per 10M points].", show_default=False)]
ReplicasOpt = Annotated[Optional[int], typer.Option("--replicas", min=1, rich_help_panel=_LAYOUT, help="Copies of each shard \\[default: 2 on a cluster of 2+ nodes, else 1].", show_default=False)]
WriteConsistencyOpt = Annotated[Optional[int], typer.Option("--write-consistency", min=1, rich_help_panel=_LAYOUT, help="Replicas that acknowledge each write \\[default: a majority].", show_default=False)]
QuantizationOpt = Annotated[Optional[Quantization], typer.Option("--quantization", case_sensitive=False, rich_help_panel=_LAYOUT, help="int8: scalar-quantized vectors in RAM, rescored with the originals \\[default: int8 from 1M points].", show_default=False)]
OnDiskOpt = Annotated[Optional[bool], typer.Option("--on-disk/--in-memory", rich_help_panel=_LAYOUT, help="Original vectors and payload memory-mapped from disk \\[default: on disk when quantized].", show_default=False)]


def layout_options(*, expected_points: int | None = None, shards: int | None = None, replicas: int | None = None,
                   write_consistency: int | None = None, quantization: Quantization | None = None,
                   on_disk: bool | None = None) -> CollectionOptions:
    """The layout flags as the library's record."""
    return CollectionOptions(expected_points=expected_points, shards=shards, replicas=replicas,
                             write_consistency=write_consistency,
                             quantization=quantization.value if quantization else None, on_disk=on_disk)


def open_index(purpose: str, overrides: Overrides) -> Index:
    """The facade with the command's settings; ``purpose`` goes into the store's lock file, so
    a second process can say who holds it."""
    return Index.open(overrides, purpose=purpose)


def first_use(idx: Index, *, needed: bool = True) -> contextlib.AbstractContextManager[object]:
    """A spinner while a model is prepared on its first use on this machine (~30 s, once)."""
    note = idx.first_use_note() if needed else ""
    return ui.err.status(f"loading model ({note})") if note else contextlib.nullcontext()


def _version(value: bool) -> None:
    if value:
        ui.out.print(f"xlir {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")] = False,
) -> None:
    """Search and tag your photos in any language, on Qdrant."""
    quiet_libraries()
