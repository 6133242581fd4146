"""Which retrieval default: fusion method and weight, chunk size and overlap, k — on every set.

    python bench/retrieval_study.py [--index-dir DIR] [--sets msmarco,faq,...]
                                    [--chunkings 256/32,128/16,384/48,256/0] [--out FILE.json]

Every dev set at hand, through the product's own ingest and stores (no LLM):
- msmarco: the BEIR sample in ../shared/datasets/msmarco (43 judged queries, 5,000
  passages): nDCG@10 with exponential gain, as in `rag_app.eval beir`.
- faq / faq-stripped: the Python FAQ questions (../shared/qa/python-faq.jsonl) over
  ../shared/docs/html/python-faq, as indexed and with the question headings removed (each
  question is also its section's heading, which makes the first version easy): the gold
  passage (`rag_app.eval.qa.passage_overlap`).
- r-manuals: data/eval/r-manuals-qa.jsonl's answerable questions over ../shared/docs/pdf: the
  gold page.
- samples: data/eval/samples-qa.jsonl's answerable questions over data/samples: the gold page
  where the question has one, else the gold file.

For each set and chunking the index is built once (kept in --index-dir, so a rerun costs a
sync). Each question then retrieves once: the dense top 100 from Chroma and the BM25 top 100,
exactly what `Retriever.search` fuses; every fusion configuration is applied to those two lists
with `rag_app.fusion.fuse`, so the configurations compare on identical candidates. Scores per
question: reciprocal rank of the first gold hit within 10 (MRR@10) and hits at 1/3/5 (QA sets),
nDCG@10 (msmarco). Each configuration is compared with the better of its two parts (dense
only, BM25 only, same chunking) per set, by a paired sign-flip randomisation test (two-sided,
5,000 flips): "worse" means lower with p < 0.05.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from rag_app.eval.beir import load_beir, map_chunks, write_corpus  # noqa: E402
from rag_app.eval.configs import EvalConfig  # noqa: E402
from rag_app.eval.metrics import ranx_scores, require  # noqa: E402
from rag_app.eval.qa import (  # noqa: E402
    PASSAGE_OVERLAP,
    QAItem,
    index_documents,
    load_questions,
    pages_match,
    passage_overlap,
    source_matches,
)
from rag_app.fusion import FusionConfig, Ranked, fuse  # noqa: E402
from rag_app.hardware import detect  # noqa: E402

SHARED = REPO.parent / "shared"
DEPTH = 100
FLIPS = 5000
NDCG = "ndcg_burges@10"


# -- the sets --------------------------------------------------------------------------------
@dataclass(frozen=True)
class SetSpec:
    name: str
    kind: str  # "beir" or "qa"
    data: Path  # BEIR folder or question file
    docs: Path | None = None  # QA: the documents folder
    strip_headings: bool = False
    target: str = ""  # what a gold hit is, for the table


SETS: dict[str, SetSpec] = {s.name: s for s in (
    SetSpec("msmarco", "beir", SHARED / "datasets" / "msmarco", target="nDCG@10"),
    SetSpec("faq", "qa", SHARED / "qa" / "python-faq.jsonl",
            SHARED / "docs" / "html" / "python-faq", target="passage"),
    SetSpec("faq-stripped", "qa", SHARED / "qa" / "python-faq.jsonl",
            SHARED / "docs" / "html" / "python-faq", strip_headings=True, target="passage"),
    SetSpec("r-manuals", "qa", REPO / "data" / "eval" / "r-manuals-qa.jsonl",
            SHARED / "docs" / "pdf", target="page"),
    SetSpec("samples", "qa", REPO / "data" / "eval" / "samples-qa.jsonl",
            REPO / "data" / "samples", target="page, else file"),
)}


@dataclass
class Chunk:
    source: str
    page_start: int | None
    page_end: int | None
    text: str
    doc_id: str | None = None  # msmarco: the passage the chunk came from


@dataclass
class Candidates:
    """One set at one chunking: per question the two ranked lists and a gold test."""

    set_name: str
    chunking: str
    questions: list[str]
    dense: list[Ranked]
    lexical: list[Ranked]
    chunks: dict[str, Chunk]
    gold: list[Callable[[Chunk], bool]] = field(default_factory=list)  # QA sets
    qrels: dict[str, dict[str, int]] = field(default_factory=dict)  # msmarco
    query_ids: list[str] = field(default_factory=list)  # msmarco
    retrieve_ms: float = 0.0


def _gold_test(item: QAItem) -> Callable[[Chunk], bool]:
    gold = item.gold_source or ""
    if item.gold_pages:
        return lambda c: source_matches(c.source, gold) and pages_match(c, item.gold_pages)
    if item.gold_passage:
        passage = item.gold_passage
        return lambda c: source_matches(c.source, gold) and \
            passage_overlap(c.text, passage) >= PASSAGE_OVERLAP
    return lambda c: source_matches(c.source, gold)


def gather(spec: SetSpec, chunking: tuple[int, int], settings: Any, embedder: Any,
           work: Path) -> Candidates:
    """Index (or sync) the set at this chunking and retrieve both lists for every question."""
    from rag_app.retrieve import Retriever

    tokens, overlap = chunking
    config = EvalConfig(f"c{tokens}-{overlap}", chunk_tokens=tokens, chunk_overlap=overlap)
    label = f"{tokens}/{overlap}"
    if spec.kind == "beir":
        beir = load_beir(spec.data)
        corpus = work / "beir" / f"{beir.name}-{beir.digest}"
        files = write_corpus(beir, corpus)
        built, _ = index_documents(corpus, settings, config=config, index_dir=work,
                                   embedder=embedder)
        retriever = Retriever(built, embedder=embedder)
        doc_of, _ = map_chunks(retriever.store, files)
        questions, qids = list(beir.queries.values()), list(beir.queries)
        out = Candidates(spec.name, label, questions, [], [], {}, qrels=beir.qrels,
                         query_ids=qids)
    else:
        items = [i for i in load_questions(spec.data) if i.answerable and i.gold_source]
        questions = [i.question for i in items]
        if spec.docs is None:
            raise SystemExit(f"{spec.name}: no documents folder")
        built, _ = index_documents(spec.docs, settings, config=config, index_dir=work,
                                   embedder=embedder,
                                   strip_question_headings=questions if spec.strip_headings
                                   else None)
        retriever = Retriever(built, embedder=embedder)
        doc_of = {}
        out = Candidates(spec.name, label, questions, [], [], {},
                         gold=[_gold_test(i) for i in items])
    store, lexical = retriever.store, retriever.lexical
    started = time.perf_counter()
    for question in out.questions:
        qvec = embedder.embed_query(question)
        out.dense.append([(cid, sim) for cid, sim, _, _ in store.query(qvec, DEPTH)])
        out.lexical.append(lexical.search(question, DEPTH))
    out.retrieve_ms = (time.perf_counter() - started) * 1000 / max(len(out.questions), 1)
    wanted = {cid for ranked in (*out.dense, *out.lexical) for cid, _ in ranked}
    for cid, row in store.get_chunks(sorted(wanted)).items():
        out.chunks[cid] = Chunk(row.source, row.page_start, row.page_end, row.text,
                                doc_of.get(cid))
    return out


# -- scoring ---------------------------------------------------------------------------------
def score(cands: Candidates, config: FusionConfig) -> dict[str, np.ndarray]:
    """Per-question scores: "primary" (nDCG@10 or MRR@10) and, for QA sets, hit@1/3/5."""
    fused = [[cid for cid, _ in fuse(d, lx, config) if cid in cands.chunks]
             for d, lx in zip(cands.dense, cands.lexical, strict=True)]
    if cands.qrels:
        run: dict[str, list[tuple[str, float]]] = {}
        for qid, ranked in zip(cands.query_ids, fused, strict=True):
            seen: list[str] = []
            for cid in ranked:
                doc = cands.chunks[cid].doc_id
                if doc is not None and doc not in seen:
                    seen.append(doc)
            run[qid] = [(d, 1.0 / (n + 1)) for n, d in enumerate(seen)]
        per = ranx_scores(run, cands.qrels, [NDCG])[NDCG]
        return {"primary": np.asarray(per, dtype=float)}
    ranks = []
    for test, ranked in zip(cands.gold, fused, strict=True):
        rank = next((n for n, cid in enumerate(ranked[:10], start=1)
                     if test(cands.chunks[cid])), None)
        ranks.append(rank)
    out = {"primary": np.array([1.0 / r if r else 0.0 for r in ranks])}
    for k in (1, 3, 5):
        out[f"hit@{k}"] = np.array([1.0 if r and r <= k else 0.0 for r in ranks])
    return out


def flip_test(a: np.ndarray, b: np.ndarray, flips: int = FLIPS, seed: int = 7) -> float:
    """Two-sided paired sign-flip randomisation p-value of mean(a - b)."""
    diff = a - b
    if not np.any(diff):
        return 1.0
    rng = np.random.default_rng(seed)
    signs = rng.choice((-1.0, 1.0), size=(flips, diff.size))
    null = np.abs((signs * diff).mean(axis=1))
    return float((np.sum(null >= abs(diff.mean()) - 1e-12) + 1) / (flips + 1))


def fusion_grid() -> list[tuple[str, FusionConfig]]:
    grid: list[tuple[str, FusionConfig]] = [
        ("dense", FusionConfig(mode="dense")),
        ("bm25", FusionConfig(mode="lexical")),
    ]
    for alpha in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8):
        grid.append((f"convex minmax a={alpha}", FusionConfig(method="convex", alpha=alpha)))
    for alpha in (0.5, 0.6, 0.7):
        grid.append((f"convex zscore a={alpha}",
                     FusionConfig(method="convex", alpha=alpha, norm="zscore")))
    for alpha in (0.5, 0.7):
        grid.append((f"convex max a={alpha}",
                     FusionConfig(method="convex", alpha=alpha, norm="max")))
    for k, w in ((60, 1.0), (60, 0.5), (20, 1.0), (10, 1.0), (10, 0.5)):
        grid.append((f"rrf k={k} w_bm25={w}",
                     FusionConfig(method="rrf", rrf_k=k, lexical_weight=w)))
    grid.append(("rescue top1@3", FusionConfig(method="rescue")))
    for alpha, low, high in ((0.7, 0.3, 0.5), (0.7, 0.25, 0.45), (0.8, 0.3, 0.5)):
        grid.append((f"adaptive a={alpha} spread {low}-{high}",
                     FusionConfig(method="adaptive", alpha=alpha, spread_low=low,
                                  spread_high=high)))
    return grid


# -- the report ------------------------------------------------------------------------------
def parse_chunkings(text: str) -> list[tuple[int, int]]:
    out = []
    for part in text.split(","):
        tokens, _, overlap = part.strip().partition("/")
        out.append((int(tokens), int(overlap or 0)))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--index-dir", type=Path, default=REPO / "data" / "cache" / "study",
                        help="where the indexes are kept between runs")
    parser.add_argument("--sets", default=",".join(SETS))
    parser.add_argument("--chunkings", default="256/32",
                        help="tokens/overlap pairs, comma-separated; sizes over the model's "
                             "limit are capped by ingest, and labelled with the size used")
    parser.add_argument("--out", type=Path, help="write every figure as JSON here")
    args = parser.parse_args(argv)
    require("ranx", "nDCG")
    from rag_app.embedders.auto import make_embedder
    from rag_app.settings import Settings

    random.seed(7)
    settings = Settings()
    embedder = make_embedder(settings)
    embedder.warm_up()
    print(f"# retrieval study — {detect().summary()}; embedder {embedder.fingerprint()['model']} "
          f"({embedder.backend})")
    specs = []
    for name in args.sets.split(","):
        spec = SETS.get(name.strip())
        if spec is None:
            raise SystemExit(f"unknown set {name!r}: choose from {', '.join(SETS)}")
        if not spec.data.exists() or (spec.docs is not None and not spec.docs.exists()):
            print(f"(skipping {spec.name}: {spec.data} or its documents are absent)")
            continue
        specs.append(spec)
    grid = fusion_grid()
    results: dict[str, Any] = {}
    limit = embedder.document_token_limit
    for chunking in parse_chunkings(args.chunkings):
        # ingest caps a chunk at what the model reads whole (all-MiniLM-L6-v2: 254 tokens)
        label = f"{min(chunking[0], limit)}/{chunking[1]}"
        scores: dict[str, dict[str, dict[str, np.ndarray]]] = {}
        for spec in specs:
            started = time.perf_counter()
            cands = gather(spec, chunking, settings, embedder, args.index_dir / spec.name)
            scores[spec.name] = {name: score(cands, cfg) for name, cfg in grid}
            print(f"  {spec.name} @ {label}: {len(cands.questions)} questions, "
                  f"{time.perf_counter() - started:.0f} s (retrieval {cands.retrieve_ms:.0f} "
                  "ms/question)", flush=True)
        results[label] = report(label, scores, grid)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))
    return 0


def report(label: str, scores: dict[str, dict[str, dict[str, np.ndarray]]],
           grid: Sequence[tuple[str, FusionConfig]]) -> dict[str, Any]:
    """Print one table (rows: fusion configurations; columns: sets) and return its figures."""
    sets = list(scores)
    print(f"\n## chunks {label} tokens: primary measure per set (MRR@10 of the gold hit; "
          "msmarco nDCG@10); Δ = against the better part on that set, * = worse with p<0.05")
    print("| fusion | " + " | ".join(sets) + " | mean | worst Δ | sets worse |")
    print("|---" * (len(sets) + 4) + "|")
    out: dict[str, Any] = {}
    for name, _ in grid:
        cells, deltas, worse = [], [], 0
        for s in sets:
            per = scores[s][name]["primary"]
            parts = {p: scores[s][p]["primary"] for p in ("dense", "bm25")}
            best = max(parts, key=lambda p: parts[p].mean())
            delta = float(per.mean() - parts[best].mean())
            p_value = flip_test(per, parts[best]) if name not in parts else 1.0
            star = "*" if delta < 0 and p_value < 0.05 else ""
            worse += bool(star)
            deltas.append(delta)
            cells.append(f"{per.mean():.3f}{star}")
            out.setdefault(name, {})[s] = {m: float(v.mean()) for m, v in scores[s][name].items()}
            out[name][s].update(delta=delta, p=p_value)
        mean = float(np.mean([scores[s][name]["primary"].mean() for s in sets]))
        print(f"| {name} | " + " | ".join(cells) + f" | {mean:.3f} | {min(deltas):+.3f} "
              f"| {worse} |")
    print("\nhit@1 / hit@3 / hit@5 (QA sets):")
    print("| fusion | " + " | ".join(s for s in sets if "hit@1" in scores[s]["dense"]) + " |")
    print("|---" * (1 + sum("hit@1" in scores[s]["dense"] for s in sets)) + "|")
    for name, _ in grid:
        cells = [" / ".join(f"{scores[s][name][f'hit@{k}'].mean():.2f}" for k in (1, 3, 5))
                 for s in sets if "hit@1" in scores[s]["dense"]]
        print(f"| {name} | " + " | ".join(cells) + " |")
    return out


if __name__ == "__main__":
    raise SystemExit(main())
