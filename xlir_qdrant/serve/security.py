"""Who may talk to the server: the token rule, the loopback host rule, same-origin writes.

* Bound to a loopback address (the default, 127.0.0.1), only this machine can connect; the
  Host header must then name a loopback address too, so a web page on another site cannot
  reach it by pointing its own domain at 127.0.0.1 (DNS rebinding).
* Any other address needs a token: XLIR_SERVE_TOKEN, or one generated and printed once. It
  comes as ``Authorization: Bearer TOKEN`` (the CLI, scripts) or as a cookie that opening
  ``/?token=TOKEN`` sets (HttpOnly, SameSite=Strict), so images and the event stream carry it.
* A request that changes something (POST, DELETE) from a page of another origin is refused;
  and no CORS header is ever sent, so other sites cannot read any answer.
"""

from __future__ import annotations

import ipaddress
import json
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs, urlsplit

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

COOKIE = "xlir_token"
TOKEN_ENV = "XLIR_SERVE_TOKEN"


def is_loopback(host: str) -> bool:
    name = host.strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def resolve_token(host: str, given: str | None) -> tuple[str | None, bool]:
    """The token the server requires, and whether it was generated here (to be shown once)."""
    if given:
        return given, False
    if is_loopback(host):
        return None, False
    return secrets.token_urlsafe(24), True


async def send_error(send: Send, status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps({"error": message}, ensure_ascii=False).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


class Guard:
    """ASGI middleware applying the rules above to every request."""

    def __init__(self, app: ASGIApp, *, token: str | None, loopback: bool) -> None:
        self.app = app
        self.token = token
        self.loopback = loopback

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        host = headers.get("host", "")
        if self.loopback and not is_loopback(_host_name(host)):
            await send_error(send, 403, "this server answers only to a loopback address such as 127.0.0.1 "
                                        "(it is bound to one); use that address")
            return
        if scope["method"] not in ("GET", "HEAD", "OPTIONS") and not _same_origin(headers, host):
            await send_error(send, 403, "a request from a page of another site is refused")
            return
        if self.token is not None:
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            offered = query.get("token", [None])[0]
            if scope["path"] == "/" and offered is not None:
                await self._exchange(send, offered)
                return
            if not self._valid(_given_token(headers)):
                await send_error(send, 401, "this server needs its token: open the address `xlir serve` printed "
                                            "(it ends in ?token=...), or send Authorization: Bearer TOKEN",
                                 [(b"www-authenticate", b"Bearer")])
                return
        await self.app(scope, receive, send)

    def _valid(self, given: str | None) -> bool:
        return given is not None and self.token is not None and secrets.compare_digest(given, self.token)

    async def _exchange(self, send: Send, offered: str) -> None:
        """``/?token=...``: a valid token becomes a cookie, and the address loses it."""
        if not self._valid(offered):
            await send_error(send, 401, "wrong token: use the address `xlir serve` printed")
            return
        cookie = f"{COOKIE}={offered}; Path=/; HttpOnly; SameSite=Strict".encode()
        await send({"type": "http.response.start", "status": 303,
                    "headers": [(b"location", b"/"), (b"set-cookie", cookie), (b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})


def _host_name(host_header: str) -> str:
    if host_header.startswith("["):
        return host_header[1:].split("]", 1)[0]
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


def _same_origin(headers: dict[str, str], host: str) -> bool:
    if headers.get("sec-fetch-site") == "cross-site":
        return False
    origin = headers.get("origin")
    if not origin:  # not sent by a browser page (the CLI, scripts), or a same-origin form in old browsers
        return True
    return urlsplit(origin).netloc.lower() == host.lower()


def _given_token(headers: dict[str, str]) -> str | None:
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    for part in headers.get("cookie", "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == COOKIE:
            return value
    return None
