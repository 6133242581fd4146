"""The answer path under load, on 127.0.0.1: every request ends within its deadline, none hangs,
and nothing is sent for a caller that gave up (issue 14).

    python bench/load_answer.py [--seconds 120] [--askers 8] [--target stub|local|both]
                                [--seed 1] [--first-token S --idle S --total S]

data/samples is ingested into a throwaway store (`ingest.entry.sync_paths`, the real
embedding model); then `--askers` threads ask the questions of data/eval/samples-qa.jsonl
through `rag_app.answering.answer` for `--seconds` (a request running when the time is up is
finished, not cut), sharing one retriever and one `ChatClient`, as the chat UI's sessions do:

- stub: tests/openai_stub.py's "chaos" model, which answers each HTTP request (retries
  included) at random, seeded: a normal answer, a stall for ever, a stall after the first
  piece, HTTP 500, HTTP 429 (Retry-After: 1) or a dropped connection. Small time limits.
- local: the bundled llama.cpp server (`rag_app.llm.local`; one slot, so requests queue)
  behind a pass-through proxy on 127.0.0.1 that logs each request's arrival. Realistic limits.

Each `answer()` call has a request id, sent as the X-Request-Id header on each of its HTTP
requests. Measured: the requests, answers and errors (by the LLMError's message), latency
(whole request; the LLM phase, which `llm_total_timeout_s` bounds), every LLM phase against
that deadline + a margin, a watchdog for requests that overrun or hang (their stacks are
printed), and requests sent after the caller gave up: on the client side (an httpx request
hook: the time the request left) and on the server side (the stub's or proxy's arrival log),
against the time the caller's `ChatClient.stream` raised or finished.

Reaches into `ChatClient._client` (the openai client) to add the header and the hook: a
measurement device, not an API; the answer path itself is used unchanged.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import selectors
import socket
import statistics
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from rag_app.llm.client import ChatClient, Endpoint, LLMError  # noqa: E402
from tests.openai_stub import REQUEST_ID_HEADER, Arrival  # noqa: E402

if TYPE_CHECKING:
    from rag_app.answering import Answer
    from rag_app.retrieve import Retriever
    from rag_app.settings import Settings

QUESTIONS = REPO / "data" / "eval" / "samples-qa.jsonl"
SAMPLES = REPO / "data" / "samples"

# Time limits: small for the stub (its answers take 80 ms); for the bundled 1.5B model on a
# busy 2-core CPU, where one answer alone takes about 30 s (README) and the one slot queues.
STUB_LIMITS = {"llm_connect_timeout_s": 1.0, "llm_first_token_timeout_s": 2.0,
               "llm_idle_timeout_s": 1.0, "llm_total_timeout_s": 4.0, "llm_max_retries": 2}
LOCAL_LIMITS = {"llm_connect_timeout_s": 5.0, "llm_first_token_timeout_s": 90.0,
                "llm_idle_timeout_s": 20.0, "llm_total_timeout_s": 150.0, "llm_max_retries": 2}
# How far past its deadline an LLM phase may end (thread scheduling on a busy CPU), and when
# an unfinished request counts as hung.
STUB_MARGIN_S = 1.0
LOCAL_MARGIN_S = 3.0
HANG_AFTER_S = 30.0  # past deadline + margin: the watchdog prints the stack
# A request the client sent before its caller gave up may still arrive a moment after.
TRANSIT_S = 0.25

# The LLMError messages of rag_app/llm/client.py, by what they say.
ERROR_KINDS = [
    ("no first token", r"^no first token"),
    ("stream stalled", r"^the stream stalled"),
    ("overall deadline", r"did not finish the answer within"),
    ("429 after retries", r"rate-limiting \(429\)"),
    ("HTTP 5xx after retries", r"failed with HTTP 5\d\d"),
    ("cannot connect", r"^cannot connect"),
    ("timed out (client)", r"did not answer in time"),
    ("request rejected", r"rejected the request"),
]


def error_kind(exc: BaseException) -> str:
    if not isinstance(exc, LLMError):
        return f"NOT an LLMError: {type(exc).__name__}"
    text = str(exc)
    for name, pattern in ERROR_KINDS:
        if re.search(pattern, text):
            return name
    return "other LLMError"


# --- one request ------------------------------------------------------------------------------
@dataclass
class Trace:
    rid: str
    asker: int
    question: str
    t_call: float
    t_hits: float | None = None  # answer() returned: retrieval done
    t_llm_start: float | None = None  # ChatClient.stream started
    t_llm_end: float | None = None  # ... raised or finished: the caller gave up or was done
    t_end: float | None = None
    outcome: str = "running"  # answer | no-model | error
    kind: str = ""  # error kind
    message: str = ""
    exc: BaseException | None = None
    answer: Answer | None = None
    sends: list[float] = field(default_factory=list)  # client side, per HTTP request
    overdue_noted: bool = False
    hang_noted: bool = False
    t_first: float | None = None  # the answer's first piece reached the asker
    queue_wait_s: float = 0.0  # waited for a slot (rag_app.llm.queue), all its LLM calls
    waiting_since: float | None = None  # waiting for a slot now, since then
    max_ahead: int = 0  # the most questions it was told were ahead of it
    cut: bool = False  # still waiting for a slot when the run ended: cancelled there
    cancel: threading.Event = field(default_factory=threading.Event)

    def on_queue(self, status: Any) -> None:
        """rag_app.llm.queue's listener: this request's place while it waits for a slot."""
        now = time.monotonic()
        if status.ahead > 0:
            self.max_ahead = max(self.max_ahead, status.ahead)
            if self.waiting_since is None:
                self.waiting_since = now
        else:
            self.queue_wait_s += status.waited_s
            self.waiting_since = None
            self.t_llm_start = now  # the LLM deadline starts once it has a slot

    def waited(self, now: float) -> float:
        """Seconds waited for a slot so far (none of the deadlines counts them)."""
        return self.queue_wait_s + (now - self.waiting_since if self.waiting_since else 0.0)

    @property
    def llm_s(self) -> float | None:
        if self.t_llm_start is None or self.t_llm_end is None:
            return None
        return self.t_llm_end - self.t_llm_start


class _RequestChat(ChatClient):
    """One `answer()` call's view of the shared ChatClient: same settings, same openai client
    and connection pool, with the request id as a header; records when the LLM call ran."""

    def __init__(self, base: ChatClient, openai_client: Any, trace: Trace) -> None:
        # no super().__init__: that would make a new openai client and connection pool
        self.endpoint = base.endpoint
        self._settings = base._settings
        self._client = openai_client.with_options(default_headers={REQUEST_ID_HEADER: trace.rid})
        self.trace = trace

    def stream(self, messages: Sequence[dict[str, str]], **kwargs: Any) -> Iterator[str]:
        self.trace.t_llm_start = time.monotonic()
        kwargs.setdefault("cancel", self.trace.cancel)  # set when the run ends while it waits
        try:
            yield from super().stream(messages, **kwargs)
        finally:
            self.trace.t_llm_end = time.monotonic()


# --- the run ----------------------------------------------------------------------------------
@dataclass
class LoadReport:
    target: str
    seconds: float
    askers: int
    deadline_s: float
    margin_s: float
    traces: list[Trace]
    arrivals: list[Arrival]
    wall_s: float
    notes: list[str] = field(default_factory=list)  # watchdog findings, with stacks
    hung: list[str] = field(default_factory=list)  # request ids still running at the end
    extra_rows: list[tuple[str, str]] = field(default_factory=list)
    marks: dict[str, list[tuple[float, str]]] = field(default_factory=dict)  # more events
    t_ref: float | None = None  # time.monotonic() at 0 s of llama.cpp's log clock, if known
    server_events: list[str] = field(default_factory=list)  # llama.cpp's, on that clock

    # -- figures -----------------------------------------------------------------------------
    @property
    def done(self) -> list[Trace]:
        return [t for t in self.traces if t.t_end is not None]

    @property
    def errors(self) -> list[Trace]:
        return [t for t in self.done if t.outcome == "error"]

    @property
    def non_llm_errors(self) -> list[Trace]:
        return [t for t in self.errors if not isinstance(t.exc, LLMError) or not t.message]

    @property
    def over_deadline(self) -> list[Trace]:
        return [t for t in self.traces if t.llm_s is not None
                and t.llm_s > self.deadline_s + self.margin_s]

    def sent_after_give_up(self) -> list[tuple[str, float]]:
        """(request id, seconds late) for each HTTP request the client sent after its caller's
        `stream` had raised or finished."""
        out = []
        for t in self.traces:
            if t.t_llm_end is None:
                continue
            out += [(t.rid, s - t.t_llm_end) for s in t.sends if s > t.t_llm_end]
        return out

    def arrived_after_give_up(self) -> list[tuple[str, float]]:
        """(request id, seconds late) for each request the server received after its caller
        gave up (or was done); a request of no known call counts too (late = inf)."""
        by_rid = {t.rid: t for t in self.traces}
        out = []
        for a in self.arrivals:
            t = by_rid.get(a.rid)
            if t is None:
                out.append((a.rid or "(no id)", float("inf")))
            elif t.t_llm_end is not None and a.t > t.t_llm_end:
                out.append((a.rid, a.t - t.t_llm_end))
        return out

    def describe(self, rid: str, t_ref: float | None = None) -> str:
        """One request's story, times relative to the start of its LLM phase (or `t_ref`):
        each HTTP request sent and what the server did with it, and when the caller gave
        up."""
        trace = next((t for t in self.traces if t.rid == rid), None)
        if trace is None or trace.t_llm_start is None:
            return f"{rid}: no LLM phase"
        t0 = trace.t_llm_start if t_ref is None else t_ref
        got = [a for a in self.arrivals if a.rid == rid]
        events = [(s - t0, "sent") for s in trace.sends]
        events += [(a.t - t0, f"received ({a.outcome})") for a in got]
        events += [(t - t0, what) for t, what in self.marks.get(rid, [])]
        events.append((trace.t_llm_start - t0, "LLM phase starts"))
        if trace.t_llm_end is not None:
            events.append((trace.t_llm_end - t0, "caller gave up" if trace.outcome == "error"
                           else "caller done"))
        story = "; ".join(f"{t:+.3f} {what}" for t, what in sorted(events))
        return f"{rid}: {story} ({trace.kind or trace.outcome}: {trace.message[:120]})"

    def concurrency_row(self) -> list[str]:
        """This run's line of the README's concurrency table: askers, answers, answers/min
        (over the wall time, draining included), p50/p95 time to the first source (answer()
        returned) and to the first token, the queue wait, and what did not finish."""
        done = self.done
        answered = [t for t in done if t.outcome == "answer" and t.t_first is not None]
        firsts = [t.t_first - t.t_call for t in answered if t.t_first is not None]
        sources = [t.t_hits - t.t_call for t in self.traces if t.t_hits is not None]
        waits = [t.queue_wait_s for t in answered]
        cut = [t for t in self.traces if t.cut]
        errors = [t for t in done if t.outcome == "error"]
        # a question cut in the queue would have had its first token later than it waited
        # there: its wait is a lower bound, and a p95 that falls on one is shown as "> x"
        bounds = sorted([(x, False) for x in firsts]
                        + [((t.t_end or t.t_call) - t.t_call, True) for t in cut])
        p95_first = "-"
        if bounds:
            value, lower = bounds[min(len(bounds) - 1, round(0.95 * (len(bounds) - 1)))]
            p95_first = f"{'> ' if lower else ''}{value:.1f}"
        return [str(self.askers), str(len(answered)),
                f"{len(answered) / self.wall_s * 60:.2f}",
                f"{_q(sources, 0.5)} / {_q(sources, 0.95)}",
                f"{_q(firsts, 0.5)} / {p95_first}",
                f"{_q(waits, 0.5)} / {_q(waits, 0.95)} / {_q(waits, 1.0)}",
                str(max((t.max_ahead for t in self.traces), default=0)),
                f"{len(cut)} / {len(errors)}", _cached(answered), f"{self.wall_s:.0f}"]

    def table(self) -> list[str]:
        done = self.done
        e2e = [t.t_end - t.t_call for t in done if t.t_end is not None]
        llm = [t.llm_s for t in done if t.llm_s is not None]
        retrieval = [t.t_hits - t.t_call for t in done if t.t_hits is not None]
        outcomes = Counter(t.outcome for t in done)
        kinds = Counter(t.kind for t in self.errors)
        answered = [t for t in done if t.outcome == "answer"]
        found = sum(1 for t in answered if t.answer is not None and t.answer.found)
        sent = self.sent_after_give_up()
        arrived = self.arrived_after_give_up()
        late = [x for x in arrived if x[1] > TRANSIT_S]
        rows: list[tuple[str, str]] = [
            ("target", self.target),
            ("askers x seconds (wall, incl. draining)",
             f"{self.askers} x {self.seconds:g} s ({self.wall_s:.0f} s)"),
            ("requests (answer() calls) / finished", f"{len(self.traces)} / {len(done)}"),
            ("HTTP requests sent (retries included) / received",
             f"{sum(len(t.sends) for t in self.traces)} / {len(self.arrivals)}"),
            ("answers from the model (found / not found)",
             f"{len(answered)} ({found} / {len(answered) - found})"),
            ("'not found' before the model (no LLM request)", str(outcomes.get("no-model", 0))),
            ("errors (all LLMError with a message?)",
             f"{len(self.errors)} ({'yes' if not self.non_llm_errors else 'NO'})"),
            *((f"  error: {k}", str(n)) for k, n in sorted(kinds.items(), key=lambda x: -x[1])),
            ("latency, whole request: p50 / p95 / max", _pcts(e2e)),
            ("  retrieval (answer() until sources known): p50 / p95 / max", _pcts(retrieval)),
            ("  LLM phase: p50 / p95 / max", _pcts(llm)),
            ("LLM deadline (llm_total_timeout_s) + margin", f"{self.deadline_s:g} s + "
             f"{self.margin_s:g} s"),
            ("LLM phases over deadline + margin", str(len(self.over_deadline))),
            ("hung (unfinished at the end)", str(len(self.hung))),
            ("watchdog notes (overdue / hung, stacks below)", str(len(self.notes))),
            ("HTTP requests sent after the caller gave up (client side)", str(len(sent))),
            ("HTTP requests received after the caller gave up (server side; "
             f">{TRANSIT_S:g} s late)", f"{len(arrived)} ({len(late)})"),
            *self.extra_rows,
        ]
        return ["| figure | value |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)]


CONCURRENCY_HEAD = ("| askers | answers | answers/min | first source s p50 / p95 | first token s "
                    "p50 / p95 | queue wait s p50 / p95 / max | most ahead | cut in queue / "
                    "errors | prompt tokens from llama.cpp's cache | wall s |")


def _cached(traces: Sequence[Trace]) -> str:
    """The share of the answers' prompt tokens the server reused from its cache: the askers
    draw from a short list, and a question asked before is read almost whole from it."""
    timings = [t.answer.timings for t in traces if t.answer is not None]
    read = sum(x.prompt_tokens or 0 for x in timings)
    cached = sum(x.cached_tokens or 0 for x in timings)
    return f"{cached / read:.0%}" if read else "-"


def _q(values: Sequence[float], p: float) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    value = ordered[min(len(ordered) - 1, round(p * (len(ordered) - 1)))]
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def _pcts(values: Sequence[float]) -> str:
    if not values:
        return "-"
    ordered = sorted(values)

    def q(p: float) -> float:
        return ordered[min(len(ordered) - 1, round(p * (len(ordered) - 1)))]

    return f"{statistics.median(ordered):.2f} / {q(0.95):.2f} / {ordered[-1]:.2f} s"


def load_questions(path: Path = QUESTIONS) -> list[str]:
    return [json.loads(line)["question"] for line in path.read_text().splitlines()
            if line.strip()]


def run_load(settings: Settings, retriever: Retriever, endpoint: Endpoint,
             questions: Sequence[str], arrivals: Callable[[], list[Arrival]], *,
             seconds: float, askers: int = 8, seed: int = 1, margin_s: float = STUB_MARGIN_S,
             target: str = "", hang_after_s: float = HANG_AFTER_S,
             log: Callable[[str], None] = lambda _: None) -> LoadReport:
    """`askers` threads ask `questions` (seeded random order) through `answer()` for
    `seconds`, then finish what runs; a watchdog notes LLM phases past their deadline +
    `margin_s` and requests unfinished `hang_after_s` after that."""
    import openai

    from rag_app.answering import answer
    from rag_app.llm.queue import listening

    deadline_s = float(settings.llm_total_timeout_s or 0)
    if not deadline_s:
        raise ValueError("set llm_total_timeout_s: the load test checks each request against it")
    traces: list[Trace] = []
    by_rid: dict[str, Trace] = {}
    inflight: dict[str, tuple[Trace, int]] = {}  # rid -> (trace, thread ident)
    lock = threading.Lock()

    def on_send(request: Any) -> None:  # httpx request hook: the request is leaving
        now = time.monotonic()
        trace = by_rid.get(request.headers.get(REQUEST_ID_HEADER, ""))
        if trace is not None:
            trace.sends.append(now)

    base = ChatClient(endpoint, settings)
    http = openai.DefaultHttpxClient(event_hooks={"request": [on_send]})
    shared = base._client.with_options(http_client=http)
    stop_at = time.monotonic() + seconds

    def ask(n: int) -> None:
        rng = random.Random(seed * 1000 + n)
        i = 0
        while time.monotonic() < stop_at:
            i += 1
            q = rng.choice(questions)
            trace = Trace(f"a{n}-{i}", n, q, time.monotonic())
            with lock:
                traces.append(trace)
                by_rid[trace.rid] = trace
                inflight[trace.rid] = (trace, threading.get_ident())
            try:
                with listening(trace.on_queue):
                    stream = answer(q, settings=settings, retriever=retriever,
                                    chat=_RequestChat(base, shared, trace))
                    trace.t_hits = time.monotonic()
                    for _ in stream:
                        if trace.t_first is None:
                            trace.t_first = time.monotonic()
                trace.answer = stream.result
                trace.outcome = ("cut" if trace.cut else "answer" if trace.t_llm_start is not None
                                 else "no-model")
            except BaseException as exc:  # noqa: BLE001 - every failure is recorded
                trace.outcome, trace.exc = "error", exc
                trace.kind, trace.message = error_kind(exc), str(exc)
            finally:
                trace.t_end = time.monotonic()
                with lock:
                    inflight.pop(trace.rid, None)

    notes: list[str] = []
    watching = threading.Event()

    def watchdog() -> None:
        while not watching.wait(0.2):
            now = time.monotonic()
            with lock:
                running = list(inflight.values())
            for trace, ident in running:
                if now >= stop_at and trace.waiting_since is not None and not trace.cut:
                    trace.cut = True  # the run is over: a question still waiting leaves
                    trace.cancel.set()
                if trace.waiting_since is not None:
                    continue  # waiting for a slot: no deadline runs (RAG_LLM_QUEUE_TIMEOUT_S)
                note = ""
                if (trace.t_llm_start is not None and trace.t_llm_end is None
                        and now - trace.t_llm_start > deadline_s + margin_s
                        and not trace.overdue_noted):
                    trace.overdue_noted = True
                    note = (f"{trace.rid}: LLM phase still running {now - trace.t_llm_start:.1f}"
                            f" s after it began (deadline {deadline_s:g} s + {margin_s:g} s)")
                elif (now - trace.t_call - trace.waited(now)
                      > deadline_s + margin_s + hang_after_s and not trace.hang_noted):
                    trace.hang_noted = True
                    note = (f"{trace.rid}: request running {now - trace.t_call:.1f} s "
                            f"(LLM phase {'not started' if trace.t_llm_start is None else 'on'})")
                if note:
                    frame = sys._current_frames().get(ident)
                    stack = "".join(traceback.format_stack(frame)[-12:]) if frame else "?"
                    notes.append(f"{note}\n{stack}")
                    log(f"WATCHDOG {note}")

    t0 = time.monotonic()
    threads = [threading.Thread(target=ask, args=(n,), daemon=True, name=f"asker-{n}")
               for n in range(askers)]
    dog = threading.Thread(target=watchdog, daemon=True, name="watchdog")
    dog.start()
    for t in threads:
        t.start()
    end_by = stop_at + deadline_s + margin_s + hang_after_s + 30
    for t in threads:
        t.join(max(0.0, end_by - time.monotonic()))
    watching.set()
    dog.join(5)
    wall = time.monotonic() - t0
    time.sleep(TRANSIT_S * 4)  # let the server log what was in flight
    with lock:
        hung = sorted(inflight)
    return LoadReport(target, seconds, askers, deadline_s, margin_s, list(traces),
                      list(arrivals()), wall, notes, hung)


# --- a pass-through proxy that logs arrivals (for the local server) -----------------------------
class _ProxyHandler(BaseHTTPRequestHandler):
    server: Any
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        arrived = time.monotonic()
        rid = self.headers.get(REQUEST_ID_HEADER, "")
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.arrivals.append(Arrival(rid, arrived, "local", "forwarded"))
        self.close_connection = True
        head = [f"{self.command} {self.path} HTTP/1.1"]
        head += [f"{k}: {v}" for k, v in self.headers.items()
                 if k.lower() not in ("connection", "keep-alive", "proxy-connection")]
        head.append("Connection: close")
        client = self.connection
        try:
            upstream = socket.create_connection(self.server.upstream, timeout=10)
        except OSError:
            return  # the client sees a dropped connection
        watch = selectors.DefaultSelector()  # not select.select: no limit on descriptors
        watch.register(upstream, selectors.EVENT_READ)
        watch.register(client, selectors.EVENT_READ)
        try:
            upstream.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
            while True:
                ready = [key.fileobj for key, _ in watch.select(1.0)]
                if upstream in ready:
                    data = upstream.recv(65536)
                    if not data:
                        break
                    now = time.monotonic()
                    self.server.first_byte.setdefault(rid, now)
                    if b"data:" in data:
                        self.server.first_data.setdefault(rid, now)
                    client.sendall(data)
                if client in ready:
                    if not client.recv(1, socket.MSG_PEEK):
                        self.server.client_gone[rid] = time.monotonic()
                        break  # the caller went away: close the upstream request too
                    watch.unregister(client)  # unexpected bytes: stop watching, keep forwarding
        except OSError:
            self.server.client_gone[rid] = time.monotonic()
        finally:
            watch.close()
            upstream.close()


class _ProxyServer(ThreadingHTTPServer):
    request_queue_size = 128  # not socketserver's 5: a burst of askers must not lose a SYN


@contextmanager
def arrival_proxy(upstream_port: int) -> Iterator[Any]:
    server: Any = _ProxyServer(("127.0.0.1", 0), _ProxyHandler)
    server.daemon_threads = True
    server.upstream = ("127.0.0.1", upstream_port)
    server.arrivals = []
    server.client_gone = {}  # rid -> when the client's connection closed mid-request
    server.first_byte = {}  # rid -> llama.cpp's first byte of the response (headers)
    server.first_data = {}  # rid -> its first server-sent event (the first token)
    thread = threading.Thread(target=server.serve_forever, daemon=True, name="proxy")
    thread.start()
    server.base_url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


# --- the command ------------------------------------------------------------------------------
SHOWN_SETTINGS = ("llm_connect_timeout_s", "llm_first_token_timeout_s", "llm_idle_timeout_s",
                  "llm_total_timeout_s", "llm_max_retries", "llm_max_tokens", "llm_threads",
                  "llm_bundled_model", "llm_context_size", "retrieval_k", "answer_check",
                  "condense_questions", "embedding_backend")


def describe_settings(settings: Settings) -> str:
    return ", ".join(f"{k}={getattr(settings, k)}" for k in SHOWN_SETTINGS)


def _proxy_rows(load: LoadReport, proxy: Any) -> list[tuple[str, str]]:
    """What the proxy saw: waits for llama.cpp's first byte, and callers that left first."""
    by_rid = {t.rid: t for t in load.traces}
    arrived = {a.rid: a.t for a in proxy.arrivals}
    for name, times in (("llama.cpp's first byte", proxy.first_byte),
                        ("llama.cpp's first event", proxy.first_data),
                        ("proxy: client gone, upstream closed", proxy.client_gone)):
        for r, t in times.items():
            load.marks.setdefault(r, []).append((t, name))
    waits = [proxy.first_byte[r] - t for r, t in arrived.items() if r in proxy.first_byte]
    left_first = [r for r, gone in proxy.client_gone.items()
                  if proxy.first_byte.get(r, float("inf")) > gone]
    lag = [gone - by_rid[r].t_llm_end for r, gone in proxy.client_gone.items()
           if r in by_rid and by_rid[r].t_llm_end is not None]
    return [
        ("llama.cpp's first byte after arrival (queue + prompt): p50 / p95 / max",
         _pcts(waits)),
        ("requests whose caller left before llama.cpp's first byte", str(len(left_first))),
        ("connection closed after the caller gave up: p50 / p95 / max", _pcts(lag)),
    ]


