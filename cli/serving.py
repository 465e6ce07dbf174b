"""`xlir serve`: the web app and JSON API over one index, in the foreground until Ctrl-C."""

from __future__ import annotations

import os
import socket
from typing import Annotated

import typer

from xlir_qdrant.config import Overrides
from xlir_qdrant.serve.discovery import local_url
from xlir_qdrant.serve.security import TOKEN_ENV, resolve_token

from .app import CollectionOpt, Command, DeviceOpt, ModelOpt, StoreOpt, UrlOpt, banner, errors, first_use, open_index, ui


def serve(
    host: Annotated[str, typer.Option("--host", help="Address to listen on. Any but a loopback one needs a token: XLIR_SERVE_TOKEN, else one is made and printed once.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port to listen on (0: any free one).")] = 8765,
    store: StoreOpt = None, qdrant_url: UrlOpt = None, collection: CollectionOpt = None, model: ModelOpt = None,
    device: DeviceOpt = None,
) -> None:
    """Serve the index: a web page to search and browse your photos, and a JSON API.

    This process owns the store: searches keep working while an index job runs, and `xlir
    search`, `tag`, `info` and `index` on this store use the server instead of waiting for it.
    Only photos under the folders the index was built from are ever served.

    Examples:
    xlir serve
    xlir serve --port 9000
    xlir serve --host 0.0.0.0
    """
    settings = Overrides(store=store, qdrant_url=qdrant_url, collection=collection, model=model, device=device)
    token, generated = resolve_token(host, os.environ.get(TOKEN_ENV))
    stopped = False
    with errors():
        with open_index("xlir serve", settings, create_store=True) as idx:
            from xlir_qdrant.serve.server import WebServer  # the web stack loads for this command only

            server = WebServer(idx, host=host, port=port, token=token)
            banner(idx)
            with first_use(idx):
                server.service.warm_up()
            shown = socket.gethostname() if host in ("0.0.0.0", "::", "") else host
            address = local_url(shown, server.port)
            ui.out.print(f"serving on {address}/  (Ctrl-C stops it)", highlight=False, markup=False, soft_wrap=True)
            if generated:
                ui.out.print(f"token (shown once; set {TOKEN_ENV} to choose it): {token}", highlight=False,
                             markup=False, soft_wrap=True)
                ui.out.print(f"open {address}/?token={token}", highlight=False, markup=False, soft_wrap=True)
            try:
                server.serve()
            except KeyboardInterrupt:
                stopped = True
    if stopped:  # after the index is closed: the lock is released by now
        ui.err.print("stopped; the store is released", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("serve", cls=Command)(serve)
