"""PDF files: one `Section` per page that has text, `page_start == page_end ==` the 1-based
page number.

Pages without a text layer are skipped and listed in `warnings`; a file where no page has text
raises `NeedsOCR`. Encrypted files are opened with the empty password (files with only an owner
password), then with each password given. Text comes from pypdf, except that a page whose words
pypdf ran together (1%+ of them 20+ letters long: words placed by TJ offsets without spaces,
when the font's space looks wide) is read again with pypdfium2, and its text kept when fewer
words are run together ("auto", the default); "pypdfium2" reads every page with pypdfium2 alone
(about 13x faster; damaged files may fare differently); "pypdf" is pypdf alone (`pdf_parser`,
RAG_PDF_PARSER).

Tables drawn with ruling lines are kept as tables (`_PdfTables`): a page whose drawings could be
a table's rules (pypdfium2 counts them, under 2 ms a page) is read by pdfplumber; each table it
finds with at least 2 rows and 2 columns, half its cells filled and a header row, is cut into
Markdown tables of whole rows under that header (ingest.loaders.tables.table_sections, one
section each, headed `table N > rows a-b`, on its page), and the page's other text is read by
pdfplumber around them. Other pages are read as before. Scanned pages are read by OCR
(ingest/loaders/ocr.py).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c
from pypdf import PageObject, PdfReader
from pypdf.errors import DependencyError
from pypdf.generic import DictionaryObject

from ingest.loaders.common import _pages_phrase, _short, normalise_text, ocr_note
from ingest.loaders.ocr import OcrOptions, PdfPageOcr, engine_problem
from ingest.loaders.tables import table_sections
from rag_app.errors import (
    EmptyDocument,
    LoadError,
    NeedsOCR,
    NeedsPassword,
    ParseError,
    ParseTimeout,
)
from rag_app.records import LoadedDocument, Section

__all__ = ["GLUED_PAGE_SHARE", "GLUED_WORD_LETTERS", "PdfParser", "ProgressCallback",
           "glued_share", "load_pdf"]

ProgressCallback = Callable[[int, int], None]
"""Called as `progress(done, total)` after each PDF page."""

PASSWORD_HINT = "pass --password PW or set RAG_PDF_PASSWORD"

PdfParser = Literal["auto", "pypdfium2", "pypdf"]
"""Which library reads PDF text (RAG_PDF_PARSER); see the module docstring."""


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


def load_pdf(
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
