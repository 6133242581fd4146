"""Adding one file to a big index costs what the file costs (issue 26 point 2).

    python bench/add_one_file.py [--chunks 100000] [--pages 10] [--trials 3]

Syncs data/samples into a fresh embedded index, then times the real ingest
(`ingest.sync.Ingestor.run`, as `python -m ingest` runs it) adding one new PDF of --pages pages:
into that small index, and into the same index grown to --chunks passages by replicating its
passages with perturbed vectors (bench/watch_latency.py `replicate`). Each size is timed twice:
with the BM25 index updated in place (the default: the new passages go into its delta segment)
and with it built whole, as every sync did before (`Store.rebuild_lexical(whole=True)`). The
table gives the run's seconds, the BM25 part of them, and the ratio to the small index. Each
trial's file is new (other words), and is removed again after the trial so that the index
stays at its size. Run on purpose, not in CI.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.watch_latency import replicate  # noqa: E402
from rag_app.hardware import detect  # noqa: E402
from rag_app.settings import Settings  # noqa: E402
from tests.pdfgen import make_pdf  # noqa: E402

WORDS = ("kettle descale warranty filter firmware button error spout handle lid base cable "
         "litre minute water boil steam light sensor plate seal").split()


def settings_for(state: Path) -> Settings:
    return Settings(_env_file=None, state_dir=state, collection="add-bench")  # type: ignore[call-arg]


def new_pdf(path: Path, pages: int, trial: int) -> Path:
    lines = []
    for page in range(pages):
        words = [WORDS[(page * 7 + trial * 3 + i) % len(WORDS)] for i in range(300)]
        text = " ".join(words)
        lines.append(f"Page {page + 1} of trial {trial} marker{trial}x{page}. {text}")
    return make_pdf(path, lines, title=f"Trial {trial}")


class Timed:
    """Wraps Store.rebuild_lexical to time it, and to build it whole when asked."""

    def __init__(self, whole: bool) -> None:
        from rag_app.index.store import Store

        self.store_cls, self.whole, self.seconds = Store, whole, 0.0
        self.real = Store.rebuild_lexical

    def __enter__(self) -> Timed:
        outer = self

        def timed(store: Any, *, save: bool = True, whole: bool = False) -> Any:
            t0 = time.perf_counter()
            try:
                return outer.real(store, save=save, whole=whole or outer.whole)
            finally:
                if save:
                    outer.seconds += time.perf_counter() - t0

        self.store_cls.rebuild_lexical = timed  # type: ignore[method-assign,assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        self.store_cls.rebuild_lexical = self.real  # type: ignore[method-assign]


def trial(settings: Settings, embedder: Any, docs: Path, extra: Path, pages: int, n: int,
          whole: bool) -> tuple[float, float]:
    """Seconds of the run adding one new file, and the BM25 part of them; the file is then
    removed again (not timed)."""
    from ingest.sync import Ingestor

    pdf = new_pdf(extra / f"new-{n}.pdf", pages, n)
    with Timed(whole) as timed:
        t0 = time.perf_counter()
        report = Ingestor(settings, embedder).run([docs, extra])
        took = time.perf_counter() - t0
    if report.counts().get("ingested") != 1:
        raise SystemExit(f"expected one new file, got {report.counts()}")
    pdf.unlink()
    Ingestor(settings, embedder).run([docs, extra])
    return took, timed.seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--chunks", type=int, default=100_000, help="the big index's passages")
    p.add_argument("--pages", type=int, default=10)
    p.add_argument("--trials", type=int, default=3)
    args = p.parse_args()

    from ingest.sync import Ingestor
    from rag_app.embedders.auto import make_embedder

    print(f"CPU: {detect().summary()}")
    print(f"one new {args.pages}-page PDF, {args.trials} trials per row; data/samples first")
    rows: list[tuple[int, bool, list[tuple[float, float]]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        docs, extra, state = Path(tmp) / "docs", Path(tmp) / "extra", Path(tmp) / "state"
        shutil.copytree(REPO / "data" / "samples", docs)
        extra.mkdir()
        settings = settings_for(state)
        embedder = make_embedder(settings)
        embedder.warm_up()
        base = Ingestor(settings, embedder).run([docs, extra]).chunks_total
        sizes = [base, args.chunks]
        for size in sizes:
            if size != base:
                took, bm25 = replicate(settings, size)
                print(f"index grown to {size:,} passages in {took:.0f} s (whole BM25 build "
                      f"{bm25:.1f} s)")
            for whole in (False, True):
                got = [trial(settings, embedder, docs, extra, args.pages, len(rows) * 10 + t,
                             whole) for t in range(args.trials)]
                rows.append((size, whole, got))
                print(f"  {size:,} passages, BM25 {'built whole' if whole else 'updated'}: "
                      + ", ".join(f"{a:.2f} s (BM25 {b:.2f})" for a, b in got))
    small = {whole: statistics.median(a for a, _ in got)
             for size, whole, got in rows if size == rows[0][0]}
    print()
    print("| passages in the index | BM25 | add one file p50 s | BM25 part p50 s "
          "| × the small index |")
    print("|---|---|---|---|---|")
    for size, whole, got in rows:
        total = statistics.median(a for a, _ in got)
        part = statistics.median(b for _, b in got)
        print(f"| {size:,} | {'built whole' if whole else 'updated (delta)'} | {total:.2f} | "
              f"{part:.2f} | {total / small[whole]:.2f} |")


if __name__ == "__main__":
    main()
