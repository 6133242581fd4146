"""From a file saved to its passages being searchable, under `python -m ingest DIR --watch`.

    python bench/watch_latency.py [FOLDER] [--chunks 1000] [--chunks 100000] [--trials 5]

FOLDER (default: ../shared/docs/pdf, else data/samples) is copied to a temporary folder and
synced once in this process. Its passages are then replicated, with perturbed vectors, as the
passages of files under another (absent) folder until the index holds --chunks passages: the
size of the index is what the sync pays for (file list, BM25 rebuild), not which text it holds.
Then the real command `python -m ingest COPY --watch --json` runs in a child process, as a user
runs it, and each trial saves a new Markdown file with a word found nowhere else and polls, as
the chat does (`rag_app.ui.services.IndexReader`: a fresh view of the store when it changed),
until BM25 and a dense search both return the file (see `Reader`). While the writer has the BM25
index marked dirty the reader waits for the saved one instead of building its own (the chat
would build one in memory: at 100k passages that alone takes longer than the sync).

The time splits into the watcher's quiet period (ingest/watch.py QUIET_MS: a burst of changes
must settle), the sync (the child's own figure: walk, parse, embed, write, BM25 rebuild) and
the reader's part (noticing the change, reopening, searching). Run on purpose, not in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ingest.watch import QUIET_MS  # noqa: E402
from rag_app.hardware import detect  # noqa: E402
from rag_app.settings import Settings  # noqa: E402

REPLICA_ROOT = "/nonexistent/replica"  # the replicated passages' folder: never walked
REPLICA_FILE_CHUNKS = 50  # replicated passages per replica file record
BATCH = 4000


def settings_for(state: Path) -> Settings:
    return Settings(_env_file=None, state_dir=state, collection="watch-bench")  # type: ignore[call-arg]


def replicate(settings: Settings, target: int) -> tuple[float, float]:
    """Add copies of the index's passages (vectors perturbed, renormalised) as files under
    REPLICA_ROOT until it holds `target` passages; rebuild and save the BM25 index. (Seconds
    in all, seconds of the BM25 rebuild: what every sync that changes something pays.)"""
    import numpy as np

    from rag_app.index.store import FileRecord, Store, writer_lock

    t0 = time.perf_counter()
    with writer_lock(settings, "bench/watch_latency.py (replicating)"):
        store = Store.open(settings)
        assert store is not None
        got = store.chunks.get(include=["embeddings", "documents", "metadatas"])
        texts, metas = list(got["documents"] or []), list(got["metadatas"] or [])
        vectors = np.asarray(got["embeddings"], dtype=np.float32)
        need = target - store.count()
        if need <= 0:
            return 0.0, 0.0
        store.mark_lexical_dirty()
        rng = np.random.default_rng(7)
        made = 0
        first = sum(1 for r in store.file_records().values() if r.root == REPLICA_ROOT)
        records: list[FileRecord] = []
        while made < need:
            n = min(BATCH, need - made)
            pick = rng.integers(0, len(texts), n)
            noisy = vectors[pick] + rng.normal(0, 0.02, (n, vectors.shape[1])).astype(np.float32)
            noisy /= np.linalg.norm(noisy, axis=1, keepdims=True)
            ids: list[str] = []
            docs: list[str] = []
            rows: list[Any] = []  # Chroma's metadata mapping type
            for j, src in enumerate(pick):
                number = first * REPLICA_FILE_CHUNKS + made + j  # after the earlier replicas
                source = f"copy{number // REPLICA_FILE_CHUNKS:05}.md"
                key = f"{REPLICA_ROOT}::{source}"
                meta = dict(metas[src] or {})
                meta.update(file_key=key, source=source, root=REPLICA_ROOT,
                            chunk_index=number % REPLICA_FILE_CHUNKS,
                            content_hash=f"replica-{number}")
                ids.append(f"replica-{number:07}")
                docs.append(texts[src])
                rows.append(meta)
                if number % REPLICA_FILE_CHUNKS == 0:
                    records.append(FileRecord(key, REPLICA_ROOT, source, 1, 1, "replica",
                                              "done", REPLICA_FILE_CHUNKS, 0, "markdown"))
            store.chunks.upsert(ids=ids, embeddings=noisy, documents=docs, metadatas=rows)
            made += n
        for start in range(0, len(records), BATCH):
            store.put_file_records(records[start : start + BATCH])
        t1 = time.perf_counter()
        store.rebuild_lexical(whole=True)  # written around the store's journal: built whole
        t2 = time.perf_counter()
    return t2 - t0, t2 - t1


class Reader:
    """Polls the index as the chat does (a new view when it changed). Searchable: BM25 puts
    the file among its top 5 for the word, and a dense search limited to the file returns its
    passage (its vector is in the index the reader sees). Not the fused ranking: at 100k
    replicated passages (near-duplicate vectors) the default fusion left a one-word match out
    of its top 5 for 4 notes of 6 while BM25 ranked each first."""

    def __init__(self, settings: Settings, embedder: Any) -> None:
        from rag_app.index.store import make_client
        from rag_app.ui.services import IndexReader

        self.settings, self.embedder = settings, embedder
        self.index = IndexReader(settings, make_client(settings))
        self.version: Any = None
        self.retriever: Any = None

    def finds(self, word: str, source: str) -> bool:
        from rag_app.retrieve import RetrievalOptions, Retriever

        store, version = self.index.open()
        if store is None or store.lexical_is_dirty():
            return False  # a write is under way: wait for the saved BM25 index
        if version != self.version or self.retriever is None:
            self.retriever = Retriever(self.settings, embedder=self.embedder, store=store)
            self.version = version
        lexical = self.retriever.search(word, RetrievalOptions(k=5, mode="lexical"))
        if not any(h.source == source for h in lexical):
            return False
        dense = self.retriever.search(word, RetrievalOptions(k=1, mode="dense", source=source))
        return any(h.source == source for h in dense)


def trials(settings: Settings, docs: Path, embedder: Any, count: int, state: Path,
           log: Path) -> list[tuple[float, float]]:
    """(save -> searchable seconds, the watcher's sync seconds) per trial."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAG_", "CHROMA_"))}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", ANONYMIZED_TELEMETRY="False",
               RAG_COLLECTION=settings.collection, PYTHONPATH=str(REPO))
    out = log.open("w+")
    proc = subprocess.Popen([sys.executable, "-m", "ingest", str(docs), "--watch", "--json",
                             "--store", str(state)], cwd=REPO, env=env, stdout=out,
                            stderr=subprocess.DEVNULL)
    rounds: list[dict[str, Any]] = []

    def read_rounds() -> None:
        out.seek(0)
        rounds[:] = [json.loads(line) for line in out.read().splitlines() if line.strip()]

    results: list[tuple[float, float]] = []
    reader = Reader(settings, embedder)
    try:
        while not rounds:  # the first sync: nothing new, but the model loads
            time.sleep(0.2)
            read_rounds()
            if proc.poll() is not None:
                raise SystemExit(f"the watcher ended with {proc.returncode}")
        for n in range(count + 1):  # trial 0, right after the start, is not counted: the
            # watcher is still loading its model (after its first sync), and the reader too
            word = f"zqvx{n}probe{os.getpid()}"
            source = f"watch-note-{n}.md"
            before = len(rounds)
            (docs / source).write_text(f"# Note {n}\n\nThe access code {word} opens the "
                                       "service panel of the second boiler.\n")
            t0 = time.perf_counter()
            while not reader.finds(word, source):
                if time.perf_counter() - t0 > 600:
                    raise SystemExit(f"{source} was not searchable within 600 s")
                time.sleep(0.05)
            latency = time.perf_counter() - t0
            synced: list[dict[str, Any]] = []
            deadline = time.monotonic() + 30  # its line comes just after the index is saved
            while not synced and time.monotonic() < deadline:
                read_rounds()
                synced = [r for r in rounds[before:] if source in json.dumps(r["changed"])]
                time.sleep(0.05)
            result = (latency, synced[0]["seconds"] if synced else float("nan"))
            if n:
                results.append(result)
            print(f"  {f'trial {n}' if n else 'first change, watcher just started'}: "
                  f"{result[0]:.2f} s (sync {result[1]:.2f} s)", flush=True)
            time.sleep(1.0)
    finally:
        proc.terminate()
        proc.wait(30)
        out.close()
    return results


