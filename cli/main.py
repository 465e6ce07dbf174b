"""The xlir command line, assembled: the app (app.py) with its command groups registered once."""

from __future__ import annotations

from . import evaluation, photos, serving, training
from .app import app

for _group in (photos, serving, training, evaluation):
    _group.register(app)

__all__ = ["app"]