_LOG_LINE = re.compile(r"^(\d+)\.(\d+)\.(\d+)\.(\d+) \w (.*)$")


def parse_llama_log(text: str) -> dict[str, dict[int, float]]:
    """llama.cpp's task events from its log (times in seconds since the server started):
    launch, done (timings printed: the answer was generated), cancel, release."""
    events: dict[str, dict[int, float]] = {"launch": {}, "done": {}, "cancel": {}, "release": {}}
    patterns = {"launch": r"launch_slot_: .*\| task (\d+) \| processing task",
                "done": r"print_timing: .*\| task (\d+) \| +total time",
                "cancel": r"cancel task, id_task = (\d+)",
                "release": r"release: .*\| task (\d+) \| stop processing"}
    for line in text.splitlines():
        m = _LOG_LINE.match(line)
        if not m:
            continue
        t = int(m[1]) * 60 + int(m[2]) + int(m[3]) / 1e3 + int(m[4]) / 1e6
        for name, pattern in patterns.items():
            found = re.search(pattern, m[5])
            if found:
                events[name].setdefault(int(found[1]), t)
    return events


def _local_log_summary(path: Path | None, since: int) -> list[tuple[str, str]]:
    """What llama.cpp's own log says about the run (from byte `since`): tasks generated,
    cancelled in the queue, cancelled on the slot, and slot time spent on cancelled tasks."""
    if path is None or not path.exists():
        return [("llama.cpp log", "not found")]
    ev = parse_llama_log(path.read_bytes()[since:].decode(errors="replace"))
    launched, cancelled = ev["launch"], ev["cancel"]
    on_slot = [k for k in cancelled if k in launched]
    spent = sum(ev["release"].get(k, launched[k]) - launched[k] for k in on_slot)
    after_cancel = [ev["release"].get(k, cancelled[k]) - cancelled[k] for k in on_slot]
    busy = sum(ev["release"].get(k, v) - v for k, v in launched.items())
    return [
        ("llama.cpp: tasks launched on the slot / answers generated", f"{len(launched)} / "
         f"{len(ev['done'])}"),
        ("llama.cpp: tasks cancelled in the queue / on the slot",
         f"{len(cancelled) - len(on_slot)} / {len(on_slot)}"),
        ("llama.cpp: slot busy, in all / on tasks cancelled later",
         f"{busy:.0f} s / {spent:.0f} s"),
        ("llama.cpp: slot still busy after a cancel: each", ", ".join(
            f"{x:.1f} s" for x in after_cancel) or "-"),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=120.0)
    p.add_argument("--askers", default="8",
                   help="concurrent askers; a list (1,4,8) runs each in turn, one server, and "
                        "ends with the concurrency table (README)")
    p.add_argument("--slots", type=int,
                   help="RAG_LLM_SLOTS: the local server's slots (default: from the machine); "
                        "with the stub, a queue of that many in front of it")
    p.add_argument("--target", choices=["stub", "local", "both"], default="stub")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--first-token", type=float, help="llm_first_token_timeout_s")
    p.add_argument("--idle", type=float, help="llm_idle_timeout_s")
    p.add_argument("--total", type=float, help="llm_total_timeout_s (the deadline checked)")
    p.add_argument("--no-warmup", action="store_true",
                   help="local: skip the one request asked alone before the load")
    args = p.parse_args(argv)
    levels = [int(x) for x in str(args.askers).split(",") if x.strip()]
    for name, value in (("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1"),
                        ("ANONYMIZED_TELEMETRY", "False")):
        os.environ.setdefault(name, value)

    from ingest.entry import sync_paths
    from rag_app.embedders.auto import make_embedder
    from rag_app.hardware import detect
    from rag_app.retrieve import Retriever
    from rag_app.settings import Settings
    from tests.openai_stub import openai_stub

    overrides = {k: v for k, v in (("llm_first_token_timeout_s", args.first_token),
                                   ("llm_idle_timeout_s", args.idle),
                                   ("llm_total_timeout_s", args.total),
                                   ("llm_slots", args.slots)) if v is not None}
    print(f"CPU: {detect().summary()}")
    questions = load_questions()
    failed = False
    with tempfile.TemporaryDirectory(prefix="load-answer-") as tmp:
        base = Settings(_env_file=None, state_dir=Path(tmp) / "state",  # type: ignore[call-arg]
                        cache_dir=REPO / "data" / "cache", collection="load-bench")
        t = time.perf_counter()
        emb = make_embedder(base)
        report = sync_paths(base, [SAMPLES], embedder=emb)
        print(f"ingested {SAMPLES.relative_to(REPO)} into a throwaway store in "
              f"{time.perf_counter() - t:.1f} s ({getattr(report, 'chunks_added', '?')} chunks "
              f"added); {len(questions)} questions from {QUESTIONS.relative_to(REPO)}")
        retriever = Retriever(base, embedder=emb)
        retriever.search("warm up")
        targets = ["stub", "local"] if args.target == "both" else [args.target]
        rows: list[str] = []
        for target in targets:
            limits = dict(STUB_LIMITS if target == "stub" else LOCAL_LIMITS, **overrides)
            settings = base.model_copy(update=limits)
            print(f"\n== {target}: {describe_settings(settings)}", flush=True)
            if target == "stub":
                loads = []
                for askers in levels:
                    cache_before = emb.query_cache_info()
                    with openai_stub(seed=args.seed) as stub:
                        load = run_load(settings, retriever,
                                        Endpoint(stub.base_url, "chaos", "sk-x",
                                                 slots=args.slots),
                                        questions, lambda: list(stub.arrivals),
                                        seconds=args.seconds, askers=askers, seed=args.seed,
                                        margin_s=STUB_MARGIN_S, log=print,
                                        target=f"chaos stub on 127.0.0.1 (seed {args.seed})")
                        fates = Counter(a.outcome for a in stub.arrivals)
                        load.extra_rows.append(("stub's draws per HTTP request", ", ".join(
                            f"{k} {v}" for k, v in sorted(fates.items(), key=lambda x: -x[1]))))
                    load.extra_rows.append(("query-embedding cache: hits / lookups",
                                            _cache_row(cache_before, emb.query_cache_info())))
                    loads.append(load)
            else:
                loads = _run_local(settings, retriever, questions, args, levels)
            for load in loads:
                rows.append(f"| {target} | " + " | ".join(load.concurrency_row()) + " |")
                failed |= _report(load)
        print(f"\nConcurrency ({detect().summary()}; slots: {args.slots or 'from the machine'}):")
        print("| target " + CONCURRENCY_HEAD)
        print("|---" * (CONCURRENCY_HEAD.count("|")) + "|")
        print("\n".join(rows))
    return 1 if failed else 0


