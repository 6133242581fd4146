"""The measures the evaluation reports, each small enough to check by hand.

Retrieval metrics (nDCG, recall, MRR) come from ranx, a maintained library that matches
trec_eval, never from formulas written here. What ranx does not cover is here:

- `token_f1` / `contains_answer`: SQuAD's answer measures (lower case, punctuation and the
  articles a/an/the removed, white-space tokens; F1 over the multiset of shared tokens).
- `split_sentences`: answer text into sentences, for faithfulness.
- `sentence_support` / `faithfulness`: how well each answer sentence is supported by the
  passages the answer cites, by embedding similarity (see `SUPPORT_THRESHOLD`).
- `percentile`: latency percentiles that skip missing values.
"""

from __future__ import annotations

import importlib
import itertools
import re
import string
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from rag_app.errors import EXIT_USAGE, RagError
from rag_app.text.sentences import split_sentences

if TYPE_CHECKING:
    from rag_app.embedders.base import Embedder

Run = dict[str, list[tuple[str, float]]]  # query id -> ranked (doc id, score), best first
Qrels = dict[str, dict[str, int]]  # query id -> doc id -> relevance grade (> 0)

# An answer sentence counts as supported when some unit of the cited passages (the whole
# passage, one of its sentences, or two neighbouring sentences) has at least this cosine
# similarity to it. Measured with the bundled all-MiniLM-L6-v2 on 60 questions of the Python
# FAQ set (../shared/qa), 2026-11: a sentence of one answer section against the units of
# another section of the same FAQ page (same topic, not its answer; 212 sentences) scored
# median 0.30, 95th percentile 0.56, 99th 0.69; the last two thirds of a sentence against its
# own section (a crude paraphrase; 59 sentences) scored median 0.89, 5th percentile 0.67.
# 0.6 keeps about 96% of the related-but-unsupported sentences below and 97% of the
# fragments above. It is a screen for unsupported sentences, not proof of support: a
# sentence that negates its passage still scores high. Another model needs its own threshold.
SUPPORT_THRESHOLD = 0.6

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT_CHARS = string.punctuation + "‘’“”–—…"
# Punctuation becomes a space, so code matches however it is spaced: "drop=FALSE" and
# "drop = FALSE" are both "drop false" (deleting it made "dropfalse" and "drop false").
_PUNCT = str.maketrans(_PUNCT_CHARS, " " * len(_PUNCT_CHARS))
# ...except a separator inside a number, which goes: "2,200" is "2200", "4.2.0" is "420".
_NUMBER_SEPARATOR = re.compile(r"(?<=\d)[,.](?=\d)")
class MissingDependency(RagError):
    """An optional package the evaluation needs is not installed."""

    exit_status = EXIT_USAGE


