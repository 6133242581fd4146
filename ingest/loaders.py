"""Load one file into a `LoadedDocument`: the first step of ingest (load → split → sync).

One loader per kind, chosen by file suffix (`SUPPORTED_SUFFIXES`):

- **pdf** (`pdf_parser`, RAG_PDF_PARSER): one `Section` per page that has text,
  `page_start == page_end ==` the 1-based page number. Pages without a text layer are skipped
  and listed in `warnings`; a file where no page has text raises `NeedsOCR`. Encrypted files are
  opened with the empty password (files with only an owner password), then with each password
  given. Text comes from pypdf, except that a page whose words pypdf ran together (1%+ of them
  20+ letters long: words placed by TJ offsets without spaces, when the font's space looks
  wide) is read again with pypdfium2, and its text kept when fewer words are run together
  ("auto", the default); "pypdfium2" reads every page with pypdfium2 alone (about 13x faster;
  damaged files may fare differently); "pypdf" is pypdf alone.
  Tables drawn with ruling lines are kept as tables (`_PdfTables`): a page whose drawings
  could be a table's rules (pypdfium2 counts them, under 2 ms a page) is read by pdfplumber; each
  table it finds with at least 2 rows and 2 columns, half its cells filled and a header row, is
  cut into Markdown tables of whole rows under that header (ingest.office.table_sections, one
  section each, headed `table N > rows a-b`, on its page), and the page's other text is read by
  pdfplumber around them. Other pages are read as before.
- **markdown**: split at ATX (`## Title`) and setext (`Title` / `-----`) headings outside fenced
  code blocks (attribute lists such as `{: #anchor }` are cut from heading text); front matter
  is dropped from the text and its `title` becomes the title, else the first level-1 heading.
- **html** (BeautifulSoup): visible text of the main content only; split at `<h1>`–`<h6>`.
- **text**: one section with the whole (decoded, normalised) text; chunking happens later.
- **docx**, **pptx**, **xlsx**, **csv**, **epub**: ingest/office.py (headings, slides, sheets
  and chapters as sections; tables as Markdown tables of whole rows under their header).

Every section of a Markdown or HTML file begins with its own heading, as plain text on the first
line (markers such as `##` removed), so a chunk can be found by its heading; `headings` holds the
path of headings down to it, outermost first (`headings[-1]` is that first line). Text before the
first heading is a section with `headings == ()`; sections with no text besides their heading
are dropped.

Failures raise the `LoadError` subclasses of `rag_app.errors`; messages name the file and what
to do, and never contain a password.
"""

from __future__ import annotations

import codecs
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import charset_normalizer
import frontmatter
import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c
from bs4 import BeautifulSoup, FeatureNotFound
from bs4.element import NavigableString, PageElement, PreformattedString, Tag
from pypdf import PageObject, PdfReader
from pypdf.errors import DependencyError
from pypdf.generic import DictionaryObject

from ingest.ocr import (
    IMAGE_SUFFIXES,
    OcrOptions,
    PdfPageOcr,
    engine_problem,
    load_image,
    ocr_note,
)
from rag_app.errors import (
    EmptyDocument,
    FileTooLarge,
    LoadError,
    NeedsOCR,
    NeedsPassword,
    ParseError,
    ParseTimeout,
    UnsupportedFile,
)
from rag_app.records import LoadedDocument, Section

__all__ = ["SUPPORTED_SUFFIXES", "PdfParser", "ProgressCallback", "glued_share",
           "html_sections", "kind_of", "load_file", "normalise_text"]

SUPPORTED_SUFFIXES: dict[str, str] = {
    ".pdf": "pdf",
    ".md": "markdown",
    ".markdown": "markdown",
    ".txt": "text",
    ".text": "text",
    ".rst": "text",
    ".html": "html",
    ".htm": "html",
    ".docx": "docx",
    ".pptx": "pptx",
    ".xlsx": "xlsx",
    ".csv": "csv",
    ".epub": "epub",
    **{suffix: "image" for suffix in IMAGE_SUFFIXES},
}

ProgressCallback = Callable[[int, int], None]
"""Called as `progress(done, total)` after each PDF page."""

PASSWORD_HINT = "pass --password PW or set RAG_PDF_PASSWORD"

PdfParser = Literal["auto", "pypdfium2", "pypdf"]
"""Which library reads PDF text (RAG_PDF_PARSER); see the module docstring."""


def kind_of(path: Path) -> str | None:
    """The kind of document `path` holds, judged by its suffix; None if unsupported."""
    return SUPPORTED_SUFFIXES.get(path.suffix.lower())


