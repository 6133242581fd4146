"""The HTTP API under 1, 4 and 8 concurrent clients, beside the chat's own path (issue 29).

    python bench/load_api.py [--target stub|local] [--clients 1,4,8] [--per-client N]
                             [--no-chat-path]

data/samples is ingested into a throwaway store (`ingest.entry.sync_paths`, the real
embedding model); `python -m rag_app api`'s app (`rag_app.api.app.create_app`, the chat's
`Services`) runs under uvicorn on 127.0.0.1 in this process. For each number of clients, that
many threads each ask `--per-client` questions of data/eval/samples-qa.jsonl (round robin) with
the official `openai` client, streamed; then, unless `--no-chat-path`, as many threads ask as
many questions through `rag_app.answering.answer` directly, sharing one retriever and one chat
client as the chat UI's sessions do (bench/load_answer.py measures that path's failures).
The chat path's row asks the questions after the API row's (the same question twice would be
read from llama.cpp's prompt cache), so the two rows' questions differ: read them as "about
the same", not as a fine comparison. The warm-up question is one no row asks.

- stub: tests/openai_stub.py's "json" model (a fixed answer in three pieces, no delay): what
  the API itself costs (retrieval, the checks, HTTP, SSE).
- local: the bundled llama.cpp model (one slot: answers queue), about 20 s an answer on 2 cores.

Measured per row: answers, errors (by HTTP status or exception), wall time, answers a minute,
time to the first answer piece and to the whole answer (p50 / p95 / max). Printed as a table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

QUESTIONS = REPO / "data" / "eval" / "samples-qa.jsonl"
SAMPLES = REPO / "data" / "samples"


@dataclass
class Row:
    path: str  # "API (openai client, streamed)" or "chat path (answer())"
    clients: int
    wall_s: float = 0.0
    first_s: list[float] = field(default_factory=list)
    total_s: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    messages: Counter[str] = field(default_factory=Counter)  # each error's message, counted
    found: int = 0

    @property
    def answers(self) -> int:
        return len(self.total_s)


def load_questions(path: Path = QUESTIONS) -> list[str]:
    return [json.loads(line)["question"] for line in path.read_text().splitlines()
            if line.strip()]


def _pcts(values: Sequence[float]) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return f"{statistics.median(ordered):.2f} / {p95:.2f} / {ordered[-1]:.2f}"


@contextmanager
def running_api(app: Any) -> Iterator[str]:
    import socket

    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the API did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(10)


def ask_api(base_url: str, model: str, question: str, row: Row, lock: threading.Lock) -> None:
    from openai import APIStatusError, OpenAI

    client = OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=900)
    t0 = time.perf_counter()
    first: float | None = None
    found = False
    try:
        with client.chat.completions.create(model=model, stream=True, messages=[
                {"role": "user", "content": question}]) as stream:
            for chunk in stream:
                if first is None and chunk.choices and chunk.choices[0].delta.content:
                    first = time.perf_counter() - t0
                if chunk.choices and chunk.choices[0].finish_reason:
                    found = bool((chunk.model_extra or {}).get("rag", {}).get("found"))
    except APIStatusError as exc:
        _failed(row, lock, f"HTTP {exc.status_code}", str(exc)[:300])
        return
    except Exception as exc:  # noqa: BLE001 - counted by kind
        _failed(row, lock, type(exc).__name__, f"{type(exc).__name__}: {str(exc)[:300]}")
        return
    _answered(row, lock, time.perf_counter() - t0, first, found)


def _answered(row: Row, lock: threading.Lock, total: float, first: float | None,
              found: bool) -> None:
    with lock:
        row.total_s.append(total)
        if first is not None:
            row.first_s.append(first)
        row.found += found


def _failed(row: Row, lock: threading.Lock, kind: str, message: str) -> None:
    with lock:
        row.errors[kind] += 1
        row.messages[message] += 1


def ask_chat_path(services: Any, question: str, row: Row, lock: threading.Lock) -> None:
    from rag_app.answering import answer

    t0 = time.perf_counter()
    first: float | None = None
    try:
        chat, notice = services.chat()
        stream = answer(question, settings=services.settings, retriever=services.retriever(),
                        chat=chat, use_llm=chat is not None, notice=notice)
        for piece in stream:
            if first is None and piece:
                first = time.perf_counter() - t0
        found = stream.result.found
    except Exception as exc:  # noqa: BLE001 - counted by kind
        _failed(row, lock, type(exc).__name__, f"{type(exc).__name__}: {str(exc)[:300]}")
        return
    _answered(row, lock, time.perf_counter() - t0, first, found)


def run_row(path: str, clients: int, questions: Sequence[str], per_client: int,
            ask: Callable[[str, Row, threading.Lock], None], offset: int = 0) -> Row:
    row = Row(path, clients)
    lock = threading.Lock()

    def client(i: int) -> None:
        for j in range(per_client):
            ask(questions[(offset + i * per_client + j) % len(questions)], row, lock)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    row.wall_s = time.perf_counter() - t0
    return row


def table(rows: Sequence[Row]) -> str:
    lines = ["| path | clients | answers | found | errors | wall s | answers/min | "
             "first piece s p50 / p95 / max | whole answer s p50 / p95 / max |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        errors = ", ".join(f"{k} ×{v}" for k, v in sorted(r.errors.items())) or "0"
        rate = 60 * r.answers / r.wall_s if r.wall_s else 0.0
        lines.append(f"| {r.path} | {r.clients} | {r.answers} | {r.found} | {errors} | "
                     f"{r.wall_s:.1f} | {rate:.1f} | {_pcts(r.first_s)} | "
                     f"{_pcts(r.total_s)} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--target", choices=["stub", "local"], default="stub")
    p.add_argument("--clients", default="1,4,8", help="comma-separated client counts")
    p.add_argument("--per-client", type=int, help="questions each client asks (default: 3 "
                   "with the stub, 1 with the local model)")
    p.add_argument("--no-chat-path", action="store_true",
                   help="skip the rows of the chat's own path (answer() in threads)")
    args = p.parse_args(argv)
    counts = [int(c) for c in args.clients.split(",") if c.strip()]
    per_client = args.per_client or (3 if args.target == "stub" else 1)

    from ingest.entry import sync_paths
    from rag_app.api.app import create_app
    from rag_app.embedders.auto import make_embedder
    from rag_app.settings import Settings
    from rag_app.ui.services import Services
    from tests.openai_stub import openai_stub

    questions = load_questions()
    with tempfile.TemporaryDirectory(prefix="load-api-") as tmp, (
            openai_stub() if args.target == "stub" else nullcontext()) as stub:
        values: dict[str, Any] = {
            "state_dir": Path(tmp) / "state", "collection": "samples",
            "documents_dir": Path(tmp) / "uploads", "chats_dir": Path(tmp) / "chats",
            "api_requests_per_minute": 0, "api_max_answers": max(counts)}
        if stub is not None:
            values.update(openai_base_url=stub.base_url, llm_model="json",
                          openai_api_key="stub")
        settings = Settings(_env_file=None, **values)  # type: ignore[call-arg]
        embedder = make_embedder(settings)
        t0 = time.perf_counter()
        report = sync_paths(settings, [SAMPLES], embedder=embedder)
        print(f"indexed {report.counts()['ingested']} files in "
              f"{time.perf_counter() - t0:.1f} s", file=sys.stderr)
        services = Services(settings)
        services.embedder = embedder
        chat, notice = services.chat()  # the model server up before the clock starts
        if chat is None:
            print(f"no model: {notice}", file=sys.stderr)
            return 2
        services.retriever()
        rows: list[Row] = []
        with running_api(create_app(settings, services=services)) as base_url:
            # warm-up with a question no row asks (llama.cpp reuses a prompt it just read)
            ask_api(base_url, "samples", questions[-1], Row("warm-up", 1), threading.Lock())
            for n in counts:
                rows.append(run_row("API (openai client, streamed)", n, questions[:-1],
                                    per_client,
                                    lambda q, r, lk: ask_api(base_url, "samples", q, r, lk)))
                print(table(rows[-1:]).splitlines()[-1], *rows[-1].messages, sep="\n",
                      file=sys.stderr)
                if not args.no_chat_path:  # the questions after the API row's
                    rows.append(run_row("chat path (answer() in threads)", n, questions[:-1],
                                        per_client,
                                        lambda q, r, lk: ask_chat_path(services, q, r, lk),
                                        offset=n * per_client))
                    print(table(rows[-1:]).splitlines()[-1], file=sys.stderr)
    import platform

    print(f"\ntarget {args.target}, {per_client} question(s) per client, "
          f"{platform.processor() or platform.machine()}, {__import__('os').cpu_count()} "
          f"cores, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n")
    print(table(rows))
    for r in rows:
        for message, n in r.messages.most_common():
            print(f"\n{r.path}, {r.clients} clients, ×{n}: {message}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
