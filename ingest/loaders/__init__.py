"""Load one file into a `LoadedDocument`: the first step of ingest (load → split → sync).

One loader per kind, a module each, chosen here by file suffix (`SUPPORTED_SUFFIXES`):

- **pdf** (pdf.py; `pdf_parser`, RAG_PDF_PARSER): one `Section` per page that has text, on its
  page; pages without a text layer read by OCR or listed in `warnings`; ruled tables kept as
  tables.
- **markdown** (markdown.py): split at ATX and setext headings outside fenced code; the front
  matter's `title` becomes the title, else the first level-1 heading.
- **html** (html.py, BeautifulSoup): visible text of the main content only; split at
  `<h1>`–`<h6>`.
- **text** (text.py): one section with the whole (decoded, normalised) text; chunking happens
  later.
- **docx**, **pptx**, **xlsx**, **csv**, **epub** (office.py): headings, slides, sheets and
  chapters as sections; tables as Markdown tables of whole rows under their header.
- **image** (ocr.py): photos and scans of pages read by Tesseract.

Below them: common.py (reading, decoding and normalising text, the OCR note) and tables.py
(tables as sections of whole rows); the kinds import those, this module imports the kinds.

Every section of a Markdown or HTML file begins with its own heading, as plain text on the first
line (markers such as `##` removed), so a chunk can be found by its heading; `headings` holds the
path of headings down to it, outermost first (`headings[-1]` is that first line). Text before the
first heading is a section with `headings == ()`; sections with no text besides their heading
are dropped.

Failures raise the `LoadError` subclasses of `rag_app.errors`; messages name the file and what
to do, and never contain a password.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ingest.loaders.common import _read_bytes
from ingest.loaders.html import load_html
from ingest.loaders.markdown import load_markdown
from ingest.loaders.ocr import IMAGE_SUFFIXES, OcrOptions, load_image
from ingest.loaders.pdf import PdfParser, ProgressCallback, load_pdf
from ingest.loaders.text import load_text
from rag_app.errors import EmptyDocument, FileTooLarge, LoadError, UnsupportedFile
from rag_app.records import LoadedDocument

__all__ = ["SUPPORTED_SUFFIXES", "PdfParser", "ProgressCallback", "kind_of", "load_file"]

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
    scanned PDF pages and images are read (ingest/loaders/ocr.py; None: the defaults, on where
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
        return load_pdf(path, passwords, progress, pdf_parser, ocr)
    if kind == "image":
        return load_image(path, ocr)
    if kind in ("docx", "pptx", "xlsx", "csv", "epub"):
        from ingest.loaders.office import load_office  # python-docx & co. load only when needed

        return load_office(path, kind)
    data = _read_bytes(path)
    if kind == "markdown":
        return load_markdown(path, data)
    if kind == "html":
        return load_html(path, data)
    return load_text(path, data)


def _megabytes(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB"  # MiB, as RAG_MAX_FILE_MB counts them
