"""What one chat server process holds for all its sessions: built once, thread-safe, no user state.

`Services` owns the embedding model, the store client, a retriever that follows the index (a
new one after any ingest, in this process or by the CLI), the LLM client and one background
worker that runs ingest and delete jobs one at a time. The pages get it from
`st.cache_resource` (see `rag_app.ui.app`); nothing here imports Streamlit.
"""

from __future__ import annotations

import itertools
import logging
import os
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from rag_app.errors import RagError

if TYPE_CHECKING:
    from ingest.sync import FileOutcome
    from rag_app.embeddings import Embedder
    from rag_app.llm import ChatClient
    from rag_app.retrieve import Retriever
    from rag_app.settings import Settings
    from rag_app.store import Store

log = logging.getLogger(__name__)

JobKind = Literal["ingest", "delete"]


@dataclass
class Job:
    """One background ingest or delete, as a page shows it (read without locks: plain fields)."""

    id: int
    kind: JobKind
    label: str
    paths: list[Path] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    delete_files: list[Path] = field(default_factory=list)  # uploaded copies to remove too
    state: Literal["queued", "running", "done", "failed"] = "queued"
    files_total: int = 0
    files_done: int = 0
    current: str = ""
    fraction: float = 0.0  # of the current file
    outcomes: list[dict[str, Any]] = field(default_factory=list)
    error: str = ""
    created: float = field(default_factory=time.time)
    finished: float | None = None

    @property
    def progress(self) -> float:
        if self.state == "done":
            return 1.0
        if not self.files_total:
            return 0.0
        return min(1.0, (self.files_done + self.fraction) / self.files_total)


class _JobReporter:
    """ingest.sync.Reporter that writes into a Job."""

    def __init__(self, job: Job) -> None:
        self.job = job

    def start(self, files: int, total_bytes: int) -> None:
        self.job.files_total = files

    def file_started(self, source: str, size: int) -> None:
        self.job.current = source
        self.job.fraction = 0.0

    def file_progress(self, done_fraction: float) -> None:
        self.job.fraction = done_fraction

    def file_done(self, outcome: FileOutcome) -> None:
        if outcome.status not in ("unchanged", "skipped", "removed"):
            self.job.files_done += 1
        self.job.fraction = 0.0