def load_file(
    path: Path,
    *,
    passwords: Sequence[str] = (),
    max_bytes: int | None = None,
    progress: ProgressCallback | None = None,
    pdf_parser: PdfParser = "auto",
    ocr: OcrOptions | None = None,
) -> LoadedDocument:
    """Read `path` and return its text as sections.

    `passwords` are tried, in order, on encrypted PDFs. Files larger than `max_bytes` are
    refused before they are parsed. `progress(done, total)` is called after each PDF page.
    `pdf_parser` chooses how PDF text is extracted (see the module docstring). `ocr` says how
    scanned PDF pages and images are read (ingest/ocr.py; None: the defaults, on where
    Tesseract is installed).
    Raises a `LoadError` subclass when the file cannot be turned into text.
    """
    ocr = ocr or OcrOptions()
    kind = kind_of(path)
    if kind is None:
        known = ", ".join(sorted(SUPPORTED_SUFFIXES))
        raise UnsupportedFile(
            f"{path}: files ending in {path.suffix or '(no suffix)'!r} are not supported; "
            f"supported: {known}"
        )
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise LoadError(f"{path} cannot be read ({exc.strerror or exc}); check it exists") from exc
    if max_bytes is not None and size > max_bytes:
        raise FileTooLarge(
            f"{path} is {_megabytes(size)}, over the {_megabytes(max_bytes)} limit; "
            "raise RAG_MAX_FILE_MB or leave the file out"
        )
    if size == 0:
        raise EmptyDocument(f"{path} is empty (0 bytes)")
    if kind == "pdf":
        return _load_pdf(path, passwords, progress, pdf_parser, ocr)
    if kind == "image":
        return load_image(path, ocr)
    if kind in ("docx", "pptx", "xlsx", "csv", "epub"):
        from ingest.office import load_office  # python-docx & co. load only when needed

        return load_office(path, kind)
    data = _read_bytes(path)
    if kind == "markdown":
        return _load_markdown(path, data)
    if kind == "html":
        return _load_html(path, data)
    return _load_text(path, data)


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


