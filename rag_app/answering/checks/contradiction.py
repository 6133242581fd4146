"""A sentence that says what its quote contradicts is flagged, however similar their wording.

The support check (support.py) pairs each answer sentence with the source sentence most like it;
"similar" is not "the same": on the samples, "…extended by registering within 30 days and paying
an additional fee" was quoted from "…the warranty is extended at no cost", and the price of one
spare part (£4.00, a lid seal) was given for another (a water level window) from the same price
list. This check compares what the sentence adds against its quote, without a model:

- cost: a fee, a payment or a price against "free" / "at no cost" (or the reverse);
- negation: "must not X" against "must X" (or the reverse), for the same modal and verb;
- logical values: `name = TRUE` against `name = FALSE`;
- a figure from a list row about something else: in a price list or table, the row the figure
  sits in must name something the sentence names.

A sentence it catches keeps its quote and is flagged with the reason ("the source says at no
cost"), so the reader sees both. Measured on recorded replies (bench/replay_answers.py): README.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from rag_app.answering.checks.base import Draft, Inputs, Verdict, amended, flagged
from rag_app.answering.records import Claim
from rag_app.text.words import stem as _stem

if TYPE_CHECKING:
    from rag_app.settings import Settings

_FREE = re.compile(
    r"\b(?:free(?:\s+of\s+charge)?|at\s+no\s+(?:extra\s+|additional\s+)?(?:cost|charge)|"
    r"no\s+(?:extra\s+|additional\s+)?(?:charge|cost|fee)s?|without\s+(?:any\s+)?(?:charge|cost|"
    r"fee)s?|complimentary|costs?\s+nothing)\b", re.I)
_PAID = re.compile(
    r"(?:\b(?:fees?|pay|pays|paying|paid|payment|surcharge|chargeable|charged|"
    r"(?:extra|additional)\s+(?:cost|charge|fee)s?)\b|[£$€¥]\s?\d)", re.I)
_MODALS = ("must|should|can|could|will|would|may|might|shall|is|are|was|were|do|does|did|"
           "need|needs|has|have")
_CONTRACTED = {"don't": "do", "doesn't": "does", "didn't": "did", "can't": "can",
               "won't": "will", "isn't": "is", "aren't": "are", "wasn't": "was",
               "weren't": "were", "mustn't": "must", "shouldn't": "should", "couldn't": "could",
               "wouldn't": "would", "hasn't": "has", "haven't": "have", "needn't": "need"}
_NEGATED = re.compile(rf"\b({_MODALS})\s+(?:not|never)\s+(?:be\s+)?([a-z]\w+)"
                      r"|\b(cannot)\s+(?:be\s+)?([a-z]\w+)"
                      r"|\b(\w+n't)\s+(?:be\s+)?([a-z]\w+)", re.I)
_POSITIVE = re.compile(rf"\b({_MODALS})\s+(?:be\s+)?(?!not\b|never\b|be\b)([a-z]\w+)", re.I)
_LOGICAL = re.compile(r"\b([A-Za-z_.][\w.]*)\s*=\s*(TRUE|FALSE)\b")
_FIGURE = re.compile(r"[£$€¥]\s?\d+(?:[.,]\d+)*|(?<![\w.])\d+(?:[.,]\d+)*")
_LIST_MARK = re.compile(r"\.{4,}|…{2,}|\||\t")
_WORD = re.compile(r"[a-z][a-z'-]{2,}")
_STOP = frozenset(
    "the and for are but not you your with that this from have has had was were will would "
    "can could should how what when where which who why does did into out its than then them "
    "they their there these those about some any all each more most other such only own same "
    "very just also use used using get make want need way one per each item items price "
    "prices cost costs part parts replacement".split())
_STOP_STEMS = frozenset(w[:5] for w in _STOP)


def contradiction(claim: str, quote: str, question: str = "") -> str:
    """Why the claim says what its quote contradicts, or "" when no rule sees a conflict. The
    question counts as said with the claim where a row must be named: a bare "£19.00" answers
    "How much does an AKB-2 power base cost?" from the AKB-2's row."""
    for rule in (_cost, _negation, _logical):
        reason = rule(claim, quote)
        if reason:
            return reason
    return _list_row(claim, quote, question)


