"""Is a file's text worth chunking? A cheap test, run on the parsed text before it is split.

A file that is not prose costs time without giving anything a question can find: 5 MiB with no
word separators became about 20,000 chunks and held the small files queued behind it for more
than 300 s (issue 26). Such text is refused with the measure that failed, before it is split or
embedded:

- runs: most of the text sits in runs of more than `LONG_WORD` characters without a space
  (no separators, base64, hex, minified JSON or JS, long lines of digits);
- words: few of its tokens (those with a letter or digit) hold two letters in a row (digit
  dumps, hex); not asked of spreadsheets and CSV files (`tables=True`): a table of figures
  under a header row is data a question can find, and the chunk budget bounds it;
- repeats: the text compresses more than `MAX_COMPRESSION` times with zlib (one token or one
  line repeated; prose compresses about 3x, logs 5-15x).

Scripts written without spaces (Chinese, Japanese, Thai, Lao, Khmer, Myanmar, Korean) count
each of their characters as a word. Only texts of at least `MIN_CHARS` characters are tested:
a small odd file costs little, and a short table of figures may be worth finding. The test reads
at most `SAMPLE_CHARS` characters (three windows: start, middle, end), so it costs milliseconds
whatever the file's size. RAG_REFUSE_NON_PROSE=false turns it off.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

MIN_CHARS = 50_000  # shorter texts are never refused
SAMPLE_CHARS = 300_000  # read at most this much (three windows)
LONG_WORD = 40  # a run of more non-space characters than this is not a word
MIN_WORD_SHARE = 0.5  # of the non-space characters, at least this share in words
MIN_LETTER_SHARE = 0.3  # of the tokens, at least this share with two letters in a row
MAX_COMPRESSION = 25.0  # zlib ratio above which the text is one thing repeated

# Characters of scripts written without spaces: each one breaks a run (and is a word).
_NO_SPACE_SCRIPTS = (
    "\u0e00-\u0eff"  # Thai, Lao
    "\u1000-\u109f"  # Myanmar
    "\u1780-\u17ff"  # Khmer
    "\u3040-\u30ff"  # Hiragana, Katakana
    "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"  # CJK ideographs
    "\uac00-\ud7af"  # Hangul syllables
)
_TOKEN = re.compile(rf"[{_NO_SPACE_SCRIPTS}]|[^\s{_NO_SPACE_SCRIPTS}]+")
_ALNUM = re.compile(r"[^\W_]")
_LETTERS = re.compile(rf"[^\W\d_]{{2,}}|[{_NO_SPACE_SCRIPTS}]")


@dataclass(frozen=True, slots=True)
class ProseCheck:
    """The measures of one text; `reason` is empty when it reads as prose."""

    word_share: float  # of non-space characters, the share in tokens of <= LONG_WORD chars
    letter_share: float  # of those tokens, the share with two letters in a row
    compression: float  # zlib ratio of the sample
    reason: str = ""

    @property
    def is_prose(self) -> bool:
        return not self.reason


def sample(text: str, limit: int = SAMPLE_CHARS) -> str:
    """`text` itself, or three windows of it (start, middle, end) `limit` characters in all."""
    if len(text) <= limit:
        return text
    part = limit // 3
    middle = (len(text) - part) // 2
    return "\n".join((text[:part], text[middle : middle + part], text[-part:]))


def check_prose(text: str, *, tables: bool = False) -> ProseCheck:
    """Measure `text` (a sample of it) and say why it is not prose, if it is not. `tables`:
    the text is a spreadsheet's or CSV file's rows (figures are expected)."""
    if len(text) < MIN_CHARS:
        return ProseCheck(1.0, 1.0, 1.0)
    part = sample(text)
    tokens = _TOKEN.findall(part)
    chars = sum(len(t) for t in tokens)
    words = [t for t in tokens if len(t) <= LONG_WORD]
    word_share = sum(len(t) for t in words) / chars if chars else 0.0
    named = [t for t in words if _ALNUM.search(t)]  # not "|", "---" or "-"
    letter_share = sum(1 for t in named if _LETTERS.search(t)) / len(named) if named else 0.0
    raw = part.encode("utf-8", "replace")
    compression = len(raw) / max(1, len(zlib.compress(raw, 6)))
    reason = ""
    if word_share < MIN_WORD_SHARE:
        reason = (f"not prose: {1 - word_share:.0%} of its text is in runs of more than "
                  f"{LONG_WORD} characters without a space (no word separators, base64, hex, "
                  "minified code or data)")
    elif letter_share < MIN_LETTER_SHARE and not tables:
        reason = (f"not prose: only {letter_share:.0%} of its words hold letters (figures or "
                  "codes, not text)")
    elif compression > MAX_COMPRESSION:
        reason = (f"not prose: its text compresses {compression:.0f} times (the same words "
                  "or lines over and over)")
    return ProseCheck(word_share, letter_share, compression, reason)


__all__ = ["ProseCheck", "check_prose", "sample"]
