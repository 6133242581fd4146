"""What a rebuild starts from: the recorded files it carries over (or the refusal when recorded
folders are missing), the surviving file list of a damaged collection, and whether only the
chunking code changed (which makes a sync rebuild by itself). See ingest/sync.py's module doc.
"""

from __future__ import annotations

import logging
import stat
from pathlib import Path
from typing import Any

from ingest.discover import Candidate, Scope
from ingest.outcomes import FileOutcome, SyncReport
from rag_app.errors import ConfigError
from rag_app.index.store import FileRecord, StoreDamaged, make_client
from rag_app.settings import Settings

log = logging.getLogger(__name__)

DROP_MISSING_OPTION = "--drop-missing"  # the CLI's name for `drop_missing_roots=True`


def only_code_changed(stored: dict[str, Any], wanted: dict[str, Any]) -> bool:
    """True when the collection differs from the settings only in how files become chunks: the
    splitter version and/or the PDF parser (absent from collections built before it was
    recorded, which were read with pypdf), so re-chunking the same files settles it."""
    if not stored:
        return False
    changed = {k for k, v in wanted.items() if stored.get(k) != v}
    return bool(changed) and changed <= {"splitter", "pdf_parser"}


def carry_over(old: dict[str, FileRecord], candidates: list[Candidate], scopes: list[Scope],
               drop_missing_roots: bool, why: str,
               ) -> tuple[list[Candidate], list[FileOutcome]]:
    """For a rebuild: the recorded files to re-ingest besides `candidates`, and outcomes for
    the recorded files the new collection will not have. `why` opens the refusal message.

    Each record outside the given paths (or in a part of them the walk could not see) is
    looked up as `root / source`, exactly that file. A missing file under a folder that still
    has some of its files is left out (`removed`). A recorded folder that is gone, or none of
    whose recorded files is left, makes the rebuild refuse (ConfigError, nothing written)
    unless `drop_missing_roots`."""
    given = {c.key for c in candidates}
    by_path = {c.path: c for c in candidates}
    alive_roots = {str(c.root) for c in candidates}  # folders known to be there
    carried: list[Candidate] = []
    outcomes: list[FileOutcome] = []
    missing: dict[str, list[FileRecord]] = {}
    for key, record in sorted(old.items()):
        if key in given:
            continue
        mine = [s for s in scopes if s.covers(record)]
        if mine and not any(s.unsure_of(record.source) or s.empty_folder for s in mine):
            outcomes.append(FileOutcome(record.source, "removed", "no longer in the folder",
                                        record.root, chunks_removed=record.chunks))
            continue
        path = Path(record.root) / record.source
        if path in by_path:  # the same file under another given root: indexed once, there
            outcomes.append(FileOutcome(record.source, "removed",
                                        f"indexed under {by_path[path].root} instead",
                                        record.root, chunks_removed=record.chunks))
            continue
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            missing.setdefault(record.root, []).append(record)
            continue
        except OSError as exc:
            alive_roots.add(record.root)
            outcomes.append(FileOutcome(record.source, "failed",
                                        f"cannot read: {exc.strerror} (left out of the rebuilt "
                                        "index)", record.root))
            continue
        if not stat.S_ISREG(st.st_mode):
            missing.setdefault(record.root, []).append(record)
            continue
        alive_roots.add(record.root)
        carried.append(Candidate(path, Path(record.root), record.source, st.st_size,
                                 st.st_mtime_ns))
    unavailable = {root: records for root, records in missing.items()
                   if root not in alive_roots}
    if unavailable and not drop_missing_roots:
        listing = "; ".join(f"{root} ({len(records)} indexed file(s))"
                            for root, records in sorted(unavailable.items()))
        total = sum(len(records) for records in unavailable.values())
        raise ConfigError(
            f"{why}, but these folders are missing or none of their indexed files is left "
            f"(not mounted? moved?): {listing}. Nothing was changed. Mount or restore them and "
            f"run again, or run again with {DROP_MISSING_OPTION} to rebuild without them "
            f"({total} file(s) leave the index)."
        )
    for root, records in sorted(missing.items()):
        reason = (f"folder missing or emptied; left out ({DROP_MISSING_OPTION})"
                  if root in unavailable else "file no longer exists")
        outcomes.extend(FileOutcome(r.source, "removed", reason, r.root,
                                    chunks_removed=r.chunks) for r in records)
    return carried, outcomes


def salvage(settings: Settings, damage: StoreDamaged, report: SyncReport
            ) -> dict[str, FileRecord]:
    """The file list of a damaged collection, if it survived (else {}); says which."""
    records = _read_file_records(settings, str(damage.entry.get("files", "")))
    if records is None:
        notice = (f"{damage} -- its file list is unreadable too, so the rebuilt index holds "
                  "only the paths given now: ingest the other folders again")
        records = {}
    else:
        notice = (f"{damage} -- rebuilding it from its surviving file list "
                  f"({len(records)} files) and the paths given now")
    log.warning("%s", notice)
    report.notices.append(notice)
    return records


def _read_file_records(settings: Settings, name: str) -> dict[str, FileRecord] | None:
    """The records in the physical file-list collection `name`; None if it cannot be read."""
    page = 2000
    try:
        files = make_client(settings).get_collection(name)
        records: dict[str, FileRecord] = {}
        offset = 0
        while True:
            got = files.get(include=["metadatas"], limit=page, offset=offset)
            ids = list(got["ids"])
            metas: list[Any] = list(got.get("metadatas") or [])
            metas += [None] * (len(ids) - len(metas))
            for key, meta in zip(ids, metas, strict=True):
                records[key] = FileRecord.from_row(key, meta or {})
            if len(ids) < page:
                return records
            offset += len(ids)
    except Exception:
        log.debug("the file list %r of the damaged collection is unreadable", name,
                  exc_info=True)
        return None