def require(module: str, purpose: str) -> Any:
    """Import `module` or say which package to install (the `eval` extra has them all)."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        package = {"ranx": "ranx", "matplotlib": "matplotlib"}.get(module, module)
        raise MissingDependency(
            f"{purpose} needs the package {package!r}, which is not installed: "
            f"pip install -e '.[eval]' (or: pip install {package})"
        ) from exc


# -- answers against a gold answer ------------------------------------------------------------
def normalize_answer(text: str) -> str:
    """SQuAD's normalisation (lower case, no punctuation, no articles, single spaces), except
    that punctuation becomes a space, not nothing, unless it separates digits."""
    text = _NUMBER_SEPARATOR.sub("", text.lower()).translate(_PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def token_f1(prediction: str, gold: str) -> float:
    """Harmonic mean of token precision and recall after `normalize_answer` (SQuAD F1).
    Two empty texts agree (1.0); one empty text scores 0.0."""
    pred = normalize_answer(prediction).split()
    ref = normalize_answer(gold).split()
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


_MONTHS = ("january february march april may june july august september october november "
           "december").split()
_MONTH = "|".join(_MONTHS)
# "September 12, 2023", "12 September 2023", "12th of September 2023": the same day as
# 2023-09-12.
_DATE_IN_WORDS = re.compile(
    rf"\b(?:(?P<d1>\d{{1,2}})(?:st|nd|rd|th)?\s+(?:of\s+)?(?P<m1>{_MONTH})|(?P<m2>{_MONTH})\s+"
    rf"(?P<d2>\d{{1,2}})(?:st|nd|rd|th)?),?\s+(?P<y>\d{{4}})\b", re.I)


def _iso_dates(text: str) -> str:
    def iso(m: re.Match[str]) -> str:
        month = _MONTHS.index((m["m1"] or m["m2"]).lower()) + 1
        return f"{m['y']}-{month:02d}-{int(m['d1'] or m['d2']):02d}"
    return _DATE_IN_WORDS.sub(iso, text)


# "set the fill argument to TRUE" states "fill = TRUE"; "53 binary digits" states "53 bits"
_SETTING = re.compile(r"\b(?:argument|parameter|option)s? (?:(?:is |be )?set )?(?:to|as|of) ")
_BINARY_DIGITS = re.compile(r"\bbinary digit")


def _fact_form(text: str) -> str:
    """`normalize_answer`, with a date written in words as its ISO date, a unit right after
    a number in the singular ("2-year warranty" states "2 years"), an argument set in words as
    set in code ("the `las` parameter to 1" states "las=1") and binary digits as bits."""
    plain = _BINARY_DIGITS.sub("bit", _SETTING.sub("", normalize_answer(_iso_dates(text))))
    words = plain.split()
    return " ".join(w[:-1] if i and words[i - 1].isdigit() and len(w) > 3 and w.endswith("s")
                    and not w.endswith("ss") else w for i, w in enumerate(words))


def contains_answer(prediction: str, gold: str) -> bool:
    """Does the prediction contain the gold answer as whole tokens, both normalised
    (`_fact_form`: SQuAD's normalisation, dates in words as ISO dates, a unit after a number
    in the singular)? A gold answer of several facts joined by "; " ("2200 W; 4 minutes 10
    seconds") needs every part."""
    parts = [_fact_form(p) for p in gold.split("; ")]
    if not any(parts):
        return False
    said = f" {_fact_form(prediction)} "
    return all(f" {ref} " in said for ref in parts if ref)


# -- sentences and support --------------------------------------------------------------------
def support_units(passages: Sequence[str]) -> list[str]:
    """What an answer sentence is compared with: each passage whole, each of its sentences,
    and each pair of neighbouring sentences (an answer sentence often merges two)."""
    units: list[str] = []
    for passage in passages:
        units.append(" ".join(passage.split()))
        sentences = split_sentences(passage)
        if len(sentences) > 1:
            units.extend(sentences)
            units.extend(f"{a} {b}" for a, b in itertools.pairwise(sentences))
    return [u for u in dict.fromkeys(units) if u]


def sentence_support(embedder: Embedder, sentences: Sequence[str], passages: Sequence[str]
                     ) -> list[float]:
    """For each sentence, its best cosine similarity to any unit of `passages` (0.0 each when
    there are no passages). The embedder's vectors are L2-normalised."""
    if not sentences:
        return []
    units = support_units(passages)
    if not units:
        return [0.0] * len(sentences)
    sent_vecs = np.asarray(embedder.embed_documents(list(sentences)), dtype=np.float32)
    unit_vecs = np.asarray(embedder.embed_documents(units), dtype=np.float32)
    return [float(v) for v in (sent_vecs @ unit_vecs.T).max(axis=1)]


@dataclass(frozen=True, slots=True)
class Faithfulness:
    sentences: tuple[str, ...]
    scores: tuple[float, ...]  # best similarity of each sentence to the cited passages
    threshold: float

    @property
    def supported(self) -> tuple[bool, ...]:
        return tuple(s >= self.threshold for s in self.scores)

    @property
    def share(self) -> float | None:
        """Share of sentences supported; None for an answer without sentences."""
        return sum(self.supported) / len(self.scores) if self.scores else None


def faithfulness(embedder: Embedder, answer: str, passages: Sequence[str], *,
                 threshold: float = SUPPORT_THRESHOLD) -> Faithfulness:
    """Each sentence of `answer` scored against the cited `passages` (see SUPPORT_THRESHOLD).
    With no passages every sentence is unsupported."""
    sentences = split_sentences(answer)
    scores = sentence_support(embedder, sentences, passages)
    return Faithfulness(tuple(sentences), tuple(scores), threshold)


# -- summaries ---------------------------------------------------------------------------------
def percentile(values: Iterable[float | None], q: float) -> float | None:
    """The q-th percentile (0-100, linear interpolation) of the values that are not None;
    None when there are none."""
    present = [float(v) for v in values if v is not None]
    if not present:
        return None
    return float(np.percentile(present, q))


def mean(values: Iterable[float | bool | None]) -> float | None:
    """Mean of the values that are not None; None when there are none."""
    present = [float(v) for v in values if v is not None]
    return sum(present) / len(present) if present else None


# -- retrieval metrics (ranx) -------------------------------------------------------------------
_EMPTY_DOC = "\x00no-result"  # ranx cannot hold an empty ranking: a doc id no qrels name


def _ranx_inputs(run: Run, qrels: Qrels) -> tuple[dict[str, dict[str, float]],
                                                 dict[str, dict[str, int]]]:
    """Plain dicts in ranx's shape, both in the order of `qrels` (ranx pairs them by position).
    Scores are made from our ranks, so ties in our scores cannot be reordered; a judged query
    missing from `run` gets an empty ranking (it scores 0)."""
    order = list(qrels)
    ranx_run = {q: {d: float(len(run.get(q, [])) - i) for i, (d, _) in
                    enumerate(run.get(q, []))} or {_EMPTY_DOC: 0.0} for q in order}
    return ranx_run, {q: dict(qrels[q]) for q in order}


def ranx_scores(run: Run, qrels: Qrels, metrics: Sequence[str]) -> dict[str, np.ndarray]:
    """Per-query scores of each metric, in the order of `qrels`' query ids. Metric names are
    ranx's ("ndcg_burges@10", "recall@100", "mrr@10", "mrr@10-l2" …). Plain dicts go to ranx
    (not its Run/Qrels objects): its compiled metrics are cached on disk, while building its
    typed containers recompiles in every process (~10 s on 2 cores)."""
    ranx = require("ranx", "Retrieval metrics")
    ranx_run, ranx_qrels = _ranx_inputs(run, qrels)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="unsafe cast from uint64")  # numba, harmless
        # ranx 0.3.21 fails on one metric with return_mean=False (a KeyError in its return
        # line); the metric twice takes its several-metrics path, computing it once.
        names = list(metrics) if len(metrics) > 1 else [metrics[0], metrics[0]]
        scores = ranx.evaluate(ranx_qrels, ranx_run, names, return_mean=False)
    return {m: np.asarray(scores[m], dtype=np.float64) for m in metrics}


