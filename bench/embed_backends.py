"""Embedding speed and fidelity of each CPU backend, on the same passages, in one run.

    python bench/embed_backends.py [--rounds 2] [--passages 128] [--skip-bf16]
                                   [--state-dir data/store]

Backends: torch fp32 (the reference), torch bf16, ONNX Runtime int8 (the `onnx-int8` backend)
and ONNX Runtime fp32 (the same export, every input through its fp32 graph). Passages are ~256
and ~128 tokens, cut from the Markdown docs in ../shared/docs (or generated from a fixed-seed
vocabulary when that folder is absent). Backends are timed in turns, `--rounds` times, and the
best round counts: the machine may be shared, so compare ratios within one run, not across runs.
"CPU x" compares process CPU time per chunk, which other load disturbs less than wall time
(spin-waiting threads count too). Cosines are per passage, against torch fp32.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path
from typing import Literal

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rag_app.embedders.base import Embedder  # noqa: E402
from rag_app.embedders.onnx import FP32_FILE, OnnxEmbedder  # noqa: E402
from rag_app.embedders.sentence_transformers import SentenceTransformerEmbedder  # noqa: E402
from rag_app.hardware import detect  # noqa: E402
from rag_app.settings import Settings  # noqa: E402

DOCS = REPO.parent / "shared" / "docs" / "markdown"
_VOCAB = (
    "the a of to and in is for on with that by this be are from as it or an at can your not "
    "file page index query model vector server client request cache token install version "
    "backup restore network memory storage thread process release report schedule budget "
    "review configure option default value setting folder document search answer source"
).split()


def corpus_text() -> tuple[str, str]:
    files = sorted(DOCS.rglob("*.md")) if DOCS.is_dir() else []
    if files:
        return "\n\n".join(
            f.read_text(errors="replace") for f in files
        ), f"{DOCS} ({len(files)} files)"
    rng = random.Random(1234)
    words = [rng.choice(_VOCAB) for _ in range(120_000)]
    return " ".join(words), "generated text (fixed seed; ../shared/docs not found)"


def passages(embedder: OnnxEmbedder, text: str, tokens: int, count: int) -> list[str]:
    """`count` consecutive windows of `tokens` tokens (special tokens included) of `text`."""
    body = tokens - embedder.special_tokens
    spans = embedder.token_offsets(text[: 40 * body * count])
    if len(spans) < body * count:
        raise SystemExit(f"not enough text for {count} passages of {tokens} tokens")
    out = []
    for i in range(count):
        first, last = spans[i * body], spans[(i + 1) * body - 1]
        out.append(text[first[0] : last[1]])
    return out


def settings_for(state_dir: Path, precision: Literal["auto", "fp32", "bf16"]) -> Settings:
    return Settings(  # type: ignore[call-arg]
        _env_file=None, state_dir=state_dir, embedding_device="cpu", embedding_precision=precision
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--passages", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--skip-bf16", action="store_true", help="bf16 is slow without AMX")
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=REPO / "data" / "store",
        help="where the ONNX export is cached (the app's default state dir)",
    )
    args = parser.parse_args()

    hw = detect()
    print(f"CPU: {hw.summary()}")
    print(f"native bf16: {'yes' if hw.native_bf16 else 'no'}")

    backends: dict[str, Embedder] = {}
    started = time.perf_counter()
    backends["torch fp32"] = SentenceTransformerEmbedder(settings_for(args.state_dir, "fp32"))
    backends["torch fp32"].warm_up()  # type: ignore[attr-defined]
    if not args.skip_bf16:
        backends["torch bf16"] = SentenceTransformerEmbedder(settings_for(args.state_dir, "bf16"))
        backends["torch bf16"].warm_up()  # type: ignore[attr-defined]
    print(f"torch models loaded in {time.perf_counter() - started:.1f} s")

    started = time.perf_counter()
    int8 = OnnxEmbedder(settings_for(args.state_dir, "auto"))
    int8.warm_up()
    load = time.perf_counter() - started
    if int8.export_seconds is not None:
        print(f"ONNX export + quantise + check: {int8.export_seconds:.1f} s (cached from now on)")
    else:
        print(f"ONNX model loaded from cache in {load:.1f} s")
    assert int8.model_path is not None and int8.cache_dir is not None
    print(f"  {int8.backend}")
    print(
        f"  {int8.model_path}: {int8.model_path.stat().st_size / 1e6:.1f} MB; "
        f"{FP32_FILE}: {(int8.cache_dir / FP32_FILE).stat().st_size / 1e6:.1f} MB"
    )
    backends["onnx int8"] = int8
    fp32 = OnnxEmbedder(settings_for(args.state_dir, "auto"), int8_min_tokens=10**9)
    fp32.warm_up()
    backends["onnx fp32"] = fp32

    text, source = corpus_text()
    sizes = {size: passages(int8, text, size, args.passages) for size in (256, 128)}
    print(f"passages: {args.passages} of ~256 and ~128 tokens from {source}")

    vectors: dict[tuple[str, int], np.ndarray] = {}
    best: dict[tuple[str, int], float] = {}
    cpu: dict[tuple[str, int], float] = {}  # least CPU seconds per chunk
    for round_ in range(args.rounds):
        for size, texts in sizes.items():
            for name, emb in backends.items():
                t0, c0 = time.perf_counter(), time.process_time()
                vectors[name, size] = emb.embed_documents(texts, batch_size=args.batch_size)
                seconds = time.perf_counter() - t0
                per_chunk = (time.process_time() - c0) / len(texts)
                best[name, size] = max(best.get((name, size), 0.0), len(texts) / seconds)
                cpu[name, size] = min(cpu.get((name, size), float("inf")), per_chunk)
                print(
                    f"  round {round_ + 1} {name:10s} {size} tok: {len(texts) / seconds:6.1f}/s",
                    flush=True,
                )

    print()
    columns = f"{'vs fp32':>7s} {'CPU x':>6s} {'min cos':>8s} {'mean':>7s}"
    header = f"{'backend':11s} | {'256 tok/s':>9s} {columns} | {'128 tok/s':>9s} {columns}"
    print(header)
    print("-" * len(header))
    for name in backends:
        cells = []
        for size in sizes:
            speed = best[name, size]
            ratio = speed / best["torch fp32", size]
            cpu_ratio = cpu["torch fp32", size] / cpu[name, size]
            cos = (vectors[name, size] * vectors["torch fp32", size]).sum(axis=1)
            cells.append(
                f"{speed:9.1f} {ratio:6.2f}x {cpu_ratio:5.2f}x {cos.min():8.4f} {cos.mean():7.4f}"
            )
        print(f"{name:11s} | {cells[0]} | {cells[1]}")
    print(
        f"\nbest of {args.rounds} rounds, batch size {args.batch_size}, {hw.cores} cores; chunks/s"
    )


if __name__ == "__main__":
    main()
