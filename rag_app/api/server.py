"""`python -m rag_app api`: run the API with uvicorn, on 127.0.0.1 unless told otherwise.

An address other machines can reach needs RAG_API_KEY (the server refuses to start without
it). The key is never printed or logged: uvicorn's access log has no headers.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rag_app.settings import Settings


def exposure_problem(host: str, settings: Settings) -> str:
    """Why the API may not listen on `host` as configured, or "" when it may."""
    from rag_app.ui.server import is_loopback

    if is_loopback(host) or settings.api_key is not None:
        return ""
    return (f"--host {host} can be reached from other machines, and no API key is set. Set "
            "RAG_API_KEY (clients then send 'Authorization: Bearer <key>'), or use --host "
            "127.0.0.1.")


def host_names(host: str, settings: Settings, extra: Sequence[str] = ()) -> list[str]:
    """The Host names the API answers. Without a key, only this machine's and `extra` (a page
    that rebinds its DNS name to 127.0.0.1 is refused); with one, the key is the guard, and
    any name clients use is answered."""
    from rag_app.ui.server import allowed_hosts

    return allowed_hosts(host, list(extra)) if settings.api_key is None else ["*"]


def serve(settings: Settings, host: str, port: int, extra_hosts: Sequence[str] = ()) -> int:
    import uvicorn

    from rag_app.api.app import create_app
    from rag_app.ui.server import is_loopback

    problem = exposure_problem(host, settings)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    app = create_app(settings, allowed_hosts=host_names(host, settings, extra_hosts))
    shown = "127.0.0.1" if host in ("", "0.0.0.0", "::") else host
    where = "this machine only" if is_loopback(host) else "other machines too (key required)"
    print(f"API on http://{shown}:{port}/v1 ({where}); the schema is at /openapi.json. "
          "Ctrl+C stops it.", file=sys.stderr)
    uvicorn.run(app, host=host, port=port, log_level=settings.log_level.lower(),
                server_header=False, proxy_headers=False, timeout_graceful_shutdown=5)
    return 0
