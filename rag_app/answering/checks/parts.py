"""An answer that leaves part of the question unanswered is flagged.

Asked two things at once, the small bundled model often answers one and reads as done: asked
which command verifies a build and which one installs it, it gave `make install` for both; asked
how to look up the year to cite and which function prints the citation, it named `citation()`
and said nothing of the year; asked which link functions the Poisson family offers, it named
one. Each sentence is supported by its quote, so no other check has anything to go on: what is
missing is an answer, not a wrong word.

A question is split where a further question is joined on (", and which …", " and how many …",
", and in which …"). Two signs that a part went unanswered:

- **too few items.** A part that asks for an item (which, what + a noun, how many, how much,
  since when) needs one of its own: code, a name, a figure, a version, a dotted file name, a
  capitalised name the question does not give, or an element of a list. A plural part ("which
  functions", "which files") needs two. An answer that gives fewer items than its parts ask
  for is flagged.
- **a which-question answered with no item.** Asked which antivirus product slows Python down,
  the model wrote "a misconfiguration of virus checking software"; asked which function a
  WikiLinks option uses by default, "the default `build_url` function". A question of one part
  with "which" needs one item too. What this misses on purpose: an item in plain lower-case
  words inside a sentence ("the ring flashes blue") is no item, so such a right answer is
  flagged; none of the 37 right answers to one-part which-questions in the recorded runs was.
- **a part it never speaks to.** Each part's own words (after its question word, not shared
  with another part) must show up in the answer, one of them at least; when none does, that
  part is flagged as unanswered.

The sentence flagged is the one that gives the answer's items (else the last one); it keeps its
quote, and the reason names the part or the count. Measured on the recorded replies of three
live runs of each dev set (bench/replay_answers.py; the README's paragraph on this check).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from rag_app.answering.checks.base import PASS, Draft, Inputs, Verdict, amended
from rag_app.answering.checks.confidence import _CODE
from rag_app.names import answer_names, mentions
from rag_app.text.numbers import numbers_in
from rag_app.text.words import WORD, stem, terms

if TYPE_CHECKING:
    from rag_app.settings import Settings

PARTIAL = "not every part of the question is answered:"  # how its flags begin (counted)

_LEAD = r"(?:in|at|from|to|by|for|since|on|of|with|under|during|among|after|before)"
_WH = r"(?:which|what|how|when|where|who|whose|whom|why)"
# where a further question is joined on: ", and which …", " and in which …", " or how …"
_JOIN = re.compile(rf"(?:,\s*|\s+)(?:and|or|but)\s+(?=(?:{_LEAD}\s+)?{_WH}\b)", re.I)
# a part that asks for an item rather than a description or a yes / no
_ITEM = re.compile(
    r"\b(?:which|how\s+many|how\s+much|since\s+when)\b"
    r"|\bwhat\b(?!\s+(?:do|does|did|happens?|happened|will|would|can|could|should|makes?|"
    r"causes?|is|are|was|were)\b)"
    r"|\bwhat\s+(?:is|are|was|were)\s+(?:the|its|their|his|her)\s+"
    r"(?!(?:difference|purpose|point|reason|meaning|role|effect|idea|problem|advantage|"
    r"benefit|way|use)\b)", re.I)
_PLURAL = re.compile(
    r"\bwhich\s+(?!of\b)(?:[\w-]+\s+){0,2}?(?:functions|files|packages|commands|options|"
    r"arguments|tools|links|choices|conversions|extensions|methods|settings|variables|"
    r"formats|keys|columns|fields|parameters|libraries|modules|programs|switches|flags)\b",
    re.I)
# where a part's question begins: at the start, or after a lead-in's comma or semicolon ("When
# citing R, how do I …", "Among the tools …, which one …"), a preposition allowed before it
_CLAUSE = re.compile(rf"(?:^|[,;:]\s+)((?:{_LEAD}\s+)?{_WH}\b)", re.I)
# a part answered by a figure rather than by its own words: how long, how many, when …
_QUANTITY = re.compile(r"\b(?:how\s+(?:long|many|much|often|far|big|large|old|fast|high|low|"
                       r"soon|wide|heavy)|when|since\s+when|(?:which|what)\s+(?:year|month|day|"
                       r"date|release|version|power|temperature|size|capacity|voltage|weight|"
                       r"price|cost|length|speed|rate|number|percentage|value|depth|limit|"
                       r"amount))\b", re.I)
_WHICH = re.compile(r"\bwhich\b", re.I)
_CAPITALISED = re.compile(r"(?<=[a-z0-9,;:] )[A-Z][\w.+#-]*")  # inside a sentence, not at its start
# written as a name wherever it stands, a sentence's start included: PYTHONDONTWRITEBYTECODE,
# TK_LIBRARY, dbGetQuery, use_align_attribute
_CODE_WORD = re.compile(
    r"(?<![\w.-])(?:[A-Z][A-Z0-9_]+[A-Z0-9]|[a-z]+[A-Z]\w*|[A-Za-z]+_\w+)(?![\w-])")
_DOTTED = re.compile(r"(?<![\w.])\.[A-Za-z][\w.]*[A-Za-z0-9]")  # .RData, .Rhistory
_AFTER_COLON = re.compile(r":\s*([^.:;\n]+)")
_ELEMENT = r"[\w.()-]+(?:\s+[\w.()-]+){0,2}"  # a list's element: up to three words
_LIST = re.compile(rf"{_ELEMENT}(?:,\s+{_ELEMENT})+,?\s+(?:and|or)\s+{_ELEMENT}")
_LIST_SPLIT = re.compile(r",\s*(?:and\s+|or\s+)?|\s+(?:and|or)\s+")


@dataclass(frozen=True)
class Part:
    text: str  # from its question word on
    asks_item: bool
    plural: bool


def parts(question: str) -> list[Part]:
    """The question's parts, each from its question word on (a lead-in such as "When citing
    R," is not part of what it asks)."""
    found = []
    for piece in _JOIN.split(question.strip()):
        starts = [m.start(1) for m in _CLAUSE.finditer(piece)]
        text = piece[starts[-1]:] if starts else piece
        found.append(Part(text.strip(" ?,;"), _ITEM.search(text) is not None,
                          _PLURAL.search(text) is not None))
    return found