def _megabytes(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB"  # MiB, as RAG_MAX_FILE_MB counts them


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


# --- PDF ---------------------------------------------------------------------------------------
_PDF_CHAR_FIXES = str.maketrans(
    {
        # C0 controls other than tab and line ends: pdfium gives e.g. \x14 \x15 for TeX math
        # glyphs without a Unicode mapping, pypdf \x08; none of them is text
        **{chr(code): None for code in (*range(0x00, 0x09), *range(0x0E, 0x20), 0x7F)},
        "\u00ad": None,  # soft hyphen
        # pdfium's mark for a hyphen that ended a line; it drops that line break too. Put both
        # back: hyphenated words are left alone, as pypdf gives them (see _clean_pdf_text).
        "\ufffe": "-\n",
        "\ufb00": "ff",
        "\ufb01": "fi",
        "\ufb02": "fl",
        "\ufb03": "ffi",
        "\ufb04": "ffl",
    }
)
_INLINE_SPACE = re.compile(r"[ \t\f\v\u00a0]+")
_WORD = re.compile(r"[^\W\d_]+")  # a run of letters
GLUED_WORD_LETTERS = 20
"""Words this long are rare in prose (0.00-0.04% of the words of the R manuals, most of them
long R identifiers) and common in text whose spaces were lost (13% in the manual of the study)."""
GLUED_PAGE_SHARE = 0.01
"""A page whose pypdf text has this share of such words is read again with pypdfium2 ("auto").
The R manuals' pages stay below 1% (the 2,415-page reference manual: 35 pages above, none above
4%: index pages of long function names); a false alarm costs one pdfium page read, and the text
is only replaced when pdfium's has fewer long words."""


def glued_share(text: str) -> float:
    """The share of the words (runs of letters) of `text` that are 20+ letters long: the sign
    of words run together. 0.0 for text without words."""
    words = _WORD.findall(text)
    if not words:
        return 0.0
    return sum(len(word) >= GLUED_WORD_LETTERS for word in words) / len(words)


def _clean_pdf_text(text: str) -> str:
    """Ligatures expanded, NULs, control characters and soft hyphens dropped, space runs
    within lines collapsed.

    Words hyphenated across a line break are left alone: 'well-\\nknown' cannot be told apart
    from 'informa-\\ntion' safely.
    """
    text = text.translate(_PDF_CHAR_FIXES)
    lines = (_INLINE_SPACE.sub(" ", line).strip() for line in text.splitlines())
    return normalise_text("\n".join(lines))


PageReader = Callable[[int], tuple[str, bool]]
"""`read(number)` -> (the page's cleaned text, whether the page draws anything at all)."""


def _load_pdf(
    path: Path, passwords: Sequence[str], progress: ProgressCallback | None, parser: PdfParser,
    ocr: OcrOptions,
) -> LoadedDocument:
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise LoadError(f"{path} cannot be read ({exc.strerror or exc}); check it exists") from exc
    with handle:
        if parser == "pypdfium2":  # pdfium opens the file by name; the handle proves it readable
            return _load_pdf_pdfium(path, passwords, progress, ocr)
        try:
            reader = PdfReader(handle, strict=False)
        except DependencyError as exc:
            raise _crypto_missing(path, exc) from exc
        except Exception as exc:
            raise ParseError(f"{path} is not a readable PDF ({_short(exc)})") from exc
        password = _unlock(path, reader, passwords)
        try:
            count = len(reader.pages)
        except Exception as exc:
            raise ParseError(f"{path}: the page tree cannot be read ({_short(exc)})") from exc
        if count == 0:
            raise EmptyDocument(f"{path} has no pages")
        fallback = _PdfiumFallback(path, password) if parser == "auto" else None
        scans = PdfPageOcr(path, password, ocr)
        tables = _PdfTables(path, [password or ""])
        try:
            return _pdf_pages(path, count, _pypdf_reader(reader, fallback),
                              lambda: _pdf_title(reader), progress, scans, tables)
        finally:
            tables.close()
            scans.close()
            if fallback is not None:
                fallback.close()


def _pypdf_reader(reader: PdfReader, fallback: _PdfiumFallback | None) -> PageReader:
    def read(number: int) -> tuple[str, bool]:
        page = reader.pages[number - 1]
        text = _clean_pdf_text(page.extract_text())
        if fallback is not None and glued_share(text) >= GLUED_PAGE_SHARE:
            text = fallback.better(number, text)
        return text, bool(text) or _page_has_marks(page)

    return read


class _PdfiumFallback:
    """The same PDF in pypdfium2, opened on first need, for pages whose pypdf text is glued."""

    def __init__(self, path: Path, password: str | None) -> None:
        self.path = path
        self.password = password  # the one that opened the file in pypdf (None: not encrypted)
        self.document: pdfium.PdfDocument | None = None
        self.broken = False

    def better(self, number: int, text: str) -> str:
        """pdfium's text of page `number` when fewer of its words run together, else `text`."""
        if self.broken:
            return text
        try:
            if self.document is None:
                self.document = pdfium.PdfDocument(self.path, password=self.password)
            other, _ = _read_pdfium_page(self.document, number)
        except Exception:  # noqa: BLE001 - pypdf's text stands
            self.broken = self.document is None  # could not open: do not try every page
            return text
        return other if other and glued_share(other) < glued_share(text) else text

    def close(self) -> None:
        if self.document is not None:
            self.document.close()
            self.document = None


TABLE_MIN_SEGMENTS = 8  # path segments a page draws before it may hold a ruled table
TABLE_MIN_FILLED = 0.5  # share of a table's cells that must hold text
TABLE_MAX_CELLS = 5000  # a bigger "table" is read as text (a bound on the work per page)


class _PdfTables:
    """Ruled tables of PDF pages, found by pdfplumber (its default `lines` strategy: cells
    bounded by drawn lines), on pages whose drawings have at least TABLE_MIN_SEGMENTS path
    segments (counted by pypdfium2; a page of text draws none). Opened on first need; any
    failure leaves the page as it was read."""

    def __init__(self, path: Path, passwords: Sequence[str],
                 document: pdfium.PdfDocument | None = None) -> None:
        self.path = path
        self.passwords = list(dict.fromkeys(passwords))
        self._document = document  # pdfium's, when the caller has it open (not closed here)
        self._own: pdfium.PdfDocument | None = None
        self._plumber: Any = None
        self.broken = False
        self.count = 0  # tables kept

    def sections(self, number: int) -> list[Section] | None:
        """Page `number`'s text around its tables, then the tables as sections of whole rows;
        None when it has no table (the page's text stands)."""
        if self.broken:
            return None
        try:
            if not self._may_hold_table(number):
                return None
            return self._read(number)
        except Exception:  # noqa: BLE001 - the page's text stands
            return None

    def _may_hold_table(self, number: int) -> bool:
        document = self._document
        if document is None:
            if self._own is None:
                try:
                    self._own = _open_pdfium(self.path, self.passwords)
                except Exception:  # noqa: BLE001 - no tables then
                    self.broken = True
                    return False
            document = self._own
        page = document[number - 1]
        try:
            segments = 0
            for obj in page.get_objects(filter=[pdfium_c.FPDF_PAGEOBJ_PATH], max_depth=2):
                segments += max(0, pdfium_c.FPDFPath_CountSegments(obj.raw))
                if segments >= TABLE_MIN_SEGMENTS:
                    return True
            return False
        finally:
            page.close()

    def _open_plumber(self) -> Any:
        import pdfplumber

        for password in self.passwords:
            try:
                return pdfplumber.open(self.path, password=password or None)
            except Exception:  # noqa: BLE001 - the next password, or no tables
                continue
        self.broken = True
        return None

    def _read(self, number: int) -> list[Section] | None:
        from ingest.office import table_sections

        if self._plumber is None:
            self._plumber = self._open_plumber()
            if self._plumber is None:
                return None
        page = self._plumber.pages[number - 1]
        try:
            found = [(t.bbox, rows) for t in page.find_tables()
                     if _is_table(rows := [[_table_cell(c) for c in row]
                                           for row in t.extract()])]
            if not found:
                return None
            found.sort(key=lambda item: (item[0][1], item[0][0]))
            boxes = [bbox for bbox, _ in found]

            def outside(obj: dict[str, Any]) -> bool:
                x = (obj["x0"] + obj["x1"]) / 2
                y = (obj["top"] + obj["bottom"]) / 2
                return not any(x0 <= x <= x1 and top <= y <= bottom
                               for x0, top, x1, bottom in boxes)

            rest = page.filter(outside)
            sections: list[Section] = []
            top = 0.0

            def text_above(bottom: float) -> None:
                """The page's text (tables left out) from `top` down to `bottom`."""
                if bottom > top:
                    band = rest.crop((0, top, float(page.width), bottom), strict=False)
                    text = _clean_pdf_text(band.extract_text() or "")
                    if text:
                        sections.append(Section(text=text, page_start=number, page_end=number))

            for k, (bbox, cells) in enumerate(found, start=1):
                text_above(float(bbox[1]))
                sections.extend(replace(s, page_start=number, page_end=number)
                                for s in table_sections(cells, (f"table {k}",)))
                top = max(top, float(bbox[3]))
            text_above(float(page.height))
            self.count += len(found)
            return sections
        finally:
            page.close()

    def close(self) -> None:
        if self._plumber is not None:
            self._plumber.close()
            self._plumber = None
        if self._own is not None:
            self._own.close()
            self._own = None


def _table_cell(value: object) -> str:
    """A cell as one line of Markdown-table text ("" for an empty or merged cell)."""
    return " ".join(str(value or "").split()).replace("|", "\\|")


def _is_table(rows: Sequence[Sequence[str]]) -> bool:
    """Rows pdfplumber found between drawn lines that are a table, not a figure or a box: at
    least 2 rows and 2 columns, TABLE_MIN_FILLED of the cells with text, 2 header cells."""
    cells = [cell for row in rows for cell in row]
    if len(rows) < 2 or max((len(row) for row in rows), default=0) < 2 \
            or len(cells) > TABLE_MAX_CELLS:
        return False
    filled = sum(1 for cell in cells if cell)
    return filled >= TABLE_MIN_FILLED * len(cells) and sum(1 for c in rows[0] if c) >= 2


def _load_pdf_pdfium(
    path: Path, passwords: Sequence[str], progress: ProgressCallback | None, ocr: OcrOptions
) -> LoadedDocument:
    document = _open_pdfium(path, passwords)
    tables = _PdfTables(path, ["", *passwords], document=document)
    try:
        count = len(document)
        if count == 0:
            raise EmptyDocument(f"{path} has no pages")
        return _pdf_pages(
            path,
            count,
            lambda number: _read_pdfium_page(document, number),
            lambda: _tidy_title(document.get_metadata_value("Title")),
            progress,
            PdfPageOcr(path, None, ocr, document=document),
            tables,
        )
    finally:
        tables.close()
        document.close()


_PDFIUM_ERRORS = {
    pdfium_c.FPDF_ERR_FILE: "file not found or could not be opened",
    pdfium_c.FPDF_ERR_FORMAT: "not a PDF, or damaged",
    pdfium_c.FPDF_ERR_SECURITY: "unsupported encryption",
}


def _open_pdfium(path: Path, passwords: Sequence[str]) -> pdfium.PdfDocument:
    """Open with '' (owner-password-only files), then each password; NeedsPassword if none.

    Through the raw API: `pdfium.PdfDocument(path)` refuses files without pages with the
    library's last error code, which is stale then (it can say "incorrect password")."""
    name = os.fsencode(path) + b"\x00"
    for candidate in dict.fromkeys(("", *passwords)):
        raw = pdfium_c.FPDF_LoadDocument(name, candidate.encode("utf-8") + b"\x00")
        if raw:
            return pdfium.PdfDocument(raw)  # owns and closes it
        code = pdfium_c.FPDF_GetLastError()  # set by this failed load
        if code == pdfium_c.FPDF_ERR_PASSWORD:
            continue
        reason = f"PDFium: {_PDFIUM_ERRORS.get(code, f'error {code}')}"
        if code == pdfium_c.FPDF_ERR_FILE:
            raise LoadError(f"{path} cannot be read ({reason}); check it exists")
        if code == pdfium_c.FPDF_ERR_SECURITY:
            raise ParseError(f"{path}: its encryption cannot be handled ({reason})")
        raise ParseError(f"{path} is not a readable PDF ({reason})")
    raise _needs_password(path, passwords)


def _read_pdfium_page(document: pdfium.PdfDocument, number: int) -> tuple[str, bool]:
    page = document[number - 1]
    try:
        textpage = page.get_textpage()
        try:
            text = _clean_pdf_text(textpage.get_text_range())
        finally:
            textpage.close()
        return text, bool(text) or pdfium_c.FPDFPage_CountObjects(page.raw) > 0
    finally:
        page.close()


def _crypto_missing(path: Path, exc: Exception) -> ParseError:
    return ParseError(
        f"{path} uses AES encryption, which needs the 'cryptography' package: "
        f"pip install 'pypdf[crypto]' ({_short(exc)})"
    )


def _unlock(path: Path, reader: PdfReader, passwords: Sequence[str]) -> str | None:
    """Decrypt with '' (owner-password-only files), then each password; NeedsPassword if none.
    Returns the password that opened the file, None if it is not encrypted."""
    try:
        if not reader.is_encrypted:
            return None
        for candidate in dict.fromkeys(("", *passwords)):
            if reader.decrypt(candidate):  # PasswordType.NOT_DECRYPTED is 0
                return candidate
    except DependencyError as exc:
        raise _crypto_missing(path, exc) from exc
    except Exception as exc:
        raise ParseError(f"{path}: its encryption cannot be handled ({_short(exc)})") from exc
    raise _needs_password(path, passwords)


def _needs_password(path: Path, passwords: Sequence[str]) -> NeedsPassword:
    if not passwords:
        return NeedsPassword(f"{path} is encrypted; {PASSWORD_HINT}")
    tried = (
        "the given password does not open it"
        if len(passwords) == 1
        else f"none of the {len(passwords)} given passwords opens it"
    )
    return NeedsPassword(
        f"{path} is encrypted and {tried}; pass the right one with --password PW "
        "or RAG_PDF_PASSWORD"
    )


def _pdf_title(reader: PdfReader) -> str | None:
    try:
        metadata = reader.metadata
        title = metadata.title if metadata is not None else None
    except Exception:  # noqa: BLE001 - a broken /Info dictionary only costs the title
        return None
    return _tidy_title(title)


def _tidy_title(title: object) -> str | None:
    if not isinstance(title, str):
        return None
    return " ".join(title.split()) or None


def _page_has_marks(page: PageObject) -> bool:
    """Whether a page draws anything (content stream or XObjects), i.e. is not truly blank."""
    try:
        resources = page.get("/Resources")
        resources = resources.get_object() if resources is not None else None
        if isinstance(resources, DictionaryObject) and resources.get("/XObject"):
            return True
        contents = page.get_contents()
        return contents is not None and bool(contents.get_data().strip())
    except Exception:  # noqa: BLE001 - unreadable content: assume there was something to see
        return True


def _ocr_hint(scans: PdfPageOcr) -> str:
    if scans.options.mode == "off":
        return "OCR is off (RAG_OCR=off); set RAG_OCR=auto"
    return engine_problem(scans.options.languages) or "OCR is not available"


def _pdf_pages(
    path: Path,
    count: int,
    read: PageReader,
    title: Callable[[], str | None],
    progress: ProgressCallback | None,
    scans: PdfPageOcr,
    tables: _PdfTables | None = None,
) -> LoadedDocument:
    """Every page read by `read`; pages that draw something and have no text, or only a little
    on a page that is a picture, read again by OCR (`scans`) when it is enabled. A page read
    from its text layer that holds ruled tables (`tables`) gives its text around them, then
    the tables as sections of whole rows."""
    sections: list[Section] = []
    no_text: list[int] = []  # draws something, but has no extractable text
    blank: list[int] = []  # draws nothing at all
    failed: dict[int, str] = {}
    ocr_failed: dict[int, str] = {}
    over_budget: list[int] = []  # pages OCR would have read, left when its time was spent
    use_ocr = scans.options.enabled
    for number in range(1, count + 1):
        try:
            text, marks = read(number)
        except Exception as exc:  # noqa: BLE001 - any failure costs this page only
            failed[number] = _short(exc)
        else:
            read_by_ocr = False
            if use_ocr and marks:
                try:
                    if scans.wants(number, text):
                        if scans.spent():
                            over_budget.append(number)
                        else:
                            text = scans.read(number, text)
                            read_by_ocr = True
                except Exception as exc:  # noqa: BLE001 - the page keeps its layer's text
                    ocr_failed[number] = _short(exc)
            found = tables.sections(number) if tables is not None and text and not read_by_ocr \
                else None
            if found:
                sections.extend(found)
            elif text:
                sections.append(Section(text=text, page_start=number, page_end=number))
            elif marks:
                no_text.append(number)
            else:
                blank.append(number)
        if progress is not None:
            progress(number, count)

    warnings: list[str] = []
    if scans.pages:
        warnings.append(ocr_note(scans.pages, scans.options.languages, scans.seconds))
    if ocr_failed:
        warnings.append(_pages_phrase(sorted(ocr_failed), "was", "were")
                        + f" not read by OCR ({next(iter(ocr_failed.values()))})")
    if over_budget:
        warnings.append(_pages_phrase(over_budget, "was", "were") + " not read by OCR: the "
                        f"file's OCR time ({scans.options.budget_s:g} s, most of "
                        "RAG_PARSE_TIMEOUT_S) was spent; raise RAG_PARSE_TIMEOUT_S to read them")
        no_text = [n for n in no_text if n not in set(over_budget)]
    if no_text:
        warnings.append(
            _pages_phrase(no_text, "has no text layer", "have no text layer")
            + (", and OCR found no text" if use_ocr else " (needs OCR)")
        )
    if failed:
        first_reason = next(iter(failed.values()))
        warnings.append(
            _pages_phrase(sorted(failed), "was", "were")
            + f" skipped: text extraction failed ({first_reason})"
        )
    if sections:
        return LoadedDocument(
            kind="pdf",
            sections=tuple(sections),
            title=title(),
            pages=count,
            warnings=tuple(warnings),
        )
    if over_budget:
        raise ParseTimeout(f"{path}: OCR read {len(scans.pages)} page(s) in "
                           f"{scans.seconds:.0f} s and found no text before its time "
                           f"({scans.options.budget_s:g} s) was spent; raise "
                           "RAG_PARSE_TIMEOUT_S to read the other pages")
    if no_text:
        if use_ocr:
            raise EmptyDocument(
                f"{path} has no text layer on any of its {count} page(s), and OCR "
                f"({scans.options.languages}) found no text on them either: check the scan's "
                "quality and RAG_OCR_LANGUAGES" + (f"; also {warnings[-1]}" if failed else ""))
        raise NeedsOCR(
            f"{path} has no text layer on any of its {count} page(s) (scanned or image-only); "
            f"reading it needs OCR: {_ocr_hint(scans)}"
            + (f"; also {warnings[-1]}" if failed else "")
        )
    if failed:
        raise ParseError(
            f"{path}: text extraction failed on every page with content "
            f"({next(iter(failed.values()))}); the file may be damaged: re-save or re-export it"
        )
    raise EmptyDocument(f"{path} has no text: all {count} page(s) are blank")


# --- Markdown ----------------------------------------------------------------------------------
TITLE_MAX_CHARS = 300  # a longer front matter title is ignored (it is copied into every chunk)
FRONT_MATTER_MAX_CHARS = 100_000  # larger front matter is not read (only its title would be)
# Heading patterns must stay linear on any line: no part that can match spaces may be followed
# by another that can (`(.*?)[ \t]*$` retried the spaces at every character: quadratic). The
# closing #s and `{: #anchor }` attribute lists are cut in code (_atx_text, _strip_attr_list).
_ATX_HEADING = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*))?$")
_FENCE_OPEN = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")
_ATTR_START = re.compile(r"\{:?[ \t]*[#.]")  # `## Title {: #anchor }`
_SETEXT_UNDERLINE = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_NOT_PARAGRAPH_START = re.compile(r"^(?: {4}|\t| {0,3}(?:[-*+>|<]|\d+[.)]|!!!|\?\?\?|:))")


