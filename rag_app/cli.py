"""`python -m rag_app COMMAND`: look at the index from a terminal."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rag_app.errors import RagError
from rag_app.settings import Settings


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m rag_app", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    stats = sub.add_parser("stats", help="what the index holds: files, chunks, model")
    stats.add_argument("--collection", help="collection name (RAG_COLLECTION)")
    stats.add_argument("--json", action="store_true", help="machine-readable output")
    ask = sub.add_parser("ask", help="answer a question from the documents, with sources")
    ask.add_argument("question")
    ask.add_argument("--collection", help="collection name (RAG_COLLECTION)")
    ask.add_argument("--k", type=int, help="chunks given to the model (RAG_RETRIEVAL_K)")
    ask.add_argument("--mode", choices=["hybrid", "dense", "lexical"], default="hybrid",
                     help="retrieval: dense + BM25 fused (default), or one of them")
    ask.add_argument("--source", metavar="PATH", help="only files under this path")
    ask.add_argument("--mmr", action="store_true", help="diversify the retrieved chunks")
    ask.add_argument("--no-rerank", action="store_true",
                     help="skip the reranker set in RAG_RERANKER_MODEL")
    ask.add_argument("--no-llm", action="store_true", help="show the best passages only")
    ask.add_argument("--json", action="store_true", help="machine-readable result")
    serve = sub.add_parser("serve", help="open the chat in the browser (Streamlit), on "
                           "127.0.0.1 unless told otherwise")
    serve.add_argument("--docs", type=Path, metavar="DIR",
                       help="ingest this folder first when the index is empty")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default 127.0.0.1: this machine only; the "
                       "chat has no login, so an address other machines can reach also "
                       "needs --allow-network)")
    serve.add_argument("--port", type=int, default=8501)
    serve.add_argument("--allow-network", action="store_true",
                       help="allow a --host that other machines can reach (the chat has no "
                       "login: put an authenticating proxy in front)")
    serve.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                       help="another host name browsers may use to reach the server (e.g. "
                       "the proxy's); localhost, 127.0.0.1 and --host are always answered")
    api = sub.add_parser("api", help="serve the HTTP API (OpenAI-compatible chat with "
                         "sources, search, documents) on 127.0.0.1 unless told otherwise")
    api.add_argument("--collection", help="collection name (RAG_COLLECTION)")
    api.add_argument("--host", default="127.0.0.1",
                     help="address to listen on (default 127.0.0.1: this machine only; any "
                     "other needs RAG_API_KEY)")
    api.add_argument("--port", type=int, default=8000)
    api.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                     help="another host name clients may use to reach the server (e.g. a "
                     "proxy's)")
    return p


def serve(args: argparse.Namespace, settings: Settings) -> int:
    """Ingest the sample folder into an empty index, then run the Streamlit app with the
    safe server options (rag_app/ui/server.py: a local address unless --allow-network, a Host
    allow-list, XSRF protection, no error details in the page, security headers)."""
    import os
    import subprocess

    from rag_app.service import index_overview, sync_paths
    from rag_app.ui.server import allowed_hosts, exposure_warning, is_loopback, streamlit_flags

    hosts = allowed_hosts(args.host, args.allowed_host)
    if not is_loopback(args.host):
        if not args.allow_network:
            print(f"error: --host {args.host} can be reached from other machines, and the chat "
                  "has no login. Add --allow-network to do it anyway (with an authenticating "
                  "proxy in front), or use --host 127.0.0.1.", file=sys.stderr)
            return 2
        print(exposure_warning(args.host, args.port, hosts), file=sys.stderr)
    if args.docs is not None and not index_overview(settings).chunks:
        print(f"The index is empty: ingesting {args.docs} first …", file=sys.stderr)
        report = sync_paths(settings, [args.docs], command="python -m rag_app serve")
        print(f"{report.counts()['ingested']} files ingested, {report.chunks_total} passages",
              file=sys.stderr)
    app = Path(__file__).resolve().parent / "ui" / "app.py"
    command = [sys.executable, "-m", "streamlit", "run", str(app),
               *streamlit_flags(args.host, args.port, settings.upload_max_mb, hosts)]
    print(f"Open http://{_url_host(args.host)}:{args.port} in your browser (Ctrl+C stops the "
          "server).", file=sys.stderr)
    try:
        return subprocess.call(command, env=os.environ.copy())
    except KeyboardInterrupt:
        return 130


def _url_host(host: str) -> str:
    if host in ("", "0.0.0.0", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def ask(args: argparse.Namespace, settings: Settings) -> int:
    from rag_app.answering import answer
    from rag_app.retrieve import RetrievalOptions

    options = RetrievalOptions(k=args.k or settings.retrieval_k, mode=args.mode,
                               source=args.source, mmr=args.mmr, rerank=not args.no_rerank)
    stream = answer(args.question, settings=settings, options=options, use_llm=not args.no_llm)
    if args.json:
        for _ in stream:
            pass
        print(json.dumps(stream.result.to_dict(), indent=2))
        return 0
    from rag_app.terminal import for_terminal as safe  # documents and model text are data

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
                      f"{safe(info['store'])} is empty. Fill it with: python -m ingest PATH")
        return
    fp = info["fingerprint"]
    console.print(f"[bold]{safe(info['collection'])}[/bold] in the {safe(info['store'])}: "
                  f"{info['files']} files, {info['pages']} pages, {info['chunks']} chunks; "
                  f"model {safe(fp.get('model'))} ({safe(fp.get('dimension'))}-d), chunks of ≤"
                  f"{safe(fp.get('chunk_tokens'))} tokens", highlight=False)
    table = Table("file", "kind", "pages", "chunks", "last error")
    for f in info["file_list"]:
        table.add_row(safe(f["source"]), safe(f["kind"]), str(f["pages"] or ""),
                      str(f["chunks"]), safe(f["error"]))
    console.print(table)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        collection = getattr(args, "collection", None)
        overrides = {"collection": collection} if collection else {}
        settings = Settings(**overrides)
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
    except RagError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    return 0
