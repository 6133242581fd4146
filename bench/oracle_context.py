"""How many answers would be right if retrieval were perfect: the model's reading, alone.

    python bench/oracle_context.py QUESTIONS --docs DIR [--index-dir DIR] [-c SPEC] [--out DIR]

Every answerable question is answered through the whole answer path (evidence selection,
prompt, the bundled model or the configured endpoint, the checks, quotes, citations), but its
sources are the best-ranked chunks *on its gold pages* (found by searching the gold file with
the question, keeping the chunks on a gold page: one per gold page first, then the next best,
up to k) instead of what retrieval found. Unanswerable questions keep normal retrieval. The
gap between this run and an ordinary one is what better retrieval could still win; the gap
between this run and 100% is the model's reading (and the grader's strictness) alone.

Printed: the CPU, then the evaluation's usual table for the oracle run, and how many answerable
questions had no chunk on their gold pages to give (answered from normal retrieval instead).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rag_app.eval.configs import parse_config  # noqa: E402
from rag_app.eval.qa import (  # noqa: E402
    QAItem,
    evaluate_qa,
    load_questions,
    pages_match,
    source_matches,
)
from rag_app.eval.report import write_report  # noqa: E402
from rag_app.hardware import detect  # noqa: E402
from rag_app.retrieve import Hit, RetrievalOptions, Retriever  # noqa: E402
from rag_app.settings import Settings  # noqa: E402

DEPTH = 60  # chunks of the gold file searched for the ones on a gold page


def gold_hits(search: Any, self: Retriever, item: QAItem, query: str,
              opts: RetrievalOptions) -> list[Hit]:
    """The best chunks on the item's gold pages, one per page first, at most opts.k."""
    if not item.gold_source or not item.gold_pages:
        return []
    ranked = search(self, query, replace(opts, k=DEPTH, source=item.gold_source, names=False,
                                         mmr=False))
    on_page = [h for h in ranked if source_matches(h.source, item.gold_source)
               and pages_match(h, item.gold_pages)]
    chosen: list[Hit] = []
    for page in item.gold_pages:
        first = next((h for h in on_page if h not in chosen and pages_match(h, [page])), None)
        if first is not None:
            chosen.append(first)
    chosen += [h for h in on_page if h not in chosen]
    return chosen[:opts.k]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("questions", type=Path)
    ap.add_argument("--docs", type=Path, required=True)
    ap.add_argument("--index-dir", default=None)
    ap.add_argument("-c", "--config", default="oracle:mode=hybrid,k=3")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    print(f"CPU: {detect().summary()}")
    items = load_questions(args.questions)
    by_question = {i.question.strip(): i for i in items}
    search = Retriever.search
    missed: set[str] = set()

    def oracle_search(self: Retriever, query: str,
                      options: RetrievalOptions | None = None) -> list[Hit]:
        opts = options or RetrievalOptions()
        item = by_question.get(query.strip())
        if item is None or not item.answerable:
            return search(self, query, opts)
        hits = gold_hits(search, self, item, query, opts)
        if not hits:
            missed.add(item.id)
            return search(self, query, opts)
        return hits

    Retriever.search = oracle_search  # type: ignore[method-assign]
    try:
        result = evaluate_qa(items, args.docs, [parse_config(args.config)], Settings(),
                             index_dir=args.index_dir)
    finally:
        Retriever.search = search  # type: ignore[method-assign]
    run = result.runs[0]
    for key in ("correct", "correct_multi_fact", "cited_gold_page", "quote_validity",
                "refusal_accuracy", "false_refusal_rate", "first_token_p50_s"):
        value = run.metrics.get(key)
        print(f"{key:24} {value:.3f}" if isinstance(value, float) else f"{key:24} {value}")
    print(f"answerable questions with no chunk on a gold page: {len(missed)} "
          f"{sorted(missed)}")
    if args.out is not None:
        write_report(result, args.out)
        print(f"report: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
