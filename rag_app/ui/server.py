"""How the chat server is exposed: the hosts it answers, the headers it sends, the options it runs
with. Used by `python -m rag_app serve` (rag_app/cli.py) and by the ASGI app in
rag_app/ui/app.py; nothing here runs at import.

- **Hosts**: only `localhost`, `127.0.0.1`, `::1` and the address it was told to listen on
  (`server.allowedHosts`). A page on another site that rebinds its DNS name to 127.0.0.1 sends
  its own name as Host and is refused (403), on the WebSocket (Streamlit checks it) and on every
  HTTP request (`SecurityHeaders` checks it: Streamlit does not). The WebSocket must come from
  a page of the app's own origin, not from another port of localhost.
- **Headers**: a Content-Security-Policy that lets the page load images only from the app
  itself (`img-src 'self' data: blob:`) and never be framed (`frame-ancestors 'none'`), so a
  Markdown image that slipped through escaping is blocked by the browser and a Delete button
  cannot be clickjacked; no Referer leaves the page (it would carry `?chat=<id>`).
- **Exposure**: the chat has no login. A non-loopback address is refused by `serve` unless
  `--allow-network` is given, and the page shows a warning banner while it listens on one.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any
from urllib.parse import urlsplit

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")

CONTENT_SECURITY_POLICY = "; ".join([
    "img-src 'self' data: blob:",
    "media-src 'self' data: blob:",
    "frame-ancestors 'none'",
    "object-src 'none'",
    "base-uri 'self'",
    "form-action 'self'",
])
SECURITY_HEADERS = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def is_loopback(host: str) -> bool:
    """True for an address only this machine can reach: localhost, 127.0.0.0/8, ::1.
    The empty address and 0.0.0.0 / :: (every interface) are not."""
    name = host.strip().strip("[]").lower().rstrip(".")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def allowed_hosts(host: str, extra: Sequence[str] = ()) -> list[str]:
    """The Host names the server answers: the loopback names, the address it listens on, and
    `extra`. Listening on every interface (0.0.0.0, ::), no browser sends that address: the
    machine's own name stands for it (and `extra`, `serve --allowed-host`, for others)."""
    hosts = list(LOOPBACK_HOSTS)
    name = host.strip().strip("[]")
    if name in ("", "0.0.0.0", "::"):
        import socket

        name = socket.gethostname()
    for candidate in (name, *extra):
        candidate = candidate.strip().lower()
        if candidate and candidate not in hosts:
            hosts.append(candidate)
    return hosts


def host_allowed(header: str | None, allowed: Sequence[str]) -> bool:
    """Whether a request's Host header names one of `allowed` (Streamlit's rules: ports are
    ignored, `*.example.com` matches subdomains, `*` anything, an empty list anything)."""
    if not allowed:
        return True
    if not header:
        return False
    try:
        parts = urlsplit(f"//{header}")
        name = parts.hostname
        _ = parts.port  # a port that is not a number is not a host
    except ValueError:
        return False
    if not name or parts.username or parts.password or parts.path or parts.query:
        return False
    name = name.lower().rstrip(".")
    for pattern in (a.strip().lower().rstrip(".") for a in allowed):
        if pattern == "*" or name == pattern.strip("[]"):
            return True
        if pattern.startswith("*.") and name.endswith(pattern[1:]):
            return True
    return False


def same_origin(origin: str | None, host: str | None) -> bool:
    """Whether a WebSocket's Origin is the page the app itself served (scheme aside, its host
    and port are the Host header's). Streamlit also lets a page of any other port of localhost
    or 127.0.0.1 open the WebSocket (REVIEW L1): another local web app, or a page a local dev
    server shows, could drive the chat. No Origin (not a browser) is let through, as Streamlit
    does."""
    if origin is None:
        return True
    if not host:
        return False
    return urlsplit(origin).netloc.lower() == host.lower()


class SecurityHeaders:
    """ASGI middleware: refuse a foreign Host (403), and a WebSocket opened by a page of another
    origin, and add the security headers to every HTTP response. The allowed hosts are
    Streamlit's `server.allowedHosts`, read per request."""

    def __init__(self, app: ASGIApp, allowed: Callable[[], Sequence[str]] | None = None
                 ) -> None:
        self.app = app
        self._allowed = allowed or _streamlit_allowed_hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        host = next((v.decode("latin-1") for k, v in scope.get("headers", ())
                     if k == b"host"), None)
        if not host_allowed(host, self._allowed()):
            await _refuse(scope, send)
            return
        if scope["type"] == "websocket":
            origin = next((v.decode("latin-1") for k, v in scope.get("headers", ())
                           if k == b"origin"), None)
            if not same_origin(origin, host):
                await _refuse(scope, send)
                return
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", ())}
                message["headers"] = [*message.get("headers", ()),
                                      *(h for h in SECURITY_HEADERS if h[0] not in names)]
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def _refuse(scope: Scope, send: Send) -> None:
    if scope["type"] == "websocket":  # closing before accepting: the server answers 403
        await send({"type": "websocket.close", "code": 1008})
        return
    body = b"This host name is not served here (server.allowedHosts).\n"
    await send({"type": "http.response.start", "status": 403,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode()),
                            *SECURITY_HEADERS]})
    await send({"type": "http.response.body", "body": body})


def _streamlit_allowed_hosts() -> Sequence[str]:
    import streamlit as st

    return list(st.get_option("server.allowedHosts") or ())


def streamlit_flags(host: str, port: int, upload_max_mb: float,
                    hosts: Sequence[str]) -> list[str]:
    """The `streamlit run` options `python -m rag_app serve` passes: those of the shipped
    rag_app/ui/.streamlit/config.toml, with this host, port, upload limit and Host names."""
    flags = ["--server.address", host, "--server.port", str(port),
             "--server.headless", "true", "--server.enableXsrfProtection", "true",
             "--server.maxUploadSize", str(max(1, math.ceil(upload_max_mb))),
             "--server.fileWatcherType", "none", "--browser.gatherUsageStats", "false",
             "--client.showErrorDetails", "none", "--client.toolbarMode", "minimal"]
    for name in hosts:
        flags += ["--server.allowedHosts", name]
    return flags


def exposure_warning(host: str, port: int, hosts: Sequence[str]) -> str:
    """What `serve --allow-network` prints before it listens beyond this machine."""
    rule = "!" * 78
    return (f"{rule}\n"
            f"WARNING: the chat will listen on {host or 'every interface'}, port {port}, "
            "beyond this machine.\nIt has no login: anyone who can reach it can read every "
            "chat and every indexed\ndocument, upload files and delete documents. Put an "
            "authenticating proxy in front\nof it, or use --host 127.0.0.1. Host names "
            f"answered: {', '.join(hosts)}\n(others are refused; add one with "
            f"--allowed-host NAME).\n{rule}")
