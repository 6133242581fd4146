"""Which words of the sources support each sentence of an answer.

`attribute` finds, for each answer sentence, the source sentence that best supports it (cosine
similarity and word overlap) and says whether it does; `check_claim` checks a quote the model
gave itself (RAG_ANSWER_QUOTES=model). Both need no model call and cannot be argued with: a
quote is in its passage word for word, and a number the passage never states is unsupported.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from rag_app.answering.records import Claim
from rag_app.answering.replies import is_refusal
from rag_app.guard import REMOVED
from rag_app.text.numbers import numbers_in, unstated_numbers
from rag_app.text.quotes import find_quote, normalise
from rag_app.text.sentences import split_sentences

# A sentence of the answer is supported by a source sentence when their cosine similarity and
# the share of the answer sentence's words found in it average at least this (and the source
# states every number of the answer sentence). Measured on the R-manuals dev set (bundled 1.5B,
# 87 answer sentences): below 0.3 are 17% of the sentences of correct answers, 18% of wrong
# ones and 64% of those answering unanswerable questions (at 0.4: 24%, 32%, 82%). A flag, not
# a refusal: the score does not tell right from wrong answers well enough for that.
SUPPORT_MIN = 0.3
_NUMBER_SEPARATOR = re.compile(r"(?<=\d),(?=\d{3})")
_WORD = re.compile(r"[^\W_][\w.$@()-]*[\w)]|\d")


def _units(passage: str) -> list[str]:
    """The sentences of a passage, long ones (tables, code) as their lines; no sentence the
    guard cut (it would quote the placeholder)."""
    out: list[str] = []
    for sentence in split_sentences(passage):
        pieces = sentence.splitlines() if len(sentence) > 300 else [sentence]
        out += [p.strip() for p in pieces if len(p.strip()) >= 8 and REMOVED not in p]
    return out


def _plain_words(text: str) -> str:
    """Text as `_overlap` compares it: `normalise`d, thousands separators dropped."""
    return _NUMBER_SEPARATOR.sub("", normalise(text))


def _overlap(sentence: str, plain_unit: str) -> float:
    """Share of the sentence's words found in a unit already made `_plain_words`."""
    words = {w.lower() for w in _WORD.findall(sentence) if len(w) > 2 or w.isdigit()}
    if not words:
        return 0.0
    return sum(1 for w in words if _plain_words(w) in plain_unit) / len(words)


# where a sentence joins two statements: ", and …", "; …", ", while …", ", but …"
_CLAUSES = re.compile(r"(?:,\s+(?:and|while|but|whereas)|;)\s+(?=\S)")


def _clauses(sentence: str) -> list[str]:
    """The sentence's statements, when it joins two or more ("During the 1989 Christmas
    holidays …, and in February 1991 he first posted it …"); [] when it is one."""
    parts = [p.strip() for p in _CLAUSES.split(sentence) if p.strip()]
    return parts if len(parts) > 1 and all(len(p.split()) >= 3 for p in parts) else []


def attribute(sentences: Sequence[str], sources: Sequence[str], numbers: Sequence[int],
              embedder: Any, question: str = "", *, split: bool = True) -> list[Claim]:
    """For each answer sentence, the source sentence (of the sources `numbers`) that best
    supports it: by the mean of cosine similarity and word overlap. The quote is that source
    sentence as written, so it is always in its passage; the claim is supported when the score
    reaches SUPPORT_MIN and the source sentence's passage states every number of the answer
    sentence (or the question does).

    A sentence that joins statements whose figures no one source states all of ("1989" in
    one passage, "February 1991" in another) is judged statement by statement: each gets its
    own quote, by the same rule (`split`)."""
    sentences = [s for s in sentences if s.strip() and not is_refusal(s)]
    units = [(n, u) for n in numbers for u in _units(sources[n - 1])]
    if not sentences or not units:
        return []
    vectors = embedder.embed_documents([*sentences, *(u for _, u in units)])
    said, heard = vectors[: len(sentences)], vectors[len(sentences):]
    plain = [_plain_words(u) for _, u in units]  # once per unit, not once per answer sentence
    claims = []
    for i, sentence in enumerate(sentences):
        cosines = heard @ said[i]
        scores = [(float(c) + _overlap(sentence, p)) / 2 for c, p in zip(cosines, plain,
                                                                         strict=True)]
        best = max(range(len(units)), key=scores.__getitem__)
        # A sentence with figures is quoted from a sentence that gives one of them, in a source
        # that states them all, when such a sentence supports it well enough (the best-worded
        # match may sit in a passage that gives another figure).
        figures = numbers_in(sentence) - numbers_in(question)
        if figures:
            stating = [j for j, (n, unit) in enumerate(units) if numbers_in(unit) & figures
                       and not unstated_numbers(sentence, [sources[n - 1]], question)]
            closest = max(stating, key=scores.__getitem__, default=None)
            if closest is not None and scores[closest] >= SUPPORT_MIN:
                best = closest
        n, unit = units[best]
        score = round(scores[best], 3)
        unstated = unstated_numbers(sentence, [sources[n - 1]], question)
        parts = _clauses(sentence) if unstated and split else []
        judged = attribute(parts, sources, numbers, embedder, question, split=False) \
            if parts else []
        if judged and len(judged) == len(parts) and all(c.supported for c in judged):
            claims.extend(judged)  # each statement is stated, by a source of its own
        elif unstated:
            claims.append(Claim(sentence, n, unit, False,
                                f"{', '.join(unstated)} is not in the cited source", score))
        elif score < SUPPORT_MIN:
            claims.append(Claim(sentence, n, unit, False, "no sentence of the cited sources "
                                                          "states it", score))
        else:
            claims.append(Claim(sentence, n, unit, True, score=score))
    return claims


def check_claim(raw: dict[str, Any], sources: Sequence[str], question: str = "") -> Claim:
    """A claim from the model, checked: its quote must occur (rag_app.text.quotes) in the
    source it cites (a quote found word for word in another retrieved source is moved to that
    one: the number was wrong, not the evidence), and every number in the statement must be
    in that source or in the question."""
    text = str(raw.get("statement") or "").strip()
    quote = str(raw.get("quote") or "").strip()
    number = raw.get("source")
    source = int(number) if isinstance(number, int | float) and not isinstance(number, bool) \
        else 0
    if not quote:
        return Claim(text, source, quote, False, "no quote")
    cited = [source] if 1 <= source <= len(sources) else []
    others = [n for n in range(1, len(sources) + 1) if n != source]
    where = next((n for n in cited + others if find_quote(quote, sources[n - 1])), None)
    if where is None:
        return Claim(text, source, quote, False,
                     "the quote is not in the cited source" if cited else
                     "it cites no retrieved source")
    unstated = unstated_numbers(text, [sources[where - 1]], question)
    if unstated:
        return Claim(text, where, quote, False,
                     f"{', '.join(unstated)} is not in the cited source")
    return Claim(text, where, quote, True)