def _load_markdown(path: Path, data: bytes) -> LoadedDocument:
    text = normalise_text(_decode(path, data))
    meta_title, body, warnings = _split_front_matter(path, text)
    splitter = _MarkdownSplitter()
    for line in body.split("\n"):
        splitter.feed(line)
    sections = splitter.finish()
    if not sections:
        raise EmptyDocument(f"{path} has no text outside its front matter")
    first_h1 = splitter.first_h1
    if first_h1 is not None and len(first_h1) > TITLE_MAX_CHARS:
        first_h1 = None  # a "heading" this long is not a title
    return LoadedDocument(
        kind="markdown",
        sections=tuple(sections),
        title=meta_title or first_h1,
        warnings=warnings,
    )


def _split_front_matter(path: Path, text: str) -> tuple[str | None, str, tuple[str, ...]]:
    """(title from front matter, text without it, warnings). Bad front matter is dropped.

    Only the title is read, and nothing else is built: YAML is composed into nodes, where an
    alias stays a reference to its anchor (an alias bomb stays as small as its text), and
    only a scalar `title` node is turned into a value. A title that is not a string or a
    number, or is longer than TITLE_MAX_CHARS, is ignored with a warning."""
    if not text.startswith(("---", "+++")):
        return None, text, ()
    handler = frontmatter.detect_format(text, frontmatter.handlers)
    if handler is None:  # e.g. TOML front matter without the toml package: as frontmatter does
        return None, text.strip(), ()
    try:
        front, body = handler.split(text.strip())
    except ValueError:  # no closing delimiter: not front matter
        return None, text.strip(), ()
    body = body.strip()
    if len(front) > FRONT_MATTER_MAX_CHARS:
        return None, body, (f"{path}: front matter ignored, it is over "
                            f"{FRONT_MATTER_MAX_CHARS:,} characters long",)
    try:
        if isinstance(handler, frontmatter.YAMLHandler):
            title = _yaml_title(front)
        else:
            data = handler.load(front)
            title = data.get("title") if isinstance(data, dict) else None
    except Exception as exc:  # noqa: BLE001 - YAML errors of every kind: keep the body
        return None, body, (f"{path}: front matter ignored, it is not valid YAML ({_short(exc)})",)
    if title is None:
        return None, body, ()
    if isinstance(title, bool) or not isinstance(title, str | int | float):
        kind = {"SequenceNode": "a list", "MappingNode": "a mapping", "list": "a list",
                "dict": "a mapping"}.get(type(title).__name__, f"a {type(title).__name__}")
        return None, body, (f"{path}: front matter title ignored, it is {kind}, not text",)
    title_text = " ".join(str(title).split())
    if len(title_text) > TITLE_MAX_CHARS:
        return None, body, (f"{path}: front matter title ignored, it is {len(title_text):,} "
                            f"characters long (at most {TITLE_MAX_CHARS})",)
    return title_text or None, body, ()


