"""Questions not in English over the English model: which fusion serves them (issue 25 point 1).

    python bench/question_language_study.py [--cache DIR]

On the multilingual dev set (data/eval/multilingual; MiniLM vectors cached by
bench/multilingual_study.py, which embeds them when missing), nDCG@10 of dense, BM25, the
default fusion and the default with other dense weights for the Russian, German and French
questions, in two settings: the passages of the question's language (documents in another
language embedded with the English model), and the English passages (a question asked in
another language than the documents; judged by the English passage of the same question).
"routed" is what `Retriever.fusion_for` does: the question's language identified
(rag_app.language), `FusionConfig.foreign_alpha` as its dense weight when it
is not English, else the default. Each row against the default: paired sign-flip p.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.fusion_study import CACHE, dense_run, fused_run, lexical_run, per_query  # noqa: E402
from bench.multilingual_study import (  # noqa: E402
    DATASET,
    embed_passages,
    embed_queries,
    lang_of,
    minilm,
    priority_order,
    restrict,
)
from bench.retrieval_study import flip_test  # noqa: E402
from rag_app.embedders.base import ENGLISH_DEFAULT  # noqa: E402
from rag_app.eval.beir import Beir, load_beir  # noqa: E402
from rag_app.eval.metrics import Run  # noqa: E402
from rag_app.fusion import FusionConfig  # noqa: E402
from rag_app.language import foreign_question  # noqa: E402

FOREIGN = ("ru", "de", "fr")
WEIGHTS = (0.5, 0.3, 0.2, 0.1)


def runs(sub: Beir, docs: np.ndarray, queries: np.ndarray) -> dict[str, Run]:
    dense, lexical = dense_run(sub, docs, queries), lexical_run(sub)
    out: dict[str, Run] = {"dense": dense, "BM25": lexical,
                           "default": fused_run(dense, lexical, FusionConfig())}
    for w in WEIGHTS:
        out[f"dense weight {w}"] = fused_run(dense, lexical, FusionConfig(alpha=w))
    foreign = {q for q, text in sub.queries.items()
               if foreign_question(text, ENGLISH_DEFAULT) is not None}
    lean = fused_run(dense, lexical, FusionConfig(alpha=FusionConfig().foreign_alpha))
    out["routed"] = {q: lean[q] if q in foreign else out["default"][q] for q in out["default"]}
    return out


def main(argv: Sequence[str] | None = None) -> int:
    warnings.filterwarnings("ignore", message="unsafe cast from uint64")
    cache = Path(argv[1]) if argv and len(argv) > 1 and argv[0] == "--cache" else CACHE
    full = load_beir(DATASET)
    model = minilm(2)
    docs = embed_passages(model, full, sorted(priority_order(full)), cache)
    queries = embed_queries(model, full, cache)
    en, en_idx, _ = restrict(full, "en")
    settings: dict[str, list[tuple[Beir, dict[str, Run]]]] = {"own": [], "english": []}
    for lang in FOREIGN:
        sub, doc_idx, q_idx = restrict(full, lang)
        settings["own"].append((sub, runs(sub, docs[doc_idx], queries[q_idx])))
        qids = [q for q in full.queries if lang_of(q) == lang]
        cross = replace(en, queries={q: full.queries[q] for q in qids},
                        qrels={q: full.qrels.get("en-" + q.split("-", 1)[1], {}) for q in qids},
                        digest=f"{en.digest}-{lang}-questions")
        qi = np.array([i for i, q in enumerate(full.queries) if lang_of(q) == lang])
        settings["english"].append((cross, runs(cross, docs[en_idx], queries[qi])))
    titles = {"own": "passages in the question's language",
              "english": "English passages (question in another language)"}
    for key, parts in settings.items():
        print(f"\n### MiniLM, Russian/German/French questions over {titles[key]}, nDCG@10\n")
        print("| fusion | " + " | ".join(FOREIGN) + " | all (p vs default) |")
        print("|---|" + "---|" * (len(FOREIGN) + 1))
        names = list(parts[0][1])
        scores = {n: [np.array([per_query(r[n], s.qrels).get(q, 0.0) for q in s.qrels])
                      for s, r in parts] for n in names}
        base = np.concatenate(scores["default"])
        for n in names:
            pooled = np.concatenate(scores[n])
            cols = " | ".join(f"{x.mean():.3f}" for x in scores[n])
            p = "" if n == "default" else f" (p = {flip_test(pooled, base):.3f})"
            print(f"| {n} | {cols} | {pooled.mean():.3f}{p} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
