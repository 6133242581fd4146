"""A figure, version or key chord given where the sources give another one beside the question's
own words is flagged.

The bundled model picks the wrong item from the right passage, with confidence: asked which
preset to use for oolong tea, it gave the default, 100 °C, from a list whose line "85 °C: oolong
tea" names the tea; asked the largest value R accepts for the protection stack, it repeated the
default, 10000, from a passage that gives the largest (100000) in the sentence saying "accept".
The quote supports it (the passage does say 100 °C), the model was sure, and the subject check
passes it, since the list is about tea. What gives it away is a sharper place: a word of the
question that the passages use in one or two sentences only (a *pinpoint*: "oolong", "accept"),
where the sources give another item of the same kind, and not this one.

For each supported sentence's key terms (figures with their unit, versions, key chords: as the
confidence check finds them) and each of the question's telling words (subject.telling) of at
least `MIN_LETTERS` letters that stand in at most `MAX_PLACES` sentences or list lines of the
passages: when the term is beside none of them (not in their sentences, nor in the one before or
after), and one of them gives another item of the term's kind (the same unit after a figure;
another version; another chord) that the answer does not give elsewhere, the sentence is flagged
("the sources give 85 °C beside “oolong”, not 100"). It keeps its quote. Names and code are left
to the other checks: their kind cannot be told from their shape.

Measured on recorded replies of the three dev sets (bench/replay_answers.py; README, "Misleading
answers, measured"): see the README's table. Judging each pinpoint word on its own flagged a right
"85 °C" in a live run (the 90 °C preset of another answer stands beside "presets"); wider
pinpoints (three places) flagged two right answers ("15–16 digits" beside "stored", "16-bit"
beside "column") for no more wrong ones; words of four letters flagged a right refund time beside
"once".
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from rag_app.answering.checks.base import Draft, Inputs, Verdict, flagged, judged_one_by_one
from rag_app.answering.checks.confidence import CHORD, key_terms
from rag_app.answering.checks.subject import OFF_SUBJECT, telling
from rag_app.answering.records import Claim
from rag_app.text.words import WORD, stem

if TYPE_CHECKING:
    from collections.abc import Sequence

    from rag_app.settings import Settings

MAX_PLACES = 2  # a pinpoint word stands in at most this many sentences of the passages
MIN_LETTERS = 5  # and has at least this many letters ("once", "word" tell nothing)

_FIGURE = r"\d+(?:[.,]\d+)*"
_UNIT = r"\s*(°\s?[CF]|%|[^\W\d_][\w]*)?"
_FIGURE_UNIT = re.compile(rf"(?<![\w.])({_FIGURE}){_UNIT}")
_VERSION = re.compile(r"(?<![\w.])\d+(?:\.\d+){1,3}(?![\w.]*\d)")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z(\[`\"'])")


def _pieces(text: str) -> list[str]:
    """A passage's sentences and list lines (a line break ends a piece: PDF and list lines)."""
    return [s for line in text.split("\n") for s in _SENTENCE_END.split(line) if s.strip()]


def _given(term: str, text: str) -> bool:
    """Does `text` give `term` as a whole (not inside a longer word or number)?"""
    return re.search(rf"(?<![\w.]){re.escape(term)}(?![\w]|\.\d)", text, re.I) is not None


def _unit(match: re.Match[str]) -> str:
    return stem((match.group(2) or "").replace(" ", ""))


def _kind(term: str, text: str) -> tuple[str, str] | None:
    """The term's kind as `text` gives it: a chord, a version, or a figure with its unit
    ("°C", "minutes": compared by stem); None for names and code."""
    if CHORD.fullmatch(term):
        return ("chord", "")
    if _VERSION.fullmatch(term):
        return ("version", "")
    if re.fullmatch(_FIGURE, term):
        for match in _FIGURE_UNIT.finditer(text):
            if match.group(1).replace(",", "") == term.replace(",", ""):
                return ("figure", _unit(match))
        return ("figure", "")
    return None


