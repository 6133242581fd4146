"""What the loaders share: a file's bytes, text decoded whatever its encoding, normalised text,
one-line descriptions of errors and page lists for messages, and the note an OCR'd document
carries (written by ingest/loaders/ocr.py and the PDF loader, read by the ingest report and
ingest/languages.py)."""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import charset_normalizer

from rag_app.errors import LoadError, ParseError

__all__ = ["normalise_text", "ocr_note", "ocr_page_count", "read_ocr_note"]

# --- shared helpers ----------------------------------------------------------------------------
# The lookbehind makes it linear: a match can only start at the first blank of a run (without
# it, a 200 KB run of spaces took ~2 minutes).
_TRAILING_SPACE = re.compile(r"(?<![ \t\f\v\u00a0])[ \t\f\v\u00a0]+$", re.MULTILINE)
_MANY_NEWLINES = re.compile(r"\n{3,}")


def normalise_text(text: str) -> str:
    """Unify line ends, drop NULs, strip trailing spaces, collapse 3+ newlines to 2, trim.
    The result is always encodable as UTF-8: surrogate pairs (two code points) are joined and
    lone surrogates (pypdf keeps them from broken ToUnicode CMaps) become U+FFFD."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    text = _TRAILING_SPACE.sub("", text)
    text = _MANY_NEWLINES.sub("\n\n", text)
    return text.strip("\n")


def _short(exc: BaseException, limit: int = 160) -> str:
    """A one-line description of an exception, for messages."""
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    text = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise LoadError(f"{path} cannot be read ({exc.strerror or exc}); check it exists") from exc


def _page_ranges(numbers: Iterable[int]) -> str:
    """[3, 4, 5, 9] → '3-5, 9'."""
    runs: list[list[int]] = []
    for number in sorted(numbers):
        if runs and number == runs[-1][1] + 1:
            runs[-1][1] = number
        else:
            runs.append([number, number])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def _pages_phrase(numbers: Sequence[int], singular: str, plural: str) -> str:
    """'page 3 has …' or 'pages 3-5, 9 have …'."""
    if len(numbers) == 1:
        return f"page {numbers[0]} {singular}"
    return f"pages {_page_ranges(numbers)} {plural}"


# --- decoding ----------------------------------------------------------------------------------
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_CONTROL_BYTES = frozenset(range(32)) - {9, 10, 12, 13, 27}  # all but \t \n \f \r ESC
_WESTERN = ("cp1252", "latin_1", "iso8859_15")


# A run of UTF-16 code units of Latin text (a character byte and a NUL, in either order),
# optionally after its BOM: what a stray UTF-16 line in a log looks like. Its NULs are text.
_TEXT_BYTE = rb"[\t\n\r\x20-\x7e\xa0-\xff]"
_UTF16_RUN = re.compile(
    rb"(?P<le>(?:\xff\xfe)?(?:" + _TEXT_BYTE + rb"\x00){3,})"
    rb"|(?P<be>(?:\xfe\xff)?(?:\x00" + _TEXT_BYTE + rb"){3,})"
)


def _looks_binary(data: bytes) -> bool:
    """NUL bytes among many other control bytes: not a text file (a stray NUL is dropped)."""
    sample = data[:8192]
    if b"\x00" not in sample:
        return False
    controls = sum(1 for byte in sample if byte in _CONTROL_BYTES)
    return controls >= 8 and controls > 0.05 * len(sample)


def _decode(path: Path, data: bytes, declared: str | None = None) -> str:
    """Bytes → str: BOM, then the declared charset, UTF-8, then a guess. Never fails on bad bytes.

    Text with NUL bytes is read as a mix: runs of BOM-less UTF-16 (a log with a line written
    by another tool) are decoded as UTF-16, the rest as above. Raises ParseError for binary
    data: NULs and control bytes outside such runs.
    """
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return data.decode(encoding, errors="replace")
    if declared and declared.lower().replace("_", "-").startswith(("utf-16", "utf-32")):
        declared = None  # a BOM-less UTF-16 declaration is a mistake (the HTML spec agrees)
    if b"\x00" not in data:
        return _decode_single(data, declared)
    pieces: list[tuple[bytes, str | None]] = []  # (bytes, UTF-16 codec or None: the rest)
    at = 0
    for run in _UTF16_RUN.finditer(data):
        if run.start() > at:
            pieces.append((data[at : run.start()], None))
        pieces.append((run.group(), "utf-16-le" if run.group("le") else "utf-16-be"))
        at = run.end()
    if at < len(data):
        pieces.append((data[at:], None))
    rest = b"".join(chunk for chunk, codec in pieces if codec is None)
    if _looks_binary(rest):
        raise ParseError(
            f"{path} looks binary (NUL and control bytes), not text; "
            "leave it out or give it the suffix of its real type"
        )
    if len(pieces) == 1 and pieces[0][1] is None:
        return _decode_single(data, declared)
    encoding = _single_encoding(rest, declared)
    return "".join(
        chunk.decode(codec, errors="replace").lstrip("\ufeff") if codec
        else chunk.decode(encoding, errors="replace")
        for chunk, codec in pieces
    )


def _single_encoding(data: bytes, declared: str | None) -> str:
    """The declared charset or UTF-8 when `data` decodes with it, else a guess."""
    for candidate in (declared, "utf-8"):
        if candidate:
            try:
                data.decode(candidate)
            except (UnicodeDecodeError, LookupError):
                continue
            return candidate
    return _guess_encoding(data)


def _decode_single(data: bytes, declared: str | None) -> str:
    for candidate in (declared, "utf-8"):
        if candidate:
            try:
                return data.decode(candidate)
            except (UnicodeDecodeError, LookupError):
                continue
    return data.decode(_guess_encoding(data), errors="replace")


def _guess_encoding(data: bytes) -> str:
    """charset_normalizer's best guess, but cp1252 when that fits about as well.

    charset_normalizer often calls short Western European text cp1250 or cp1257 ('crème' would
    come out as 'crčme'); Western text is the common case for legacy files here.
    """
    matches = list(charset_normalizer.from_bytes(data))
    if not matches:
        return "utf-8"
    best = min(matches, key=lambda match: match.chaos)
    for match in matches:
        if match.encoding in _WESTERN and match.chaos <= best.chaos + 0.1:
            return match.encoding
    return best.encoding


# --- the report's note ---------------------------------------------------------------------------
_NOTE = re.compile(r"^OCR: (?:page|pages) (?P<pages>[\d, -]+) read by OCR \((?P<langs>[^)]*)\), "
                   r"(?P<seconds>[\d.]+) s$")


def ocr_note(pages: Sequence[int], languages: str, seconds: float, unit: str = "page") -> str:
    """The warning an OCR'd document carries: which pages, which languages, how long."""
    what = f"{unit} {pages[0]}" if len(pages) == 1 else f"{unit}s {_page_ranges(pages)}"
    return f"OCR: {what} read by OCR ({languages}), {seconds:.1f} s"


def read_ocr_note(text: str) -> tuple[int, float] | None:
    """(pages, seconds) from a warning made by `ocr_note`, None for any other text."""
    match = _NOTE.match(text)
    if match is None:
        return None
    count = 0
    for part in match.group("pages").split(","):
        first, _, last = part.strip().partition("-")
        count += int(last or first) - int(first) + 1
    return count, float(match.group("seconds"))


def ocr_page_count(warnings: Iterable[str]) -> int:
    """How many pages (frames of an image) OCR read, from a document's warnings."""
    return sum(got[0] for got in map(read_ocr_note, warnings) if got is not None)