def ranx_evaluate(run: Run, qrels: Qrels, metrics: Sequence[str]
                  ) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """(mean of each metric, per-query scores {metric: {query id: score}}) over the judged
    queries (those in `qrels`)."""
    scores = ranx_scores(run, qrels, metrics)
    order = list(qrels)
    means = {m: float(v.mean()) if v.size else 0.0 for m, v in scores.items()}
    per_query = {m: {q: float(x) for q, x in zip(order, v, strict=True)}
                 for m, v in scores.items()}
    return means, per_query


def ranx_compare(run: Run, baseline: Run, qrels: Qrels, metrics: Sequence[str], *,
                 n_permutations: int = 20000, seed: int = 0) -> dict[str, dict[str, float]]:
    """Per metric: both means, per-query wins/ties/losses of `run` against `baseline`, and
    the two-sided p-value of ranx's paired randomisation (Fisher) test."""
    a, b = ranx_scores(run, qrels, metrics), ranx_scores(baseline, qrels, metrics)
    from ranx.statistical_tests import fisher_randomization_test
    out: dict[str, dict[str, float]] = {}
    for m in metrics:
        p, _ = fisher_randomization_test(b[m], a[m], n_permutations, 0.05, seed)
        out[m] = {"run": float(a[m].mean()), "baseline": float(b[m].mean()),
                  "wins": float((a[m] > b[m]).sum()), "ties": float((a[m] == b[m]).sum()),
                  "losses": float((a[m] < b[m]).sum()), "p": float(p)}
    return out
