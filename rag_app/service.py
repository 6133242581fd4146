"""The library's entry points: what the CLIs, the evaluation and the chat UI all call.

    remove_documents(settings, [record.key])                    # delete files from the index
    chat, notice = make_chat_client(settings)                   # local or remote LLM, or None
    overview = index_overview(settings)                         # what the index holds

Syncing files in is ingest's (`ingest.entry.sync_paths`, and `sync_status`: when the index
last synced, who watches folders); this module sits above it. Every write to the index goes
through `sync_paths` or `remove_documents`, and both take the single-writer lock themselves, so
the CLI and the UI never write to one embedded store at once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rag_app.index.store import FileRecord
    from rag_app.llm.client import ChatClient
    from rag_app.settings import Settings


def remove_documents(settings: Settings, keys: Sequence[str], *,
                     command: str = "remove documents") -> int:
    """Delete files (by record key) from the index: their chunks, records and BM25 entries.
    The files on disk are not touched. Returns the number of chunks removed."""
    from rag_app.errors import StoreError
    from rag_app.index.store import Store, writer_lock

    with writer_lock(settings, command):
        store = Store.open(settings)
        if store is None:
            raise StoreError(f"Collection {settings.collection!r} does not exist yet.")
        known = store.file_records()
        missing = [k for k in keys if k not in known]
        if missing:
            raise StoreError(f"Not in the index: {', '.join(missing)}")
        return store.remove_files(list(keys))


def make_chat_client(settings: Settings) -> tuple[ChatClient | None, str]:
    """The chat client for the configured endpoint, else for the bundled local server (started
    on first use); `(None, notice)` when no model exists at all, the notice saying what to
    install or set. A model that is there but broken raises."""
    from rag_app.llm.client import connect

    return connect(settings)


def describe_llm(settings: Settings) -> str:
    """Which LLM answers, for people (never the key), without starting anything."""
    if settings.openai_base_url:
        from rag_app.llm.client import redact_url  # no password or key from the URL on the page

        return (f"{settings.llm_model or '(model not set)'} at "
                f"{redact_url(settings.openai_base_url)}")
    if settings.llm_model_path:
        return f"local llama.cpp server on 127.0.0.1: {settings.llm_model_path.name}"
    return f"bundled {settings.llm_bundled_model} (local llama.cpp server on 127.0.0.1)"


KIND_LABELS = {"pdf": "PDF", "image": "image", "docx": "Word", "pptx": "PowerPoint",
               "xlsx": "Excel", "csv": "CSV", "epub": "EPUB", "markdown": "Markdown",
               "html": "HTML", "text": "text"}
UNKNOWN = "unknown"  # what a file ingested before a fact was recorded shows for it


def kind_label(record: FileRecord) -> str:
    """'PDF', 'scanned PDF' (OCR read every page), 'Word', ... for people."""
    if record.kind == "pdf" and 0 < record.pages <= record.ocr_pages:
        return "scanned PDF"
    return KIND_LABELS.get(record.kind, record.kind)


def length_label(record: FileRecord) -> str:
    """'3 pages', '1 slide', '2 sheets'; '' for kinds without pages (Markdown, text, ...)."""
    from rag_app.index.store import length_text

    return length_text(record.pages, record.kind)


def ocr_label(record: FileRecord) -> str:
    """'OCR, 3 pages', 'OCR, 2 of 10 pages', '' when OCR read nothing; for a PDF ingested
    before OCR pages were recorded, 'unknown' (an image is always read by OCR)."""
    from rag_app.index.store import UNKNOWN_COUNT

    if record.ocr_pages == UNKNOWN_COUNT:
        return "OCR" if record.kind == "image" else UNKNOWN if record.kind == "pdf" else ""
    if record.ocr_pages <= 0:
        return ""
    pages = f"{record.ocr_pages} page{'' if record.ocr_pages == 1 else 's'}"
    if record.kind == "pdf" and record.ocr_pages < record.pages:
        pages = f"{record.ocr_pages} of {record.pages} pages"
    return f"OCR, {pages}"


def language_label(record: FileRecord) -> str:
    """Its language's ISO 639-1 code; '' when none was identified, 'unknown' when it was
    ingested before languages were recorded."""
    from rag_app.index.store import UNKNOWN_LANGUAGE

    return UNKNOWN if record.language == UNKNOWN_LANGUAGE else record.language


def languages_line(languages: dict[str, int], unknown: int) -> str:
    """'Languages: de 2 files, en 1 file (2 files indexed before languages were recorded)'."""
    def files(n: int) -> str:
        return f"{n} file{'' if n == 1 else 's'}"

    found = ", ".join(f"{lang} {files(n)}" for lang, n in languages.items()) or "none identified"
    later = (f" ({files(unknown)} indexed before languages were recorded: a rebuild records "
             "them)" if unknown else "")
    return f"Languages: {found}{later}."


@dataclass
class IndexOverview:
    collection: str
    store: str
    exists: bool
    chunks: int = 0
    pages: int = 0  # pages of PDFs and images (not slides or sheets)
    files: list[FileRecord] = field(default_factory=list)
    fingerprint: dict[str, Any] = field(default_factory=dict)
    sizes: dict[str, Any] = field(default_factory=dict)  # see `index_sizes`
    languages: dict[str, int] = field(default_factory=dict)  # ISO 639-1 -> files, most first
    languages_unknown: int = 0  # files ingested before their language was recorded

    @property
    def files_by_kind(self) -> dict[str, int]:
        return dict(Counter(r.kind for r in self.files))

    def to_dict(self) -> dict[str, Any]:
        from rag_app.index.store import UNKNOWN_COUNT, UNKNOWN_LANGUAGE

        return {
            "collection": self.collection, "store": self.store, "exists": self.exists,
            "chunks": self.chunks, "files": len(self.files), "files_by_kind": self.files_by_kind,
            "pages": self.pages, "fingerprint": self.fingerprint, "sizes": self.sizes,
            "languages": self.languages, "languages_unknown": self.languages_unknown,
            # ocr_pages and language are null for files ingested before they were recorded
            "file_list": [{"source": r.source, "kind": r.kind, "kind_label": kind_label(r),
                           "chunks": r.chunks, "pages": r.pages, "length": length_label(r),
                           "ocr_pages": None if r.ocr_pages == UNKNOWN_COUNT else r.ocr_pages,
                           "ocr": ocr_label(r),
                           "language": None if r.language == UNKNOWN_LANGUAGE else r.language,
                           "error": r.error} for r in self.files],
        }


def index_overview(settings: Settings) -> IndexOverview:
    """What the index holds: files (sorted by path), chunks, pages and the model it was built
    with. Reads only; works while a writer runs."""
    from rag_app.index.store import UNITS, Store, collection_languages

    store = Store.open(settings)
    base = IndexOverview(settings.collection, settings.describe_store(), exists=store is not None)
    if store is None:
        return base
    records = sorted(store.file_records().values(), key=lambda r: (r.source, r.root))
    base.files = records
    base.chunks = store.count()
    base.pages = sum(r.pages for r in records if r.kind not in UNITS)
    found, base.languages_unknown = collection_languages(records)
    base.languages = dict(found)
    base.fingerprint = store.fingerprint
    base.sizes = index_sizes(settings, store.lexical_dir, base.chunks, base.fingerprint)
    return base


EXTRAPOLATE_FROM = 1000  # passages needed before bytes per passage and estimates are given


def index_sizes(settings: Settings, lexical_dir: Path, chunks: int,
                fingerprint: dict[str, Any]) -> dict[str, Any]:
    """What the index costs: its vectors (count x dimension x 4 bytes of float32, as Chroma
    keeps them), the BM25 files, the embedded store's folder (None for a server: not on this
    disk) split into its SQLite file (texts and metadata) and its vector files, bytes per
    passage on disk and a linear estimate for 10x and 100x the passages."""
    dimension = int(fingerprint.get("dimension") or 0)
    bm25 = _folder_bytes(lexical_dir)
    store = None if settings.chroma_host else _folder_bytes(settings.chroma_dir)
    # an embedded Chroma keeps texts and metadata in its SQLite file (and its write-ahead log)
    # and each collection's vectors (HNSW) in a folder of its own
    metadata = None if store is None else sum(
        p.stat().st_size for p in settings.chroma_dir.glob("chroma.sqlite3*") if p.is_file())
    on_disk = (store or chunks * dimension * 4) + bm25
    # A store's fixed part (SQLite pages, the catalog) swamps a few passages: extrapolate
    # only from enough of them.
    per = on_disk / chunks if chunks >= EXTRAPOLATE_FROM else None
    return {"vectors": chunks, "dimension": dimension, "vector_bytes": chunks * dimension * 4,
            "bm25_bytes": bm25, "store_bytes": store, "metadata_bytes": metadata,
            "vector_files_bytes": None if store is None or metadata is None else store - metadata,
            "bytes_per_passage": None if per is None else round(per),
            "estimate_10x_bytes": None if per is None else round(per * chunks * 10),
            "estimate_100x_bytes": None if per is None else round(per * chunks * 100),
            "model": fingerprint.get("model"), "engine": fingerprint.get("engine")}


def size_line(size: dict[str, Any]) -> str:
    """One sentence on what the index costs (`rag_app.service.index_sizes`), for `stats` and
    the Documents page."""
    store = (f"the Chroma folder {human_bytes(size['store_bytes'])} (texts and metadata "
             f"{human_bytes(size.get('metadata_bytes') or 0)}, vector files "
             f"{human_bytes(size.get('vector_files_bytes') or 0)})"
             if size.get("store_bytes") is not None else "the Chroma server's disk not seen")
    scale = (f"{human_bytes(size['bytes_per_passage'])} per passage on disk, so about "
             f"{human_bytes(size['estimate_10x_bytes'])} for 10× the documents and "
             f"{human_bytes(size['estimate_100x_bytes'])} for 100×"
             if size.get("bytes_per_passage") is not None else "too few passages to extrapolate")
    return (f"Size: {size['vectors']} vectors × {size['dimension']} dimensions = "
            f"{human_bytes(size['vector_bytes'])} of float32; BM25 "
            f"{human_bytes(size['bm25_bytes'])}; {store}; {scale}. Embedding model "
            f"{size.get('model')}.")


def human_bytes(n: float) -> str:
    """1234567 -> '1.2 MB' (powers of 1000, as disks are sold)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover - the loop returns


def _folder_bytes(folder: Path) -> int:
    """Bytes of the files under `folder` (0 when it does not exist)."""
    total = 0
    for path in folder.rglob("*") if folder.is_dir() else ():
        try:
            if path.is_file() and not path.is_symlink():
                total += path.stat().st_size
        except OSError:  # removed while we looked (a writer is running)
            continue
    return total