def _items(text: str, kind: tuple[str, str]) -> set[str]:
    """The items of `kind` that `text` gives."""
    if kind[0] == "chord":
        return set(CHORD.findall(text))
    if kind[0] == "version":
        return set(_VERSION.findall(text))
    return {m.group(1).replace(",", "") for m in _FIGURE_UNIT.finditer(text)
            if not _VERSION.fullmatch(m.group(1)) and _unit(m) == kind[1]}


def _shown(item: str, text: str) -> str:
    """The item as `text` gives it, with its unit ("85 °C")."""
    for match in _FIGURE_UNIT.finditer(text):
        if match.group(1).replace(",", "") == item and match.group(2):
            return match.group(0).strip()
    return item


def _continued(pieces: Sequence[tuple[int, str]], i: int) -> str:
    """Piece `i` with the next one when that continues its sentence (a PDF line break inside
    it: "parallel Support for … and" / "random-number generation (added in R 2.14.0).")."""
    if i + 1 < len(pieces) and pieces[i + 1][0] == pieces[i][0] \
            and pieces[i + 1][1].lstrip()[:1].islower():
        return f"{pieces[i][1]} {pieces[i + 1][1]}"
    return pieces[i][1]


def named(claims: Sequence[Claim], question: str) -> set[str]:
    """The stems of the one-word names and code the claims give (`parallel`), for the claims
    that go on about them ("It was added in R 1.3.0")."""
    return {stem(t) for c in claims for t in key_terms(c.text, question)
            if t.isalpha() and len(t) >= MIN_LETTERS}


def rival(claim: Claim, question: str, passages: Sequence[tuple[str, str]],
          answer: str, others: Sequence[Claim] = ()) -> str | None:
    """Why the claim is flagged (its term, the rival and the pinpoint word), or None. The
    names the answer's `others` claims give count as the question's words: a figure about
    "it" belongs beside the item the answer named before."""
    if not claim.supported:
        return None
    words = sorted(w for w in telling(question, passages) | named(others, question)
                   if w.isalpha() and len(w) >= MIN_LETTERS)
    if not words:
        return None
    pieces = [(n, piece) for n, (text, _) in enumerate(passages) for piece in _pieces(text)]
    stems = [{stem(w) for w in WORD.findall(piece)} for _, piece in pieces]
    given = set(key_terms(answer, question))
    pinned = {}  # pinpoint word -> the pieces it stands in
    for word in words:
        pins = [i for i, s in enumerate(stems) if word in s]
        if 0 < len(pins) <= MAX_PLACES:
            pinned[word] = pins
    for term in key_terms(claim.text, question):
        places = {i for i, (_, piece) in enumerate(pieces) if _given(term, piece)}
        if not places:
            continue
        kind = _kind(term, pieces[min(places)][1])
        if kind is None:
            continue
        beside = {j for pins in pinned.values() for i in pins for j in (i - 1, i, i + 1)
                  if 0 <= j < len(pieces) and pieces[j][0] == pieces[i][0]}
        if beside & places:
            continue  # the term stands beside one of the question's pinpoint words
        for word, pins in pinned.items():
            lines = [_continued(pieces, i) for i in pins]
            rivals = sorted(set().union(*(_items(line, kind) for line in lines)) - given)
            if rivals:
                text = " ".join(lines)
                said = next((w for w in WORD.findall(text) if stem(w) == word), word)
                shown = _shown(rivals[0], text) if kind[0] == "figure" else rivals[0]
                return f"{OFF_SUBJECT} {shown} beside “{said}”, not {term}"
    return None


def checked(claim: Claim, question: str, passages: Sequence[tuple[str, str]],
            answer: str, others: Sequence[Claim] = ()) -> Claim:
    """The claim, flagged when a rival stands beside the question's pinpoint word."""
    reason = rival(claim, question, passages, answer, others)
    return flagged(claim, reason)


class Rival:
    name = "rival"
    timing = None

    def enabled(self, settings: Settings) -> bool:
        return settings.answer_flag_off_subject

    def __call__(self, inputs: Inputs, draft: Draft) -> Verdict:
        passages = [(h.text, h.location) for h in inputs.context]
        answer = " ".join(c.text for c in draft.claims)
        return judged_one_by_one(draft, lambda c: checked(
            c, inputs.query, passages, answer, [o for o in draft.claims if o is not c]))
