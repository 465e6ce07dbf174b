"""The one xlir app: the Typer object, the two consoles, the error boundary, and the options
every command shares. Command groups (photos.py, training.py, evaluation.py) register on it;
main.py puts them together."""

from __future__ import annotations

import contextlib
import functools
import logging
import re
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperCommand, TyperGroup, TyperOption

from xlir_qdrant import __version__
from xlir_qdrant.config import Overrides, Settings, defaults, environment
from xlir_qdrant.errors import BadValue, XlirError
from xlir_qdrant.index import DEFAULT_MODEL, Index, tag_info
from xlir_qdrant.records import CollectionOptions

if TYPE_CHECKING:
    from xlir_qdrant.serve.client import RemoteIndex

# click's exceptions, or the copy of them newer Typers vendor: whichever typer raises
_click_errors = sys.modules[typer.BadParameter.__module__]
_NoArgsIsHelp: Any = getattr(_click_errors, "NoArgsIsHelpError", ())

ENV_HELP = "Environment: " + ", ".join(f"{name} ({note})" if note else name for name, note in environment()) + "."


def _bare_flags(params: list[Any]) -> None:
    # Typer's rich help prints a type after every option, "--hidden <bool>" included; a flag
    # takes no value, so its type column stays empty.
    for param in params:
        if isinstance(param, TyperOption) and param.is_flag and param.metavar is None:
            param.metavar = ""


# Facts the library knows (the vocabulary's size, per-model defaults) that some help texts name
# as {placeholders}: filled in when a help is shown, so a command that shows none never pays
# for reading them.
@functools.cache
def help_facts() -> dict[str, str]:
    info = tag_info()
    by_score: dict[float, list[str]] = {}
    for model, (_k, score) in info.calibrated.items():
        by_score.setdefault(score, []).append(model)
    thresholds = [f"{score:g} for {' and '.join(models)}" for score, models in by_score.items()]
    top_ks = {k for k, _s in info.calibrated.values()} | {info.top_k}
    return {
        "concepts": str(info.concepts),
        "tag_languages": str(len(info.languages)),
        "tag_language_codes": " ".join(info.languages),
        "tag_top_k": str(info.top_k) if len(top_ks) == 1 else "per model",
        "tag_min_score": ", ".join([*thresholds, f"else {info.min_score:g}"]),
    }


def _fill(text: str | None) -> str | None:
    if not text or "{" not in text:
        return text
    for key, value in help_facts().items():  # only these: other braces are the help's own
        text = text.replace("{" + key + "}", value)
    return text


class Command(TyperCommand):
    """An xlir command. Its help fills in the library's facts, shows flags as flags, and shows a
    default that is described rather than literal (show_default="one per core, up to 8": the
    option itself defaults to None, "not given", so the config file and XLIR_* still apply)
    the way it shows a literal one."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        self.help = _fill(self.help)
        params = self.get_params(ctx)
        described = []
        for param in params:
            param.help = _fill(getattr(param, "help", None))
            if isinstance(param.show_default, str):
                described.append((param, param.default, param.show_default))
                param.default, param.show_default = _fill(param.show_default), True
        _bare_flags(params)
        try:
            super().format_help(ctx, formatter)
        finally:
            for param, default, show in described:
                param.default, param.show_default = default, show


class Group(TyperGroup):
    """The xlir app. A usage error (an unknown option, a value out of range, a missing
    argument) is one line naming the flag and what it accepts, with exit code 2, instead of
    click's usage block and boxed message."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        _bare_flags(self.get_params(ctx))
        super().format_help(ctx, formatter)

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except _NoArgsIsHelp:  # the help has been shown
            code = 2
        except _click_errors.ClickException as exc:
            usage_error(exc.format_message(), getattr(exc, "ctx", None), getattr(exc, "param", None))
            code = exc.exit_code
        except typer.Abort:
            ui.err.print("aborted", highlight=False)
            code = 1
        else:
            code = code if isinstance(code, int) else 0
        if not standalone_mode:
            return code
        sys.exit(code)


def usage_error(message: str, ctx: Any = None, param: Any = None) -> None:
    """One line on stderr: the problem, the range a number must be in, where the help is."""
    allowed = _range(param)
    text = " ".join(message.split()).rstrip(".") + (f"; allowed: {allowed}" if allowed else "")
    hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
    ui.err.print("[red]error:[/red]", escape(text + hint), highlight=False, soft_wrap=True)


def _range(param: Any) -> str:
    # Typer keeps an option's bounds on the option; older ones on its click type (IntRange).
    low, high = getattr(param, "min", None), getattr(param, "max", None)
    if low is None and high is None:
        kind = getattr(param, "type", None)
        low, high = getattr(kind, "min", None), getattr(kind, "max", None)
    if low is not None and high is not None:
        return f"{low:g} to {high:g}"
    if low is not None:
        return f"{low:g} or more"
    return f"{high:g} or less" if high is not None else ""


