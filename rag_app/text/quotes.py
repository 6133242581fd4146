"""Quotes as evidence: does the quoted text occur in the passage it cites?

The answer path asks the model, for each claim, for the words of the source that state it.
A quote is checked verbatim after a light normalisation: case, whitespace (ignored: PDF text
and models space words and code differently), typographic quotes and dashes, Markdown's
emphasis, code and table marks (`*`, `_`, a backtick, `~`, `|`: formatting, not words) and a
word broken by a hyphen at a line end; an ellipsis may join pieces that occur in order.
A claim whose quote is not in its passage, or whose numbers the passage never states, is
unsupported: the check needs no model and cannot be argued with.

    span = find_quote("He said: “ok”", passage)   # (start, end) in `passage`, or None
"""

from __future__ import annotations

import re
import unicodedata

# A quote shorter than this (after normalisation) proves nothing: "R" or "yes" is everywhere.
MIN_QUOTE_CHARS = 4
_TRANSLATE = str.maketrans({
    "‘": "'", "’": "'", "‚": "'", "‛": "'", "“": '"', "”": '"', "„": '"', "‟": '"',
    "‐": "-", "‑": "-", "‒": "-", "–": "-", "—": "-", "−": "-", "\u00ad": "",
    "`": "'", "´": "'",
})
_ELLIPSIS = re.compile(r"\.\.\.|…|\[\.\.\.\]|\[…\]")
_MARKS = frozenset("*_`~|")


def normalise(text: str) -> str:
    """Case-folded NFKC text without whitespace or Markdown marks, quotes and dashes plain."""
    return _normalise_with_map(text)[0]


def _normalise_with_map(text: str) -> tuple[str, list[int]]:
    """`normalise(text)` and, for each of its characters, the index in `text` it came from."""
    out: list[str] = []
    where: list[int] = []
    for i, ch in enumerate(text):
        for c in unicodedata.normalize("NFKC", ch).translate(_TRANSLATE).casefold():
            if not c.isspace() and c not in _MARKS:
                out.append(c)
                where.append(i)
    return "".join(out), where


def quote_pieces(quote: str) -> list[str]:
    """The normalised pieces of a quote: split at ellipses, outer quotation marks removed."""
    return [_unquote(p) for p in _ELLIPSIS.split(_unquote(normalise(quote)))
            if p.strip(".\"'")]


def _unquote(text: str) -> str:
    text = text.strip(" .")
    while len(text) > 1 and text[0] in "\"'" and text[-1] == text[0]:
        text = text[1:-1].strip()
    return text


def find_quote(quote: str, passage: str) -> tuple[int, int] | None:
    """Where the quote's words are in `passage` (first piece's start to last piece's end, as
    indexes into `passage`), or None when any piece is missing, out of order or the whole is
    too short to prove anything."""
    pieces = quote_pieces(quote)
    if not pieces or sum(len(p) for p in pieces) < MIN_QUOTE_CHARS:
        return None
    norm, where = _normalise_with_map(passage)
    pos, start = 0, None
    for piece in pieces:
        found = norm.find(piece, pos)
        stop = found + len(piece)
        if found < 0:
            found, stop = _find_dehyphenated(norm, piece, pos)
            if found < 0:
                return None
        if start is None:
            start = found
        pos = stop
    end = min(pos, len(where)) - 1
    return (where[start or 0], where[end] + 1) if where else None


def _find_dehyphenated(norm: str, piece: str, pos: int) -> tuple[int, int]:
    """A quote that joins a word the page broke with a hyphen ("example" for "exam- ple")."""
    loose = re.escape(piece)
    # let any letter-letter boundary in the quote match a hyphen (a word broken at a line end)
    pattern = re.sub(r"(?<=\w)(?=\w)", "-?", loose)
    m = re.compile(pattern).search(norm, pos)
    return (m.start(), m.end()) if m else (-1, -1)


__all__ = ["MIN_QUOTE_CHARS", "find_quote", "normalise", "quote_pieces"]
