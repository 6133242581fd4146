"""A name or figure the sources give only about something else than what is asked is flagged.

Asked the year the Python Software Foundation was founded (the documents do not say), the
bundled model answered "February 1991": the year Python was released, from a passage that
mentions the foundation only paragraphs away. The answer's quote supports it (the passage does
say 1991) and the model was sure of it, so no other check flags it. What gives it away is where
the sources say it: nowhere near the words of the question.

For each key term of a supported sentence (a name, code or figure the question does not give,
as the confidence check finds them) this check looks at every place a retrieved passage gives
it, and for the question's subject words there: its content words that some passage uses but
not every one (a word no passage uses is the asker's paraphrase; one every passage uses, such as
"Python" in the Python FAQ, tells no place from another). A term is anchored when a subject word
is in the passage's heading path or within the sentence before, its own sentence or the one
after (at most `WINDOW` characters either side; a line break in PDF text ends no sentence). A
sentence whose key terms are all unanchored is flagged ("the sources give 1991 only where they
do not mention software or foundation or founded"); it keeps its quote. Questions with fewer
than `MIN_SUBJECT` such words are not judged.

Measured on recorded replies of the three dev sets (bench/replay_answers.py, README): it flags
one wrong answer (that one) and no right one. Narrower places catch more and cost more: the
line a term is on and the line before (PDF lines) flagged 3 more wrong R-manuals answers and 5
right ones ("read.fwf" two lines below "fixed-width"); a word count of one flagged 2 right
web-docs answers.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import TYPE_CHECKING

from rag_app.answering.checks.base import Draft, Inputs, Verdict, judged_one_by_one
from rag_app.answering.checks.confidence import key_terms
from rag_app.answering.records import Claim
from rag_app.text.words import STOP, WORD, stem

if TYPE_CHECKING:
    from collections.abc import Sequence

    from rag_app.settings import Settings

WINDOW = 300  # characters either side of a place where the sources give the term, at most
# judged only when the question has this many subject words that tell places apart: with one,
# a paraphrase ("assemble each link's address" for "formats the URL") is enough to flag a right
# answer
MIN_SUBJECT = 2
OFF_SUBJECT = "the sources give"  # how its flags begin (counted by the evaluation)
# words of a question that say what kind of answer is wanted, not what it is about
_ASKING = frozenset(
    "which what whose where when does function functions command commands option options "
    "argument arguments value values name names called call set sets setting settings give "
    "gives tell tells find type kind default defaults first there here many much long year "
    "years version versions number numbers key keys package packages file files method "
    "methods variable variables flag flags tool tools shown show say says said mean means "
    "happen happens instead otherwise exactly".split()) | STOP


def _key(word: str) -> str:
    """A word as compared here: its stem (rag_app.text.words.stem), hyphens dropped
    ("log-normal" and "lognormal" are one word)."""
    return stem(word.replace("-", ""))


def subject_stems(question: str) -> set[str]:
    """The question's content words as stems (`_key`), without the words that only say what
    kind of answer is asked for."""
    out = set()
    for word in WORD.findall(question):
        low = word.lower().replace("-", "")
        if len(low) < 3 or low in _ASKING or low.isdigit():
            continue
        out.add(_key(low))
    return out


def _stems(text: str) -> set[str]:
    return {_key(w) for w in WORD.findall(text)}


def _places(term: str, text: str) -> list[int]:
    """Where `text` gives `term` as a whole (not inside a longer word), case-insensitively."""
    pattern = re.compile(rf"(?<![\w.]){re.escape(term.lower())}(?![\w])")
    return [m.start() for m in pattern.finditer(text.lower())]


_BREAK = re.compile(r"(?<=[.!?])\s+(?=[A-Z(\[`\"'])|\n\s*\n")


def _near(text: str, breaks: list[int], at: int, end: int) -> str:
    """The text around a place: its sentence, the one before and the one after (`breaks`:
    where the text's sentences begin; a line break in PDF text is no sentence end), at most
    `WINDOW` characters either side."""
    before = [b for b in breaks if b <= at]
    start = before[-2] if len(before) >= 2 else 0
    after = [b for b in breaks if b > end]
    stop = after[1] if len(after) >= 2 else len(text)
    return text[max(start, at - WINDOW): min(stop, end + WINDOW)]


def off_subject(term: str, subject: set[str], passages: Sequence[tuple[str, str]]
                ) -> bool | None:
    """Is every place the passages (text, heading path) give `term` away from the subject
    words? None when no passage gives the term (another check's business)."""
    found = False
    for text, heading in passages:
        places = _places(term, text)
        if not places:
            continue
        found = True
        if subject & _stems(heading):
            return False
        breaks = [m.end() for m in _BREAK.finditer(text)]
        for at in places:
            if subject & _stems(_near(text, breaks, at, at + len(term))):
                return False
    return True if found else None


def telling(question: str, passages: Sequence[tuple[str, str]]) -> set[str]:
    """The question's subject words that tell the passages' places apart: used by some
    passage, and (of two or more passages) not by every one ("Python" in the Python FAQ)."""
    used = [_stems(t) | _stems(h) for t, h in passages]
    if not used:
        return set()
    subject = subject_stems(question) & set().union(*used)
    if len(used) >= 2:
        subject -= used[0].intersection(*used[1:])
    return subject


def checked(claim: Claim, question: str, passages: Sequence[tuple[str, str]]) -> Claim:
    """The claim, flagged when each of its key terms stands in the sources only away from the
    question's subject words."""
    if not claim.supported:
        return claim
    subject = telling(question, passages)
    if len(subject) < MIN_SUBJECT:
        return claim
    verdicts = [(term, off_subject(term, subject, passages))
                for term in key_terms(claim.text, question)]
    judged = [(term, v) for term, v in verdicts if v is not None]
    if not judged or not all(v for _, v in judged):
        return claim
    words = [w for w in WORD.findall(question.lower()) if _key(w) in subject]
    about = " or ".join(dict.fromkeys(words)) if words else "the question's words"
    return replace(claim, supported=False,
                   reason=f"{OFF_SUBJECT} {judged[0][0]} only where they do not mention {about}")


class Subject:
    name = "subject"
    timing = None

    def enabled(self, settings: Settings) -> bool:
        return settings.answer_flag_off_subject

    def __call__(self, inputs: Inputs, draft: Draft) -> Verdict:
        passages = [(h.text, h.location) for h in inputs.context]
        return judged_one_by_one(draft, lambda c: checked(c, inputs.query, passages))
