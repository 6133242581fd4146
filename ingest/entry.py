"""Ingest's entry point, and what a sync leaves behind for the chat to show.

    report = sync_paths(settings, [Path("docs")], reporter=…)   # ingest, holding the lock
    status = sync_status(settings)          # when the index last synced, who watches folders

`sync_paths` is what `python -m ingest`, `rag ingest`, the watcher, the evaluation and the chat's
uploads all call; it takes the single-writer lock itself (as `rag_app.service.remove_documents`
does), so the CLI and the UI never write to one embedded store at once.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ingest.outcomes import Reporter, SyncReport
    from rag_app.embedders.base import Embedder
    from rag_app.settings import Settings


def sync_paths(settings: Settings, paths: Sequence[Path], *, passwords: Sequence[str] = (),
               file_passwords: Sequence[tuple[str, str]] = (), dry_run: bool = False,
               rebuild: bool = False, reporter: Reporter | None = None,
               embedder: Embedder | None = None, command: str = "python -m ingest",
               **run_options: Any) -> SyncReport:
    """Sync files and folders into the configured collection under the single-writer lock
    (a dry run takes no lock and writes nothing). Raises `StoreLocked` at once when another
    process is writing. `command` is shown to a second writer: never put secrets in it."""
    from ingest.sync import Ingestor
    from rag_app.embedders.auto import make_embedder
    from rag_app.index.store import writer_lock

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
    record_sync(settings, report, command)
    return report


# -- when the index last synced, and who keeps folders in sync (`ingest --watch`) ------------
STATUS_DIR = "sync-status"  # under RAG_STATE_DIR: <collection>.json, <collection>.watch.json


@dataclass
class SyncStatus:
    """What the chat says about syncing: the last sync that ran to its end on this machine
    (by any command: ingest, a watch, the chat's uploads) and the live watcher, if any."""

    last_synced: float | None = None  # time.time()
    command: str = ""
    chunks_added: int = 0
    chunks_removed: int = 0
    failed: int = 0
    watching: list[str] = field(default_factory=list)  # folders a live watcher keeps in sync
    watcher: str = ""  # its command


def _status_file(settings: Settings, suffix: str = "") -> Path:
    return settings.state_dir / STATUS_DIR / f"{settings.collection}{suffix}.json"


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    os.replace(tmp, path)  # readers see the old file or the new one, never half of one


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def record_sync(settings: Settings, report: SyncReport, command: str) -> None:
    """Note that a sync ran to its end (called by `sync_paths`). A failure to note it is
    logged, never the sync's failure."""
    try:
        _write_json(_status_file(settings), {
            "finished": time.time(), "command": command, "chunks_added": report.chunks_added,
            "chunks_removed": report.chunks_removed, "failed": len(report.failed)})
    except OSError:
        logging.getLogger(__name__).warning("could not note the sync's time", exc_info=True)


@contextmanager
def watching(settings: Settings, paths: Sequence[Path], command: str) -> Iterator[None]:
    """While the body runs, `sync_status` names this process as keeping `paths` in sync."""
    path = _status_file(settings, ".watch")
    _write_json(path, {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
                       "paths": [str(p.expanduser().resolve()) for p in paths],
                       "since": time.time()})
    try:
        yield
    finally:
        if _read_json(path).get("pid") == os.getpid():
            path.unlink(missing_ok=True)


def sync_status(settings: Settings) -> SyncStatus:
    """When the index last synced on this machine and which folders a live watcher keeps in
    sync (a watcher that died without cleaning up is not counted). Reads two small files."""
    last = _read_json(_status_file(settings))
    status = SyncStatus()
    if isinstance(last.get("finished"), int | float):
        status = SyncStatus(float(last["finished"]), str(last.get("command", "")),
                            int(last.get("chunks_added", 0)),
                            int(last.get("chunks_removed", 0)), int(last.get("failed", 0)))
    watcher = _read_json(_status_file(settings, ".watch"))
    if _alive(watcher):
        status.watching = [str(p) for p in watcher.get("paths") or []]
        status.watcher = str(watcher.get("command", ""))
    return status


def _alive(holder: dict[str, Any]) -> bool:
    pid = holder.get("pid")
    if not isinstance(pid, int):
        return False
    if holder.get("host") != socket.gethostname():
        return True  # cannot tell: believe it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: alive, another user's
        return True
    return True


def time_ago(then: float, now: float | None = None) -> str:
    """'just now', '40 s ago', '3 min ago', '2 h ago', '5 days ago'."""
    seconds = max(0.0, (time.time() if now is None else now) - then)
    if seconds < 5:
        return "just now"
    for size, unit in ((86400, "days"), (3600, "h"), (60, "min")):
        if seconds >= size:
            n = int(seconds // size)
            return f"{n} {'day' if unit == 'days' and n == 1 else unit} ago"
    return f"{int(seconds)} s ago"


def sync_line(status: SyncStatus, now: float | None = None) -> str:
    """One sentence for the chat: when the index last synced and what is watched."""
    if status.last_synced is None:
        text = "Not synced on this machine yet."
    else:
        stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime(status.last_synced))
        text = f"Last synced {time_ago(status.last_synced, now)} ({stamp})"
        if status.failed:
            text += f", {status.failed} file(s) failed"
        text += "."
    if status.watching:
        names = ", ".join(Path(p).name or p for p in status.watching)
        text += f" Watching {names}: changes are synced within seconds."
    return text
