"""Sentences of short texts (answers): where one ends, with citation marks taken out.

    split_sentences("It lasts 2 years [1]. Register it, e.g. online.")
    # ["It lasts 2 years.", "Register it, e.g. online."]

(Passages are cut into sentences by rag_app.compress.units_of, which also breaks at numbered
list items and before a backtick; the two differ on purpose only there.)
"""

from __future__ import annotations

import re

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


__all__ = ["sentence_breaks", "split_sentences", "strip_citations"]
