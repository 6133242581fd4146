"""Tables on PDF pages kept as tables (issue 28 point 3): a ruled table is found on its page
(pdfplumber, on pages whose drawings could be its rules), and each chunk holds whole rows under
the table's header, on that page; the page's other text is kept around it, and pages without a
table are read exactly as before. The PDFs are written here with pypdf: text in Helvetica, the
table's rules as drawn lines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pypdf import PdfWriter
from pypdf.generic import ContentStream

from ingest.loaders import PdfParser, load_file
from ingest.loaders.ocr import OcrOptions
from ingest.sync import Ingestor
from rag_app.answering import answer
from rag_app.retrieve import Retriever
from rag_app.ui.sources import render_pdf_pages
from tests.conftest import make_settings
from tests.pdfgen import make_pdf

NO_OCR = OcrOptions(mode="off")
HEADER = ["Model", "Capacity", "Power", "Price"]
ROWS = [[f"AK-{100 + 10 * n}", f"{1.0 + n / 10:.1f} litres", f"{1800 + 50 * n} W",
         f"£{30 + 2 * n}.99"] for n in range(24)]


def _esc(text: str) -> bytes:
    raw = text.encode("cp1252")
    return raw.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)")


def _text(x: float, y: float, text: str, size: int = 10) -> bytes:
    return b"BT /F1 %d Tf 1 0 0 1 %.1f %.1f Tm (" % (size, x, y) + _esc(text) + b") Tj ET"


def table_page(before: list[str], header: list[str], rows: list[list[str]],
               after: list[str]) -> bytes:
    """A page's content: lines of text, a table with every cell ruled, more lines of text."""
    out: list[bytes] = []
    y = 740.0
    for line in before:
        out.append(_text(72, y, line, 11))
        y -= 16
    y -= 8
    left, width, height = 72.0, 115.0, 16.0
    cols = len(header)
    top = y
    for r, row in enumerate([header, *rows]):
        for c, cell in enumerate(row):
            out.append(_text(left + c * width + 4, top - (r + 1) * height + 4, cell))
    bottom = top - (len(rows) + 1) * height
    for r in range(len(rows) + 2):  # horizontal rules
        yy = top - r * height
        out.append(b"%.1f %.1f m %.1f %.1f l S" % (left, yy, left + cols * width, yy))
    for c in range(cols + 1):  # vertical rules
        xx = left + c * width
        out.append(b"%.1f %.1f m %.1f %.1f l S" % (xx, top, xx, bottom))
    y = bottom - 24
    for line in after:
        out.append(_text(72, y, line, 11))
        y -= 16
    return b"0.5 w\n" + b"\n".join(out) + b"\n"


def make_table_pdf(path: Path, pages: list[bytes | str]) -> Path:
    """A PDF whose pages are content streams (`table_page`) or plain text (as tests/pdfgen)."""
    plain = make_pdf(path.with_suffix(".plain.pdf"), [p if isinstance(p, str) else "x"
                                                     for p in pages])
    from pypdf import PdfReader

    writer = PdfWriter(clone_from=PdfReader(plain))
    for page, content in zip(writer.pages, pages, strict=True):
        if isinstance(content, bytes):
            stream = ContentStream(None, writer)
            stream.set_data(content)
            page.replace_contents(stream)
    with path.open("wb") as handle:
        writer.write(handle)
    plain.unlink()
    return path


INTRO = ["Aurora kettles: the range at a glance.",
         "Every model below has a 2-year warranty and boil-dry protection."]
AFTER = ["Prices include VAT. Delivery is free over £40."]


@pytest.fixture
def table_pdf(tmp_path: Path) -> Path:
    return make_table_pdf(tmp_path / "range.pdf", [
        "The Aurora kettle range.\n\nThis page has no table: it is read as before.",
        table_page(INTRO, HEADER, ROWS, AFTER),
        "Care and cleaning: descale monthly with citric acid.",
    ])


