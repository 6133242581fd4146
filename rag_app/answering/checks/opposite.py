"""An item whose own name or quoted line, or the answer's sentence itself, says the opposite of
what the question asks is flagged.

The bundled model picks a wrong item from the right list with confidence, and the quote that
supports it names the item: asked which keystroke "hunts backwards" through the history, it
answered `C-n`, quoting "C-n Go to the next command (forwards in the history)"; asked which
writer makes a semicolon CSV, it answered `read.csv2`; asked which CodeHilite option makes
Pygments stop guessing a language, it gave `use_pygments` = `False`, quoting a line that turns
highlighting off "while preserving the language detection". No pinpoint word of the question
stands in those lines (the rival check has nothing to go on), and the item is the right kind
(the subject check passes it). What gives it away is a word of the opposite sense.

For each key term of a supported sentence (names, code, figures, chords: as the confidence check
finds them), the places looked at are the term itself ("read" in `read.csv2`) and the sentences
or list lines of the sentence's own quote that give the term. When the question uses one side
of a pair of opposites (`OPPOSITES`: read / write, forwards / backwards, next / previous, stop /
preserve …) and not the other, and such a place uses the other side and not the question's, the
sentence is flagged ("the opposite of the question: “forwards” beside C-n, where the question
asks “backwards”"). It keeps its quote. Hyphenated words stay whole ("add-on" is no "add").

A sentence that itself says the question's side keeps only the item's own name as evidence: in
the fourth live run, "The write.table setting … is `col.names = NA`" (right) was flagged for
read.table's line about col.names. The sentence itself is read the same way: asked which
third-party extension the docs point to, the model named one "included in the standard Markdown
library" (wd-007). Over the six recorded
live runs at hand this flagged that answer and `read.csv2` for the writer (again), and no right
one.

Measured on recorded replies of three live runs of each dev set (bench/replay_answers.py; the
README's paragraph on this check): it flagged 9 wrong answers and no right one. Looking
at every line of the passages that gives the term, instead of the quote's, flagged 5 right
answers ("write" beside `fileEncoding`, "import" beside `read.csv`) for one more wrong one.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from rag_app.answering.checks.base import Draft, Inputs, Verdict, flagged, judged_one_by_one
from rag_app.answering.checks.confidence import key_terms
from rag_app.answering.checks.rival import _given, _pieces
from rag_app.answering.records import Claim

if TYPE_CHECKING:
    from rag_app.settings import Settings

OPPOSITE = "the opposite of the question:"  # how its flags begin (counted by the evaluation)

# Pairs of opposite senses, as the word forms that say them (whole words, lower case). General
# pairs of direction, access and change, not the words of any one question.
OPPOSITES: tuple[tuple[str, str], ...] = (
    (r"read(?:s|ing|ers?)?", r"writ(?:e|es|ing|ten|ers?)"),
    (r"import(?:s|ing|ed|ers?)?", r"export(?:s|ing|ed|ers?)?"),
    (r"inputs?", r"outputs?"),
    (r"open(?:s|ing|ed)?", r"clos(?:e|es|ing|ed)"),
    (r"forwards?", r"backwards?"),
    (r"next", r"previous|prev"),
    (r"first", r"last"),
    (r"before", r"after"),
    (r"above", r"below"),
    (r"upper", r"lower"),
    (r"largest|maximum|highest|biggest", r"smallest|minimum|lowest"),
    (r"increas(?:e|es|ing|ed)", r"decreas(?:e|es|ing|ed)"),
    (r"enabl(?:e|es|ed|ing)", r"disabl(?:e|es|ed|ing)"),
    (r"show(?:s|n|ing)?", r"hid(?:e|es|den|ing)"),
    (r"load(?:s|ing|ed)?", r"sav(?:e|es|ed|ing)"),
    (r"encod(?:e|es|ed|ing|er)", r"decod(?:e|es|ed|ing|er)"),
    (r"horizontal(?:ly)?", r"vertical(?:ly)?"),
    (r"includ(?:e|es|ed|ing)", r"exclud(?:e|es|ed|ing)"),
    (r"global", r"local"),
    (r"compress(?:es|ed|ing|ion)?", r"decompress(?:es|ed|ing|ion)?|uncompress(?:es|ed|ing)?"),
    (r"wide", r"long"),
    (r"left", r"right"),
    (r"add(?:s|ed|ing)?", r"remov(?:e|es|ed|ing)|delet(?:e|es|ed|ing)"),
    (r"begin(?:s|ning)?|start(?:s|ing)?", r"end(?:s|ing)?|finish(?:es|ing)?|stop(?:s|ping)?"),
    (r"earl(?:y|ier|iest)", r"lat(?:e|er|est)"),
    (r"new(?:er|est)?", r"old(?:er|est)?"),
    (r"stop(?:s|ped|ping)?", r"preserv(?:e|es|ed|ing)|keep(?:s|ing)?|continu(?:e|es|ed|ing)"),
    (r"accept(?:s|ed|ing)?", r"reject(?:s|ed|ing)?"),
    (r"third-party|external", r"built-in|bundled|standard"),
)
_SIDES = [(re.compile(rf"(?:{a})"), re.compile(rf"(?:{b})")) for a, b in OPPOSITES]
_SIDES += [(b, a) for a, b in _SIDES]
_WORDS = re.compile(r"[a-z]+(?:-[a-z]+)*")  # code splits at dots and underscores


def _words(text: str) -> list[str]:
    return _WORDS.findall(text.lower())


def _said(side: re.Pattern[str], words: list[str]) -> str | None:
    """The first of `words` that says `side`, if any."""
    return next((w for w in words if side.fullmatch(w)), None)


def opposite(claim: Claim, question: str) -> str | None:
    """Why the claim is flagged (the term, the opposite word and the question's), or None."""
    if not claim.supported:
        return None
    asked = _words(question)
    own = _words(claim.text)
    for term in key_terms(claim.text, question):
        name = _words(term)
        lines = [_words(p) for p in _pieces(claim.quote or "") if _given(term, p)]
        for ask, other in _SIDES:
            wanted = _said(ask, asked)
            if wanted is None or _said(other, asked) is not None:
                continue
            # a sentence that itself says the question's side ("the write.table setting is
            # col.names") is not undone by a quoted line about the other side (read.table's
            # col.names): only the item's own name counts then
            places = [name] if _said(ask, own) is not None else [name, *lines]
            for words in places:
                said = _said(other, words)
                if said is not None and _said(ask, words) is None:
                    return (f"{OPPOSITE} “{said}” beside {term}, where the question asks "
                            f"“{wanted}”")
    for ask, other in _SIDES:  # the sentence itself says the other side of the question's pair
        wanted = _said(ask, asked)
        if wanted is None or _said(other, asked) is not None:
            continue
        said = _said(other, own)
        if said is not None and _said(ask, own) is None:
            return f"{OPPOSITE} the answer says “{said}”, where the question asks “{wanted}”"
    return None


def checked(claim: Claim, question: str) -> Claim:
    """The claim, flagged when its item or its quoted line says the opposite of the question."""
    reason = opposite(claim, question)
    return flagged(claim, reason)


class Opposite:
    name = "opposite"
    timing = None

    def enabled(self, settings: Settings) -> bool:
        return settings.answer_flag_off_subject

    def __call__(self, inputs: Inputs, draft: Draft) -> Verdict:
        return judged_one_by_one(draft, lambda c: checked(c, inputs.query))