def _yaml_title(front: str) -> object:
    """The `title` of YAML front matter: the value of a scalar title, the node itself of a list
    or mapping title (never built), None without one. Other keys are never built."""
    import yaml

    root = yaml.compose(front, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    if not isinstance(root, yaml.MappingNode):
        return None
    node = None
    for key, value in root.value:  # the last `title` wins, as in a dict
        if isinstance(key, yaml.ScalarNode) and key.tag == "tag:yaml.org,2002:str" \
                and key.value == "title":
            node = value
    if node is None or not isinstance(node, yaml.ScalarNode):
        return node
    return yaml.constructor.SafeConstructor().construct_object(node)


def _atx_text(raw: str) -> str:
    """An ATX heading's text: trailing spaces and a closing run of #s (after a space) cut."""
    text = raw.rstrip(" \t")
    bare = text.rstrip("#")
    if len(bare) < len(text) and (not bare or bare[-1] in " \t"):
        text = bare
    return text.strip()


def _strip_attr_list(heading: str) -> str:
    """`Title {: #anchor }` -> `Title`, in linear time; a heading that is nothing but an
    attribute list is kept as it is."""
    end = heading.rstrip(" \t")
    if not end.endswith("}"):
        return heading
    brace = end.find("{", end.rfind("}", 0, len(end) - 1) + 1)  # after any other "}"
    while brace >= 0:
        if _ATTR_START.match(end, brace):
            return end[:brace].rstrip(" \t") or heading
        brace = end.find("{", brace + 1)
    return heading


class _MarkdownSplitter:
    """Cuts Markdown into sections at headings, line by line, skipping fenced code."""

    def __init__(self) -> None:
        self.sections: list[Section] = []
        self.first_h1: str | None = None
        self._path: list[tuple[int, str]] = []  # (level, heading text), outermost first
        self._lines: list[str] = []  # current section; [0] is its heading when it has one
        self._has_heading = False
        self._paragraph_start: int | None = None  # index in _lines of the open paragraph
        self._other_block = False  # inside a list, quote, table …: no setext heading here
        self._fence: str | None = None  # the opening fence while inside fenced code

    def feed(self, line: str) -> None:
        if self._fence is not None:
            self._lines.append(line)
            stripped = line.strip()
            if stripped.startswith(self._fence) and not stripped.strip(self._fence[0]):
                self._fence = None
            return
        fence = _FENCE_OPEN.match(line)
        if fence and not (fence.group(1)[0] == "`" and "`" in fence.group(2)):
            self._fence = fence.group(1)
            self._paragraph_start = None
            self._other_block = False
            self._lines.append(line)
            return
        atx = _ATX_HEADING.match(line)
        if atx:
            heading = _atx_text(atx.group(2) or "")
            if heading:
                self._start_section(len(atx.group(1)), heading)
                return
        underline = _SETEXT_UNDERLINE.match(line)
        if underline and self._paragraph_start is not None:
            heading = " ".join(" ".join(self._lines[self._paragraph_start :]).split())
            del self._lines[self._paragraph_start :]
            self._start_section(1 if underline.group(1)[0] == "=" else 2, heading)
            return
        if not line.strip():
            self._paragraph_start = None
            self._other_block = False
        elif self._paragraph_start is None and not self._other_block:
            if _NOT_PARAGRAPH_START.match(line) or underline:
                self._other_block = True
            else:
                self._paragraph_start = len(self._lines)
        self._lines.append(line)

    def finish(self) -> list[Section]:
        self._flush()
        return self.sections

    def _start_section(self, level: int, heading: str) -> None:
        self._flush()
        heading = _strip_attr_list(heading)
        while self._path and self._path[-1][0] >= level:
            self._path.pop()
        self._path.append((level, heading))
        if level == 1 and self.first_h1 is None:
            self.first_h1 = heading
        self._lines = [heading, ""]
        self._has_heading = True
        self._paragraph_start = None
        self._other_block = False

    def _flush(self) -> None:
        body = self._lines[1:] if self._has_heading else self._lines
        if "\n".join(body).strip():
            text = normalise_text("\n".join(self._lines))
            self.sections.append(Section(text=text, headings=tuple(h for _, h in self._path)))
        self._lines = []
        self._has_heading = False
        self._paragraph_start = None
        self._other_block = False


# --- plain text --------------------------------------------------------------------------------
def _load_text(path: Path, data: bytes) -> LoadedDocument:
    text = normalise_text(_decode(path, data))
    if not text.strip():
        raise EmptyDocument(f"{path} has no text (only whitespace)")
    return LoadedDocument(kind="text", sections=(Section(text=text),))


# --- HTML --------------------------------------------------------------------------------------
_HTML_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9._:-]+)""", re.I)
_XML_ENCODING = re.compile(rb"""^<\?xml[^>]+encoding\s*=\s*["']([A-Za-z0-9._:-]+)""")
_DROPPED_TAGS = [
    "script", "style", "noscript", "template", "svg", "nav", "aside", "form", "button",
    "iframe", "select", "textarea", "canvas", "object", "embed", "audio", "video", "footer",
]  # fmt: skip
_DROPPED_CLASSES = frozenset({"headerlink", "sphinxsidebar", "related"})
_HIDDEN_STYLE = re.compile(r"display\s*:\s*none|visibility\s*:\s*hidden", re.I)
_SKIPPED_IN_WALK = frozenset({"head", "title", "meta", "link", "base"})
_HEADING_TAGS = frozenset({"h1", "h2", "h3", "h4", "h5", "h6"})
_LINE_TAGS = frozenset({"li", "tr", "dt", "dd", "caption", "figcaption", "option"})
_BLOCK_TAGS = frozenset(
    {
        "address", "article", "blockquote", "body", "center", "details", "dialog", "div", "dl",
        "fieldset", "figure", "hgroup", "hr", "html", "main", "menu", "ol", "p", "section",
        "summary", "table", "tbody", "tfoot", "thead", "ul",
    }
)  # fmt: skip
_CELL_TAGS = frozenset({"td", "th"})
_WHITESPACE = re.compile(r"\s+")
_HEADING_MARKS = "¶§🔗 \t\n"  # permalink symbols after a heading


