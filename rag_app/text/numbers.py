"""Numbers a text states ("2,200" and "2200" are one number), and those a statement gives that
its passages do not.
"""

from __future__ import annotations

import re
import unicodedata

_NUMBER = re.compile(r"(?<![\w.])\d+(?:[.,]\d+)*")
_SPACED = str.maketrans({c: " " for c in "*_`~|"})


def numbers_in(text: str) -> set[str]:
    """The numbers a text states ("2,200" and "2200" are one number)."""
    plain = unicodedata.normalize("NFKC", text).translate(_SPACED)
    return {n.replace(",", "") for n in _NUMBER.findall(plain)}


def unstated_numbers(statement: str, passages: list[str], question: str = "") -> list[str]:
    """Numbers in a statement that neither the passages nor the question state (a figure the
    model took from elsewhere, or made up)."""
    known = numbers_in(question)
    for p in passages:
        known |= numbers_in(p)
    return sorted(n for n in numbers_in(statement) if n not in known)


__all__ = ["numbers_in", "unstated_numbers"]
