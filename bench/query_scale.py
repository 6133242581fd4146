"""Query latency at scale, embedded and against a `chroma run` server (issue 26 point 4).

    python bench/query_scale.py [--sizes 10000 100000] [--queries 200] [--no-server] [FOLDER]
    python bench/query_scale.py --sizes 1000000      # on purpose: about an hour on 2 cores

FOLDER (default: ../shared/docs/pdf, else data/samples) is ingested for real (parse, split,
embed, write, BM25) into a fresh embedded index; its passages are then replicated with
perturbed vectors (bench/watch_latency.py `replicate`) until the index holds each size in
turn. At each size the whole `Retriever.search` (hybrid: query embedding, dense search, BM25,
fusion, reading the hits' vectors and texts, the names step) is timed over --queries questions
of the dev sets (data/eval/*.jsonl, cycled), after 10 warm-up questions, in a fresh process:
once on the embedded store and once through a `chroma run` server started on the same folder
(127.0.0.1, the same BM25 index). Printed per size and mode: p50/p95 of the whole search and
of each stage, the searching process's RSS (and the server's), the disk the index takes and
that per million passages, and the ingest throughput (real, with embedding; and the write of
the replicated passages, without). Every Chroma client lives in a child process, so the
embedded store and the server never hold the folder at once. Run on purpose, not in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rag_app.hardware import detect  # noqa: E402
from rag_app.settings import Settings  # noqa: E402

COLLECTION = "scale-bench"
WARM = 10
STAGES = ("embed", "dense", "bm25", "rest")


def settings_for(state: Path, host: str | None = None, port: int = 8000) -> Settings:
    return Settings(_env_file=None, state_dir=state, collection=COLLECTION,  # type: ignore[call-arg]
                    chroma_host=host, chroma_port=port)


def questions() -> list[str]:
    seen: dict[str, None] = {}
    for path in sorted((REPO / "data" / "eval").glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                q = str(json.loads(line).get("question", "")).strip()
                if q:
                    seen.setdefault(q, None)
    return list(seen) or ["How long is the warranty?"]


def rss_mb(pid: int | str = "self") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def disk_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def p50_ms(got: dict[str, Any], stage: str = "total") -> float:
    return statistics.median(r[stage] for r in got["rows"]) * 1000


# -- children ----------------------------------------------------------------------------------
def grow(state: Path, folder: Path, size: int) -> dict[str, Any]:
    """The index under `state` ingested from `folder` (first call) and grown to `size`."""
    from bench.watch_latency import replicate
    from ingest.sync import Ingestor
    from rag_app.embedders.auto import make_embedder

    settings = settings_for(state)
    out: dict[str, Any] = {}
    if not settings.chroma_dir.exists():
        embedder = make_embedder(settings)
        t0 = time.perf_counter()
        report = Ingestor(settings, embedder).run([folder])
        out.update(ingest_s=time.perf_counter() - t0, ingest_chunks=report.chunks_total,
                   embedder=f"{embedder.name} ({embedder.backend})")
    from rag_app.index.store import Store

    store = Store.open(settings)
    if store is None:
        raise SystemExit(f"nothing was ingested from {folder}")
    before = store.count()
    took, bm25 = replicate(settings, size)
    out.update(grow_s=took, bm25_s=bm25, written=store.count() - before, count=store.count())
    return out


def measure(state: Path, n: int, host: str | None, port: int) -> dict[str, Any]:
    """Times `n` hybrid searches (after WARM) in this process; per-stage seconds."""
    from rag_app.retrieve import Retriever

    retriever = Retriever(settings_for(state, host, port))
    spent = dict.fromkeys(STAGES, 0.0)

    def timed(stage: str, fn: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[stage] += time.perf_counter() - t0
        return wrapper

    embedder, store = retriever.embedder, retriever.store
    embedder.embed_query = timed("embed", embedder.embed_query)  # type: ignore[method-assign]
    store.nearest = timed("dense", store.nearest)  # type: ignore[method-assign]
    lexical = retriever.lexical  # loaded once (the saved index), then kept
    lexical.search = timed("bm25", lexical.search)
    qs = questions()
    rows: list[dict[str, float]] = []
    for i in range(WARM + n):
        for k in spent:
            spent[k] = 0.0
        t0 = time.perf_counter()
        retriever.search(qs[i % len(qs)])
        total = time.perf_counter() - t0
        if i >= WARM:
            row = {k: spent[k] for k in ("embed", "dense", "bm25")}
            row["rest"] = total - sum(row.values())
            row["total"] = total
            rows.append(row)
    return {"rows": rows, "rss_mb": rss_mb(), "count": store.count()}


def child(*args: str) -> dict[str, Any]:
    done = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True,
                          cwd=REPO)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args[:2])} failed:\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


# -- the server ------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(path: Path, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    exe = shutil.which("chroma") or str(Path(sys.executable).with_name("chroma"))
    port = free_port()
    proc = subprocess.Popen([exe, "run", "--host", "127.0.0.1", "--port", str(port),
                             "--path", str(path)], stdout=log.open("wb"),
                            stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"chroma run exited: {log.read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc, port
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("chroma run did not listen within 120 s")


def server_lexical(state: Path, port: int) -> None:
    """The server's readers use the BM25 index the embedded writer saved (the same
    collection, count and write generation): copied to the folder a server store reads."""
    local = state / "lexical" / "local"
    there = state / "lexical" / f"127.0.0.1_{port}"
    shutil.rmtree(there, ignore_errors=True)
    shutil.copytree(local, there)


# -- the table -------------------------------------------------------------------------------------
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder", nargs="?", type=Path)
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--no-server", action="store_true", help="embedded only")
    p.add_argument("--grow", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    shared = REPO.parent / "shared" / "docs" / "pdf"
    folder = (args.folder or (shared if shared.is_dir() else REPO / "data" / "samples")).resolve()
    if args.grow:
        print(json.dumps(grow(args.grow, folder, args.size)))
        return
    if args.measure:
        print(json.dumps(measure(args.measure, args.queries,
                                 "127.0.0.1" if args.port else None, args.port or 8000)))
        return

    print(f"CPU: {detect().summary()}; load average {os.getloadavg()[0]:.1f}")
    print(f"documents: {folder}; {args.queries} hybrid searches per row after {WARM} warm-up")
    results: list[tuple[int, str, dict[str, Any], float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "state"
        for size in sorted(args.sizes):
            grown = child("--grow", str(state), "--size", str(size), str(folder))
            if "ingest_s" in grown:
                print(f"ingested {grown['ingest_chunks']:,} passages for real in "
                      f"{grown['ingest_s']:.1f} s ({grown['ingest_chunks'] / grown['ingest_s']:.1f}"
                      f" passages/s, {grown['embedder']})")
            if grown["written"]:
                print(f"grown to {grown['count']:,}: {grown['written']:,} passages written in "
                      f"{grown['grow_s']:.0f} s ({grown['written'] / grown['grow_s']:.0f}/s "
                      f"without embedding; the whole BM25 build {grown['bm25_s']:.1f} s)")
            disk = disk_bytes(state)
            got = child("--measure", str(state), "--queries", str(args.queries))
            got["disk"] = disk
            results.append((size, "embedded", got, 0.0))
            print(f"  {size:,} embedded: p50 {p50_ms(got):.1f} ms", flush=True)
            if not args.no_server:
                log = Path(tmp) / "server.log"
                server, port = start_server(state / "chroma", log)
                try:
                    server_lexical(state, port)
                    got = child("--measure", str(state), "--queries", str(args.queries),
                                "--port", str(port))
                    server_rss = rss_mb(server.pid)
                finally:
                    server.terminate()
                    server.wait(30)
                got["disk"] = disk
                results.append((size, "server", got, server_rss))
                print(f"  {size:,} server: p50 {p50_ms(got):.1f} ms", flush=True)
    print()
    print("| passages | Chroma | search p50 ms | p95 ms | embed p50 | dense p50 | BM25 p50 "
          "| rest p50 | RSS MB (server) | disk MB | disk GB per 1M |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for _size, mode, got, server_rss in results:
        totals = [r["total"] for r in got["rows"]]
        rss = f"{got['rss_mb']:.0f}" + (f" (+{server_rss:.0f})" if mode == "server" else "")
        disk = got.get("disk", 0)
        print(f"| {got['count']:,} | {mode} | {p50_ms(got):.1f} | {pct(totals, 0.95) * 1000:.1f}"
              f" | {p50_ms(got, 'embed'):.1f} | {p50_ms(got, 'dense'):.1f} | "
              f"{p50_ms(got, 'bm25'):.1f} | {p50_ms(got, 'rest'):.1f} | {rss} | "
              f"{disk / 2**20:.0f} | {disk / max(got['count'], 1) * 1e6 / 2**30:.2f} |")


if __name__ == "__main__":
    main()