def _load_html(path: Path, data: bytes) -> LoadedDocument:
    text = _decode(path, data, _declared_charset(data))
    try:
        soup = _parse_html(text)
        title = _html_title(soup)
        root = _main_content(soup)
        _drop_invisible(root)
        builder = _HtmlSectionBuilder()
        builder.walk(root)
        sections = builder.finish()
    except RecursionError as exc:
        raise ParseError(f"{path}: HTML nested too deeply to read ({_short(exc)})") from exc
    if not sections:
        raise EmptyDocument(f"{path} has no visible text in its main content")
    return LoadedDocument(kind="html", sections=tuple(sections), title=title or builder.first_h1)


def html_sections(data: bytes) -> list[Section]:
    """The sections of an HTML (or XHTML) document's main content, as `load_file` makes them
    for an .html file; used for the chapters of EPUB books."""
    import warnings

    from bs4 import XMLParsedAsHTMLWarning

    with warnings.catch_warnings():  # XHTML read as HTML, on purpose (as browsers do)
        warnings.simplefilter("ignore", XMLParsedAsHTMLWarning)
        soup = _parse_html(_decode(Path("chapter.xhtml"), data, _declared_charset(data)))
    root = _main_content(soup)
    _drop_invisible(root)
    builder = _HtmlSectionBuilder()
    builder.walk(root)
    return builder.finish()


