"""The passages the model reads, cut to the sentences that matter for the question.

On a CPU the model reads its prompt at ~70 tokens a second (bench/llm_models.py): five chunks of
256 tokens are ~15 s before the first word of the answer. Most of a chunk does not bear on the
question. `select_evidence` keeps, from every retrieved passage, the sentences (lines, for
tables and code) most similar to the question, within a budget of tokens for all passages
together, in their original order; a gap between kept pieces is shown as " … ". Each passage
keeps at least its best sentence, so the numbering of sources, and every citation, is unchanged;
a sentence that ends with ":" takes the next one with it (the command or list it introduces).

    texts = select_evidence(question, [h.text for h in hits], embedder, budget=500)

Kept pieces are verbatim substrings of their passage: a quote found in them is in the passage.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rag_app.text.words import terms

GAP = " … "
# A sentence longer than this (a table, a code block, a list run together) is split at its lines.
LONG_UNIT_CHARS = 300
# Sentence ends in passage text: . ! ? (optionally closed by a quote or bracket) then white space
# and an upper-case letter, digit, or opening quote/bracket/backtick; a blank line; a list item.
_BOUNDARY = re.compile(
    r"(?:(?<=[.!?])|(?<=[.!?][\"'”’)\]]))\s+(?=[\"'“‘(\[`]?[A-Z0-9])"
    r"|\n\s*\n"
    r"|\n(?=\s*(?:[-*•]|\d{1,2}[.)])\s)"
)
@dataclass(frozen=True, slots=True)
class Unit:
    passage: int
    start: int
    end: int


def units_of(text: str) -> list[tuple[int, int]]:
    """Character spans of the sentences of `text` (long ones split at line breaks into pieces
    of up to LONG_UNIT_CHARS), white space trimmed, in order; together they cover the text."""
    spans: list[tuple[int, int]] = []
    start = 0
    for m in [*_BOUNDARY.finditer(text), None]:
        end = m.start() if m else len(text)
        spans += _split_long(text, start, end)
        start = m.end() if m else len(text)
    return [(a, b) for a, b in spans if text[a:b].strip()]


def _split_long(text: str, start: int, end: int) -> list[tuple[int, int]]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    if end - start <= LONG_UNIT_CHARS:
        return [(start, end)]
    out: list[tuple[int, int]] = []
    piece_start = start
    for m in re.finditer(r"\n", text[start:end]):
        cut = start + m.start()
        if cut - piece_start >= LONG_UNIT_CHARS // 2:
            out.append((piece_start, cut))
            piece_start = cut + 1
    out.append((piece_start, end))
    return [(a, b) for a, b in out if b > a]


def score_units(question: str, texts: Sequence[str], embedder: Any) -> list[float]:
    """How well each sentence answers the question: its cosine to the question plus half the
    share of the question's terms it holds."""
    if not texts:
        return []
    query = np.asarray(embedder.embed_query(question))
    vectors = np.asarray(embedder.embed_documents(list(texts)))
    wanted = terms(question)
    scores = []
    for text, cosine in zip(texts, vectors @ query, strict=True):
        overlap = len(wanted & terms(text)) / len(wanted) if wanted else 0.0
        scores.append(float(cosine) + 0.5 * overlap)
    return scores


def best_sentences(question: str, passages: Sequence[str], embedder: Any, top: int = 3
                   ) -> list[tuple[int, str, float]]:
    """The `top` sentences of the passages (lines, for tables and code) that best answer the
    question, best first: (passage index, the sentence as written, its score). Sentences of
    under 8 characters are left out."""
    units = [(i, text[a:b].strip()) for i, text in enumerate(passages)
             for a, b in units_of(text)]
    units = [(i, t) for i, t in units if len(t) >= 8]
    scores = score_units(question, [t for _, t in units], embedder)
    ranked = sorted(zip(units, scores, strict=True), key=lambda x: -x[1])
    return [(i, t, round(score, 3)) for (i, t), score in ranked[:top]]


def select_evidence(question: str, passages: Sequence[str], embedder: Any, budget: int,
                    count_tokens: Any = None, neighbours: int = 1) -> list[str]:
    """Each passage cut to its sentences that best match `question`, all passages together
    within about `budget` tokens (counted with `count_tokens`, a list-of-texts → list-of-counts
    function; default: the embedder's). Passages that fit the budget together, and a passage
    whose every sentence was kept, are returned whole. budget <= 0: the passages unchanged."""
    if budget <= 0 or not passages:
        return list(passages)
    count = count_tokens or embedder.count_tokens
    whole = count(list(passages))
    if sum(whole) <= budget:
        return list(passages)
    units = [Unit(i, a, b) for i, text in enumerate(passages) for a, b in units_of(text)]
    if not units:
        return list(passages)
    texts = [passages[u.passage][u.start:u.end] for u in units]
    scores = score_units(question, texts, embedder)
    sizes = count(texts)
    chosen: set[int] = set()
    used = 0

    def take(i: int) -> None:
        nonlocal used
        p = units[i].passage
        lo, hi = i - neighbours, i + neighbours
        if texts[i].rstrip().endswith(":"):
            hi += 1  # "... use the following command:" brings the command with it
        for j in range(max(lo, 0), min(hi, len(units) - 1) + 1):
            if units[j].passage == p and j not in chosen:
                chosen.add(j)
                used += sizes[j]

    order = sorted(range(len(units)), key=lambda i: -scores[i])
    for p in range(len(passages)):  # every source keeps its best sentence
        best = next((i for i in order if units[i].passage == p), None)
        if best is not None:
            take(best)
    for i in order:
        if used >= budget:
            break
        if i not in chosen and used + sizes[i] <= budget:
            take(i)
    out = []
    for p, text in enumerate(passages):
        kept = sorted(i for i in chosen if units[i].passage == p)
        if not kept or len(kept) == sum(1 for u in units if u.passage == p):
            out.append(text)
            continue
        pieces: list[str] = []
        if text[:units[kept[0]].start].strip():
            pieces.append(GAP.lstrip())
        for prev, i in zip([None, *kept], kept, strict=False):
            if prev is not None:
                between = text[units[prev].end:units[i].start]
                pieces.append(GAP if i != prev + 1 else "\n" if "\n" in between else " ")
            pieces.append(text[units[i].start:units[i].end])
        if text[units[kept[-1]].end:].strip():
            pieces.append(GAP.rstrip())
        out.append("".join(pieces))
    return out

