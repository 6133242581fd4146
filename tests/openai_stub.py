"""A real HTTP server on 127.0.0.1 that speaks just enough of the OpenAI chat API to misbehave.

The model name picks the behaviour: "ok" streams three pieces; "stall" never answers; "stall-mid"
sends one piece and goes quiet; "429" answers 429 (Retry-After: 1) twice, then streams; "500"
always fails; "401" refuses the key; "no-schema" answers 400 to a request with a
`response_format` (as servers without JSON-schema output do) and otherwise streams a prose
answer citing [1]; "json" streams a JSON answer citing source 1 (the older answer/sources
shape); "unsourced" answers a JSON answer naming `warranty_years()` (in no source) and,
asked again after it (the conversation holds its reply), the "json" answer; "quoted" streams
a quoted answer: a claim quoting the sample warranty and one whose
quote is in no source; "drip" streams a piece every
0.2 s and never ends; "500-once" and "drop-once" fail the first request (HTTP 500, or a closed
connection with no answer) and then stream; "503-retry-after" answers 503 (Retry-After: 1)
once, then streams; "headers-stall" waits 1 s (queued), then sends the 200 status and headers
but no event (as llama.cpp does once a queued request reaches its slot, while it reads the
prompt) and records in `server.hangups` (request id -> time) when the client closed the
connection. Requests per model are counted.

"chaos" (the load test, tests/reliability/test_answer_load.py and bench/load_answer.py) draws
each request's fate at random from `server.chaos_rng` (seeded by `openai_stub(seed=...)`) with
`server.chaos_weights`: "ok" streams a JSON answer citing source 1 in four pieces 20 ms apart;
"stall" never answers; "stall-mid" sends one piece and goes quiet; "500" and "429"
(Retry-After: 1) fail; "drop" closes the connection with no answer. Every request of every
model is logged in `server.arrivals` as (request id from the X-Request-Id header, arrival
time by time.monotonic(), model, chaos outcome or "").
"""

from __future__ import annotations

import json
import random
import selectors
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple

REQUEST_ID_HEADER = "X-Request-Id"
CHAOS_WEIGHTS = {"ok": 40, "stall": 12, "stall-mid": 12, "500": 12, "429": 12, "drop": 12}


class Arrival(NamedTuple):
    rid: str  # the X-Request-Id header, "" when there was none
    t: float  # time.monotonic() when the request line and headers had been read
    model: str
    outcome: str  # what "chaos" did with it; "" for the other models


class _Handler(BaseHTTPRequestHandler):
    server: Any

    def log_message(self, *args: Any) -> None:  # keep test output clean
        pass

    def do_POST(self) -> None:
        arrived = time.monotonic()
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        model = body.get("model", "ok")
        self.server.seen_keys.append(self.headers.get("Authorization", ""))
        self.server.requests[model] += 1
        n = self.server.requests[model]
        rid = self.headers.get(REQUEST_ID_HEADER, "")
        if model == "chaos":
            with self.server.chaos_lock:
                names = list(self.server.chaos_weights)
                fate = self.server.chaos_rng.choices(
                    names, weights=[self.server.chaos_weights[k] for k in names])[0]
            self.server.arrivals.append(Arrival(rid, arrived, model, fate))
            return self._chaos(fate)
        self.server.arrivals.append(Arrival(rid, arrived, model, ""))
        if model == "stall":
            self.server.release.wait(60)
            return
        if model == "headers-stall":
            if self.server.release.wait(1.0):
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            self.wfile.flush()
            return self._wait_for_hangup(rid)
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
        if model == "unsourced":  # names a function no source mentions; asked again, answers
            again = any(m.get("role") == "assistant" for m in body.get("messages", []))
            pieces = (['{"answer": "It lasts ', '2 years.", "sources"', ": [1]}"] if again else
                      ['{"answer": "Call `warranty_years()`', ' to see it.", "sources": [1]}'])
        if model == "quoted":  # one claim quoting the sample warranty, one quoting nothing
            pieces = ['{"claims": [{"source": 1, "quote": "comes with a 2-year warranty", ',
                      '"statement": "It lasts ', '2 years."}, {"source": 2, "quote": ',
                      '"Every kettle is made of gold", "statement": "It is gold."}]}']
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

    def _wait_for_hangup(self, rid: str, limit_s: float = 60.0) -> None:
        """Send nothing; note when the client closes its end (EOF or reset)."""
        self.close_connection = True
        end = time.monotonic() + limit_s
        # a selector, not select.select: in a long test session this socket's descriptor can
        # be over 1023, which select() refuses (ValueError)
        with selectors.DefaultSelector() as waiting:
            waiting.register(self.connection, selectors.EVENT_READ)
            while not self.server.release.is_set() and time.monotonic() < end:
                if waiting.select(0.05):
                    try:
                        gone = not self.connection.recv(1)
                    except OSError:
                        gone = True
                    if gone:
                        self.server.hangups[rid] = time.monotonic()
                        return

    def _chaos(self, fate: str) -> None:
        if fate == "stall":
            self.server.release.wait()  # until the stub shuts down
            return
        if fate == "drop":
            self.close_connection = True  # no status line at all: a connection error
            return
        if fate == "500":
            return self._error(500, "server_error", "boom")
        if fate == "429":
            return self._error(429, "rate_limit", "slow down", {"Retry-After": "1"})
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        pieces = ['{"answer": "It lasts ', '2 years.", ', '"sources": ', "[1]}"]
        try:
            for piece in pieces:
                self._event("chaos", piece)
                if fate == "stall-mid":
                    self.server.release.wait()
                    return
                if self.server.release.wait(0.02):
                    return
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
        except OSError:  # the client went away
            self.close_connection = True

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


class _Server(ThreadingHTTPServer):
    # socketserver's default listen backlog is 5: with 8 askers connecting at once on 2 busy
    # cores the kernel dropped a SYN, the client (whose httpx "request" hook had already run)
    # gave up while still connecting, and one request counted as sent never arrived. A real
    # server listens with a deep backlog; so does the stub.
    request_queue_size = 128


@contextmanager
def openai_stub(*, seed: int = 0) -> Iterator[Any]:
    server: Any = _Server(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.requests = Counter()
    server.seen_keys = []
    server.arrivals = []
    server.hangups = {}
    server.chaos_rng = random.Random(seed)
    server.chaos_lock = threading.Lock()
    server.chaos_weights = dict(CHAOS_WEIGHTS)
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
