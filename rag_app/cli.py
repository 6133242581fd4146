"""`python -m rag_app COMMAND`: look at the index from a terminal."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Sequence
from typing import Any

from rag_app.errors import RagError
from rag_app.settings import Settings


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m rag_app", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    stats = sub.add_parser("stats", help="what the index holds: files, chunks, model")
    stats.add_argument("--collection", help="collection name (RAG_COLLECTION)")
    stats.add_argument("--json", action="store_true", help="machine-readable output")
    return p


def stats(settings: Settings) -> dict[str, Any]:
    from rag_app.store import Store

    store = Store.open(settings)
    if store is None:
        return {"collection": settings.collection, "store": settings.describe_store(),
                "exists": False}
    records = store.file_records()
    return {
        "collection": settings.collection,
        "store": settings.describe_store(),
        "exists": True,
        "chunks": store.count(),
        "files": len(records),
        "files_by_kind": dict(Counter(r.kind for r in records.values())),
        "pages": sum(r.pages for r in records.values()),
        "fingerprint": store.fingerprint,
        "file_list": sorted(
            ({"source": r.source, "kind": r.kind, "chunks": r.chunks, "pages": r.pages,
              "error": r.error} for r in records.values()),
            key=lambda f: f["source"],
        ),
    }


def _print_stats(info: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not info["exists"]:
        console.print(f"Collection {info['collection']!r} in the {info['store']} is empty. "
                      "Fill it with: python -m ingest PATH")
        return
    fp = info["fingerprint"]
    console.print(f"[bold]{info['collection']}[/bold] in the {info['store']}: "
                  f"{info['files']} files, {info['pages']} pages, {info['chunks']} chunks; "
                  f"model {fp.get('model')} ({fp.get('dimension')}-d), chunks of ≤"
                  f"{fp.get('chunk_tokens')} tokens", highlight=False)
    table = Table("file", "kind", "pages", "chunks", "last error")
    for f in info["file_list"]:
        table.add_row(f["source"], f["kind"], str(f["pages"] or ""), str(f["chunks"]),
                      f["error"])
    console.print(table)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        overrides = {"collection": args.collection} if args.collection else {}
        settings = Settings(**overrides)
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