def _report(load: LoadReport) -> bool:
    """Print one run's table and findings; True when it failed a reliability check."""
    print("\n".join(load.table()))
    for note in load.notes:
        print(f"\nWATCHDOG {note}")
    for rid, late in load.sent_after_give_up():
        print(f"sent after give-up (+{late * 1000:.1f} ms): {load.describe(rid)}")
    for rid, late in load.arrived_after_give_up():
        print(f"received after give-up (+{late * 1000:.1f} ms): {load.describe(rid)}")
    if load.target.startswith("bundled"):
        clock = ("llama.cpp's log clock (s since it started)" if load.t_ref is not None
                 else "s since each LLM phase began")
        print(f"\nEach request, on {clock}:")
        for trace in load.traces:
            print("  " + load.describe(trace.rid, t_ref=load.t_ref))
        if load.server_events:
            print("llama.cpp's tasks:\n  " + "\n  ".join(load.server_events))
    for trace in load.non_llm_errors:
        print(f"not an LLMError: {trace.rid}: {trace.kind}: {trace.message[:300]}")
    return bool(load.over_deadline or load.hung or load.notes
                or load.non_llm_errors or load.sent_after_give_up()
                or [x for x in load.arrived_after_give_up() if x[1] > TRANSIT_S])


def _cache_row(before: Any, after: Any) -> str:
    """Hits / lookups of the query-embedding cache between two cache_info()s, with the rate:
    the askers draw their questions from a short list, so most lookups repeat one."""
    hits, lookups = after.hits - before.hits, (after.hits + after.misses
                                               - before.hits - before.misses)
    return f"{hits} / {lookups} ({hits / lookups:.0%})" if lookups else "0 / 0"


