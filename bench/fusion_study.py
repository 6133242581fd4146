"""How to fuse dense and BM25 retrieval: every method × parameter, measured on msmarco.

    python bench/fusion_study.py [--dataset ../shared/datasets/msmarco] [--cache DIR]

The data is the BEIR-format msmarco sample in ../shared/datasets/msmarco (5,000 passages,
43 queries with graded judgments). Passages are embedded as BEIR does with sentence-
transformers models: title + " " + text (the sample's titles are all empty, so this is the
text), with the bundled all-MiniLM-L6-v2 and default settings. Embeddings are cached (keyed
by model, backend and corpus digest) so reruns take seconds.

Dense top-100 comes from exact numpy dot products over the normalised vectors; the product
retrieves through Chroma's HNSW index instead, which at a few thousand vectors returns the
same neighbours. BM25 top-100 comes from `rag_app.index.lexical.LexicalIndex`. Fusion is
`rag_app.fusion`; metrics are ranx's, over the 43 judged queries (see METRICS: nDCG@10 with
exponential gain, as the reference scores, and with trec_eval's linear gain; Recall@10;
MRR@10). With 43 queries, differences under ~0.01 nDCG are noise: the study also reports
ranx's paired randomisation test and a repeated two-fold check of how an alpha picked on half
the queries does on the other half.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import tempfile
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from rag_app.eval.beir import Beir, load_beir  # noqa: E402
from rag_app.eval.metrics import Qrels, Run, ranx_compare, ranx_evaluate  # noqa: E402
from rag_app.fusion import FusionConfig, fuse  # noqa: E402
from rag_app.hardware import detect  # noqa: E402
from rag_app.index.lexical import LexicalIndex, LexicalOptions  # noqa: E402

DATASET = REPO.parent / "shared" / "datasets" / "msmarco"
CACHE = Path(tempfile.gettempdir()) / "rag_app-bench-cache"  # embeddings kept between runs
DEPTH = 100
# nDCG@10 as the reference scores in ../shared/datasets/README.md were measured: exponential
# gain 2^grade - 1 (Burges; ranx "ndcg_burges"), which reproduces their 0.704 / 0.570 / 0.680.
# trec_eval's linear gain ("ndcg") is shown beside it. The grades are TREC DL's 1-3 (grade 0
# rows are absent): MRR@10 counting any grade is 1.0 for nearly everything, so MRR@10 with
# grade >= 2 ("highly relevant", TREC DL's binary cut) is shown too.
PRIMARY = "ndcg_burges@10"
METRICS = (PRIMARY, "ndcg@10", "recall@10", "mrr@10", "mrr@10-l2")


# -- the two retrievers -------------------------------------------------------------------------
def embed(embedder: Any, beir: Beir, cache_dir: Path | None) -> tuple[np.ndarray, np.ndarray]:
    """(passage vectors, query vectors in `beir.queries` order), from the cache if present."""
    embedder.warm_up()
    key_src = json.dumps([embedder.fingerprint(), embedder.backend, beir.digest,
                          sorted(beir.queries.items()), "title+text"], sort_keys=True)
    key = hashlib.sha256(key_src.encode()).hexdigest()[:20]
    path = cache_dir / f"msmarco-{key}.npz" if cache_dir else None
    if path is not None and path.exists():
        cached = np.load(path)
        return cached["docs"], cached["queries"]
    docs = embedder.embed_documents(beir.doc_texts, batch_size=64)
    queries = np.stack([embedder.embed_query(q) for q in beir.queries.values()])
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, docs=docs, queries=queries)
        tmp.replace(path)
    return docs, queries


def dense_run(beir: Beir, docs: np.ndarray, queries: np.ndarray, depth: int = DEPTH) -> Run:
    """Exact top-`depth` by cosine (dot product of normalised vectors)."""
    sims = queries @ docs.T
    run: Run = {}
    for qid, row in zip(beir.queries, sims, strict=True):
        top = np.argsort(-row, kind="stable")[:depth]
        run[qid] = [(beir.doc_ids[i], float(row[i])) for i in top]
    return run


def lexical_run(beir: Beir, options: LexicalOptions | None = None, depth: int = DEPTH) -> Run:
    index = LexicalIndex.build(beir.doc_ids, beir.doc_texts, options=options)
    return {qid: index.search(text, depth) for qid, text in beir.queries.items()}


def fused_run(dense: Run, lexical: Run, config: FusionConfig) -> Run:
    return {qid: fuse(dense[qid][: config.depth], lexical[qid][: config.depth], config)
            for qid in dense}


# -- metrics (ranx, through rag_app.eval.metrics) ------------------------------------------
def evaluate(run: Run, qrels: Qrels, metrics: Sequence[str] = METRICS) -> dict[str, float]:
    """Mean metrics over the judged queries."""
    return ranx_evaluate(run, qrels, metrics)[0]


def per_query(run: Run, qrels: Qrels, metric: str = PRIMARY) -> dict[str, float]:
    return ranx_evaluate(run, qrels, [metric])[1][metric]


# -- the study --------------------------------------------------------------------------------
def candidates() -> list[tuple[str, str, FusionConfig]]:
    """(method, parameter, config) for every fused variant in the table."""
    out: list[tuple[str, str, FusionConfig]] = []
    for k in (10, 30, 60, 100):
        out.append(("rrf", f"k={k}", FusionConfig(method="rrf", rrf_k=k)))
    for w in (0.7, 0.5, 0.3, 0.2, 0.1):
        out.append(("weighted rrf", f"k=60 lex_w={w}",
                    FusionConfig(method="rrf", rrf_k=60, lexical_weight=w)))
    for norm in ("minmax", "zscore", "max"):
        for a in (0.3, 0.4, 0.5, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95):
            out.append((f"convex {norm}", f"alpha={a}",
                        FusionConfig(method="convex", norm=norm, alpha=a)))
    for top in (1, 2):
        for pos in (1, 3, 5, 10):
            out.append(("rescue", f"top={top} pos={pos}",
                        FusionConfig(method="rescue", rescue_top=top, rescue_position=pos)))
    return out


def two_fold_check(dense: Run, lexical: Run, qrels: Qrels, family: Iterable[FusionConfig],
                   repeats: int = 200, seed: int = 0) -> tuple[float, float, float, list[float]]:
    """Pick the best config of `family` on a random half of the queries, score it on the
    other half. Returns (mean held-out nDCG of the pick, mean held-out nDCG of dense-only,
    share of splits where the pick >= dense, the alphas/params picked)."""
    family = list(family)
    per_q = [per_query(fused_run(dense, lexical, c), qrels) for c in family]
    dense_q = per_query(dense, qrels)
    qids = sorted(dense_q)
    rng = random.Random(seed)
    picked, dense_held, wins, picks = [], [], 0, []
    for _ in range(repeats):
        rng.shuffle(qids)
        half, other = qids[: len(qids) // 2], qids[len(qids) // 2 :]
        best = max(range(len(family)), key=lambda i: sum(per_q[i][q] for q in half))
        held = float(np.mean([per_q[best][q] for q in other]))
        base = float(np.mean([dense_q[q] for q in other]))
        picked.append(held)
        dense_held.append(base)
        wins += held >= base
        picks.append(family[best].alpha)
    return float(np.mean(picked)), float(np.mean(dense_held)), wins / repeats, picks


def _row(name: str, param: str, m: Mapping[str, float], base: float | None = None) -> str:
    delta = f"{m[PRIMARY] - base:+.3f}" if base is not None else ""
    values = " | ".join(f"{m[k]:.3f}" for k in METRICS)
    return f"| {name:<14} | {param:<16} | {values} | {delta:>6} |"


HEADER = ("| method         | parameter        | nDCG@10 | nDCG@10 lin | R@10 | MRR@10 "
          "| MRR@10 g≥2 | Δ nDCG@10 vs dense |\n|---|---|---|---|---|---|---|---|")


def study_parser(doc: str | None, dataset: Path) -> argparse.ArgumentParser:
    """The options every embedding study takes: --dataset, --cache, --no-cache."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0] if doc else "")
    parser.add_argument("--dataset", type=Path, default=dataset)
    parser.add_argument("--cache", type=Path, default=CACHE)
    parser.add_argument("--no-cache", action="store_true")
    return parser


