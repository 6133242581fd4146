"""A sentence whose names, code or figures the model was unsure of is flagged.

The small bundled model answers wrongly from the right passage: asked which keystroke searches
the history backwards, it wrote `C-n` (the passage lists `C-r` two lines away); asked for the
log-normal's parameters, `mean` and `sd` (the normal's, one row up). Such a sentence reads as
right, and its quote supports it (the passage does say `C-n`). What gives it away is the model
itself: where it picked the wrong item, it hesitated. The server sends the probability of every
token it wrote (`logprobs`); a name, a piece of code or a figure whose first token had a
probability under `answer_confidence_min` is a guess between things the passage offers.

Measured on live runs with the bundled 1.5B model on the three dev sets (README, "Misleading
answers, measured"): with the first token of a key term under 0.5, 17 of 55 wrong answers
were flagged and 4 of 66 right ones (0.4: 12 and 3; 0.6: 21 and 7). The sentence keeps its quote
and is flagged with the reason, so the reader checks it.

Only key terms count (code identifiers and calls, code in backticks, versions and figures not
in the question, key chords such as C-r): the model's choice of plain words ("To", "you can")
says nothing about whether the answer is right. Nor does a hesitation between the item and
another wording of the same sentence ("the try() function" or "`try()`"): from
`WORDING_MIN` up to the threshold a term is flagged only when the model weighed another item
there (`rival_items`).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import replace
from typing import TYPE_CHECKING

from rag_app.answering.checks.base import PASS, Draft, Inputs, Verdict, amended
from rag_app.answering.records import Claim
from rag_app.names import answer_names
from rag_app.text.numbers import numbers_in
from rag_app.text.words import STOP

if TYPE_CHECKING:
    from rag_app.llm.client import TokenProb
    from rag_app.settings import Settings

_CODE = re.compile(r"`([^`\n]{1,80})`")
# key chords and short options: C-r, M-d, C-x C-s, -e (a part of one or two characters)
CHORD = re.compile(r"(?<![\w-])(?:[A-Za-z]{1,2}-[A-Za-z0-9]{1,2})(?![\w-])")
_ANSWER_KEY = re.compile(r'"answer"\s*:\s*"')
UNSURE = "the model was unsure of"  # how its flags begin (counted by the evaluation)
# a key term weighed only against other wordings ("the", a code quote) is flagged under this,
# not under `answer_confidence_min`: the model chose the item over saying it in other words
WORDING_MIN = 0.4
_OPENING = re.compile(r"\s*[A-Z][a-z]*")  # a capitalised word that may open a sentence


def wanted(settings: Settings) -> bool:
    """Is the check on (so that the reply's token probabilities are asked for)?"""
    if settings.answer_confidence == "off":
        return False
    return settings.answer_confidence == "on" or not settings.openai_base_url


def key_terms(sentence: str, question: str) -> list[str]:
    """The terms of an answer sentence that only the passages could have given it, and that
    the model had to choose: names and code, code in backticks, figures and chords — not those
    the question itself gives."""
    asked = question.lower()
    given = [term.strip() for term in (*_CODE.findall(sentence), *CHORD.findall(sentence))]
    out: list[str] = []
    for term in (*answer_names(sentence, question),  # leaves out the question's own names
                 *(t for t in given if t and t.lower() not in asked),
                 *sorted(numbers_in(sentence) - numbers_in(question))):
        if term not in out:
            out.append(term)
    return out


class Confidence:
    name = "confidence"
    timing = None

    def enabled(self, settings: Settings) -> bool:
        return wanted(settings)

    def __call__(self, inputs: Inputs, draft: Draft) -> Verdict:
        if not draft.tokens or draft.raw_claims is not None or not draft.claims:
            return PASS
        reply = Reply(draft.tokens, json_reply=draft.json_reply)
        least = inputs.settings.answer_confidence_min
        passages = "\n".join(h.text for h in inputs.context)
        return amended(draft, [_checked(c, reply, inputs.query, least, passages)
                               for c in draft.claims])


def _checked(claim: Claim, reply: Reply, question: str, least: float, passages: str) -> Claim:
    """The claim with the least probability of its key terms, flagged when that is under
    `least` (from WORDING_MIN up: when the model weighed another item there, `rival_items`);
    a claim flagged already keeps its reason."""
    measured = []
    for term in key_terms(claim.text, question):
        found = reply.probability(term, near=claim.text)
        if found is not None:
            measured.append((found[0], term, found[1], found[2]))
    if not measured:
        return claim
    p, term, others, chosen = min(measured, key=lambda m: m[0])
    claim = replace(claim, confidence=round(p, 4))
    if not claim.supported or p >= least:
        return claim
    if p >= WORDING_MIN and not rival_items(others, chosen, passages):
        return claim  # only wording was weighed there: "the try() function" or "`try()`"
    shown = others[:2]
    also = f"; it also weighed {', '.join(repr(o) for o in shown)}" if shown else ""
    return replace(claim, supported=False,
                   reason=f"{UNSURE} {term!r} ({p:.0%}{also})")


class Reply:
    """The reply as the model wrote it, token by token, with the probability of each."""

    def __init__(self, tokens: list[TokenProb], *, json_reply: bool) -> None:
        self.tokens = tokens
        self.json_reply = json_reply
        self.text = "".join(t.text for t in tokens)
        self.starts = []
        pos = 0
        for t in tokens:
            self.starts.append(pos)
            pos += len(t.text)
        # where the answer's text starts: after "answer": " in a JSON reply
        match = _ANSWER_KEY.search(self.text) if json_reply else None
        self.begin = match.end() if match else 0

    def _written(self, text: str) -> str:
        """`text` as it stands in the reply (escaped inside a JSON string)."""
        return json.dumps(text, ensure_ascii=False)[1:-1] if self.json_reply else text

    def probability(self, term: str, *, near: str) -> tuple[float, list[str], str] | None:
        """The probability of the first token of `term` where the reply wrote it (after the
        start of the sentence `near`, if found), the other tokens the model weighed there and
        the token it chose; None when the term cannot be found in the reply."""
        start = self.text.find(self._written(near[:40]), self.begin)
        at = self.text.find(self._written(term), start if start >= 0 else self.begin)
        if at < 0:
            return None
        for begin, token in zip(self.starts, self.tokens, strict=True):
            if begin + len(token.text) > at:
                p = math.exp(token.logprob)
                rivals = [(alt, lp) for alt, lp in token.alternatives
                          if alt.strip() and alt != token.text]
                if begin <= self.begin:
                    # the answer's first token also chooses how to begin: "5 working days"
                    # or "We …", "Modula-3" or "The …"; a sentence's opening word is no rival
                    rivals = [(alt, lp) for alt, lp in rivals if not _OPENING.fullmatch(alt)]
                    p /= p + sum(math.exp(lp) for _, lp in rivals)
                return p, [alt.strip() for alt, _ in rivals], token.text.strip()
        return None


# English words of one or two letters (rag_app.text.words.STOP starts at three)
_SHORT = frozenset("a an as at be by do if in is it me my no of on or so to up us we".split())
_WORDS = STOP | _SHORT
_QUOTES = "`'\"\u2018\u2019\u201c\u201d"


def rival_items(others: list[str], chosen: str, passages: str) -> list[str]:
    """The tokens the model weighed instead of `chosen` that begin another item, not another
    wording of the same sentence. Not items: a code quote, a quotation mark or a bracket
    alone ("`", "`["), the same token in another case or quoted ("`try" for "try"), a stop
    word ("the", "is"), and a plain lower-case word of three letters or more that no passage
    uses as the start of code ("create", "explicitly"; "row" begins `row.names`, "matrix"
    `matrix(`, "command" `commandArgs(`). Capitalised words, figures, code pieces and pieces
    of a name ("d", "ln": the model weighing `dlnorm` against `dnorm`) are items.

    Replayed on the three recorded live runs of each dev set that carry token probabilities
    (bench/replay_answers.py; README): no wrong answer loses its flag, and 8 flags of right R
    answers go (`try` at 43% beside "the" and "`", `rep` beside "is" and "contains", `open`
    beside "create" and "explicitly"). Under WORDING_MIN the rule does not apply: "the
    `-t` flag" at 33% beside "command" was an answer to an unanswerable question."""
    bare = chosen.strip(_QUOTES + " ")
    out = []
    for other in others:
        word = other.strip(_QUOTES + " ")
        if not any(ch.isalnum() for ch in word) or word.lower() in _WORDS:
            continue  # a quote or bracket alone, "the", "is"
        if word.lower() == bare.lower():
            continue  # the same item, with or without a code quote
        if word.isalpha() and word.islower() and len(word) > 2 and not re.search(
                rf"(?<![\w.]){re.escape(word)}\w*(?:\.\w|[($\[]|\s?=)", passages):
            continue  # a word, not a piece of a name ("d", "ln" of `dlnorm`) nor code's start
        out.append(other)
    return out