def _run_local(settings: Settings, retriever: Retriever, questions: Sequence[str],
               args: argparse.Namespace, levels: Sequence[int]) -> list[LoadReport]:
    """One run per number of askers in `levels`, one after the other, against one server."""
    from rag_app.answering import answer
    from rag_app.llm.local import ensure_server, stop_all

    t = time.perf_counter()
    server = ensure_server(settings)
    print(f"local server {server.model_name} ready in {time.perf_counter() - t:.1f} s "
          f"(pid {server.pid}, {server.threads} threads, {server.slots} slots, "
          f"log {server.log_path})", flush=True)
    loads: list[LoadReport] = []
    try:
        log_start = server.log_path.stat().st_size if server.log_path else 0
        with arrival_proxy(server.port) as proxy:
            endpoint = Endpoint(proxy.base_url, server.model_name, server.api_key,
                                slots=server.slots)
            alone, t_warm = "skipped", None
            if not args.no_warmup:
                q = questions[0]
                t = time.perf_counter()
                stream = answer(q, settings=settings, retriever=retriever,
                                chat=ChatClient(endpoint, settings))
                text = "".join(stream)
                first = stream.result.timings.first_token_s
                alone = (f"first token {first:.1f} s, total {time.perf_counter() - t:.1f} s "
                         f"({text[:60]!r})" if first is not None else "no model call")
                print(f"one request alone: {alone}", flush=True)
                t_warm = proxy.arrivals[0].t if proxy.arrivals else None
            for askers in levels:
                log_start = server.log_path.stat().st_size if server.log_path else 0
                proxy.arrivals.clear()
                proxy.first_byte.clear()
                proxy.first_data.clear()
                proxy.client_gone.clear()
                load = run_load(settings, retriever, endpoint, questions,
                                lambda: list(proxy.arrivals), seconds=args.seconds,
                                askers=askers, seed=args.seed, margin_s=LOCAL_MARGIN_S,
                                log=print, target=f"bundled {server.model_name} via llama.cpp "
                                f"on 127.0.0.1 ({server.slots} slots, {server.threads} threads)"
                                ", behind an arrival proxy")
                load.extra_rows.append(("one request alone, before the load", alone))
                if t_warm is not None and server.log_path is not None:
                    # the warm-up request was launched at once: align its arrival with that
                    ev = parse_llama_log(server.log_path.read_text(errors="replace"))
                    if ev["launch"]:
                        load.t_ref = t_warm - min(ev["launch"].values())
                        load.server_events = [
                            f"{t:8.3f} task {task} {name}" for t, task, name in sorted(
                                (t, task, name) for name, tasks in ev.items()
                                for task, t in tasks.items())]
                load.extra_rows += _proxy_rows(load, proxy)
                load.extra_rows += _local_log_summary(server.log_path, log_start)
                loads.append(load)
                print(f"-- {askers} askers: " + " | ".join(load.concurrency_row()), flush=True)
            if server.log_path is not None and server.log_path.exists():
                kept = Path(tempfile.gettempdir()) / "load-answer-local-llm.log"
                kept.write_bytes(server.log_path.read_bytes())
                print(f"llama.cpp's log kept in {kept}")
            return loads
    finally:
        stop_all()

if __name__ == "__main__":
    sys.exit(main())