def _declared_charset(data: bytes) -> str | None:
    head = data[:4096]
    match = _XML_ENCODING.match(head) or _HTML_CHARSET.search(head)
    return match.group(1).decode("ascii") if match else None


def _parse_html(text: str) -> BeautifulSoup:
    try:
        return BeautifulSoup(text, "lxml")
    except FeatureNotFound:
        return BeautifulSoup(text, "html.parser")


def _html_title(soup: BeautifulSoup) -> str | None:
    for title in soup.find_all("title"):
        if title.find_parent("svg") is None:  # an SVG <title> is a tooltip, not the page's
            return " ".join(title.get_text().split()) or None
    return None


def _main_content(soup: BeautifulSoup) -> Tag:
    """`<main>`, `[role=main]`, Sphinx's `div.body` or a lone `<article>`; else `<body>`."""
    candidates = (
        soup.find("main"),
        soup.find(True, attrs={"role": "main"}),
        soup.find("div", class_="body"),
    )
    for candidate in candidates:
        if isinstance(candidate, Tag):
            return candidate
    articles = soup.find_all("article")
    if len(articles) == 1 and isinstance(articles[0], Tag):
        return articles[0]
    return soup.body if soup.body is not None else soup


def _is_hidden(tag: Tag) -> bool:
    if tag.attrs is None:
        return False
    if tag.has_attr("hidden"):
        return True
    if str(tag.get("aria-hidden", "")).strip().lower() == "true":
        return True
    if str(tag.get("role", "")).strip().lower() == "navigation":
        return True
    classes = tag.get("class")
    if isinstance(classes, list) and _DROPPED_CLASSES.intersection(classes):
        return True
    return bool(_HIDDEN_STYLE.search(str(tag.get("style", ""))))


