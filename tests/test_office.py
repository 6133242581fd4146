"""Word, PowerPoint, Excel, CSV and EPUB files, built here with the real libraries (python-docx,
python-pptx, openpyxl, ebooklib), loaded, then ingested for real and found by a question."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import pytest

from ingest.loaders import SUPPORTED_SUFFIXES, load_file, office
from ingest.loaders.tables import TABLE_BLOCK_CHARS
from rag_app.errors import EmptyDocument, ParseError
from tests.conftest import make_settings


# --- builders ----------------------------------------------------------------------------------
def make_docx(path: Path) -> Path:
    import docx

    document = docx.Document()
    document.add_heading("Aurora kettle manual", 0)  # the Title style
    document.add_paragraph("Read this before the first use.")
    document.add_heading("Warranty", 1)
    document.add_paragraph("The Aurora kettle has a 2-year warranty from the date of purchase.")
    document.add_heading("Spare parts", 2)
    document.add_paragraph("Order parts from the service centre.")
    table = document.add_table(rows=1, cols=3)
    for cell, text in zip(table.rows[0].cells, ("Part", "Code", "Price"), strict=True):
        cell.text = text
    for row in (("Limescale filter", "AF-220", "9 EUR"), ("Lid hinge", "LH-7", "4 EUR")):
        cells = table.add_row().cells
        for cell, text in zip(cells, row, strict=True):
            cell.text = text
    document.add_heading("Cleaning", 1)
    document.add_paragraph("Descale the kettle every month with citric acid.")
    document.save(str(path))
    return path


def make_pptx(path: Path) -> Path:
    from pptx import Presentation
    from pptx.util import Inches

    deck = Presentation()
    slide = deck.slides.add_slide(deck.slide_layouts[1])  # title and content
    slide.shapes.title.text = "Quarterly results"
    slide.placeholders[1].text_frame.text = "Revenue grew in the northern region."
    slide.notes_slide.notes_text_frame.text = "Mention the Tromsø store opening in March."
    slide = deck.slides.add_slide(deck.slide_layouts[5])  # title only
    slide.shapes.title.text = "Head count"
    shape = slide.shapes.add_table(3, 2, Inches(1), Inches(2), Inches(6), Inches(2))
    for r, row in enumerate((("Team", "People"), ("Support", "14"), ("Research", "9"))):
        for c, text in enumerate(row):
            shape.table.cell(r, c).text = text
    deck.save(str(path))
    return path


def make_xlsx(path: Path, rows: int = 60) -> Path:
    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "Prices"
    sheet.append(["Product", "Price (EUR)", "Warranty (years)"])
    for n in range(1, rows + 1):
        sheet.append([f"Model {n:03d}", 20 + n, 2])
    sheet.append(["Aurora kettle deluxe", 149.5, 5])
    contacts = book.create_sheet("Contacts")
    contacts.append(["Name", "Role"])
    contacts.append(["Ingrid Solberg", "service manager"])
    book.save(str(path))
    return path


def make_epub(path: Path) -> Path:
    from ebooklib import epub

    book = epub.EpubBook()
    book.set_identifier("test-book-1")
    book.set_title("The Lighthouse Keeper")
    book.set_language("en")
    one = epub.EpubHtml(title="Arrival", file_name="chap_01.xhtml", lang="en")
    one.content = ("<html><body><p>Mara arrived at the lighthouse on a stormy night in "
                   "November.</p></body></html>")
    two = epub.EpubHtml(title="The lamp", file_name="chap_02.xhtml", lang="en")
    two.content = ("<html><body><h1>The lamp</h1><p>The lamp burned whale oil until 1911.</p>"
                   "<h2>Repairs</h2><p>Its lens was replaced by a Fresnel lens.</p></body></html>")
    for chapter in (one, two):
        book.add_item(chapter)
    book.toc = [epub.Link("chap_01.xhtml", "Arrival", "arrival"), two]
    book.add_item(epub.EpubNcx())
    book.add_item(epub.EpubNav())
    book.spine = ["nav", one, two]
    epub.write_epub(str(path), book)
    return path


def texts(doc: Any) -> list[tuple[tuple[str, ...], str]]:
    return [(s.headings, s.text) for s in doc.sections]


# --- loading -----------------------------------------------------------------------------------
def test_new_suffixes_are_supported() -> None:
    for suffix in (".docx", ".pptx", ".xlsx", ".csv", ".epub"):
        assert suffix in SUPPORTED_SUFFIXES


def test_docx_headings_become_the_path_and_tables_stay_tables(tmp_path: Path) -> None:
    doc = load_file(make_docx(tmp_path / "manual.docx"))
    assert doc.kind == "docx"
    assert doc.title == "Aurora kettle manual"
    assert texts(doc) == [
        ((), "Read this before the first use."),
        (("Warranty",), "Warranty\n\nThe Aurora kettle has a 2-year warranty from the date of "
                        "purchase."),
        (("Warranty", "Spare parts"), "Spare parts\n\nOrder parts from the service centre."),
        (("Warranty", "Spare parts", "table 1", "rows 2-3"),
         "rows 2-3\n\n| Part | Code | Price |\n| --- | --- | --- |\n"
         "| Limescale filter | AF-220 | 9 EUR |\n| Lid hinge | LH-7 | 4 EUR |"),
        (("Cleaning",), "Cleaning\n\nDescale the kettle every month with citric acid."),
    ]


def test_pptx_a_slide_a_section_with_its_notes_and_tables(tmp_path: Path) -> None:
    doc = load_file(make_pptx(tmp_path / "deck.pptx"))
    assert doc.kind == "pptx" and doc.pages == 2
    assert texts(doc) == [
        (("Slide 1: Quarterly results",),
         "Slide 1: Quarterly results\n\nRevenue grew in the northern region.\n\n"
         "Speaker notes:\nMention the Tromsø store opening in March."),
        (("Slide 2: Head count", "table 1", "rows 2-3"),
         "rows 2-3\n\n| Team | People |\n| --- | --- |\n| Support | 14 |\n| Research | 9 |"),
    ]
    assert [s.page_start for s in doc.sections] == [1, 2]


def test_xlsx_every_block_of_rows_keeps_the_header(tmp_path: Path) -> None:
    doc = load_file(make_xlsx(tmp_path / "prices.xlsx"))
    assert doc.kind == "xlsx"
    prices = [s for s in doc.sections if s.headings[0] == "Prices"]
    assert len(prices) > 2  # 61 rows do not fit one block
    for section in prices:
        assert section.text.split("\n")[2] == "| Product | Price (EUR) | Warranty (years) |"
        assert len(section.text) < TABLE_BLOCK_CHARS + 200
    # the row numbers are the sheet's own: the header is row 1, the last product row 62
    assert prices[0].headings[1].startswith("rows 2-")
    assert prices[-1].headings[1].endswith("-62")
    assert "| Aurora kettle deluxe | 149.5 | 5 |" in prices[-1].text
    assert doc.sections[-1].headings == ("Contacts", "row 2")
    assert "| Ingrid Solberg | service manager |" in doc.sections[-1].text


def test_csv_is_a_table_with_its_header(tmp_path: Path) -> None:
    path = tmp_path / "stock.csv"
    path.write_text("sku;name;stock\nA-1;Kettle;12\nA-2;Toaster;0\n", encoding="cp1252")
    doc = load_file(path)
    assert texts(doc) == [(("stock", "rows 2-3"),
                           "rows 2-3\n\n| sku | name | stock |\n| --- | --- | --- |\n"
                           "| A-1 | Kettle | 12 |\n| A-2 | Toaster | 0 |")]


def test_epub_chapters_in_reading_order(tmp_path: Path) -> None:
    doc = load_file(make_epub(tmp_path / "book.epub"))
    assert doc.kind == "epub"
    assert doc.title == "The Lighthouse Keeper"
    found = texts(doc)
    assert (("Arrival",), "Arrival\n\nMara arrived at the lighthouse on a stormy night in "
                          "November.") in found
    assert (("The lamp",), "The lamp\n\nThe lamp burned whale oil until 1911.") in found
    assert (("The lamp", "Repairs"), "Repairs\n\nIts lens was replaced by a Fresnel lens.") \
        in found
    order = [h for h, _ in found]
    assert order.index(("Arrival",)) < order.index(("The lamp",))


# --- hostile files -----------------------------------------------------------------------------
def test_zip_bomb_is_refused_before_parsing(tmp_path: Path) -> None:
    path = tmp_path / "bomb.docx"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive, \
            archive.open("word/document.xml", "w", force_zip64=True) as entry:
        block = b"\x00" * (1 << 20)
        for _ in range(40):  # 40 MB of zeros: about 40 KB compressed
            entry.write(block)
    with pytest.raises(ParseError, match=r"zip bomb"):
        load_file(path)


def test_not_a_zip_and_encrypted_office_files_say_what_to_do(tmp_path: Path) -> None:
    fake = tmp_path / "fake.xlsx"
    fake.write_text("name,price\nkettle,40\n")
    with pytest.raises(ParseError, match=r"not a ZIP file.*real type"):
        load_file(fake)
    ole = tmp_path / "locked.docx"
    ole.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 600)
    with pytest.raises(ParseError, match=r"password-protected or in the old binary"):
        load_file(ole)


def test_drm_epub_is_refused_and_font_obfuscation_is_not_drm(tmp_path: Path) -> None:
    def with_encryption(name: str, uri: str) -> Path:
        path = make_epub(tmp_path / name)
        with zipfile.ZipFile(path, "a") as archive:
            archive.writestr("META-INF/encryption.xml",
                             '<encryption xmlns="urn:oasis:names:tc:opendocument:xmlns:container">'
                             f'<EncryptedData><CipherData><CipherReference URI="{uri}"/>'
                             "</CipherData></EncryptedData></encryption>")
        return path

    with pytest.raises(ParseError, match=r"drm\.epub is DRM-protected"):
        load_file(with_encryption("drm.epub", "EPUB/chap_01.xhtml"))
    doc = load_file(with_encryption("fonts.epub", "EPUB/fonts/serif.otf"))
    assert any("lighthouse" in s.text for s in doc.sections)


def test_macros_are_ignored_with_a_warning(tmp_path: Path) -> None:
    path = make_docx(tmp_path / "macro.docx")
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("word/vbaProject.bin", b"Attribute VB_Name = \"AutoOpen\"")
    doc = load_file(path)
    assert any("macros were ignored" in w for w in doc.warnings)
    assert "AutoOpen" not in " ".join(s.text for s in doc.sections)


def test_external_entities_are_not_read(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-VALUE")
    path = make_docx(tmp_path / "xxe.docx")
    with zipfile.ZipFile(path) as archive:
        parts = {name: archive.read(name) for name in archive.namelist()}
    xml = parts["word/document.xml"].decode()
    head, _, rest = xml.partition("?>")
    doctype = f'<!DOCTYPE w:document [<!ENTITY x SYSTEM "file://{secret}">]>'
    parts["word/document.xml"] = (head + "?>" + doctype
                                  + rest.replace("Read this", "&x; Read this", 1)).encode()
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in parts.items():
            archive.writestr(name, data)
    doc = load_file(path)
    joined = " ".join(s.text for s in doc.sections)
    assert "TOP-SECRET-VALUE" not in joined
    assert "descale" in joined.lower()


def test_huge_sheets_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(office, "SHEET_MAX_CELLS", 100)
    doc = load_file(make_xlsx(tmp_path / "big.xlsx", rows=80))
    assert any("were not read (over 100 cells" in w for w in doc.warnings)
    assert sum(s.text.count("| Model") for s in doc.sections) < 40


def test_a_sheet_that_lies_about_its_size_is_read_as_it_is(tmp_path: Path) -> None:
    """The sheet says A1:XFD1048576 and has a cell in its last column: read in milliseconds,
    256 columns at most, with a warning."""
    import re

    path = make_xlsx(tmp_path / "lying.xlsx", rows=5)
    with zipfile.ZipFile(path) as archive:
        parts = {name: archive.read(name) for name in archive.namelist()}
    xml = parts["xl/worksheets/sheet1.xml"].decode()
    xml = re.sub(r'<dimension ref="[^"]*"/>', '<dimension ref="A1:XFD1048576"/>', xml)
    xml = xml.replace("</sheetData>", '<row r="9"><c r="XFD9" t="inlineStr"><is><t>far</t>'
                      "</is></c></row></sheetData>")
    parts["xl/worksheets/sheet1.xml"] = xml.encode()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in parts.items():
            archive.writestr(name, data)
    doc = load_file(path)
    assert "Prices: only the first 256 columns were read" in doc.warnings
    assert all(s.text.count("\n") < 20 for s in doc.sections)
    assert "| Aurora kettle deluxe | 149.5 | 5 |" in " ".join(s.text for s in doc.sections)


def test_a_large_csv_is_read_within_the_cell_budget(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(office, "SHEET_MAX_CELLS", 1000)
    path = tmp_path / "log.csv"
    path.write_text("id,event\n" + "".join(f"{n},started\n" for n in range(200_000)))
    doc = load_file(path)
    assert any("were not read (over 1,000 cells" in w for w in doc.warnings)
    assert sum(s.text.count("started") for s in doc.sections) < 600


def test_empty_word_file_is_empty(tmp_path: Path) -> None:
    import docx

    path = tmp_path / "empty.docx"
    docx.Document().save(str(path))
    with pytest.raises(EmptyDocument, match="has no text"):
        load_file(path)


# --- ingested for real, found by a question ----------------------------------------------------
@pytest.mark.slow
def test_office_files_are_ingested_and_found(embedder: Any, tmp_path: Path) -> None:
    from ingest.sync import Ingestor
    from rag_app.retrieve import RetrievalOptions, Retriever

    docs = tmp_path / "docs"
    docs.mkdir()
    make_docx(docs / "manual.docx")
    make_pptx(docs / "deck.pptx")
    make_xlsx(docs / "prices.xlsx")
    make_epub(docs / "book.epub")
    settings = make_settings(tmp_path / "state")
    report = Ingestor(settings, embedder).run([docs])
    assert not report.failed, [o.reason for o in report.outcomes]
    retriever = Retriever(settings, embedder=embedder)
    questions = {
        "How long is the warranty on the Aurora kettle?": "manual.docx",
        "What is the code of the limescale filter?": "manual.docx",
        "When does the Tromsø store open?": "deck.pptx",
        "How many people work in research?": "deck.pptx",
        "What does the Aurora kettle deluxe cost?": "prices.xlsx",
        "What did the lighthouse lamp burn?": "book.epub",
    }
    for question, source in questions.items():
        hits = retriever.search(question, RetrievalOptions(k=3))
        assert source in [h.source for h in hits], (question, [h.source for h in hits])
    top = retriever.search("price of the Aurora kettle deluxe", RetrievalOptions(k=1))[0]
    assert "| Product | Price (EUR) | Warranty (years) |" in top.text  # the row with its header
    assert "149.5" in top.text


def test_the_upload_widget_accepts_every_supported_type() -> None:
    from rag_app.ui.documents import UPLOAD_TYPES

    assert sorted(UPLOAD_TYPES) == sorted(s.lstrip(".") for s in SUPPORTED_SUFFIXES)
