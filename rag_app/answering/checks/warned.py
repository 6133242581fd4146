"""Code that the sources say not to use, given as the answer, is flagged.

Asked how to get a factor's numbers back, the bundled model answered "use the `as.numeric()`
function on the factor column", in all three recorded live runs of the R manuals. Its quote
supports it (the FAQ's sentence "you can use as.numeric(as.character(f)) to get the numbers
back" holds the name) and the model was sure of it. The passage goes on: "In any case, do not
call as.numeric() or their likes directly". The answer recommends what its own source warns
against.

For each key term of a supported sentence that is code (a call, a dotted or underscored name, an
option: as the confidence check finds them), every place the retrieved passages give it whole is
looked at. When each of them follows a warning within two words ("do not call", "never use",
"avoid", "instead of", "rather than" …, in the same clause; or stands later in a sentence
that warned against it), and the sentence does not say so itself, the sentence is flagged
("the sources warn against as.numeric(): “do not call as.numeric()”"). It keeps its quote.
A term the passages also give without a warning passes: `as.numeric` stands in "you can use
as.numeric(as.character(f))" too, `as.numeric()` only in the warning.

Measured on recorded replies of three live runs of each dev set (bench/replay_answers.py;
README): it flags that answer in each run and no right one.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from typing import TYPE_CHECKING

from rag_app.answering.checks.base import Draft, Inputs, Verdict, flagged, judged_one_by_one
from rag_app.answering.checks.confidence import key_terms
from rag_app.answering.records import Claim

if TYPE_CHECKING:
    from collections.abc import Sequence

    from rag_app.settings import Settings

WARNED = "the sources warn against"  # how its flags begin (counted by the evaluation)

# a warning, then at most two words before the term ("do not call", "never use the")
_WARNING = re.compile(
    r"(?:\b(?:do\s+not|don['’]t|never|avoid|should\s+not|shouldn['’]t|must\s+not|mustn['’]t)"
    r"(?:\s+[\w-]+){0,2}|\b(?:instead\s+of|rather\s+than)(?:\s+[\w-]+)?)\s*[`'\"‘“]?$", re.I)
# where a clause ends, in the text before a place: a sentence end or a comma, then a space
_CLAUSE_END = re.compile(r"[.;:!?,](?=\s)")
_SENTENCE_END = re.compile(r"[.!?](?=\s)")
_BEFORE = 80  # characters looked at before a place


def _code(term: str) -> bool:
    """Is the term code (a call, a dotted or underscored name, an option), not a word, a name
    in capitals or a figure?"""
    return bool(re.search(r"[A-Za-z]", term)) and bool(re.search(r"[()._=]|^-", term))


def _places(term: str, text: str) -> list[int]:
    """Where `text` gives `term` whole (not inside a longer name: "as.numeric" is not in
    "as.numeric_version")."""
    pattern = re.compile(rf"(?<![\w.]){re.escape(term)}(?![\w]|\.\w)")
    return [m.start() for m in pattern.finditer(text)]


def _warned(text: str, at: int) -> str | None:
    """The warning the place at `at` follows in its own clause ("do not call"), or None."""
    before = text[max(0, at - _BEFORE):at].replace("\n", " ")
    ends = list(_CLAUSE_END.finditer(before))
    clause = before[ends[-1].end():] if ends else before
    match = _WARNING.search(clause)
    return " ".join(match.group(0).split()).rstrip("`'\"‘“ ") if match else None


def warned(claim: Claim, question: str, passages: Sequence[str]) -> str | None:
    """Why the claim is flagged (the term and the warning it follows), or None."""
    if not claim.supported:
        return None
    for term in key_terms(claim.text, question):
        if not _code(term):
            continue
        if any(_warned(claim.text, at) for at in _places(term, claim.text)):
            continue  # the sentence says it too: "do not call as.numeric() directly"
        warnings = [w for text in passages for w in _warnings(term, text)]
        if warnings and all(warnings):
            return f"{WARNED} {term}: “{warnings[0]} {term}”"
    return None


def _warnings(term: str, text: str) -> list[str | None]:
    """For each place `text` gives `term`: the warning it follows, or None. A place later in
    the sentence of a warned one is part of that warning ("do not call as.numeric() … (as
    as.numeric() gives the internal codes)")."""
    out: list[str | None] = []
    said: tuple[int, str] | None = None  # the last warning: where its sentence began, its words
    starts = [0, *(m.end() for m in _SENTENCE_END.finditer(text))]
    for at in _places(term, text):
        start = starts[bisect_right(starts, at) - 1]
        warning = _warned(text, at)
        if warning is not None:
            said = (start, warning)
        elif said is not None and said[0] == start:
            warning = said[1]
        out.append(warning)
    return out


def checked(claim: Claim, question: str, passages: Sequence[str]) -> Claim:
    """The claim, flagged when it gives code that the passages only warn against."""
    reason = warned(claim, question, passages)
    return flagged(claim, reason)


class Warned:
    name = "warned"
    timing = None

    def enabled(self, settings: Settings) -> bool:
        return settings.answer_flag_off_subject

    def __call__(self, inputs: Inputs, draft: Draft) -> Verdict:
        passages = [h.text for h in inputs.context]
        return judged_one_by_one(draft, lambda c: checked(c, inputs.query, passages))
