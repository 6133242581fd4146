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
_NUMBER = re.compile(r"(?<![\w.])\d+(?:[.,]\d+)*")
_SPACED = str.maketrans({c: " " for c in "*_`~|"})


_MARKS = frozenset("*_`~|")


_CITATION_MARK = re.compile(r"\s*\[\d{1,3}(?:\s*,\s*\d{1,3})*\]")
# Sentence ends: . ! ? (optionally closing quotes/brackets) then white space and an upper-case
# letter, a digit or an opening quote/bracket; or a line break between non-empty lines.
_SENTENCE_END = re.compile(
    r"(?:(?<=[.!?])|(?<=[.!?][\"'”’)\]]))\s+(?=[\"'“‘(\[]?[A-Z0-9])"  # . ! ? + capital/digit
    r"|\n\s*\n"  # a blank line
    r"|\n(?=\s*[-*•]\s)"  # a list item
)
_ABBREVIATIONS = ("e.g.", "i.e.", "etc.", "vs.", "cf.", "approx.", "no.", "fig.", "p.", "pp.",
                  "mr.", "mrs.", "ms.", "dr.", "st.")


def strip_citations(text: str) -> str:
    """'It lasts 2 years [1][3].' -> 'It lasts 2 years.'"""
    return _CITATION_MARK.sub("", text)


def split_sentences(text: str) -> list[str]:
    """Sentences of a short answer: split after . ! ? before a capital or digit, and at blank
    lines and list items; common abbreviations (e.g., i.e., etc.) do not end a sentence.
    Citation marks are removed; empty pieces are dropped."""
    pieces: list[str] = []
    pending = ""
    for part in _SENTENCE_END.split(strip_citations(text)):
        part = part.strip()
        if not part:
            continue
        joined = f"{pending} {part}".strip() if pending else part
        if joined.lower().endswith(_ABBREVIATIONS):
            pending = joined
            continue
        pieces.append(joined)
        pending = ""
    if pending:
        pieces.append(pending)
    return [" ".join(p.lstrip("-*• ").split()) for p in pieces if any(c.isalnum() for c in p)]


def sentence_breaks(text: str) -> list[int]:
    """Where each sentence after the first ends the one before it (indexes into `text`), by
    the rules of `split_sentences` (abbreviations aside)."""
    return [m.start() for m in _SENTENCE_END.finditer(text)]


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


__all__ = ["MIN_QUOTE_CHARS", "find_quote", "normalise", "numbers_in", "quote_pieces",
           "sentence_breaks", "split_sentences", "strip_citations", "unstated_numbers"]