def _cost(claim: str, quote: str) -> str:
    claim_free, claim_paid = bool(_FREE.search(claim)), bool(_PAID.search(claim))
    quote_free, quote_paid = _FREE.search(quote), bool(_PAID.search(quote))
    if claim_paid and not claim_free and quote_free and not quote_paid:
        return f"the source says {quote_free.group(0)}"
    if claim_free and not claim_paid and quote_paid and not quote_free:
        return "the source gives a charge, not free"
    return ""


def _modal_verbs(text: str) -> dict[tuple[str, str, bool], str]:
    """(modal, verb stem, negated) -> the words as written, for each modal and verb of a
    text ("cannot be washed" -> ("can", "washe", True))."""
    out: dict[tuple[str, str, bool], str] = {}
    for m in _NEGATED.finditer(text):
        if m[1]:
            modal, verb = m[1], m[2]
        elif m[3]:
            modal, verb = "can", m[4]
        else:
            modal, verb = _CONTRACTED.get(m[5].lower(), ""), m[6]
        if modal:
            out.setdefault((modal.lower(), _stem(verb), True), m.group(0))
    for m in _POSITIVE.finditer(text):
        out.setdefault((m[1].lower(), _stem(m[2]), False), m.group(0))
    return out


def _negation(claim: str, quote: str) -> str:
    said, source = _modal_verbs(claim), _modal_verbs(quote)
    for modal, verb, negated in sorted(said):
        other = (modal, verb, not negated)
        if other in source and (modal, verb, negated) not in source:
            return f"the source says “{source[other]}”"
    return ""


def _logical(claim: str, quote: str) -> str:
    said = {m[1]: m[2] for m in _LOGICAL.finditer(claim)}
    stated: dict[str, set[str]] = {}
    for m in _LOGICAL.finditer(quote):
        stated.setdefault(m[1], set()).add(m[2])
    for name, value in said.items():
        values = stated.get(name, set())
        if values and value not in values:
            return f"the source says {name} = {sorted(values)[0]}"
    return ""


def _list_row(claim: str, quote: str, question: str = "") -> str:
    """A figure the claim takes from a row of a list or table in the quote (a value after dot
    leaders, a table bar or a tab): the row's label must share a word with the claim. Figures
    inside a label ("AKF-12", "75 cm cord") are part of it."""
    claimed = {_plain(f) for f in _FIGURE.findall(claim)}
    if not claimed:
        return ""
    words = {_stem(w) for w in _WORD.findall(f"{claim} {question}".lower())} - _STOP_STEMS
    row_start = 0
    for m in _FIGURE.finditer(quote):
        before = quote[row_start : m.start()]
        marks = list(_LIST_MARK.finditer(before))
        if not marks:
            continue  # not a row's value
        row_start = m.end()
        if _plain(m.group(0)) not in claimed:
            continue
        label = before[: marks[-1].start()]
        stems = {_stem(w) for w in _WORD.findall(label.lower())} - _STOP_STEMS
        if stems and not words & stems:
            return (f"in the source, {m.group(0).strip()} is given for "
                    f"“{' '.join(_LIST_MARK.sub(' ', label).split())[:80]}”")
    return ""


def _plain(figure: str) -> str:
    return re.sub(r"[£$€¥\s,]", "", figure)


class Contradiction:
    name = "contradiction"
    timing = None

    def enabled(self, settings: Settings) -> bool:
        return settings.answer_flag_contradictions

    def __call__(self, inputs: Inputs, draft: Draft) -> Verdict:
        return amended(draft, [_checked(c, inputs.query) for c in draft.claims])


def _checked(claim: Claim, question: str) -> Claim:
    if not claim.supported or not claim.quote:
        return claim
    reason = contradiction(claim.text, claim.quote, question)
    return flagged(claim, reason)
