"""Load Office and e-book files: Word (.docx), PowerPoint (.pptx), Excel (.xlsx), CSV and EPUB.

Each format is read with its maintained library (python-docx, python-pptx, openpyxl, the csv
module, ebooklib), never by walking its XML by hand, and turned into `Section`s like the other
loaders' (see ingest/loaders/__init__.py):

- **docx**: headings (the styles "Heading 1"–"Heading 9") cut the text into sections with their
  heading path, as in Markdown; the "Title" paragraph (else the core properties' title) is the
  title. Paragraphs and tables keep their order.
- **pptx**: one section a slide, headed `Slide 3: <its title>` (the slide number is the
  location a citation shows), then the text of its shapes (groups and tables included) and its
  speaker notes under `Speaker notes:`. `pages` is the number of slides.
- **xlsx** / **csv**: each sheet is read row by row; the first row with a value is the header.
- **epub**: chapters in reading order (the spine); each chapter's XHTML is read like an HTML
  file (sections at its headings); a chapter without headings is headed by its table-of-contents
  title.

Tables, in every format, stay tables: Markdown tables in blocks of whole rows, each block its own
section headed by where it is (`Prices > rows 2-31`) and starting with the table's header row, so
a chunk never holds a row without the header that says what its cells mean (ingest/loaders/
tables.py).

Hostile files are bounded before a library reads them: these formats are ZIP files, and one with
too many entries, too many bytes once uncompressed, or an entry compressed more than
`ZIP_MAX_RATIO` times over a few MB (a zip bomb) is refused; spreadsheets stop after
`SHEET_MAX_CELLS` cells and `SHEET_MAX_COLUMNS` columns (with a warning); encrypted and
DRM-protected files are refused with what to do. Nothing is ever run or fetched: macros are
ignored (a warning says so), formulas give the value Excel saved, and external references
(linked workbooks, images on the web) are never followed; the XML parsers of python-docx,
python-pptx and ebooklib resolve no entities, openpyxl parses with defusedxml.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ingest.loaders.common import _decode, _read_bytes, _short, normalise_text
from ingest.loaders.html import html_sections
from ingest.loaders.tables import table_sections
from rag_app.errors import EmptyDocument, LoadError, ParseError
from rag_app.records import LoadedDocument, Section

__all__ = ["OFFICE_KINDS", "load_office"]

OFFICE_KINDS = frozenset({"docx", "pptx", "xlsx", "csv", "epub"})

ZIP_MAX_ENTRIES = 20_000
ZIP_MAX_UNCOMPRESSED = 1024 * 1024 * 1024  # 1 GiB in all, as the entries declare it
ZIP_MAX_RATIO = 200  # an entry larger than ZIP_RATIO_FLOOR may be at most this many times
ZIP_RATIO_FLOOR = 10 * 1024 * 1024  # its compressed size (XML compresses 5-30x)
SHEET_MAX_CELLS = 2_000_000  # cells read from one workbook or CSV file, then a warning
SHEET_MAX_COLUMNS = 256  # columns read from one row, then a warning
_MACRO_PARTS = ("vbaproject.bin",)


# --- shared ------------------------------------------------------------------------------------
def load_office(path: Path, kind: str) -> LoadedDocument:
    """Read a file of an `OFFICE_KINDS` kind. Raises a `LoadError` subclass."""
    if kind == "csv":
        return _load_csv(path, _read_bytes(path))
    warnings = _check_zip(path, kind)
    try:
        if kind == "docx":
            doc = _load_docx(path)
        elif kind == "pptx":
            doc = _load_pptx(path)
        elif kind == "xlsx":
            doc = _load_xlsx(path)
        else:
            doc = _load_epub(path)
    except (LoadError, MemoryError, RecursionError):
        raise
    except Exception as exc:
        raise ParseError(f"{path} cannot be read as {_NAMES[kind]} ({_short(exc)}); "
                         f"re-save it in {_NAMES[kind]} or export it as PDF") from exc
    if warnings:
        from dataclasses import replace

        doc = replace(doc, warnings=(*warnings, *doc.warnings))
    return doc


_NAMES = {"docx": "a Word document (.docx)", "pptx": "a PowerPoint file (.pptx)",
          "xlsx": "an Excel workbook (.xlsx)", "epub": "an EPUB book", "csv": "CSV"}


def _check_zip(path: Path, kind: str) -> tuple[str, ...]:
    """Refuse what is not a ZIP, or is a zip bomb; warn about macros. Returns warnings."""
    try:
        with path.open("rb") as handle:
            head = handle.read(8)
    except OSError as exc:
        raise LoadError(f"{path} cannot be read ({exc.strerror or exc}); check it exists") from exc
    if head.startswith(b"\xd0\xcf\x11\xe0"):  # OLE compound file: encrypted OOXML or .doc/.xls
        raise ParseError(
            f"{path} is password-protected or in the old binary Office format (.doc, .ppt, "
            f".xls); open it, remove the password, and save it as {_NAMES[kind]}"
        )
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ParseError(f"{path} is not {_NAMES[kind]}: it is not a ZIP file ({_short(exc)}); "
                         "give it the suffix of its real type") from exc
    with archive:
        entries = archive.infolist()
        if len(entries) > ZIP_MAX_ENTRIES:
            raise ParseError(f"{path} has {len(entries):,} parts (at most {ZIP_MAX_ENTRIES:,}); "
                             "it is not a normal document: leave it out")
        total = 0
        for entry in entries:
            total += entry.file_size
            if (entry.file_size > ZIP_RATIO_FLOOR
                    and entry.file_size > ZIP_MAX_RATIO * max(entry.compress_size, 1)):
                raise ParseError(
                    f"{path}: part {entry.filename[:80]!r} unpacks {entry.compress_size:,} bytes "
                    f"into {entry.file_size:,} (over {ZIP_MAX_RATIO}x): a zip bomb, not read"
                )
        if total > ZIP_MAX_UNCOMPRESSED:
            raise ParseError(f"{path} unpacks to {total / 2**30:.1f} GiB (at most "
                             f"{ZIP_MAX_UNCOMPRESSED / 2**30:.0f} GiB); leave it out or split it")
        names = [entry.filename.lower() for entry in entries]
        if kind == "epub" and "meta-inf/encryption.xml" in names:
            if _epub_fonts_only(archive):
                return ()
            raise ParseError(f"{path} is DRM-protected (its chapters are encrypted); "
                             "only books without DRM can be read")
    if any(name.rsplit("/", 1)[-1] in _MACRO_PARTS for name in names):
        return (f"{path.name}: its macros were ignored (never run)",)
    return ()


def _epub_fonts_only(archive: zipfile.ZipFile) -> bool:
    """Whether META-INF/encryption.xml obfuscates only fonts (allowed by the EPUB spec)."""
    try:
        data = archive.read("META-INF/encryption.xml")[:1_000_000].decode("utf-8", "replace")
    except (KeyError, OSError, zipfile.BadZipFile):
        return False
    uris = re.findall(r"""URI\s*=\s*["']([^"']+)""", data)
    return bool(uris) and all(uri.lower().endswith((".otf", ".ttf", ".woff", ".woff2"))
                              for uri in uris)


def _cell(value: object) -> str:
    """A cell's value as one line of Markdown-table text."""
    if value is None:
        return ""
    if isinstance(value, bool):
        text = "TRUE" if value else "FALSE"
    elif isinstance(value, float):
        text = str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    elif isinstance(value, dt.datetime):
        text = value.isoformat(sep=" ", timespec="minutes" if value.second == 0 else "seconds")
        text = text.removesuffix(" 00:00")
    elif isinstance(value, dt.date | dt.time):
        text = value.isoformat()
    else:
        text = str(value)
    return " ".join(text.split()).replace("|", "\\|")


class _Outline:
    """Sections cut at headings (level 1 outermost), with the heading path of each: the same
    shape the Markdown and HTML loaders give."""

    def __init__(self) -> None:
        self.sections: list[Section] = []
        self._path: list[tuple[int, str]] = []
        self._lines: list[str] = []

    @property
    def headings(self) -> tuple[str, ...]:
        return tuple(text for _, text in self._path)

    def heading(self, level: int, text: str) -> None:
        self.flush()
        while self._path and self._path[-1][0] >= level:
            self._path.pop()
        self._path.append((level, text))

    def line(self, text: str) -> None:
        self._lines.append(text)

    def table(self, rows: Sequence[Sequence[str]], number: int) -> None:
        """A table in the flow: its own sections, headed by the current path + `table N`."""
        self.flush()
        self.sections.extend(table_sections(rows, (*self.headings, f"table {number}")))

    def flush(self) -> None:
        body = normalise_text("\n".join(self._lines))
        self._lines = []
        if not body.strip():
            return
        headings = self.headings
        text = f"{headings[-1]}\n\n{body}" if headings else body
        self.sections.append(Section(text=text, headings=headings))


def _finish(path: Path, kind: str, sections: Iterable[Section], *, title: str | None = None,
            pages: int = 0, warnings: Sequence[str] = ()) -> LoadedDocument:
    kept = tuple(sections)
    if not kept:
        raise EmptyDocument(f"{path} has no text (nothing in it is words or table cells)")
    title = " ".join(title.split())[:300] or None if title else None
    return LoadedDocument(kind=kind, sections=kept, title=title, pages=pages,
                          warnings=tuple(warnings))


# --- Word --------------------------------------------------------------------------------------
_HEADING_STYLE = re.compile(r"^heading\s+([1-9])$", re.I)


def _load_docx(path: Path) -> LoadedDocument:
    import docx
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    document = docx.Document(str(path))
    outline = _Outline()
    title: str | None = None
    tables = 0
    for block in document.iter_inner_content():
        if isinstance(block, Table):
            tables += 1
            outline.table(_docx_rows(block), tables)
            continue
        if not isinstance(block, Paragraph):
            continue
        text = " ".join(block.text.split())
        if not text:
            continue
        style = _style_name(block)
        level = _HEADING_STYLE.match(style)
        if level:
            outline.heading(int(level.group(1)), text)
        elif style.lower() == "title" and title is None:
            title = text
        else:
            outline.line(text)
    outline.flush()
    if title is None:
        try:
            title = document.core_properties.title or None
        except Exception:  # noqa: BLE001 - broken core properties only cost the title
            title = None
    return _finish(path, "docx", outline.sections, title=title)


def _style_name(paragraph: Any) -> str:
    try:
        style = paragraph.style
        return str(style.name or "") if style is not None else ""
    except Exception:  # noqa: BLE001 - a style that cannot be resolved is body text
        return ""


def _docx_rows(table: Any) -> list[list[str]]:
    rows: list[list[str]] = []
    for row in table.rows:
        cells: list[str] = []
        seen: set[int] = set()
        for cell in row.cells:  # a merged cell appears once per grid column: keep it once
            if id(cell._tc) in seen:
                continue
            seen.add(id(cell._tc))
            cells.append(_cell(cell.text))
            if len(cells) >= SHEET_MAX_COLUMNS:
                break
        rows.append(cells)
    return rows


# --- PowerPoint --------------------------------------------------------------------------------
def _load_pptx(path: Path) -> LoadedDocument:
    from pptx import Presentation

    presentation = Presentation(str(path))
    sections: list[Section] = []
    count = 0
    for number, slide in enumerate(presentation.slides, start=1):
        count = number
        title_shape = slide.shapes.title
        name = " ".join(title_shape.text_frame.text.split()) if title_shape is not None \
            and title_shape.has_text_frame else ""
        heading = f"Slide {number}: {name}" if name else f"Slide {number}"
        lines: list[str] = []
        tables: list[list[list[str]]] = []
        for shape in _shapes(slide.shapes):
            if title_shape is not None and shape.shape_id == title_shape.shape_id:
                continue
            if getattr(shape, "has_table", False):
                tables.append([[_cell(cell.text) for cell in row.cells][:SHEET_MAX_COLUMNS]
                               for row in shape.table.rows])
            elif getattr(shape, "has_text_frame", False):
                lines.extend(p for p in (" ".join(par.text.split())
                                         for par in shape.text_frame.paragraphs) if p)
        if slide.has_notes_slide:
            notes = slide.notes_slide.notes_text_frame
            text = notes.text.strip() if notes is not None else ""
            if text:
                lines += ["", "Speaker notes:", text]
        body = normalise_text("\n".join(lines))
        if body or not tables:
            sections.append(Section(text=f"{heading}\n\n{body}" if body else heading,
                                    headings=(heading,), page_start=number, page_end=number))
        for index, rows in enumerate(tables, start=1):
            sections.extend(
                Section(text=s.text, headings=s.headings, page_start=number, page_end=number)
                for s in table_sections(rows, (heading, f"table {index}"))
            )
    title: str | None = None
    try:
        title = presentation.core_properties.title or None
    except Exception:  # noqa: BLE001 - broken core properties only cost the title
        title = None
    return _finish(path, "pptx", sections, title=title, pages=count)


def _shapes(shapes: Iterable[Any]) -> Iterator[Any]:
    """Every shape, groups opened (depth-first, in the slide's order); bounded depth."""
    from pptx.enum.shapes import MSO_SHAPE_TYPE

    stack: list[tuple[Iterator[Any], int]] = [(iter(shapes), 0)]
    while stack:
        current, depth = stack[-1]
        shape = next(current, None)
        if shape is None:
            stack.pop()
            continue
        if getattr(shape, "shape_type", None) == MSO_SHAPE_TYPE.GROUP:
            if depth < 32:
                stack.append((iter(shape.shapes), depth + 1))
            continue
        yield shape


# --- spreadsheets ------------------------------------------------------------------------------
class _CellBudget:
    def __init__(self) -> None:
        self.left = SHEET_MAX_CELLS
        self.warnings: list[str] = []

    def take(self, row: Sequence[object], where: str) -> list[object] | None:
        """The row's cells (trailing empties cut, at most SHEET_MAX_COLUMNS), or None when
        the budget is spent."""
        cells = list(row)
        while cells and (cells[-1] is None or cells[-1] == ""):
            cells.pop()
        if len(cells) > SHEET_MAX_COLUMNS:
            self.warn(f"{where}: only the first {SHEET_MAX_COLUMNS} columns were read")
            cells = cells[:SHEET_MAX_COLUMNS]
        if self.left < len(cells):
            return None
        self.left -= max(len(cells), 1)
        return cells

    def warn(self, text: str) -> None:
        if text not in self.warnings:
            self.warnings.append(text)


def _sheet_sections(name: str, rows: Iterable[tuple[int, Sequence[object]]],
                    budget: _CellBudget) -> list[Section]:
    """Sections of one sheet from (row number, values) pairs; the first non-empty row is the
    header."""
    table: list[list[str]] = []
    numbers: list[int] = []
    for number, values in rows:
        cells = budget.take(values, name)
        if cells is None:
            budget.warn(f"{name}: rows from {number} on were not read (over "
                        f"{SHEET_MAX_CELLS:,} cells in the file)")
            break
        texts = [_cell(value) for value in cells]
        if any(texts):
            table.append(texts)
            numbers.append(number)
    return table_sections(table, (name,), numbers=numbers)


def _load_xlsx(path: Path) -> LoadedDocument:
    import openpyxl

    workbook = openpyxl.load_workbook(str(path), read_only=True, data_only=True,
                                      keep_links=False, keep_vba=False)
    budget = _CellBudget()
    sections: list[Section] = []
    try:
        for sheet in workbook.worksheets:
            if hasattr(sheet, "reset_dimensions"):  # a file's stated size can lie (A1:XFD1M)
                sheet.reset_dimensions()
            rows = ((number, values) for number, values in
                    enumerate(sheet.iter_rows(values_only=True), start=1))
            sections.extend(_sheet_sections(str(sheet.title), _dense(rows, str(sheet.title),
                                                                      budget), budget))
            if budget.left <= 0:
                break
        title = workbook.properties.title if workbook.properties is not None else None
    finally:
        workbook.close()
    return _finish(path, "xlsx", sections, title=title, warnings=budget.warnings)


def _dense(rows: Iterable[tuple[int, Sequence[object]]], name: str, budget: _CellBudget
           ) -> Iterator[tuple[int, Sequence[object]]]:
    """Rows as they come, but a run of 10,000 empty rows ends the sheet, with a warning (a
    hostile sheet can state a million empty rows)."""
    empty = 0
    for number, values in rows:
        if any(value is not None and value != "" for value in values):
            empty = 0
            yield number, values
        else:
            empty += 1
            if empty >= 10_000:
                budget.warn(f"{name}: rows from {number + 1} on were not read (10,000 empty "
                            "rows before them)")
                return


def _load_csv(path: Path, data: bytes) -> LoadedDocument:
    text = _decode(path, data).replace("\x00", "")
    sample = text[:64 * 1024]
    try:
        dialect: Any = csv.Sniffer().sniff(sample, delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel
    budget = _CellBudget()
    reader = csv.reader(io.StringIO(text), dialect)
    try:  # rows are read as the budget allows: a huge file is never held as lists
        sections = _sheet_sections(path.stem, enumerate(reader, start=1), budget)
    except csv.Error as exc:
        raise ParseError(f"{path} is not readable CSV ({exc}); check its quoting") from exc
    return _finish(path, "csv", sections, warnings=budget.warnings)


# --- EPUB --------------------------------------------------------------------------------------
def _load_epub(path: Path) -> LoadedDocument:
    import ebooklib
    from ebooklib import epub

    book = epub.read_epub(str(path), options={"ignore_ncx": True})
    toc = _toc_titles(book.toc)
    sections: list[Section] = []
    chapters = 0
    for idref, _linear in book.spine:
        item = book.get_item_with_id(idref)
        if item is None or item.get_type() != ebooklib.ITEM_DOCUMENT:
            continue
        chapters += 1
        label = toc.get(item.get_name().split("#")[0]) or f"Chapter {chapters}"
        for section in html_sections(item.get_content()):
            if section.headings:
                sections.append(section)
            else:
                sections.append(Section(text=f"{label}\n\n{section.text}", headings=(label,)))
    titles = book.get_metadata("DC", "title")
    title = str(titles[0][0]) if titles and titles[0] and titles[0][0] else None
    return _finish(path, "epub", sections, title=title)


def _toc_titles(toc: Any) -> dict[str, str]:
    """href (without #fragment) -> the first table-of-contents title that points to it."""
    titles: dict[str, str] = {}
    stack = list(toc)[::-1]
    seen = 0
    while stack and seen < 100_000:
        seen += 1
        entry = stack.pop()
        if isinstance(entry, tuple | list):
            stack.extend(reversed(list(entry)))
            continue
        href = getattr(entry, "href", None)
        title = getattr(entry, "title", None)
        if href and title:
            titles.setdefault(str(href).split("#")[0], " ".join(str(title).split()))
    return titles
