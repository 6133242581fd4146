"""Words as the project compares them: one word pattern, one stop list, `terms()`.

A word is a run of letters and digits that may hold `.`, `$`, `@` or `-` inside (`read.csv`,
`AK-200`, `$HOME`); a term is a word of three or more characters (or a number) that is not a stop
word, lower-cased.
"""

from __future__ import annotations

import re

WORD = re.compile(r"[^\W_][\w.$@-]*[\w]|\d")
STOP = frozenset(
    "the and for are but not you your with that this from have has had was were will would "
    "can could should how what when where which who why does did into out its it's than then "
    "them they their there these those about some any all each more most other such only own "
    "same very just also use used using get make want need way".split())


def terms(text: str) -> set[str]:
    """The text's distinct terms, lower-cased (stop words and words under 3 letters dropped,
    numbers kept)."""
    return {w.lower() for w in WORD.findall(text)
            if (len(w) > 2 or w.isdigit()) and w.lower() not in STOP}


def stem(word: str) -> str:
    """A crude stem for comparing word forms ("covers", "covered" and "cover" share one): the
    first five characters, lower-cased."""
    return word.lower()[:5]
