"""`rag COMMAND`: the one command-line tool. Ingest documents, ask a question, show what the
index holds, serve the chat in the browser, serve the HTTP API, evaluate.

`rag ingest ARGS` runs ingest/cli.py's main (also `python -m ingest`, `rag-ingest`) and `rag eval
ARGS` rag_app/eval/cli.py's (also `python -m rag_app.eval`); `python -m rag_app` is `rag`.
Settings load one way for every command (`rag_app.settings.load_settings`) and every command
exits by the one table in rag_app/errors.py.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rag_app.errors import EXIT_CODES_HELP, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, report_error
from rag_app.helptext import examples, wrap
from rag_app.settings import Settings, load_settings

PROG = "rag"
DESCRIPTION = ("Chat with a folder of your own documents from the terminal: ingest them into "
               "the index, ask a question (an answer with its sources), show what the index "
               "holds, serve the chat in the browser, serve the HTTP API, evaluate retrieval "
               "and answers.")
SETTINGS_NOTE = ("Settings come from RAG_* environment variables (OPENAI_* for the LLM "
                 "endpoint, CHROMA_* for a Chroma server) and .env; .env.example lists every "
                 "one. Options win.")
RawHelp = argparse.RawDescriptionHelpFormatter

# Subcommands that are whole programs of their own: `rag NAME ARGS` is their main(ARGS).
DELEGATED = {
    "ingest": "load PDFs, Markdown, text, HTML, Office files into the index (sync a folder); "
              "`rag ingest --help` for its options",
    "eval": "evaluate retrieval and answers, compare configurations (beir|qa); "
            "`rag eval --help` for its options",
}


def _epilog(prog: str, rows: Sequence[tuple[str, str]], *notes: str) -> str:
    parts = [examples(prog, rows), *(wrap(n) for n in notes), EXIT_CODES_HELP]
    return "\n\n".join(p for p in parts if p) + "\n"


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog, description=wrap(DESCRIPTION), formatter_class=RawHelp,
        epilog=_epilog(prog, [
            ("ingest ./docs", "put a folder into the index (re-run after edits)"),
            ('ask "How long is the warranty?"', "an answer with its sources"),
            ("stats", "what the index holds: files, pages, passages, model"),
            ("serve --docs ./docs", "the chat on http://127.0.0.1:8501"),
            ("api --port 8000", "the HTTP API on http://127.0.0.1:8000/v1"),
            ("eval qa q.jsonl --docs ./docs", "measure answers on a question set"),
            ("COMMAND --help", "every option of a command, with examples"),
        ], "The same commands: python -m rag_app COMMAND; python -m ingest (rag-ingest) for "
           "rag ingest; python -m rag_app.eval for rag eval.\n" + SETTINGS_NOTE))
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in ("ingest",):
        _delegated(sub, name)

    ask = sub.add_parser(
        "ask", help="answer a question from the documents, with its sources",
        description=wrap("Answer a question from the indexed documents: the answer streams "
                         "in, then its sources (file, page or section, the quoted sentences). "
                         "Without an LLM (--no-llm, or none available) the best passages are "
                         "shown instead."),
        formatter_class=RawHelp, epilog=_epilog(f"{prog} ask", [
            ('"How long is the warranty?"', "streamed answer + sources"),
            ('"warranty" --no-llm', "the best passages only, no model"),
            ('"..." --mode dense --k 8 --source manuals/', "dense only, 8 passages, one folder"),
            ('"..." --json', "machine-readable result"),
        ], "Uses the bundled local LLM unless OPENAI_BASE_URL is set.\n" + SETTINGS_NOTE))
    ask.add_argument("question")
    ask.add_argument("--collection", help="collection name (RAG_COLLECTION)")
    ask.add_argument("--k", type=int, help="passages given to the model (default: "
                     "RAG_RETRIEVAL_K, 3)")
    ask.add_argument("--mode", choices=["hybrid", "dense", "lexical"], default="hybrid",
                     help="retrieval: dense + BM25 fused (default), or one of them")
    ask.add_argument("--source", metavar="PATH", help="only files under this path")
    ask.add_argument("--mmr", action="store_true", help="diversify the retrieved passages")
    ask.add_argument("--no-rerank", action="store_true",
                     help="skip the reranker set in RAG_RERANKER_MODEL")
    ask.add_argument("--no-llm", action="store_true", help="show the best passages only")
    ask.add_argument("--json", action="store_true", help="machine-readable result")

    stats = sub.add_parser(
        "stats", help="what the index holds: files, pages, passages, model",
        description=wrap("What the index holds: its files (kind, pages, passages, last "
                         "error), the embedding model and the passage size."),
        formatter_class=RawHelp, epilog=_epilog(f"{prog} stats", [
            ("", "a table of the indexed files"),
            ("--collection manuals", "another collection"),
            ("--json", "machine-readable"),
        ], SETTINGS_NOTE))
    stats.add_argument("--collection", help="collection name (RAG_COLLECTION)")
    stats.add_argument("--json", action="store_true", help="machine-readable output")

    serve = sub.add_parser(
        "serve", help="serve the chat in the browser (Streamlit), on 127.0.0.1 unless told "
        "otherwise",
        description=wrap("Serve the chat in the browser (Streamlit) with safe server "
                         "options: this machine only unless --allow-network, a Host "
                         "allow-list, XSRF protection, no error details in the page."),
        formatter_class=RawHelp, epilog=_epilog(f"{prog} serve", [
            ("", "the chat on http://127.0.0.1:8501"),
            ("--docs data/samples", "ingest this folder first when the index is empty"),
            ("--docs ./docs --watch", "and keep it in sync while the chat runs"),
            ("--port 8600", "another port"),
            ("--host 0.0.0.0 --allow-network --allowed-host chat.example.org",
             "behind an authenticating proxy"),
        ], "make run is rag serve --docs data/samples.\n" + SETTINGS_NOTE))
    serve.add_argument("--docs", type=Path, metavar="DIR",
                       help="ingest this folder first when the index is empty")
    serve.add_argument("--watch", action=argparse.BooleanOptionalAction, default=None,
                       help="keep --docs DIR in sync while the chat runs: files added, changed, "
                       "renamed or deleted are synced about a second after they settle, and "
                       "the Documents page says when the index last synced (RAG_WATCH; default "
                       "off: a sync embeds on the cores the local LLM answers with)")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default 127.0.0.1: this machine only; the "
                       "chat has no login, so an address other machines can reach also "
                       "needs --allow-network)")
    serve.add_argument("--port", type=int, default=8501,
                       help="port to listen on (default: %(default)s)")
    serve.add_argument("--allow-network", action="store_true",
                       help="allow a --host that other machines can reach (the chat has no "
                       "login: put an authenticating proxy in front)")
    serve.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                       help="another host name browsers may use to reach the server (e.g. "
                       "the proxy's); localhost, 127.0.0.1 and --host are always answered")

    api = sub.add_parser(
        "api", help="serve the HTTP API (OpenAI-compatible chat with sources, search, "
        "documents) on 127.0.0.1 unless told otherwise",
        description=wrap("Serve the HTTP API: OpenAI-compatible chat completions with "
                         "sources, search, documents. The schema is at /openapi.json."),
        formatter_class=RawHelp, epilog=_epilog(f"{prog} api", [
            ("", "http://127.0.0.1:8000/v1, this machine only"),
            ("--port 8001 --collection manuals", "another port and collection"),
            ("--host 0.0.0.0", "other machines too: needs RAG_API_KEY"),
        ], SETTINGS_NOTE))
    api.add_argument("--collection", help="collection name (RAG_COLLECTION)")
    api.add_argument("--host", default="127.0.0.1",
                     help="address to listen on (default 127.0.0.1: this machine only; any "
                     "other needs RAG_API_KEY)")
    api.add_argument("--port", type=int, default=8000,
                     help="port to listen on (default: %(default)s)")
    api.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                     help="another host name clients may use to reach the server (e.g. a "
                     "proxy's)")
    _delegated(sub, "eval")
    return p


def _delegated(sub: Any, name: str) -> None:
    """List a delegated command in the help; main() hands its arguments over untouched."""
    parser = sub.add_parser(name, help=DELEGATED[name], add_help=False)
    parser.add_argument("args", nargs=argparse.REMAINDER)


def _run_delegated(name: str, args: Sequence[str], prog: str) -> int:
    """`rag ingest ARGS` is `python -m ingest ARGS`; `rag eval ARGS` is `python -m
    rag_app.eval ARGS`: the same main(), imported only when asked for."""
    run: Callable[..., int]
    if name == "ingest":
        from ingest.cli import main as run
    else:
        from rag_app.eval.cli import main as run
    return run(list(args), prog=f"{prog} {name}")


def serve(args: argparse.Namespace, settings: Settings) -> int:
    """Ingest the sample folder into an empty index, then run the Streamlit app with the
    safe server options (rag_app/ui/server.py: a local address unless --allow-network, a Host
    allow-list, XSRF protection, no error details in the page, security headers)."""
    import os
    import subprocess

    from ingest.entry import sync_paths
    from rag_app.service import index_overview
    from rag_app.ui.server import allowed_hosts, exposure_warning, is_loopback, streamlit_flags

    hosts = allowed_hosts(args.host, args.allowed_host)
    if not is_loopback(args.host):
        if not args.allow_network:
            print(f"error: --host {args.host} can be reached from other machines, and the chat "
                  "has no login. Add --allow-network to do it anyway (with an authenticating "
                  "proxy in front), or use --host 127.0.0.1.", file=sys.stderr)
            return EXIT_USAGE
        print(exposure_warning(args.host, args.port, hosts), file=sys.stderr)
    watch = settings.watch if args.watch is None else args.watch
    if watch and args.docs is None:
        if args.watch:
            print("error: --watch keeps the --docs folder in sync: add --docs DIR",
                  file=sys.stderr)
            return EXIT_USAGE
        print("note: RAG_WATCH is on but no --docs DIR was given: nothing to watch",
              file=sys.stderr)
        watch = False
    if args.docs is not None and not index_overview(settings).chunks:
        print(f"The index is empty: ingesting {args.docs} first …", file=sys.stderr)
        report = sync_paths(settings, [args.docs], command=f"{getattr(args, 'prog', PROG)} serve")
        print(f"{report.counts()['ingested']} files ingested, {report.chunks_total} passages",
              file=sys.stderr)
    app = Path(__file__).resolve().parent / "ui" / "app.py"
    command = [sys.executable, "-m", "streamlit", "run", str(app),
               *streamlit_flags(args.host, args.port, settings.upload_max_mb, hosts)]
    print(f"Open http://{_url_host(args.host)}:{args.port} in your browser (Ctrl+C stops the "
          "server).", file=sys.stderr)
    if watch:
        return _serve_watching(command, settings, args.docs, getattr(args, "prog", PROG))
    try:
        return subprocess.call(command, env=os.environ.copy())
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def _serve_watching(command: list[str], settings: Settings, docs: Path, prog: str) -> int:
    """Run the chat (a child process) and keep `docs` in sync from this one until the chat
    ends or Ctrl+C (ingest/watch.py; each sync takes the writer lock, so the chat's uploads go
    in between). An error that would fail every sync stops the watching, not the chat."""
    import os
    import subprocess
    import threading

    from ingest.watch import Round, round_line, watch_and_sync
    from rag_app.errors import RagError

    chat = subprocess.Popen(command, env=os.environ.copy())
    ended = threading.Event()

    def wait_for_chat() -> None:
        chat.wait()
        ended.set()

    threading.Thread(target=wait_for_chat, daemon=True, name="chat-server").start()
    said = ""

    def on_round(round_: Round) -> None:
        nonlocal said
        if round_.number == 0 or round_.changed_anything or round_.error != said:
            print(round_line(round_), file=sys.stderr, flush=True)
        said = round_.error

    try:
        print(f"Watching {docs} (changes are synced while the chat runs).", file=sys.stderr)
        try:
            watch_and_sync(settings, [docs], on_round=on_round, stop=ended,
                           command=f"{prog} serve --watch")
        except RagError as exc:
            print(f"not watching {docs}: {exc}", file=sys.stderr)
        return chat.wait()
    except KeyboardInterrupt:  # the chat's process got the Ctrl+C as well
        try:
            chat.wait(timeout=15)
        except (subprocess.TimeoutExpired, KeyboardInterrupt):
            chat.terminate()
        return EXIT_INTERRUPTED


def _url_host(host: str) -> str:
    if host in ("", "0.0.0.0", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def ask(args: argparse.Namespace, settings: Settings) -> int:
    from rag_app.answering import answer
    from rag_app.llm.queue import listening
    from rag_app.retrieve import RetrievalOptions

    said: list[int] = []

    def queued(status: Any) -> None:  # a place in the model's queue (rag_app.llm.queue)
        if status.ahead > 0 and status.ahead not in said[-1:]:
            print(status.text, file=sys.stderr, flush=True)
        said.append(status.ahead)

    options = RetrievalOptions(k=args.k or settings.retrieval_k, mode=args.mode,
                               source=args.source, mmr=args.mmr, rerank=not args.no_rerank)
    with listening(queued):
        stream = answer(args.question, settings=settings, options=options,
                        use_llm=not args.no_llm)
        if args.json:
            for _ in stream:
                pass
            print(json.dumps(stream.result.to_dict(), indent=2))
            return 0
        from rag_app.terminal import for_terminal as safe  # documents, model text are data

        for piece in stream:
            print(safe(piece), end="", flush=True)
    print()
    result = stream.result
    if result.notice:
        print(safe(result.notice), file=sys.stderr)
    if result.mode == "no-llm":
        for n, h in enumerate(result.hits, start=1):
            snippet = " ".join(safe(h.text).split())[:300]
            print(f"\n[{n}] {safe(h.location)}  (similarity {h.similarity:.2f})\n    {snippet}")
        return 0
    shown = result.citations or []
    if shown:
        print("\nSources:")
        for c in shown:
            hit = result.hits[c.number - 1]
            print(f"  [{c.number}] {safe(c.location)}  (similarity {hit.similarity:.2f})")
            for quote in c.quotes:
                print(f"      “{' '.join(safe(quote).split())}”")
    elif result.hits:
        if not result.found and result.evidence:
            print("\nNearest sentences in the documents (not checked as an answer):")
            for e in result.evidence:
                print(f"  [{e.source}] “{' '.join(safe(e.text).split())}”")
        print("\nNearest passages:" if not result.found else "\nRetrieved:")
        for n, h in enumerate(result.hits, start=1):
            print(f"  [{n}] {safe(h.location)}  (similarity {h.similarity:.2f})")
    flagged = [c for c in result.claims if c.text and not c.supported] if result.found else []
    if flagged:
        print("\nCheck these sentences: the sources do not state them as written:")
        for claim in flagged:
            reason = safe(claim.reason or "unsupported")
            print(f"  ! {' '.join(safe(claim.text).split())}\n      ({reason})")
    if result.flagged_sources:
        print(f"(instruction-like text in source(s) {result.flagged_sources} was not shown to "
              "the model)")
    if result.mode == "llm" and result.found and not result.grounded:
        print("(warning: the answer cites no retrieved source: treat it as ungrounded)")
    return 0


def stats(settings: Settings) -> dict[str, Any]:
    from rag_app.service import index_overview

    return index_overview(settings).to_dict()


def _print_stats(info: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    from rag_app.terminal import for_rich as safe  # names and errors are data, never markup

    console = Console()
    if not info["exists"]:
        console.print(f"Collection {safe(repr(info['collection']))} in the "
                      f"{safe(info['store'])} is empty. Fill it with: rag ingest PATH")
        return
    fp = info["fingerprint"]
    console.print(f"[bold]{safe(info['collection'])}[/bold] in the {safe(info['store'])}: "
                  f"{info['files']} files, {info['pages']} pages, {info['chunks']} passages; "
                  f"model {safe(fp.get('model'))} ({safe(fp.get('dimension'))}-d), passages of ≤"
                  f"{safe(fp.get('chunk_tokens'))} tokens", highlight=False)
    size = info.get("sizes") or {}
    if size:
        from rag_app.service import size_line

        console.print(safe(size_line(size)), highlight=False)
    from rag_app.service import languages_line

    console.print(safe(languages_line(info["languages"], info["languages_unknown"])),
                  highlight=False)
    # as the Documents page: a file without pages (Markdown, text, HTML) shows none, not 0;
    # what was recorded only since (OCR pages, language) shows "unknown" for older files
    table = Table("file", "kind", "length", "OCR", "language", "passages", "last error")
    for f in info["file_list"]:
        table.add_row(safe(f["source"]), safe(f["kind_label"]), safe(f["length"]),
                      safe(f["ocr"]),
                      safe("unknown" if f["language"] is None else f["language"]),
                      str(f["chunks"]), safe(f["error"]))
    console.print(table)


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    """`rag ARGS` (`python -m rag_app ARGS`): the exit code, by the table in rag_app/errors.py.
    Bad options exit 2 through argparse (SystemExit), as --help exits 0."""
    given = list(sys.argv[1:] if argv is None else argv)
    if given and given[0] in DELEGATED:
        return _run_delegated(given[0], given[1:], prog)
    args = build_parser(prog).parse_args(given)
    if args.command in DELEGATED:  # not reached: an option came before the command
        return _run_delegated(args.command, args.args, prog)
    args.prog = prog
    try:
        collection = getattr(args, "collection", None)
        overrides = {"collection": collection} if collection else {}
        # `Settings` looked up here, at call time: tests replace it with their own
        settings = load_settings(overrides, options={"collection": "--collection"},
                                 factory=Settings)
        import logging

        logging.basicConfig(level=settings.log_level,
                            format="%(levelname)s %(name)s: %(message)s")
        if args.command == "ask":
            return ask(args, settings)
        if args.command == "serve":
            return serve(args, settings)
        if args.command == "api":
            from rag_app.api.server import serve as serve_api

            return serve_api(settings, args.host, args.port, args.allowed_host)
        if args.command == "stats":
            info = stats(settings)
            if args.json:
                print(json.dumps(info, indent=2))
            else:
                _print_stats(info)
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - one line, the shared code
        return report_error(exc)
    return EXIT_OK
