"""Fusing the dense and the lexical ranking into one.

Both inputs are ranked lists, best first: dense as (chunk id, cosine similarity), lexical as
(chunk id, BM25 score). Every function returns (chunk id, fused score), best first, ties
broken by the better rank in the dense list, then in the lexical one.

Methods:
- `rrf`: reciprocal-rank fusion, sum of w / (k + rank); plain RRF is k=60 and equal weights.
- `convex`: alpha * dense + (1 - alpha) * lexical after normalising each list's scores per
  query ("minmax", "zscore", or "max": score / the list's best, i.e. a theoretical minimum
  of 0). A chunk missing from one list gets that list's lowest normalised value.
- `rescue`: the dense ranking, with lexical's best hits lifted to a fixed position when dense
  ranked them lower (or missed them).
- `adaptive` (the default): `convex`, but when the two lists disagree (at most
  `agree_max` shared passages in their top `agree_k`) and the dense scores are nearly flat,
  the dense weight shrinks towards 0 for that query. A model that cannot read the text (an
  English model on Arabic) finds every passage about equally similar: relative spread
  (best - last) / best of its candidates under `spread_low` gives it no weight, over
  `spread_high` its full `alpha`, linear in between. When the lists agree, or dense tells
  passages apart, this is `convex` with `alpha`.

The default (`FusionConfig()`) was chosen by `bench/fusion_robust.py` on msmarco and on
msmarco with every letter mapped to an Arabic one (BM25 unchanged, the English model
unable to read it), holding out msmarco with misspelt queries (BM25 weak). The old
default, convex alpha = 0.7 (chosen on msmarco alone by `bench/fusion_study.py`), scored
0.060 on the unreadable set against BM25's 0.570 — the Arabic set kept aside showed the same
fall (0.114 against 0.719). Adaptive, alpha 0.7, spread 0.3 to 0.5: msmarco 0.705 (dense
0.701), unreadable 0.570 (BM25 0.570), misspelt held out within 0.002 of the better half or
above it. The thresholds sit in a narrow window (0.25 to 0.45 left the unreadable set 0.008
below BM25, 0.2 to 0.4 0.032 below); a multilingual model is the real fix for other
languages. On the QA sets, `bench/retrieval_study.py` compares it with convex.

A question not in English over an English-only model (`Retriever.search` asks
rag_app.language) is fused with `foreign_alpha` = 0.5 as its dense weight
instead of `alpha`: the dense scores of such a question are not flat enough for the adaptive
rule to drop them, yet mostly wrong. On the multilingual dev set with MiniLM
(bench/question_language_study.py, the 114 Russian, German and French questions): passages in
the question's language 0.599 -> 0.642 nDCG@10 (paired sign-flip p = 0.003; German 0.527 ->
0.639, Russian and French +0.002 and +0.013; BM25 alone 0.625), English passages (a question
asked in another language than the documents) 0.257 -> 0.291 (p = 0.04; BM25 alone 0.219).
Of the weights tried (0.1, 0.2, 0.3, 0.5) only 0.5 was at or above the default in all six
columns; chosen on this set, no set held out. English questions are never routed here (none
of 178 identified as another language).

The convex weight itself was chosen on the msmarco sample by `bench/fusion_study.py`:
min-max normalised scores, alpha = 0.7 (dense weight), fused from the top 100 of each
retriever. There nDCG@10 was 0.708 against 0.704 for dense only; any alpha from 0.6 to 0.85
stayed within 0.001 of dense or above it: a tie within noise on 43 queries (paired
randomisation p = 0.7), while the first highly relevant passage came earlier (MRR@10 at
grade >= 2: 0.878 vs 0.822, p = 0.15), and BM25 adds the exact-term matches (codes, names)
that msmarco hardly tests. Fusing fewer than ~20 candidates per retriever lost to dense
only (0.689 at 10): chunks found by one retriever alone get that list's lowest score.
Plain RRF (k=60) scored below dense only (0.695): it gives BM25, the weaker retriever on that
data, an equal vote.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from rag_app.errors import ConfigError

Ranked = Sequence[tuple[str, float]]
Mode = Literal["dense", "lexical", "hybrid"]
Method = Literal["rrf", "convex", "rescue", "adaptive"]
Norm = Literal["minmax", "zscore", "max"]


@dataclass(frozen=True, slots=True)
class FusionConfig:
    """Which rankings to use and how to fuse them. The defaults are the measured choice."""

    mode: Mode = "hybrid"
    method: Method = "adaptive"
    alpha: float = 0.7  # convex, adaptive: weight of the dense score
    norm: Norm = "minmax"  # convex, adaptive: per-query score normalisation
    spread_low: float = 0.3  # adaptive: dense relative spread that gets no weight
    spread_high: float = 0.5  # adaptive: ... and the spread that gets the full alpha
    agree_k: int = 10  # adaptive: the top passages of each list compared
    agree_max: int = 2  # adaptive: the lists agree when they share more than this
    rrf_k: float = 60.0  # rrf: rank offset
    lexical_weight: float = 1.0  # rrf: weight of the lexical list (dense weight is 1)
    rescue_top: int = 1  # rescue: how many of lexical's best hits to lift
    rescue_position: int = 3  # rescue: the 1-based rank they are lifted to
    depth: int = 100  # candidates to take from each retriever before fusing (>= 20)
    foreign_alpha: float = 0.5  # adaptive, convex: dense weight for a question the model can't read

    def __post_init__(self) -> None:
        if self.mode not in ("dense", "lexical", "hybrid"):
            raise ConfigError(f"fusion mode must be dense, lexical or hybrid, not {self.mode!r}")
        if self.method not in ("rrf", "convex", "rescue", "adaptive"):
            raise ConfigError("fusion method must be adaptive, convex, rrf or rescue, "
                              f"not {self.method!r}")
        if self.norm not in ("minmax", "zscore", "max"):
            raise ConfigError(f"score normalisation must be minmax, zscore or max, "
                              f"not {self.norm!r}")
        if not 0.0 <= self.alpha <= 1.0 or not 0.0 <= self.foreign_alpha <= 1.0:
            raise ConfigError(f"fusion alpha and foreign_alpha must be between 0 and 1, not "
                              f"{self.alpha} and {self.foreign_alpha}")
        if self.rrf_k < 0 or self.lexical_weight < 0:
            raise ConfigError("rrf_k and lexical_weight must not be negative")
        if self.rescue_top < 0 or self.rescue_position < 1 or self.depth < 1:
            raise ConfigError("rescue_top must be >= 0, rescue_position and depth >= 1")
        if not 0.0 <= self.spread_low < self.spread_high <= 1.0:
            raise ConfigError("spread_low and spread_high must satisfy 0 <= low < high <= 1, "
                              f"not {self.spread_low} and {self.spread_high}")
        if self.agree_k < 1 or self.agree_max < 0:
            raise ConfigError("agree_k must be >= 1 and agree_max >= 0")


def fuse(dense: Ranked, lexical: Ranked, config: FusionConfig | None = None
         ) -> list[tuple[str, float]]:
    """One ranking from the two, as `config` says (default: the measured choice)."""
    config = config or FusionConfig()
    if config.mode == "dense":
        return list(dense)
    if config.mode == "lexical":
        return list(lexical)
    if config.method == "rrf":
        return rrf(dense, lexical, k=config.rrf_k, lexical_weight=config.lexical_weight)
    if config.method == "rescue":
        return rescue(dense, lexical, top=config.rescue_top, position=config.rescue_position)
    if config.method == "adaptive":
        return convex(dense, lexical, alpha=dense_weight(dense, lexical, config),
                      norm=config.norm)
    return convex(dense, lexical, alpha=config.alpha, norm=config.norm)


def dense_weight(dense: Ranked, lexical: Ranked, config: FusionConfig) -> float:
    """The `adaptive` method's weight of the dense list for this query: `config.alpha`,
    shrunk towards 0 when the lists disagree and the dense scores are nearly flat."""
    shared = ({d for d, _ in dense[: config.agree_k]}
              & {d for d, _ in lexical[: config.agree_k]})
    if not lexical or len(dense) < 2 or len(shared) > config.agree_max:
        return config.alpha
    trust = (relative_spread(dense) - config.spread_low) / (config.spread_high
                                                             - config.spread_low)
    trust = min(1.0, max(0.0, trust))
    weighted = config.alpha * trust
    return weighted / (weighted + (1.0 - config.alpha)) if weighted > 0 else 0.0


def relative_spread(ranked: Ranked) -> float:
    """(best - last) / best of a list's scores: near 0 when every candidate scored about
    the same. 0 when the best score is not positive."""
    best, last = float(ranked[0][1]), float(ranked[-1][1])
    return (best - last) / best if best > 0 else 0.0


def rrf(dense: Ranked, lexical: Ranked, *, k: float = 60.0, dense_weight: float = 1.0,
        lexical_weight: float = 1.0) -> list[tuple[str, float]]:
    """Reciprocal-rank fusion: sum over lists of weight / (k + rank), rank from 1."""
    scores: dict[str, float] = {}
    for ranked, weight in ((dense, dense_weight), (lexical, lexical_weight)):
        for rank, (doc_id, _) in enumerate(ranked, start=1):
            scores[doc_id] = scores.get(doc_id, 0.0) + weight / (k + rank)
    return _ordered(scores, dense, lexical)


def normalise(scores: Sequence[float], norm: Norm) -> np.ndarray:
    """Per-query normalisation of one list's scores. Constant lists become all ones
    ("minmax", "max") or all zeros ("zscore")."""
    x = np.asarray(scores, dtype=np.float64)
    if x.size == 0:
        return x
    if norm == "minmax":
        span = x.max() - x.min()
        return (x - x.min()) / span if span > 0 else np.ones_like(x)
    if norm == "zscore":
        std = x.std()
        return (x - x.mean()) / std if std > 0 else np.zeros_like(x)
    if norm == "max":
        top = x.max()
        return np.clip(x, 0.0, None) / top if top > 0 else np.ones_like(x)
    raise ConfigError(f"unknown score normalisation {norm!r}")


def convex(dense: Ranked, lexical: Ranked, *, alpha: float = 0.7, norm: Norm = "minmax"
           ) -> list[tuple[str, float]]:
    """alpha * normalised dense score + (1 - alpha) * normalised lexical score."""
    parts: list[tuple[dict[str, float], float]] = []
    for ranked in (dense, lexical):
        values = normalise([s for _, s in ranked], norm)
        parts.append(({d: float(v) for (d, _), v in zip(ranked, values, strict=True)},
                      float(values.min()) if values.size else 0.0))
    (d_norm, d_floor), (l_norm, l_floor) = parts
    scores = {
        doc_id: alpha * d_norm.get(doc_id, d_floor) + (1 - alpha) * l_norm.get(doc_id, l_floor)
        for doc_id in (*d_norm, *l_norm)
    }
    return _ordered(scores, dense, lexical)


def rescue(dense: Ranked, lexical: Ranked, *, top: int = 1, position: int = 3
           ) -> list[tuple[str, float]]:
    """The dense ranking, but each of lexical's `top` best hits ranks no lower than
    `position` (1-based; the second hit one place below, …). Lexical-only hits that were
    not lifted follow the dense list. Scores are 1 / rank: they give the order only."""
    order = [doc_id for doc_id, _ in dense]
    for slot, (doc_id, _) in enumerate(lexical[:top]):
        target = position - 1 + slot
        if doc_id in order:
            current = order.index(doc_id)
            if current <= target:
                continue
            order.pop(current)
        order.insert(min(target, len(order)), doc_id)
    seen = set(order)
    order += [doc_id for doc_id, _ in lexical if doc_id not in seen]
    return [(doc_id, 1.0 / rank) for rank, doc_id in enumerate(order, start=1)]


def _ordered(scores: dict[str, float], dense: Ranked, lexical: Ranked
             ) -> list[tuple[str, float]]:
    """Best score first; ties by dense rank, then lexical rank, then id."""
    missing = len(dense) + len(lexical)
    d_rank = {doc_id: r for r, (doc_id, _) in enumerate(dense)}
    l_rank = {doc_id: r for r, (doc_id, _) in enumerate(lexical)}
    ranked = sorted(scores.items(), key=lambda kv: (-kv[1], d_rank.get(kv[0], missing),
                                                    l_rank.get(kv[0], missing), kv[0]))
    return ranked
