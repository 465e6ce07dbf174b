"""The web app on a real uvicorn server: bind, announce, serve, and stop cleanly.

The socket is bound first, so a port in use is one line before anything starts (and port 0
picks a free one). While it serves an embedded store, the discovery file in the store
directory says where (discovery.py); it is removed on the way out, after the running index
job has stopped and before the Index (and with it the store's lock) is closed by its owner.

    with Index.open() as idx:
        WebServer(idx, port=8765).serve()          # blocks; Ctrl-C or SIGTERM stops it

    with WebServer(idx, port=0) as running:        # in a thread: tests, benchmarks
        httpx.get(running.url + "/api/status")
"""

from __future__ import annotations

import contextlib
import errno
import signal
import socket
import threading
from types import FrameType
from typing import Self

import uvicorn

from ..errors import XlirError
from ..index import Index
from . import discovery
from .app import create_app
from .security import is_loopback
from .service import Limits, Service


class CannotListen(XlirError):
    """The address or port cannot be bound."""


class WebServer:
    def __init__(self, index: Index, *, host: str = "127.0.0.1", port: int = 8765, token: str | None = None,
                 limits: Limits | None = None) -> None:
        self.index = index
        self.host = host
        self.token = token
        self.service = Service(index, limits=limits)
        self.app = create_app(self.service, token=token, loopback=is_loopback(host))
        self._socket = _bind(host, port)
        self.port: int = self._socket.getsockname()[1]
        self.url = discovery.local_url(host, self.port)
        config = uvicorn.Config(self.app, lifespan="off", log_level="warning", access_log=False, server_header=False,
                                timeout_keep_alive=5, timeout_graceful_shutdown=2, limit_concurrency=256)
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None
        self._record: discovery.ServerFile | None = None

    # -- in the foreground (`xlir serve`) -------------------------------------------------------

    def serve(self) -> None:
        """Serve until Ctrl-C or SIGTERM, which end it with KeyboardInterrupt after a clean stop."""
        previous = signal.signal(signal.SIGTERM, _interrupt)  # uvicorn re-raises it once it has stopped
        try:
            self._announce()
            self._server.run(sockets=[self._socket])
        finally:
            self._close()
            signal.signal(signal.SIGTERM, previous)

    # -- in a thread ----------------------------------------------------------------------------

    def start(self) -> Self:
        self._announce()
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._socket]},
                                        name="xlir-web", daemon=True)
        self._thread.start()
        while not self._server.started and self._thread.is_alive():
            self._thread.join(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- helpers --------------------------------------------------------------------------------

    def _announce(self) -> None:
        s = self.index.settings
        if s.uses_server:  # a Qdrant server takes any number of clients: nothing to find
            return
        self._record = discovery.ServerFile(pid=self.service.pid, host=self.host, port=self.port, url=self.url,
                                            store=self.index.location, collection=s.collection,
                                            model=self.index.model_spec().id, token=self.token)
        discovery.write(self._record)

    def _close(self) -> None:
        if self._record is not None:
            discovery.remove(self._record)
            self._record = None
        self.service.close()
        with contextlib.suppress(OSError):
            self._socket.close()


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _bind(host: str, port: int) -> socket.socket:
    if not 0 <= port <= 65535:
        raise CannotListen(f"port {port} is not a port number (0 to 65535; 0 picks a free one)")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.create_server((host.strip("[]"), port), family=family, backlog=128)
    except socket.gaierror as exc:
        raise CannotListen(f"cannot listen on {host}: {exc.strerror or exc}; pass --host with an address of "
                           f"this machine") from None
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise CannotListen(f"port {port} on {host} is in use (another `xlir serve`?); pass --port N, or "
                               f"--port 0 for any free port") from None
        raise CannotListen(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.setblocking(False)
    return sock
