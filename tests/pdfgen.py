"""Write small PDFs with a real text layer, using pypdf only (no reportlab, no fonts on disk).

Text is drawn in the standard Type1 font Helvetica (every PDF reader has it), line by line with
`BT /F1 11 Tf x y Td (…) Tj ET`, so text extraction gets back what was written. Used by the
tests and by `data/make_samples.py`.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from pypdf import PdfWriter
from pypdf.generic import ContentStream, DictionaryObject, NameObject

PAGE_WIDTH = 612  # US Letter, in points
PAGE_HEIGHT = 792
MARGIN = 72
FONT_SIZE = 11
LEADING = 14
WRAP_AT = 90
MAX_LINES = (PAGE_HEIGHT - 2 * MARGIN) // LEADING  # 46 lines fit between the margins


def _escape(line: str) -> bytes:
    """A PDF literal string body: WinAnsi (cp1252) bytes with ( ) \\ escaped."""
    raw = line.encode("cp1252", errors="replace")
    return raw.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)")


def _wrap(text: str) -> list[str]:
    lines: list[str] = []
    for paragraph_line in text.splitlines():
        if not paragraph_line.strip():
            lines.append("")
            continue
        lines.extend(textwrap.wrap(paragraph_line, WRAP_AT, break_on_hyphens=False) or [""])
    return lines


def _text_stream(lines: list[str]) -> bytes:
    out = [b"BT", f"/F1 {FONT_SIZE} Tf".encode(), f"{MARGIN} {PAGE_HEIGHT - MARGIN} Td".encode()]
    for index, line in enumerate(lines):
        if index:
            out.append(f"0 {-LEADING} Td".encode())
        if line:
            out.append(b"(" + _escape(line) + b") Tj")
    out.append(b"ET")
    return b"\n".join(out) + b"\n"


def _figure_stream() -> bytes:
    """A grey filled rectangle: page content that is not text (stands in for a scanned image)."""
    return b"0.8 g\n72 300 468 400 re\nf\n"


def make_pdf(path: Path, pages: list[str], *, title: str | None = None) -> Path:
    """Write `pages` (one string per page) to `path` as a PDF and return `path`.

    Lines longer than ~90 characters are wrapped; a page holds at most 46 lines (ValueError
    beyond that). An empty (or whitespace-only) string gives a page with a drawing and no text
    layer, which is what a scanned page looks like to a text extractor.
    """
    writer = PdfWriter()
    font = DictionaryObject(
        {
            NameObject("/Type"): NameObject("/Font"),
            NameObject("/Subtype"): NameObject("/Type1"),
            NameObject("/BaseFont"): NameObject("/Helvetica"),
            NameObject("/Encoding"): NameObject("/WinAnsiEncoding"),
        }
    )
    for number, text in enumerate(pages, start=1):
        lines = _wrap(text)
        if len(lines) > MAX_LINES:
            raise ValueError(
                f"page {number} has {len(lines)} lines after wrapping; at most {MAX_LINES} fit"
            )
        page = writer.add_blank_page(width=PAGE_WIDTH, height=PAGE_HEIGHT)
        page[NameObject("/Resources")] = DictionaryObject(
            {NameObject("/Font"): DictionaryObject({NameObject("/F1"): font})}
        )
        stream = ContentStream(None, writer)
        stream.set_data(_text_stream(lines) if text.strip() else _figure_stream())
        page.replace_contents(stream)
    if title is not None:
        writer.add_metadata({"/Title": title})
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        writer.write(handle)
    return path


def make_slow_pdf(path: Path, operations: int = 150_000) -> Path:
    """A one-page PDF whose text extraction takes seconds: `operations` tiny text draws, each
    with its own text matrix (the kind of file that a parse time limit is for)."""
    writer = PdfWriter()
    page = writer.add_blank_page(width=PAGE_WIDTH, height=PAGE_HEIGHT)
    font = DictionaryObject({NameObject("/Type"): NameObject("/Font"),
                             NameObject("/Subtype"): NameObject("/Type1"),
                             NameObject("/BaseFont"): NameObject("/Helvetica")})
    page[NameObject("/Resources")] = DictionaryObject(
        {NameObject("/Font"): DictionaryObject({NameObject("/F1"): font})}
    )
    stream = ContentStream(None, writer)
    stream.set_data(b"BT /F1 1 Tf " + b"1 0 0 1 0 0 Tm (x) Tj " * operations + b"ET")
    page.replace_contents(stream)
    with path.open("wb") as handle:
        writer.write(handle)
    return path
