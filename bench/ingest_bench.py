"""Ingest speed: this project vs the LangChain tutorial pipeline, on the same PDFs, in one run.

    python bench/ingest_bench.py [FOLDER]      (default: ../shared/docs/pdf, else data/samples)

Each pipeline runs in a fresh process (model load included, as a user would run it); wall
time and peak RSS (the whole process tree) are measured from outside. Then our ingest runs
again on the unchanged folder. Compare the ratios, not the absolute times: machines differ.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rag_app.hardware import detect  # noqa: E402


def measure(cmd: list[str]) -> tuple[float, float, str]:
    """(wall seconds, peak RSS of the process tree in MB, stdout)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAG_", "CHROMA_"))}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", ANONYMIZED_TELEMETRY="False")
    out = tempfile.TemporaryFile(mode="w+")
    start = time.perf_counter()
    proc = psutil.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.DEVNULL, env=env)
    peak = 0
    while proc.poll() is None:
        try:
            procs = [proc, *proc.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in procs if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.05)
    wall = time.perf_counter() - start
    out.seek(0)
    text = out.read()
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{cmd} failed with {proc.returncode}:\n{text[-2000:]}")
    return wall, peak / 1e6, text


def main() -> None:
    default = REPO.parent / "shared" / "docs" / "pdf"
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else (
        default if default.exists() else REPO / "data" / "samples")
    print(f"CPU: {detect().summary()}")
    print(f"documents: {folder}")
    with tempfile.TemporaryDirectory() as tmp:
        ours_cmd = [sys.executable, "-m", "ingest", str(folder), "--store", f"{tmp}/ours",
                    "--json"]
        t_wall, t_rss, t_out = measure([sys.executable, "bench/tutorial_pipeline.py",
                                        str(folder), f"{tmp}/tutorial"])
        tutorial = json.loads(t_out.strip().splitlines()[-1])
        o_wall, o_rss, o_out = measure(ours_cmd)
        ours = json.loads(o_out)
        r_wall, r_rss, r_out = measure(ours_cmd)
        rerun = json.loads(r_out)

    def row(name: str, wall: float, rss: float, pages: int, chunks: int, over: str) -> str:
        return (f"| {name} | {wall:.1f} | {chunks / wall:.1f} | {pages / wall:.1f} | {rss:.0f} "
                f"| {chunks} | {over} |")

    print()
    print("| pipeline | wall s | chunks/s | pages/s | peak RSS MB | chunks | chunks over "
          "the model's limit |")
    print("|---|---|---|---|---|---|---|")
    print(row("LangChain tutorial", t_wall, t_rss, tutorial["pages"], tutorial["chunks"],
              f"{tutorial['over_limit']} (longest {tutorial['max_tokens']} tokens)"))
    print(row("this project", o_wall, o_rss, ours["pages"], ours["chunks_added"],
              "0 (by construction)"))
    print(f"| this project, re-run unchanged | {r_wall:.1f} | | | {r_rss:.0f} | "
          f"{rerun['counts']['unchanged']} files unchanged | |")
    print()
    print(f"speed-up vs tutorial: {t_wall / o_wall:.2f}x wall; re-run takes "
          f"{r_wall / o_wall:.2f} of the first run; memory {o_rss / t_rss:.2f}x")
    print(f"embedding: {ours.get('embedder')}")
    print()
    print("Seconds per stage, in each pipeline's main process (ours parses in a child process, "
          "the next file while this one is embedded: its 'parse' is the wait for it; the "
          "tutorial embeds inside Chroma.from_documents, 'write' is the rest of that call):")
    print()
    print("| stage | LangChain tutorial | this project |")
    print("|---|---|---|")
    theirs, mine = tutorial.get("stages", {}), ours.get("stages", {})
    for stage in ("parse", "split", "model", "embed", "write", "BM25"):
        print(f"| {stage} | {_secs(theirs.get(stage))} | {_secs(mine.get(stage))} |")
    print(f"| the rest (start-up, imports, walk, hashing) | {_secs(t_wall - sum(theirs.values()))}"
          f" | {_secs(o_wall - sum(mine.values()))} |")


def _secs(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


if __name__ == "__main__":
    main()
