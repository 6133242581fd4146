"""What every request passes before a route sees it (plain ASGI, so streamed answers and
client hang-ups pass through untouched):

- **Host**: only this machine's names and the address the server listens on (and any
  `--allowed-host`); a web page that rebinds its DNS name to 127.0.0.1 is refused (403).
- **Origin**: a browser page of another site (its Origin is not this server) is refused (403):
  on 127.0.0.1 without a key, a form on any web site could otherwise upload or delete.
- **Rate**: RAG_API_REQUESTS_PER_MINUTE per client address (429 with Retry-After); refused
  keys count too, so guessing one is slow.
- **Size**: a body over the route's limit is refused before it is read (413); a body without
  a Content-Length is refused (411), so no limit can be walked around in chunks.

The bearer key is checked by the routes (`rag_app.api.app.require_key`), so the OpenAPI
schema shows it.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from rag_app.ui.server import host_allowed

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

OPEN_PATHS = ("/health",)  # never rate-limited: a supervisor polls it
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error",
               403: "permission_error", 404: "not_found_error", 405: "invalid_request_error",
               409: "conflict_error", 411: "invalid_request_error",
               413: "invalid_request_error", 422: "invalid_request_error",
               429: "rate_limit_error", 500: "server_error", 502: "upstream_error",
               503: "service_unavailable", 504: "upstream_error"}


def error_payload(status: int, message: str, code: str | None = None,
                  param: str | None = None) -> dict[str, Any]:
    """OpenAI's error shape, which its clients read: {"error": {message, type, code, param}}."""
    return {"error": {"message": message, "type": ERROR_TYPES.get(status, "error"),
                      "code": code, "param": param}}


class RateLimiter:
    """At most `per_minute` requests per key in any 60 s (a sliding window)."""

    def __init__(self, per_minute: int, window_s: float = 60.0) -> None:
        self.per_minute = per_minute
        self.window_s = window_s
        self._seen: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def wait_s(self, key: str, now: float | None = None) -> float:
        """0 when the request may go (and it is counted), else the seconds until it may."""
        if self.per_minute <= 0:
            return 0.0
        t = time.monotonic() if now is None else now
        with self._lock:
            if len(self._seen) > 10_000:  # forget idle clients
                self._seen = {k: q for k, q in self._seen.items()
                              if q and q[-1] > t - self.window_s}
            times = self._seen.setdefault(key, deque())
            while times and times[0] <= t - self.window_s:
                times.popleft()
            if len(times) >= self.per_minute:
                return max(0.001, times[0] + self.window_s - t)
            times.append(t)
            return 0.0


class Guard:
    """ASGI middleware: Host, Origin, rate and body size, in that order (see the module)."""

    def __init__(self, app: ASGIApp, *, allowed_hosts: Sequence[str], limiter: RateLimiter,
                 body_limit: Callable[[str, str], int]) -> None:
        self.app = app
        self.allowed_hosts = list(allowed_hosts)
        self.limiter = limiter
        self.body_limit = body_limit  # (method, path) -> bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers", [])}
        host = headers.get("host")
        if not host_allowed(host, self.allowed_hosts):
            await _reply(send, 403, "This server answers only to its own address (the Host "
                         "header names another). Call it as http://127.0.0.1:PORT, or start it "
                         "with --allowed-host NAME.", "host_not_allowed")
            return
        origin = headers.get("origin")
        if origin is not None and (not host or urlsplit(origin).netloc.lower() != host.lower()):
            await _reply(send, 403, "Requests from web pages of other sites are refused (their "
                         "Origin is not this server).", "origin_not_allowed")
            return
        path = scope.get("path", "")
        if path not in OPEN_PATHS:
            client = scope.get("client")
            wait = self.limiter.wait_s(client[0] if client else "?")
            if wait:
                await _reply(send, 429, f"Too many requests: at most "
                             f"{self.limiter.per_minute} a minute from one address "
                             "(RAG_API_REQUESTS_PER_MINUTE). Wait and retry.",
                             "rate_limited", {"Retry-After": str(math.ceil(wait))})
                return
        method = scope.get("method", "GET")
        if method in ("POST", "PUT", "PATCH"):
            limit = self.body_limit(method, path)
            length = headers.get("content-length")
            if length is None:
                await _reply(send, 411, "Send the body with a Content-Length header (chunked "
                             "bodies are not accepted).", "length_required")
                return
            if not length.isdigit() or int(length) > limit:
                await _reply(send, 413, f"The request body is over {_size(limit)}, the "
                             "limit for this route (RAG_API_MAX_REQUEST_KB; uploads: "
                             "RAG_UPLOAD_MAX_MB, RAG_UPLOAD_BATCH_MAX_MB). Send less.",
                             "request_too_large")
                return
            receive = _counted(receive, int(length))
        await self.app(scope, receive, send)


def _counted(receive: Receive, declared: int) -> Receive:
    """`receive` that ends the body at its declared length (a server should already)."""
    seen = 0

    async def wrapped() -> Message:
        nonlocal seen
        message = await receive()
        if message.get("type") == "http.request":
            seen += len(message.get("body", b""))
            if seen > declared:
                return {"type": "http.disconnect"}
        return message

    return wrapped


def _size(n: int) -> str:
    return f"{n / 1024 / 1024:g} MB" if n >= 1024 * 1024 else f"{n // 1024} KB"


async def _reply(send: Send, status: int, message: str, code: str,
                 headers: dict[str, str] | None = None) -> None:
    body = json.dumps(error_payload(status, message, code)).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
