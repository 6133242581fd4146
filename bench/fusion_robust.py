"""Fusion that cannot sink below its better half: dense, BM25 and fusion methods on sets where
one retriever is useless.

    python bench/fusion_robust.py [--dataset ../shared/datasets/msmarco] [--cache DIR]

Three variants of the BEIR-format msmarco sample, the only judged retrieval set at hand:

- `msmarco`: as it is (dense is the better half: 0.70 against BM25's 0.57).
- `unreadable script`: every Latin letter of passages and queries mapped to an Arabic
  letter. BM25 sees the same words under other letters; the English MiniLM model sees a
  script it cannot read — the class of an English model on Arabic, Greek or Cyrillic text
  (the Arabic set kept aside: dense 0.073, BM25 0.719, the old default 0.114).
- `typos`: each query word of 4+ letters (all, or half of them) gets two inner letters
  swapped. BM25 misses the misspelt words; the model's word pieces still carry part of
  them — the class of a retriever weak or useless for a question.

Every method gets the same top-`depth` candidates of each retriever. The table gives
nDCG@10 (exponential gain, as the dataset README) and the gap to the better of dense and BM25
on each set: the target is no set below -0.01. A method is chosen on `msmarco` and
`unreadable script`; the two `typos` sets are held out (reported, not tuned on).
"""

from __future__ import annotations

import random
import re
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.fusion_study import (  # noqa: E402
    DATASET,
    PRIMARY,
    dense_run,
    embed,
    evaluate,
    fused_run,
    lexical_run,
    msmarco_missing,
    study_parser,
)
from rag_app.eval.beir import Beir, load_beir  # noqa: E402
from rag_app.eval.metrics import Run, ranx_compare  # noqa: E402
from rag_app.fusion import FusionConfig  # noqa: E402
from rag_app.hardware import detect  # noqa: E402

ARABIC = "ابتثجحخدذرزسشصضطظعغفقكلمنه"  # 26 letters for a-z
_SCRIPT = str.maketrans("abcdefghijklmnopqrstuvwxyz", ARABIC)
_WORD = re.compile(r"[A-Za-z]{4,}")


def unreadable(text: str) -> str:
    return text.lower().translate(_SCRIPT)


def typos(text: str, seed: int, share: float = 1.0) -> str:
    rng = random.Random(seed)

    def swap(m: re.Match[str]) -> str:
        w = m.group(0)
        if rng.random() >= share:
            return w
        i = rng.randrange(1, len(w) - 2)
        return w[:i] + w[i + 1] + w[i] + w[i + 2:]

    return _WORD.sub(swap, text)


def variant(beir: Beir, name: str, docs: Callable[[str], str] | None,
            queries: Callable[[str, int], str] | None) -> Beir:
    titles, bodies = beir.titles, beir.bodies
    if docs is not None:
        titles = [docs(t) for t in titles]
        bodies = [docs(b) for b in bodies]
    qs = beir.queries
    if queries is not None:
        qs = {q: queries(t, i) for i, (q, t) in enumerate(beir.queries.items())}
    return replace(beir, titles=titles, bodies=bodies, queries=qs,
                   digest=f"{beir.digest}-{name}", name=name)


def methods() -> list[tuple[str, FusionConfig]]:
    out = [("old default: convex minmax alpha=0.7", FusionConfig(method="convex", alpha=0.7)),
           ("rrf k=60", FusionConfig(method="rrf"))]
    for a in (0.6, 0.7, 0.8):
        for low, high in ((0.2, 0.4), (0.25, 0.45), (0.3, 0.5), (0.3, 0.6)):
            out.append((f"adaptive alpha={a} spread {low}-{high}",
                        FusionConfig(method="adaptive", alpha=a, spread_low=low,
                                     spread_high=high)))
    out.append(("default", FusionConfig()))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = study_parser(__doc__, DATASET).parse_args(argv)
    warnings.filterwarnings("ignore", message="unsafe cast from uint64")  # ranx under numba
    if msmarco_missing(args.dataset):
        return 0
    cache = None if args.no_cache else args.cache

    from rag_app.embedders.auto import make_embedder
    from rag_app.settings import Settings

    print(f"CPU: {detect().summary()}")
    base = load_beir(args.dataset)
    embedder = make_embedder(Settings(_env_file=None))  # type: ignore[call-arg]
    print(f"model: {embedder.name} ({embedder.backend}); {len(base.doc_ids)} passages, "
          f"{len(base.queries)} judged queries\n")
    sets = [variant(base, "msmarco", None, None),
            variant(base, "unreadable script", unreadable, lambda t, i: unreadable(t)),
            variant(base, "typos, all words (held out)", None, typos),
            variant(base, "typos, half the words (held out)", None,
                    lambda t, i: typos(t, i, 0.5))]
    runs: dict[str, tuple[Beir, Run, Run]] = {}
    docs_of: dict[tuple[str, ...], Any] = {}  # corpus -> passage vectors (queries-only variants)
    for beir in sets:
        corpus = tuple(beir.bodies[:50])
        if corpus in docs_of:
            docs = docs_of[corpus]
            queries = np.stack([embedder.embed_query(q) for q in beir.queries.values()])
        else:
            docs, queries = embed(embedder, beir, cache)
            docs_of[corpus] = docs
        runs[beir.name] = (beir, dense_run(beir, docs, queries), lexical_run(beir))

    print("| method | " + " | ".join(runs) + " | worst gap to the better half |")
    print("|---|" + "---|" * (len(runs) + 1))
    better: dict[str, float] = {}
    rows: list[tuple[str, dict[str, float]]] = []
    d_row = {n: evaluate(d, b.qrels)[PRIMARY] for n, (b, d, _) in runs.items()}
    l_row = {n: evaluate(lx, b.qrels)[PRIMARY] for n, (b, _, lx) in runs.items()}
    for n in runs:
        better[n] = max(d_row[n], l_row[n])
    rows += [("dense only", d_row), ("BM25 only", l_row)]
    fused: dict[str, dict[str, Run]] = {}
    for label, config in methods():
        row = {}
        for n, (b, d, lx) in runs.items():
            run = fused_run(d, lx, config)
            fused.setdefault(label, {})[n] = run
            row[n] = evaluate(run, b.qrels)[PRIMARY]
        rows.append((label, row))
    for label, row in rows:
        gaps = [row[n] - better[n] for n in runs]
        cells = " | ".join(f"{row[n]:.3f} ({row[n] - better[n]:+.3f})" for n in runs)
        print(f"| {label} | {cells} | {min(gaps):+.3f} |")

    print("\nThe default against the better half, per query (paired randomisation test):")
    for n, (b, d, lx) in runs.items():
        half = d if d_row[n] >= l_row[n] else lx
        c = ranx_compare(fused["default"][n], half, b.qrels, (PRIMARY,))[PRIMARY]
        print(f"  {n}: {c['run']:.3f} vs {'dense' if half is d else 'BM25'} "
              f"{c['baseline']:.3f}; better {c['wins']:.0f}, worse {c['losses']:.0f}, "
              f"same {c['ties']:.0f}; p = {c['p']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
