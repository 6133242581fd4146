"""A real HTTP server on 127.0.0.1 that speaks just enough of the OpenAI chat API to misbehave.

The model name picks the behaviour: "ok" streams three pieces; "stall" never answers; "stall-mid"
sends one piece and goes quiet; "429" answers 429 (Retry-After: 1) twice, then streams; "500"
always fails; "401" refuses the key; "no-schema" answers 400 to a request with a
`response_format` (as servers without JSON-schema output do) and otherwise streams a prose
answer citing [1]; "json" streams a JSON answer citing source 1; "drip" streams a piece every
0.2 s and never ends; "500-once" and "drop-once" fail the first request (HTTP 500, or a closed
connection with no answer) and then stream; "503-retry-after" answers 503 (Retry-After: 1)
once, then streams. Requests per model are counted.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _Handler(BaseHTTPRequestHandler):
    server: Any

    def log_message(self, *args: Any) -> None:  # keep test output clean
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        model = body.get("model", "ok")
        self.server.seen_keys.append(self.headers.get("Authorization", ""))
        self.server.requests[model] += 1
        n = self.server.requests[model]
        if model == "stall":
            self.server.release.wait(60)
            return
        if model == "drop-once" and n == 1:
            self.close_connection = True  # no status line at all: a connection error
            return
        if model == "500-once" and n == 1:
            return self._error(500, "server_error", "boom")
        if model == "503-retry-after" and n == 1:
            return self._error(503, "overloaded", "busy", {"Retry-After": "1"})
        if model == "401":
            return self._error(401, "invalid_api_key", "Incorrect API key provided: sk-...")
        if model == "500":
            return self._error(500, "server_error", "boom")
        if model == "no-schema" and "response_format" in body:
            return self._error(400, "invalid_request_error",
                               "response_format json_schema is not supported")
        if model == "429" and n <= 2:
            return self._error(429, "rate_limit", "slow down", {"Retry-After": "1"})
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        pieces = ["Hello", ", ", "world"]
        if model == "no-schema":
            pieces = ["It lasts ", "2 years [1]", " and see http://evil.example/x", "."]
        if model == "json":
            pieces = ['{"answer": "It lasts ', '2 years.", "sources"', ": [1]}"]
        if model == "drip":
            while not self.server.release.wait(0.2):
                try:
                    self._event(model, "drop ")
                except OSError:  # the client went away
                    return
            return
        for i, piece in enumerate(pieces):
            self._event(model, piece)
            if model == "stall-mid" and i == 0:
                self.server.release.wait(60)
                return
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()

    def _event(self, model: str, text: str) -> None:
        chunk = {"id": "c1", "object": "chat.completion.chunk", "created": int(time.time()),
                 "model": model,
                 "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}
        self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
        self.wfile.flush()

    def _error(self, status: int, code: str, message: str,
               headers: dict[str, str] | None = None) -> None:
        payload = json.dumps({"error": {"message": message, "type": code, "code": code}})
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(payload.encode())


@contextmanager
def openai_stub() -> Iterator[Any]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.requests = Counter()
    server.seen_keys = []
    server.release = threading.Event()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.base_url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    try:
        yield server
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()