def msmarco_missing(dataset: Path) -> bool:
    """True (and says so) when the msmarco sample is not at `dataset`."""
    if (dataset / "corpus.jsonl").exists():
        return False
    print(f"skipped: the msmarco sample is not at {dataset} "
          "(it lives in ../shared/datasets/msmarco beside the repository)")
    return True


def main(argv: Sequence[str] | None = None) -> int:
    args = study_parser(__doc__, DATASET).parse_args(argv)
    warnings.filterwarnings("ignore", message="unsafe cast from uint64")  # ranx under numba
    if msmarco_missing(args.dataset):
        return 0

    from rag_app.embedders.auto import make_embedder
    from rag_app.settings import Settings

    print(f"CPU: {detect().summary()}")
    beir = load_beir(args.dataset)
    embedder = make_embedder(Settings(_env_file=None))  # type: ignore[call-arg]
    docs, queries = embed(embedder, beir, None if args.no_cache else args.cache)
    print(f"model: {embedder.name} ({embedder.backend}); passages embedded as title + text")
    print(f"{len(beir.doc_ids)} passages, {len(beir.queries)} judged queries; "
          f"depth {DEPTH} per retriever\n")

    dense = dense_run(beir, docs, queries)
    dense_m = evaluate(dense, beir.qrels)
    base = dense_m[PRIMARY]

    print("## Tokenisation for BM25 (BM25 alone, and the default fusion with it)\n")
    print(HEADER)
    lexical_runs: dict[LexicalOptions, Run] = {}
    for stop in (False, True):
        for stem in (False, True):
            opts = LexicalOptions(stopwords=stop, stem=stem)
            lexical_runs[opts] = lexical_run(beir, opts)
            label = f"stop={'y' if stop else 'n'} stem={'y' if stem else 'n'}"
            print(_row("bm25", label, evaluate(lexical_runs[opts], beir.qrels), base))
            fused = fused_run(dense, lexical_runs[opts], FusionConfig(method="convex"))
            print(_row("default fusion", label, evaluate(fused, beir.qrels), base))
    for k1, b in ((0.9, 0.4), (1.2, 0.75)):
        opts = LexicalOptions(k1=k1, b=b)
        print(_row("bm25", f"k1={k1} b={b}", evaluate(lexical_run(beir, opts), beir.qrels),
                   base))

    lexical = lexical_runs[LexicalOptions()]
    print("\n## Fusion (BM25 with the default tokenisation)\n")
    print(HEADER)
    print(_row("dense only", "cosine", dense_m, base))
    print(_row("bm25 only", "", evaluate(lexical, beir.qrels), base))
    for name, param, config in candidates():
        print(_row(name, param, evaluate(fused_run(dense, lexical, config), beir.qrels), base))

    default = FusionConfig()
    print("\n## Convex combination: nDCG@10 by alpha × depth (candidates per retriever)\n")
    depths = (10, 20, 50, 100)
    print("| norm | alpha | " + " | ".join(f"depth {d}" for d in depths) + " |")
    print("|---|---|" + "---|" * len(depths))
    print(f"| dense only | | {' | '.join(f'{base:.3f}' for _ in depths)} |")
    for norm in ("minmax", "max"):
        for a in (0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9):
            cells = []
            for depth in depths:
                config = FusionConfig(method="convex", norm=norm, alpha=a, depth=depth)  # type: ignore[arg-type]
                score = evaluate(fused_run(dense, lexical, config), beir.qrels)[PRIMARY]
                cells.append(f"{score:.3f}")
            print(f"| {norm} | {a} | {' | '.join(cells)} |")

    default = FusionConfig()
    print(f"\n## The default ({default.method} {default.norm} alpha={default.alpha} "
          f"depth={default.depth}) against dense only: gain or noise?\n")
    fused = fused_run(dense, lexical, default)
    for metric, c in ranx_compare(fused, dense, beir.qrels, (PRIMARY, "mrr@10-l2")).items():
        print(f"{metric}: {c['run']:.3f} vs {c['baseline']:.3f}; per query better "
              f"{c['wins']:.0f}, worse {c['losses']:.0f}, same {c['ties']:.0f}; "
              f"paired randomisation p = {c['p']:.2f}")
    print("\nTuning alpha on these queries (best on a random half, scored on the other half):")
    for norm in ("minmax", "max"):
        family = [FusionConfig(method="convex", norm=norm, alpha=a)  # type: ignore[arg-type]
                  for a in (0.5, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0)]
        held, dense_held, share, picks = two_fold_check(dense, lexical, beir.qrels, family)
        common = max(set(picks), key=picks.count)
        print(f"  convex {norm}: held-out nDCG@10 {held:.3f} vs dense {dense_held:.3f}; "
              f"pick >= dense in {share:.0%} of 200 splits; alpha picked {min(picks)}–"
              f"{max(picks)} (most often {common})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
