"""The typed records that travel between pipeline stages.

files ──load──▶ LoadedDocument(Section…) ──split──▶ Chunk… ──embed/store──▶ Chroma
Conversion to LangChain `Document`s happens only inside adapters.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field, replace


@dataclass(frozen=True, slots=True)
class Section:
    """A run of text from one place in a file: a PDF page, or a Markdown/HTML section."""

    text: str
    page_start: int | None = None  # 1-based, PDFs only
    page_end: int | None = None
    headings: tuple[str, ...] = ()  # heading path, outermost first


@dataclass(frozen=True, slots=True)
class LoadedDocument:
    """What a loader makes of one file."""

    kind: str  # "pdf", "markdown", "text", "html"
    sections: tuple[Section, ...]
    title: str | None = None
    pages: int = 0  # page count for PDFs, 0 otherwise
    warnings: tuple[str, ...] = ()  # e.g. pages without a text layer

    def with_valid_utf8(self) -> LoadedDocument:
        """This document with every string made encodable as UTF-8 (see `valid_utf8`), so
        that nothing taken from a file (text, headings, title, warnings) can break the store."""
        return replace(
            self,
            sections=tuple(replace(s, text=valid_utf8(s.text),
                                   headings=tuple(valid_utf8(h) for h in s.headings))
                           for s in self.sections),
            title=None if self.title is None else valid_utf8(self.title),
            warnings=tuple(valid_utf8(w) for w in self.warnings),
        )


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()  # never raises


_SURROGATE = re.compile("[\ud800-\udfff]")


def valid_utf8(text: str) -> str:
    """`text` made encodable as UTF-8: surrogate pairs (two code points) are joined into one
    character and lone surrogates become U+FFFD. pypdf keeps lone ones from broken ToUnicode
    CMaps, and Chroma rejects them in ids, documents and metadata."""
    if _SURROGATE.search(text) is None:
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


@dataclass(frozen=True, slots=True)
class Chunk:
    """One piece of a file, sized to fit the embedding model. Its id is deterministic."""

    id: str
    text: str
    source: str  # path relative to the ingested root, '/'-separated
    chunk_index: int
    token_count: int
    content_hash: str
    page_start: int | None = None
    page_end: int | None = None
    headings: tuple[str, ...] = field(default=())
    title: str | None = None

    @staticmethod
    def make_id(file_key: str, index: int, text: str, meta: str = "") -> str:
        """Same file, position, text and metadata → same id, so re-ingesting identical input
        is a no-op and a stored id always means an identical chunk."""
        raw = f"{file_key}\x00{index}\x00{text}\x00{meta}"
        return hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()[:32]