def main() -> None:
    default = REPO.parent / "shared" / "docs" / "pdf"
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder", nargs="?", type=Path,
                   default=default if default.exists() else REPO / "data" / "samples")
    p.add_argument("--chunks", type=int, action="append", metavar="N",
                   help="index sizes to measure at (repeatable; default 1000)")
    p.add_argument("--trials", type=int, default=5)
    args = p.parse_args()
    sizes = sorted(args.chunks or [1000])

    from ingest.entry import sync_paths
    from rag_app.embedders.auto import make_embedder

    print(f"CPU: {detect().summary()}")
    print(f"documents: {args.folder}; quiet period {QUIET_MS} ms; {args.trials} trials per size")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        docs, state = Path(tmp) / "docs", Path(tmp) / "state"
        shutil.copytree(args.folder, docs)
        settings = settings_for(state)
        embedder = make_embedder(settings)
        t0 = time.perf_counter()
        report = sync_paths(settings, [docs], embedder=embedder)
        print(f"first sync: {report.chunks_total} passages in {time.perf_counter() - t0:.1f} s "
              f"({report.embedder})")
        for size in sizes:
            if size < report.chunks_total:
                print(f"skipping {size}: the folder alone gives {report.chunks_total}")
                continue
            took, bm25 = replicate(settings, size)
            print(f"index at {size} passages (replicas added in {took:.1f} s; the BM25 "
                  f"rebuild alone, as a sync does it: {bm25:.1f} s)")
            got = trials(settings, docs, embedder, args.trials, state, Path(tmp) / f"{size}.log")
            rows.append((size, got))
            for f in docs.glob("watch-note-*.md"):  # the next size starts from the same folder
                f.unlink()
    print()
    print("| passages in the index | trials | save → searchable p50 s | max s | sync p50 s "
          "| quiet period s | reader p50 s |")
    print("|---|---|---|---|---|---|---|")
    for size, got in rows:
        lat = [g[0] for g in got]
        syn = [g[1] for g in got]
        reader = statistics.median(a - b - QUIET_MS / 1000 for a, b in got)
        print(f"| {size:,} | {len(got)} | {statistics.median(lat):.2f} | {max(lat):.2f} | "
              f"{statistics.median(syn):.2f} | {QUIET_MS / 1000:.1f} | {reader:.2f} |")


if __name__ == "__main__":
    main()
