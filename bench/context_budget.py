"""How much of the retrieved text the model needs: gold facts kept against prompt tokens.

    python bench/context_budget.py [--budgets 0,350,450,550] [--ks 3,4,5]

For each question set with gold answers (data/eval/r-manuals-qa.jsonl over ../shared/docs/pdf,
data/eval/samples-qa.jsonl over data/samples), each k and each passage budget
(rag_app.compress.select_evidence; 0 = whole chunks): the share of answerable questions whose
every gold fact is in the text the model would read, and the passage tokens (p50, in the
embedder's tokens: the bundled LLM counts ~1.2-1.5 of its own per one on code-heavy text).
No LLM call: this is the
ceiling each setting leaves for the answer step, and the prompt it costs (the model reads ~70
tokens/s on 2 cores, so 100 tokens ≈ 1.4 s before the first word). Indexes are kept in
--index-dir (default: a temporary folder).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rag_app.compress import select_evidence  # noqa: E402
from rag_app.embedders.auto import make_embedder  # noqa: E402
from rag_app.eval.configs import EvalConfig  # noqa: E402
from rag_app.eval.metrics import contains_answer  # noqa: E402
from rag_app.eval.qa import index_documents, load_questions, warm  # noqa: E402
from rag_app.hardware import detect  # noqa: E402
from rag_app.retrieve import RetrievalOptions, Retriever  # noqa: E402
from rag_app.settings import Settings  # noqa: E402

SETS = [("R manuals", REPO / "data/eval/r-manuals-qa.jsonl", REPO.parent / "shared/docs/pdf"),
        ("samples", REPO / "data/eval/samples-qa.jsonl", REPO / "data/samples")]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budgets", default="0,350,450,550")
    ap.add_argument("--ks", default="3,4,5")
    ap.add_argument("--index-dir", default=None)
    ap.add_argument("--sets", default="R manuals,samples")
    args = ap.parse_args()
    budgets = [int(b) for b in args.budgets.split(",")]
    ks = [int(k) for k in args.ks.split(",")]
    print(f"CPU: {detect().summary()}")
    settings = Settings()
    embedder = make_embedder(settings)
    count = embedder.count_tokens
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, qa_path, docs in SETS:
            if name not in args.sets.split(","):
                continue
            if not docs.is_dir():
                print(f"skipped {name}: {docs} is absent")
                continue
            items = [i for i in load_questions(qa_path) if i.answerable and i.gold_answer]
            work = Path(args.index_dir or tmp) / name.replace(" ", "-")
            built, _ = index_documents(docs, settings, config=EvalConfig("hybrid"),
                                       index_dir=work, embedder=embedder)
            retriever = warm(Retriever(built, embedder=embedder))
            for k in ks:
                hits = [retriever.search(i.question, RetrievalOptions(k=k)) for i in items]
                for budget in budgets:
                    kept, tokens, seconds = 0, [], []
                    for item, found in zip(items, hits, strict=True):
                        t = time.perf_counter()
                        texts = select_evidence(item.question, [h.text for h in found],
                                                embedder, budget)
                        seconds.append(time.perf_counter() - t)
                        context = "\n".join([*texts, *(h.location for h in found)])
                        kept += contains_answer(context, item.gold_answer or "")
                        tokens.append(sum(count(texts)))
                    rows.append((name, k, budget, len(items), kept,
                                 statistics.median(tokens), statistics.median(seconds)))
                    print(f"{name} k={k} budget={budget}: {kept}/{len(items)} "
                          f"tokens p50 {statistics.median(tokens):.0f}", flush=True)
    print("\n| set | k | budget (0 = whole chunks) | all gold facts in the context | "
          "passage tokens p50 | selection s p50 |")
    print("|---|---|---|---|---|---|")
    for name, k, budget, n, kept, tok, sec in rows:
        print(f"| {name} | {k} | {budget or 'whole'} | {kept}/{n} | {tok:.0f} | {sec:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