app = typer.Typer(
    name="xlir",
    cls=Group,
    help=(
        "Search and tag your photos in any language, on Qdrant.\n\n"
        "Examples:\n"
        "xlir index ~/Pictures              embed photos into the local index\n"
        "xlir search \"perro en la playa\"    find them with words in any language\n"
        "xlir search cat --format paths     one path per line, for xargs or an image viewer\n"
        "xlir duplicates                    copies and near-copies of the same photo\n"
        "xlir models                        the models you can use\n\n" + ENV_HELP
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
    """Domain errors become one red line and exit code 1 (2 for a value a flag does not accept,
    as for click's own usage errors); Ctrl-C exits 130 cleanly."""
    try:
        yield
    except BadValue as exc:
        ui.err.print("[red]error:[/red]", escape(str(exc)), highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except XlirError as exc:
        ui.err.print("[red]error:[/red]", escape(str(exc)), highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        ui.err.print("[yellow]interrupted[/yellow]: everything stored so far is kept; run the same command to resume")
        raise typer.Exit(130) from None


# -- options shared by the commands ---------------------------------------------------------------
# Help texts are rich markup: a literal "[" is written "\\[". A default that is not a literal
# value (it depends on the machine or on the index) is described in show_default.

_D = defaults()

StoreOpt = Annotated[Optional[Path], typer.Option("--store", help="Embedded index directory.", show_default="XLIR_HOME/store")]
UrlOpt = Annotated[Optional[str], typer.Option("--qdrant-url", help="Use a Qdrant server or cluster instead of the embedded engine (API key from XLIR_QDRANT_API_KEY).", show_default=False)]
CollectionOpt = Annotated[Optional[str], typer.Option("--collection", "-c", help="Collection (index) name.", show_default=_D["collection"])]
ModelOpt = Annotated[Optional[str], typer.Option("--model", "-m", help="Model id from `xlir models`, or a checkpoint folder.", show_default=f"the collection's model, else {DEFAULT_MODEL}")]
DeviceOpt = Annotated[Optional[str], typer.Option("--device", help="auto, cpu or cuda.", show_default=_D["device"])]
JsonOpt = Annotated[bool, typer.Option("--json", help="One JSON object per line instead of a table.")]
RemoteCollectionOpt = Annotated[Optional[str], typer.Option("--remote-collection", help="The collection's name on the server.", show_default="the same as --collection")]


class Quantization(str, Enum):
    int8 = "int8"
    none = "none"


# How a new collection is laid out (xlir_qdrant/store/layout.py chooses what is not given).
_LAYOUT = "Layout of a new collection"
ShardsOpt = Annotated[Optional[int], typer.Option("--shards", min=1, rich_help_panel=_LAYOUT, help="Shards on a server or cluster.", show_default="a multiple of its nodes, one per 10M points")]
ReplicasOpt = Annotated[Optional[int], typer.Option("--replicas", min=1, rich_help_panel=_LAYOUT, help="Copies of each shard.", show_default="2 on a cluster of 2+ nodes, else 1")]
WriteConsistencyOpt = Annotated[Optional[int], typer.Option("--write-consistency", min=1, rich_help_panel=_LAYOUT, help="Replicas that acknowledge each write.", show_default="a majority")]
QuantizationOpt = Annotated[Optional[Quantization], typer.Option("--quantization", case_sensitive=False, rich_help_panel=_LAYOUT, help="int8: scalar-quantized vectors in RAM, rescored with the originals.", show_default="int8 from 1M points")]
OnDiskOpt = Annotated[Optional[bool], typer.Option("--on-disk/--in-memory", rich_help_panel=_LAYOUT, help="Original vectors and payload memory-mapped from disk.", show_default="on disk when quantized")]


def layout_options(*, expected_points: int | None = None, shards: int | None = None, replicas: int | None = None,
                   write_consistency: int | None = None, quantization: Quantization | None = None,
                   on_disk: bool | None = None) -> CollectionOptions:
    """The layout flags as the library's record."""
    return CollectionOptions(expected_points=expected_points, shards=shards, replicas=replicas,
                             write_consistency=write_consistency,
                             quantization=quantization.value if quantization else None, on_disk=on_disk)


def open_index(purpose: str, overrides: Overrides, *, create_store: bool = False) -> Index:
    """The facade with the command's settings; ``purpose`` goes into the store's lock file, so
    a second process can say who holds it."""
    return Index.open(overrides, purpose=purpose, create_store=create_store)


def open_shared(purpose: str, overrides: Overrides, *, any_collection: bool = False) -> Index | RemoteIndex:
    """Like open_index, but while `xlir serve` holds this store, the server answers instead
    (the same methods and records, over HTTP). ``any_collection``: the command does not care
    which collection the server serves (`xlir info` lists them all)."""
    from xlir_qdrant.serve import discovery

    settings = Settings.load(overrides)
    if not settings.uses_server and discovery.path_for(settings.store_path).exists():
        from xlir_qdrant.serve.client import connect

        remote = connect(settings, any_collection=any_collection)
        if remote is not None:
            ui.err.print(f"using the running `xlir serve` at {remote.url}, which holds this store", style="dim",
                         highlight=False, soft_wrap=True)
            return remote
    return Index(settings, purpose=purpose)


def banner(idx: Index | RemoteIndex, where: str | None = None) -> None:
    """The line a long command starts with: the model, where it runs, the store and collection."""
    run = idx.runtime()
    ui.err.print(f"model {run.model} on {where or f'{run.device} {run.precision}'} -> {idx.location} "
                 f"(collection {idx.settings.collection})", highlight=False, markup=False, soft_wrap=True)


def first_use(idx: Index | RemoteIndex, *, needed: bool = True) -> contextlib.AbstractContextManager[object]:
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
