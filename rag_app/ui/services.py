"""What one chat server process holds for all its sessions: built once, thread-safe, no user state.

`Services` owns the embedding model, the store client, a retriever that follows the index (a
new one after any ingest, in this process or by the CLI), the LLM client and one background
worker that runs ingest and delete jobs one at a time. The pages get it from
`st.cache_resource` (see `rag_app.ui.app`); nothing here imports Streamlit.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import logging
import os
import queue
import re
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Literal

from rag_app.errors import RagError

if TYPE_CHECKING:
    from chromadb.api import ClientAPI

    from ingest.outcomes import FileOutcome
    from rag_app.embedders.base import Embedder
    from rag_app.index.store import Store
    from rag_app.llm.client import ChatClient
    from rag_app.retrieve import Retriever
    from rag_app.settings import Settings

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
    # each delete_files entry as it was when the delete was asked: a newer upload is kept
    delete_ids: list[tuple[int, int, int] | None] = field(default_factory=list)
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
    """ingest.outcomes.Reporter that writes into a Job."""

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

    def __init__(self, settings: Settings, *, warm_map: bool = False) -> None:
        from rag_app.embedders.auto import make_embedder
        from rag_app.index.store import make_client

        self.settings = settings
        self._warm_map = warm_map
        self._map: tuple[tuple[Any, ...], tuple[list[dict[str, Any]], str]] | None = None
        self._map_lock = threading.Lock()
        self.embedder: Embedder = make_embedder(settings)
        self.index = IndexReader(settings, make_client(settings))
        self._lock = threading.Lock()
        self._retriever: Retriever | None = None
        self._version: tuple[Any, ...] | None = None
        self._chat: tuple[ChatClient | None, str] | None = None
        self._chat_lock = threading.Lock()
        self.jobs: list[Job] = []
        self._ids = itertools.count(1)
        self._queue: queue.Queue[Job] = queue.Queue()
        sweep_parts(uploads_dir(settings))  # temp files a crash left behind (REVIEW L9)
        self._worker = threading.Thread(target=self._work, name="rag-ingest", daemon=True)
        self._worker.start()
        # Load the embedding model, then start the local LLM server, in the background: the
        # pages draw at once (they read the index, not the model), and the first question
        # waits only for what is not ready yet.
        threading.Thread(target=self._warm, name="rag-warm-up", daemon=True).start()

    def _warm(self) -> None:
        started = time.monotonic()
        try:
            self.embedder.warm_up()
            log.info("embedding model loaded in %.1f s", time.monotonic() - started)
        except Exception as exc:  # noqa: BLE001 - the first question reports it properly
            log.warning("the embedding model could not be loaded: %s", exc)
        self._warm_llm()
        if self._warm_map:
            self._refit_map()

    def _warm_llm(self) -> None:
        try:
            self.chat()
        except Exception as exc:  # noqa: BLE001 - the first question reports it properly
            log.warning("the LLM could not be prepared: %s", exc)

    @property
    def ready(self) -> bool:
        """Whether the embedding model is loaded (a question needs it; the pages do not)."""
        return bool(getattr(self.embedder, "loaded", True))

    # -- reading the index ----------------------------------------------------------------
    def store(self) -> Store | None:
        """The index as it is on disk now (see `IndexReader`); None when nothing is indexed."""
        return self.index.open()[0]

    def retriever(self) -> Retriever | None:
        """A retriever for the index as it is now; None when nothing is indexed yet."""
        from rag_app.retrieve import Retriever

        store, version = self.index.open()
        if store is None:
            return None
        with self._lock:
            if self._retriever is None or version != self._version:
                self._retriever = Retriever(self.settings, embedder=self.embedder, store=store)
                self._version = version
            return self._retriever

    # -- the embedding map ------------------------------------------------------------------
    def map_layout(self, max_points: int) -> tuple[list[dict[str, Any]], str]:
        """The embedding map's points and its note, fitted once per state of the index (REVIEW
        L7) and shared by every session. The first fit in a process takes a while (UMAP
        compiles its code: 10-30 s here), so a server fits it in the background as it starts
        (`warm_map`) and again after each of its jobs, instead of when someone opens the map."""
        from rag_app.maps import embedding_map

        store, version = self.index.open()
        key = (version, max_points)
        with self._map_lock:  # a page that asks meanwhile waits for the same fit
            if self._map is not None and self._map[0] == key:
                return self._map[1]
            if store is None:
                layout: tuple[list[dict[str, Any]], str] = (
                    [], "the collection is empty: nothing to map")
            else:
                emap = embedding_map(store, max_chunks=max_points)
                layout = (emap.to_records(), emap.note)
            self._map = (key, layout)
            return layout

    def _refit_map(self) -> None:
        started = time.monotonic()
        try:
            self.map_layout(self.settings.map_max_points)
            log.info("embedding map fitted in %.1f s", time.monotonic() - started)
        except Exception as exc:  # noqa: BLE001 - the map page reports it properly
            log.warning("the embedding map could not be fitted: %s", exc)

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
        files = list(delete_files)
        return self._submit(Job(next(self._ids), "delete", label, keys=list(keys),
                                delete_files=files, delete_ids=[file_identity(p) for p in files]))

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
            if self._map is not None or self._warm_map:  # the map is in use: keep it ready
                self._refit_map()

    def _run_ingest(self, job: Job) -> None:
        run_ingest(self.settings, job, self.embedder)

    def _run_delete(self, job: Job) -> None:
        from rag_app.service import remove_documents

        removed = remove_documents(self.settings, job.keys, command="the chat UI (delete)") \
            if job.keys else 0
        kept = remove_upload_files(self.settings, job.delete_files, job.delete_ids)
        job.outcomes = [{"file": job.label, "status": "removed", "reason": "",
                         "chunks": removed, "pages": 0}]
        job.outcomes += [{"file": p.name, "status": "kept",
                          "reason": "a newer upload of this name arrived after the delete was "
                          "asked: it stays (delete it again to remove it)",
                          "chunks": 0, "pages": 0} for p in kept]


class IndexReader:
    """Opens the index for the pages, as it is on disk now, whoever wrote it last.

    An embedded Chroma client keeps each collection's vector index in memory and never sees
    what another process wrote: after a `python -m ingest` run (or the API, or a second chat
    server) added documents, a running chat server's searches missed the new chunks and
    reading their vectors failed ("Error finding id"). So when the index's version changed
    since the last look (any writer, this server's own jobs included), the store is opened
    with a new client, which loads the vector indexes again."""

    def __init__(self, settings: Settings, client: ClientAPI) -> None:
        self.settings = settings
        self.client = client
        self.reopened = 0  # new clients made (the index changed on disk)
        self._seen: tuple[Any, ...] | None = None  # the version at the last look
        self._lock = threading.Lock()

    def open(self) -> tuple[Store | None, tuple[Any, ...]]:
        """(the store or None when nothing is indexed, its version)."""
        from rag_app.index.store import Store

        with self._lock:
            store = Store.open(self.settings, client=self.client)
            version = _version(store)
            if self._seen is not None and version != self._seen \
                    and not self.settings.chroma_host:  # a server has no stale copy
                self.client = fresh_client(self.settings)
                self.reopened += 1
                store = Store.open(self.settings, client=self.client)
                version = _version(store)
            self._seen = version
            return store, version


def _version(store: Store | None) -> tuple[Any, ...]:
    """Changes with every write by any writer (each one sets a new write generation in the
    catalog before it changes chunks, `mark_lexical_dirty`, and saves the BM25 index after)."""
    if store is None:
        return ()
    current = store.lexical_dir / "CURRENT"
    stamp = current.stat().st_mtime_ns if current.exists() else 0
    return (*store.version(), tuple(sorted(store.lexical_origin().items())), stamp)


def fresh_client(settings: Settings) -> ClientAPI:
    """A client that reads the store as it is on disk now. Chroma shares one embedded client
    (its `System`) per folder in a process, with the vector indexes loaded in memory; this
    forgets it, so the next client loads them again. Clients made before keep theirs (a search
    or an ingest job under way goes on with it)."""
    from rag_app.index.store import make_client

    if not settings.chroma_host:
        from chromadb.api.shared_system_client import SharedSystemClient

        settings.chroma_dir.mkdir(parents=True, exist_ok=True)
        # the key PersistentClient(path=str(chroma_dir)) uses; Chroma has no public call that
        # forgets one folder's client (clear_system_cache forgets every folder's)
        SharedSystemClient._identifier_to_system.pop(str(settings.chroma_dir), None)
    return make_client(settings)


def run_ingest(settings: Settings, job: Job, embedder: Embedder | None) -> None:
    """Ingest `job.paths`. A path gone since the job was queued (deleted meanwhile) is one
    failed outcome, not the whole job's failure (REVIEW M5). Uploads' states go to the
    manifest: indexed, or failed with the reason, so the Documents page lists them."""
    from ingest.entry import sync_paths

    present = [p for p in job.paths if p.exists()]
    gone = [{"file": p.name, "status": "failed", "chunks": 0, "pages": 0,
             "reason": "the file was removed before it could be indexed"}
            for p in job.paths if not p.exists()]
    folder = uploads_dir(settings)
    uploads = [p for p in present if p.resolve().parent == folder]
    try:
        report = sync_paths(settings, present, reporter=_JobReporter(job), embedder=embedder,
                            command="the chat UI (upload / re-ingest)") if present else None
    except Exception as exc:
        reason = str(exc) if isinstance(exc, RagError) else f"{type(exc).__name__}"
        for p in uploads:
            update_manifest(folder, p.name, state="failed", reason=reason)
        raise
    outcomes = report.outcomes if report is not None else []
    for o in outcomes:
        path = (Path(o.root) / o.source).resolve() if o.root else Path(o.source).resolve()
        if path.parent == folder and path.name in read_manifest(folder):
            failed = o.status in ("failed", "skipped")
            update_manifest(folder, path.name, state="failed" if failed else "indexed",
                            reason=o.reason if failed else "")
    job.outcomes = gone + [{"file": o.source, "status": o.status, "reason": o.reason,
                            "chunks": o.chunks_added, "pages": o.pages}
                           for o in outcomes if o.status != "unchanged" or len(job.paths) == 1]


def remove_upload_files(settings: Settings, paths: Sequence[Path],
                        identities: Sequence[tuple[int, int, int] | None]) -> list[Path]:
    """Delete uploaded files, each under its name's lock, and only if it is still the file
    the delete was asked for (`identities`, from `file_identity` then): a newer upload of the
    same name is kept. Returns the kept paths."""
    folder = uploads_dir(settings)
    kept: list[Path] = []
    for i, path in enumerate(paths):
        wanted = identities[i] if i < len(identities) else None
        with name_lock(path):
            now = file_identity(path)
            if now is not None and now != wanted:  # replaced, or made, since the delete
                kept.append(path)
                continue
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:
                log.warning("could not delete %s: %s", path, exc.strerror)
                continue
            if path.resolve().parent == folder:
                update_manifest(folder, path.name, remove=True)
    return kept


def uploads_dir(settings: Settings) -> Path:
    """The uploads folder, created 0700 when new (uploaded files are 0600: REVIEW L9)."""
    folder = settings.documents_dir.expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    return folder


# --- uploaded files: stored names, the manifest, locks --------------------------------------
MANIFEST = ".uploads.json"  # hidden: ingest skips it
PART_SUFFIX = ".part"
_CHUNK = 1 << 20
_LOCKS: dict[Path, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()
_MANIFEST_LOCK = threading.RLock()


def name_lock(path: Path) -> threading.Lock:
    """The process-wide lock of one stored upload name: saving a file under that name and
    deleting it are serialised, so a delete never removes a newer upload (REVIEW M5)."""
    key = path.resolve()
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(key, threading.Lock())


@dataclass(frozen=True)
class UploadRecord:
    """What the manifest knows of one stored upload."""

    stored: str  # the file's name in the uploads folder
    name: str  # the name the client gave (shown; never used to build a path)
    sha256: str
    state: Literal["saved", "indexed", "failed"]
    reason: str = ""


def display_name(name: str) -> str:
    """The client's file name as shown: its last path component, NFC, one line, no control
    or format characters (bidi overrides, zero-width)."""
    import unicodedata

    text = unicodedata.normalize("NFC", name)
    text = re.split(r"[/\\]", text)[-1]
    text = " ".join(text.split())
    return "".join(ch for ch in text if unicodedata.category(ch) not in ("Cc", "Cf", "Cs"))


def read_manifest(folder: Path) -> dict[str, UploadRecord]:
    """The manifest of an uploads folder ({} when missing or unreadable: a warning is logged)."""
    path = folder / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable upload manifest %s: %s", path, exc)
        return {}
    out: dict[str, UploadRecord] = {}
    for stored, rec in (data.get("files") or {}).items() if isinstance(data, dict) else ():
        if not isinstance(rec, dict):
            continue
        state = rec.get("state")
        out[stored] = UploadRecord(stored, str(rec.get("name") or stored),
                                   str(rec.get("sha256") or ""),
                                   state if state in ("saved", "indexed", "failed") else "saved",
                                   str(rec.get("reason") or ""))
    return out


def _write_manifest(folder: Path, records: dict[str, UploadRecord]) -> None:
    data = {"version": 1, "files": {k: {"name": r.name, "sha256": r.sha256, "state": r.state,
                                         "reason": r.reason} for k, r in sorted(records.items())}}
    _atomic_write(folder, MANIFEST, json.dumps(data, ensure_ascii=False, indent=1).encode())


def _atomic_write(folder: Path, name: str, payload: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=PART_SUFFIX, dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, folder / name)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def update_manifest(folder: Path, stored: str, **changes: Any) -> None:
    """Change (or, with `remove=True`, drop) one file's manifest entry."""
    with _MANIFEST_LOCK:
        records = read_manifest(folder)
        if changes.pop("remove", False):
            if records.pop(stored, None) is None:
                return
        else:
            base = records.get(stored) or UploadRecord(stored, stored, "", "saved")
            records[stored] = replace(base, **changes)
        _write_manifest(folder, records)


def file_identity(path: Path) -> tuple[int, int, int] | None:
    """(inode, mtime_ns, size) of a file, None when there is none: a replaced file differs."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def check_upload_batch(settings: Settings, sizes: Sequence[tuple[str, int]]) -> None:
    """Refuse an upload batch over the budgets (REVIEW L6): RAG_UPLOAD_MAX_FILES files and
    RAG_UPLOAD_BATCH_MAX_MB in all. The message says what to do."""
    from rag_app.errors import ConfigError

    if len(sizes) > settings.upload_max_files:
        raise ConfigError(
            f"{len(sizes)} files were chosen; at most {settings.upload_max_files} can be added "
            f"at once (RAG_UPLOAD_MAX_FILES). Remove some and add the rest afterwards.")
    total = sum(size for _, size in sizes)
    if total > settings.upload_batch_max_mb * 1024 * 1024:
        raise ConfigError(
            f"These files hold {total / 1e6:.1f} MB in all; at most "
            f"{settings.upload_batch_max_mb:g} MB can be added at once "
            f"(RAG_UPLOAD_BATCH_MAX_MB). Add them in smaller groups.")


def sweep_parts(folder: Path, older_than_s: float = 3600.0) -> int:
    """Remove temp files (`.*.part`) left by a crash; returns how many were removed."""
    now = time.time()
    removed = 0
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for entry in entries:
        if entry.name.startswith(".") and entry.name.endswith(PART_SUFFIX):
            try:
                if now - entry.stat(follow_symlinks=False).st_mtime > older_than_s:
                    os.unlink(entry.path)
                    removed += 1
            except OSError:
                continue
    return removed


def save_upload(settings: Settings, name: str, data: bytes | BinaryIO) -> Path:
    """Store an uploaded file in the uploads folder under a server-made safe name and return
    its path.

    - The client's `name` is kept in the folder's manifest for display; it never builds a path.
    - Two different names never share a stored name (REVIEW M3): when the safe name is taken
      by another name's file, this one is stored as `stem-<8 hex of the name>.suffix`.
    - The same name again is a new version: it replaces its file (its chunks are replaced on
      ingest, never duplicated); the same content is left as it is.
    - The bytes are streamed to a private temp file (mkstemp, 0600, fsync) and moved into
      place under the stored name's lock, so a delete of that name waits (REVIEW M5, L9).
    """
    from ingest.loaders import SUPPORTED_SUFFIXES
    from rag_app.errors import ConfigError
    from rag_app.ui.safety import safe_upload_name

    safe = safe_upload_name(name, allowed_suffixes=SUPPORTED_SUFFIXES)
    shown = display_name(name) or safe
    limit = int(settings.upload_max_mb * 1024 * 1024)
    folder = uploads_dir(settings)
    stream: BinaryIO = io.BytesIO(data) if isinstance(data, bytes | bytearray) else data
    digest = hashlib.sha256()
    size = 0
    head = b""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{safe}.", suffix=PART_SUFFIX, dir=folder)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o600)
            while block := stream.read(_CHUNK):
                size += len(block)
                if size > limit:
                    raise ConfigError(f"{shown} is over {settings.upload_max_mb:g} MB, the limit "
                                      "(RAG_UPLOAD_MAX_MB): it was not added.")
                digest.update(block)
                f.write(block)
                if len(head) < 1024:
                    head += block[:1024 - len(head)]
            f.flush()
            os.fsync(f.fileno())
        if not size:
            raise ConfigError(f"{shown} is empty: it was not added.")
        if safe.endswith(".pdf") and b"%PDF-" not in head:  # a ZIP or a web page named .pdf
            raise ConfigError(f"{shown} is not a PDF (it has no %PDF- header): it was not "
                              "added. Upload the document itself, or save it as PDF first.")
        return _place(folder, tmp, safe, shown, digest.hexdigest())
    finally:
        tmp.unlink(missing_ok=True)


def _place(folder: Path, tmp: Path, safe: str, shown: str, sha: str) -> Path:
    """Move `tmp` into place: under `safe` if free or this name's, else under the name's
    hashed variant, else a numbered one."""
    from rag_app.hashing import sha256_file
    from rag_app.ui.safety import unique_path

    stem, suffix = Path(safe).stem, Path(safe).suffix
    tag = hashlib.sha256(shown.encode("utf-8")).hexdigest()[:8]
    hashed = f"{stem[:100 - len(suffix) - 9].rstrip(' .')}-{tag}{suffix}"
    held: list[threading.Lock] = []
    try:
        for candidate in (safe, hashed, None):
            target = unique_path(folder, hashed) if candidate is None else folder / candidate
            lock = name_lock(target)
            lock.acquire()
            held.append(lock)
            if not (target.is_symlink() or target.exists()):
                break
            if target.is_file() and not target.is_symlink():
                record = read_manifest(folder).get(target.name)
                owner = record.name if record else target.name
                if sha256_file(target) == sha:
                    if record is None:
                        update_manifest(folder, target.name, name=shown, sha256=sha)
                    return target  # the same file: nothing changes
                if owner == shown:
                    break  # a new version of this name's file
        os.replace(tmp, target)
        update_manifest(folder, target.name, name=shown, sha256=sha, state="saved", reason="")
        return target
    finally:
        for lock in reversed(held):
            lock.release()