@pytest.mark.parametrize("parser", ["auto", "pypdf", "pypdfium2"])
def test_a_ruled_table_becomes_blocks_of_whole_rows_under_its_header(
        table_pdf: Path, parser: PdfParser) -> None:
    doc = load_file(table_pdf, pdf_parser=parser, ocr=NO_OCR)
    on_2 = [s for s in doc.sections if s.page_start == 2]
    tables = [s for s in on_2 if s.headings]
    assert len(tables) >= 2  # 25 rows of ~45 characters: more than one block
    head = "| Model | Capacity | Power | Price |\n| --- | --- | --- | --- |"
    rows_seen: list[str] = []
    for section in tables:
        assert section.headings[0] == "table 1" and section.headings[1].startswith("rows ")
        assert section.page_end == 2
        where, _, table = section.text.partition("\n\n")
        assert where == section.headings[1] and table.startswith(head + "\n")
        rows_seen += table.split("\n")[2:]
    assert rows_seen == ["| " + " | ".join(row) + " |" for row in ROWS]  # every row, once
    # the page's own text stays, before and after the table, and holds no table cell
    prose = [s.text for s in on_2 if not s.headings]
    assert prose[0] == "\n".join(INTRO) and prose[-1] == AFTER[0]
    assert not any("AK-1" in text for text in prose)


def test_pages_without_a_table_are_read_as_before(table_pdf: Path, tmp_path: Path) -> None:
    doc = load_file(table_pdf, ocr=NO_OCR)
    plain = load_file(make_pdf(tmp_path / "plain.pdf", [
        "The Aurora kettle range.\n\nThis page has no table: it is read as before.", "x",
        "Care and cleaning: descale monthly with citric acid."]), ocr=NO_OCR)
    assert [s for s in doc.sections if s.page_start != 2] == \
        [s for s in plain.sections if s.page_start != 2]


def test_a_box_or_a_figure_is_not_a_table(tmp_path: Path) -> None:
    # ruled, but its cells are empty (a diagram) or one column (a framed note): plain text
    empty = table_page(["A diagram follows."], ["", "", ""], [["", "", ""]] * 3, ["The end."])
    note = table_page(["A framed note."], ["Note"], [["Unplug before cleaning."]], [])
    doc = load_file(make_table_pdf(tmp_path / "boxes.pdf", [empty, note]), ocr=NO_OCR)
    assert not any(s.headings for s in doc.sections)
    assert "Unplug before cleaning." in doc.sections[-1].text


@pytest.mark.slow
def test_a_row_is_found_and_cited_with_its_header(table_pdf: Path, tmp_path: Path,
                                                  embedder: Any) -> None:
    settings = make_settings(tmp_path / "state")
    report = Ingestor(settings, embedder).run([table_pdf.parent])
    assert not report.failed
    retriever = Retriever(settings, embedder=embedder)
    stored = retriever.store.chunks.get(include=["documents", "metadatas"])
    rows = [(text, meta) for text, meta in zip(stored["documents"], stored["metadatas"],
                                               strict=True) if "| AK-" in text]
    assert len(rows) >= 2
    for text, meta in rows:  # each chunk: whole rows, under the header, on page 2
        assert text.startswith("table 1 > rows ")
        assert text.count("| Model | Capacity | Power | Price |") == 1
        assert all(line.count("|") == 5 for line in text.split("\n")[2:] if line)
        assert meta["page_start"] == meta["page_end"] == 2
    seen = {line for text, _ in rows for line in text.split("\n") if line.startswith("| AK-")}
    assert seen == {"| " + " | ".join(row) + " |" for row in ROWS}  # (the overlap repeats one)
    hits = retriever.search("What is the power of the AK-250 kettle?")
    row = next(h for h in hits if "| AK-250 |" in h.text)
    assert row.page_start == row.page_end == 2 and "| Model | Capacity |" in row.text
    view = render_pdf_pages(table_pdf, 2, 2, row.text)  # the citation viewer marks its cells
    assert view[0].page == 2 and view[0].marks >= 4
    stream = answer("What is the power of the AK-250 kettle?", settings=settings,
                    retriever=retriever, use_llm=False)
    "".join(stream)
    assert any("| AK-250 | 2.5 litres | 2550 W | £60.99 |" in h.text for h in stream.result.hits)
