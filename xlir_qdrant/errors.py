"""Domain errors. Each carries one line a person can act on; the CLI prints it in red."""

from __future__ import annotations


class XlirError(Exception):
    """Base class: the message is a complete, user-facing sentence (reason + what to do)."""


class ModelUnavailable(XlirError):
    """A model cannot be loaded here (no weights cached, no network, missing package)."""


class ModelMismatch(XlirError):
    """A collection was built for another model or dimension."""


class StoreLocked(XlirError):
    """Another process holds the store directory."""


class StoreUnavailable(XlirError):
    """The store cannot be reached or opened (server down, unreadable path)."""


class EmptyIndex(XlirError):
    """Search or tag asked of an index that holds no images."""


class BadQuery(XlirError):
    """An empty or otherwise unusable query."""


class NotFound(XlirError):
    """No photo with that id in the index (or none that may be shown)."""


class BadValue(XlirError):
    """A flag, argument or setting has a value outside what it accepts. The message names it
    and what it accepts; the CLI exits with 2 for these, as for any other usage error."""


class ConfigError(BadValue):
    """Ambiguous or invalid settings."""


class StoreDamaged(StoreUnavailable):
    """A store's files are damaged; the message points at `xlir check --repair`."""


class Cancelled(XlirError):
    """A run was asked to stop (a web app's cancel); what it stored is kept."""


class DiskFull(XlirError):
    """Too little free space to write safely; nothing stored is lost."""


class TransferIncomplete(XlirError):
    """A push or pull ended with fewer points in the destination than in the source."""


class ClusterUnavailable(XlirError):
    """A Ray cluster cannot be joined, or its actors cannot embed."""
