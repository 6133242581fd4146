"""Plain text files (.txt, .text, .rst): one section with the whole (decoded, normalised) text;
chunking happens later."""

from __future__ import annotations

from pathlib import Path

from ingest.loaders.common import _decode, normalise_text
from rag_app.errors import EmptyDocument
from rag_app.records import LoadedDocument, Section

__all__ = ["load_text"]


def load_text(path: Path, data: bytes) -> LoadedDocument:
    text = normalise_text(_decode(path, data))
    if not text.strip():
        raise EmptyDocument(f"{path} has no text (only whitespace)")
    return LoadedDocument(kind="text", sections=(Section(text=text),))
