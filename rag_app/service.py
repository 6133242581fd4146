"""The library's entry points: what the CLIs, the evaluation and the chat UI all call.

    report = sync_paths(settings, [Path("docs")], reporter=…)   # ingest, holding the lock
    remove_documents(settings, [record.key])                    # delete files from the index
    chat, notice = make_chat_client(settings)                   # local or remote LLM, or None
    overview = index_overview(settings)                         # what the index holds

Every write to the index goes through `sync_paths` or `remove_documents`, and both take the
single-writer lock themselves, so the CLI and the UI never write to one embedded store at once.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ingest.sync import Reporter, SyncReport
    from rag_app.embeddings import Embedder
    from rag_app.llm import ChatClient
    from rag_app.settings import Settings
    from rag_app.store import FileRecord


def sync_paths(settings: Settings, paths: Sequence[Path], *, passwords: Sequence[str] = (),
               file_passwords: Sequence[tuple[str, str]] = (), dry_run: bool = False,
               rebuild: bool = False, reporter: Reporter | None = None,
               embedder: Embedder | None = None, command: str = "python -m ingest",
               **run_options: Any) -> SyncReport:
    """Sync files and folders into the configured collection under the single-writer lock
    (a dry run takes no lock and writes nothing). Raises `StoreLocked` at once when another
    process is writing. `command` is shown to a second writer: never put secrets in it."""
    from ingest.sync import Ingestor
    from rag_app.embeddings import make_embedder
    from rag_app.store import writer_lock

    t0 = time.perf_counter()
    # the model is loaded only if some file needs embedding
    emb = embedder if embedder is not None else make_embedder(settings)
    if dry_run:
        return Ingestor(settings, emb, reporter=reporter, passwords=passwords,
                        file_passwords=file_passwords).run(paths, dry_run=True, **run_options)
    with writer_lock(settings, command):
        ingestor = Ingestor(settings, emb, reporter=reporter, passwords=passwords,
                            file_passwords=file_passwords)
        report = ingestor.run(paths, rebuild=rebuild, **run_options)
    report.seconds = time.perf_counter() - t0
    return report


def remove_documents(settings: Settings, keys: Sequence[str], *,
                     command: str = "remove documents") -> int:
    """Delete files (by record key) from the index: their chunks, records and BM25 entries.
    The files on disk are not touched. Returns the number of chunks removed."""
    from rag_app.errors import StoreError
    from rag_app.store import Store, writer_lock

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
    from rag_app.llm import connect

    return connect(settings)


def describe_llm(settings: Settings) -> str:
    """Which LLM answers, for people (never the key), without starting anything."""
    if settings.openai_base_url:
        from rag_app.llm import redact_url  # no password or key from the URL on the page

        return (f"{settings.llm_model or '(model not set)'} at "
                f"{redact_url(settings.openai_base_url)}")
    if settings.llm_model_path:
        return f"local llama.cpp server on 127.0.0.1: {settings.llm_model_path.name}"
    return f"bundled {settings.llm_bundled_model} (local llama.cpp server on 127.0.0.1)"


@dataclass
class IndexOverview:
    collection: str
    store: str
    exists: bool
    chunks: int = 0
    pages: int = 0
    files: list[FileRecord] = field(default_factory=list)
    fingerprint: dict[str, Any] = field(default_factory=dict)

    @property
    def files_by_kind(self) -> dict[str, int]:
        return dict(Counter(r.kind for r in self.files))

    def to_dict(self) -> dict[str, Any]:
        return {
            "collection": self.collection, "store": self.store, "exists": self.exists,
            "chunks": self.chunks, "files": len(self.files), "files_by_kind": self.files_by_kind,
            "pages": self.pages, "fingerprint": self.fingerprint,
            "file_list": [{"source": r.source, "kind": r.kind, "chunks": r.chunks,
                           "pages": r.pages, "error": r.error} for r in self.files],
        }


def index_overview(settings: Settings) -> IndexOverview:
    """What the index holds: files (sorted by path), chunks, pages and the model it was built
    with. Reads only; works while a writer runs."""
    from rag_app.store import Store

    store = Store.open(settings)
    base = IndexOverview(settings.collection, settings.describe_store(), exists=store is not None)
    if store is None:
        return base
    records = sorted(store.file_records().values(), key=lambda r: (r.source, r.root))
    base.files = records
    base.chunks = store.count()
    base.pages = sum(r.pages for r in records)
    base.fingerprint = store.fingerprint
    return base