def items(answer: str, question: str) -> set[str]:
    """The distinct items an answer gives that the question does not: code, names, figures,
    dotted file names, capitalised names inside a sentence, the elements of a list."""
    found: set[str] = set()
    bare = answer.strip().rstrip(".")
    if 0 < len(bare.split()) <= 3 and not mentions(question, bare):
        found.add(bare.lower())  # the answer is the item: "dbGetQuery", "HP/Compaq"
    for code in _CODE.findall(answer):
        if not mentions(question, code):
            found.add(code.lower())
    found.update(n.lower() for n in answer_names(answer, question))
    found.update(numbers_in(answer) - numbers_in(question))
    for name in [*_CAPITALISED.findall(answer), *_DOTTED.findall(answer),
                 *_CODE_WORD.findall(answer)]:
        name = name.rstrip(".")
        if len(name) > 1 and not mentions(question, name):
            found.add(name.lower())
    lists = [m.group(1) for m in _AFTER_COLON.finditer(answer)]
    lists += [m.group(0) for m in _LIST.finditer(answer)]
    for text in lists:
        elements = [e.strip() for e in _LIST_SPLIT.split(text)]
        elements = [e for e in elements if e and len(e.split()) <= 3]
        if len(elements) >= 2:
            found.update(f"list:{e.lower()}" for e in elements)
    return found


def _own_words(part: Part, others: list[Part]) -> set[str]:
    """A part's words that say what it asks about: not stop words, not question words, not
    in another part (stems compared)."""
    def stems(text: str) -> set[str]:
        return {stem(w) for w in terms(text) if not w.isdigit()}
    shared = set().union(*(stems(o.text) for o in others)) if others else set()
    return stems(part.text) - shared


def _same(one: str, other: str) -> bool:
    """Two stems of one word: equal, or one begins the other ("draw" / "draws")."""
    short, long_ = sorted((one, other), key=len)
    return short == long_ or (len(short) >= 4 and long_.startswith(short))


def unanswered(question: str, answer: str) -> str | None:
    """Why the answer leaves part of the question unanswered, or None."""
    asked = parts(question)
    wanted = sum(2 if p.plural else 1 for p in asked if p.asks_item)
    if len(asked) == 1 and wanted == 1 and _WHICH.search(asked[0].text):
        if items(answer, question):
            return None
        return (f"{PARTIAL} it asks “{asked[0].text}”; the answer names nothing the question "
                "does not (no name, code, figure or list)")
    if len(asked) < 2 and wanted < 2:
        return None
    given = items(answer, question)
    if len(given) < wanted:
        what = "; ".join(f"“{p.text}”" for p in asked if p.asks_item)
        count = "none" if not given else "one" if len(given) == 1 else str(len(given))
        if len(asked) < 2:
            return f"{PARTIAL} it asks for several ({what}); the answer gives {count}"
        return f"{PARTIAL} it asks {len(asked)} things ({what}); the answer gives {count}"
    if len(asked) < 2:
        return None
    answer_stems = {stem(w) for w in WORD.findall(answer) if len(w) > 2}
    figures = bool(numbers_in(answer) - numbers_in(question))
    for n, part in enumerate(asked):
        if figures and _QUANTITY.search(part.text):
            continue  # "and for how long?" is answered by "3 seconds", not by its words
        own = _own_words(part, asked[:n] + asked[n + 1:])
        if own and not any(_same(o, a) for o in own for a in answer_stems):
            return f"{PARTIAL} the answer does not speak to “{part.text}”"
    return None


def flag_target(draft: Draft, question: str) -> int | None:
    """The index of the claim to flag: the last supported one that gives an item, else the
    last supported one; None when no claim is supported (nothing reads as right)."""
    shown = [n for n, c in enumerate(draft.claims) if c.text and c.supported]
    if not shown:
        return None
    with_items = [n for n in shown if items(draft.claims[n].text, question)]
    return (with_items or shown)[-1]


class Parts:
    name = "parts"
    timing = None

    def enabled(self, settings: Settings) -> bool:
        return settings.answer_flag_partial

    def __call__(self, inputs: Inputs, draft: Draft) -> Verdict:
        if draft.raw_claims is not None or not draft.claims:
            return PASS
        reason = unanswered(inputs.query, draft.text)
        if reason is None:
            return PASS
        target = flag_target(draft, inputs.query)
        if target is None:
            return PASS
        claims = list(draft.claims)
        claims[target] = replace(claims[target], supported=False, reason=reason)
        return amended(draft, claims)