def _drop_invisible(root: Tag) -> None:
    """Remove what a reader does not see as content: scripts, navigation, hidden elements.

    A `<header>` keeps only its headings (an article's title often sits in one).
    """
    for tag in root.find_all(_DROPPED_TAGS):
        if not tag.decomposed:
            tag.decompose()
    for tag in [tag for tag in root.find_all(True) if _is_hidden(tag)]:
        if not tag.decomposed:
            tag.decompose()
    for header in root.find_all("header"):
        if header.decomposed:
            continue
        for heading in header.find_all(list(_HEADING_TAGS)):
            header.insert_before(heading.extract())
        header.decompose()


def _inline_text(tag: Tag) -> str:
    return " ".join("".join(tag.strings).split())


class _TextBuffer:
    """Collects text with HTML whitespace rules: runs collapse, blocks break lines."""

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._pending_breaks = 0

    def inline(self, text: str) -> None:
        text = _WHITESPACE.sub(" ", text)
        if self._pending_breaks or not self._parts or self._parts[-1].endswith((" ", "\n")):
            text = text.lstrip(" ")
        if text:
            self._emit_breaks()
            self._parts.append(text)

    def at_line_start(self) -> bool:
        return bool(self._pending_breaks) or not self._parts or self._parts[-1].endswith("\n")

    def raw(self, text: str) -> None:
        """Preformatted text, kept as it is, as its own block."""
        self.line_break(2)
        if text.strip("\n"):
            self._emit_breaks()
            self._parts.append(text.strip("\n"))
        self.line_break(2)

    def line_break(self, count: int = 1) -> None:
        if self._parts:
            self._pending_breaks = max(self._pending_breaks, count)

    def take(self) -> str:
        text = "".join(self._parts)
        self._parts = []
        self._pending_breaks = 0
        return text

    def _emit_breaks(self) -> None:
        if self._pending_breaks and self._parts:
            self._parts.append("\n" * self._pending_breaks)
        self._pending_breaks = 0


class _HtmlSectionBuilder:
    """Walks the DOM (iteratively: hostile nesting must not exhaust the stack) into sections."""

    def __init__(self) -> None:
        self.sections: list[Section] = []
        self.first_h1: str | None = None
        self._path: list[tuple[int, str]] = []
        self._heading: str | None = None
        self._buffer = _TextBuffer()

    def walk(self, root: Tag) -> None:
        stack: list[tuple[PageElement, bool]] = [(root, False)]
        while stack:
            node, leaving = stack.pop()
            if isinstance(node, NavigableString):
                if not isinstance(node, PreformattedString):  # comments, doctype, CDATA …
                    self._buffer.inline(str(node))
                continue
            if not isinstance(node, Tag):
                continue
            name = (node.name or "").lower()
            if leaving:
                self._close(name)
                continue
            if name in _SKIPPED_IN_WALK:
                continue
            if name in _HEADING_TAGS:
                self._start_section(int(name[1]), _inline_text(node).rstrip(_HEADING_MARKS))
                continue
            if name == "pre":
                self._buffer.raw(node.get_text())
                continue
            if name == "br":
                self._buffer.line_break()
                continue
            self._open(name)
            stack.append((node, True))
            stack.extend((child, False) for child in reversed(node.contents))

    def finish(self) -> list[Section]:
        self._flush()
        return self.sections

    def _open(self, name: str) -> None:
        if name in _BLOCK_TAGS:
            self._buffer.line_break(2)
        elif name in _LINE_TAGS:
            self._buffer.line_break(1)
        elif name in _CELL_TAGS and not self._buffer.at_line_start():
            self._buffer.inline(" | ")

    def _close(self, name: str) -> None:
        if name in _BLOCK_TAGS:
            self._buffer.line_break(2)
        elif name in _LINE_TAGS:
            self._buffer.line_break(1)

    def _start_section(self, level: int, heading: str) -> None:
        if not heading:
            return
        self._flush()
        while self._path and self._path[-1][0] >= level:
            self._path.pop()
        self._path.append((level, heading))
        if level == 1 and self.first_h1 is None:
            self.first_h1 = heading
        self._heading = heading

    def _flush(self) -> None:
        body = normalise_text(self._buffer.take())
        if body.strip():
            text = f"{self._heading}\n\n{body}" if self._heading else body
            self.sections.append(Section(text=text, headings=tuple(h for _, h in self._path)))
        self._heading = None