class Services:
    """Process-wide, shared by every browser session."""

    def __init__(self, settings: Settings) -> None:
        from rag_app.embeddings import make_embedder
        from rag_app.store import make_client

        self.settings = settings
        self.embedder: Embedder = make_embedder(settings)
        self.client = make_client(settings)
        self._lock = threading.Lock()
        self._retriever: Retriever | None = None
        self._version: tuple[Any, ...] | None = None
        self._chat: tuple[ChatClient | None, str] | None = None
        self._chat_lock = threading.Lock()
        self.jobs: list[Job] = []
        self._ids = itertools.count(1)
        self._queue: queue.Queue[Job] = queue.Queue()
        self._worker = threading.Thread(target=self._work, name="rag-ingest", daemon=True)
        self._worker.start()
        # Start the local LLM server now, so that the first question does not wait for it.
        threading.Thread(target=self._warm_llm, name="rag-llm-start", daemon=True).start()

    def _warm_llm(self) -> None:
        try:
            self.chat()
        except Exception as exc:  # noqa: BLE001 - the first question reports it properly
            log.warning("the LLM could not be prepared: %s", exc)

    # -- reading the index ----------------------------------------------------------------
    def store(self) -> Store | None:
        from rag_app.store import Store

        return Store.open(self.settings, client=self.client)

    def retriever(self) -> Retriever | None:
        """A retriever for the index as it is now; None when nothing is indexed yet."""
        from rag_app.retrieve import Retriever

        store = self.store()
        if store is None:
            return None
        lexical_current = store.lexical_dir / "CURRENT"
        stamp = lexical_current.stat().st_mtime_ns if lexical_current.exists() else 0
        version = (*store.version(), stamp)
        with self._lock:
            if self._retriever is None or version != self._version:
                self._retriever = Retriever(self.settings, embedder=self.embedder, store=store)
                self._version = version
            return self._retriever

    # -- the LLM ----------------------------------------------------------------------------
    def chat(self) -> tuple[ChatClient | None, str]:
        """The chat client (the local server starts on first use), or (None, notice)."""
        from rag_app.service import make_chat_client

        with self._chat_lock:  # a second caller waits for the server the first one starts
            if self._chat is None:
                self._chat = make_chat_client(self.settings)
            return self._chat

    # -- background jobs ----------------------------------------------------------------------
    def submit_ingest(self, paths: Sequence[Path], label: str) -> Job:
        return self._submit(Job(next(self._ids), "ingest", label, paths=list(paths)))

    def submit_delete(self, keys: Sequence[str], label: str,
                      delete_files: Sequence[Path] = ()) -> Job:
        return self._submit(Job(next(self._ids), "delete", label, keys=list(keys),
                                delete_files=list(delete_files)))

    def _submit(self, job: Job) -> Job:
        with self._lock:
            self.jobs.append(job)
            del self.jobs[:-50]  # keep the last 50 for the page
        self._queue.put(job)
        return job

    def busy(self) -> bool:
        return any(j.state in ("queued", "running") for j in self.jobs)

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            job.state = "running"
            try:
                if job.kind == "ingest":
                    self._run_ingest(job)
                else:
                    self._run_delete(job)
                job.state = "done"
            except RagError as exc:
                job.error = str(exc)
                job.state = "failed"
            except Exception as exc:
                log.exception("background job %s failed", job.label)
                job.error = (f"Something went wrong ({type(exc).__name__}); the details are in "
                             "the server's log.")
                job.state = "failed"
            job.finished = time.time()

    def _run_ingest(self, job: Job) -> None:
        from rag_app.service import sync_paths

        report = sync_paths(self.settings, job.paths, reporter=_JobReporter(job),
                            embedder=self.embedder, command="the chat UI (upload / re-ingest)")
        job.outcomes = [{"file": o.source, "status": o.status, "reason": o.reason,
                         "chunks": o.chunks_added, "pages": o.pages}
                        for o in report.outcomes if o.status != "unchanged" or len(job.paths) == 1]

    def _run_delete(self, job: Job) -> None:
        from rag_app.service import remove_documents

        removed = remove_documents(self.settings, job.keys, command="the chat UI (delete)")
        for path in job.delete_files:
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:
                log.warning("could not delete %s: %s", path, exc.strerror)
        job.outcomes = [{"file": job.label, "status": "removed", "reason": "",
                         "chunks": removed, "pages": 0}]


def uploads_dir(settings: Settings) -> Path:
    folder = settings.documents_dir.expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def save_upload(settings: Settings, name: str, data: bytes) -> Path:
    """Store an uploaded file under the documents folder, under a server-made safe name. A file
    of the same name is replaced (a new version of a document replaces the old one, and its
    chunks are replaced on ingest, never duplicated); an identical file is left as it is."""
    from ingest.loaders import SUPPORTED_SUFFIXES
    from rag_app.errors import ConfigError
    from rag_app.safety import safe_upload_name, unique_path

    safe = safe_upload_name(name, allowed_suffixes=SUPPORTED_SUFFIXES)
    limit = int(settings.upload_max_mb * 1024 * 1024)
    if len(data) > limit:
        raise ConfigError(f"{safe} is {len(data) / 1e6:.1f} MB; the limit is "
                          f"RAG_UPLOAD_MAX_MB={settings.upload_max_mb:g}")
    if not data:
        raise ConfigError(f"{safe} is empty")
    folder = uploads_dir(settings)
    target = folder / safe
    if target.exists() and not target.is_file():
        target = unique_path(folder, safe)
    if target.is_file() and target.read_bytes() == data:
        return target
    tmp = folder / f".{target.name}.part"
    tmp.write_bytes(data)
    os.replace(tmp, target)
    return target
