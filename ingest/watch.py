"""Folders that stay in sync by themselves: `python -m ingest PATH --watch` (and `rag serve
--docs DIR --watch`).

One sync at the start, then one more each time a burst of changes has settled (QUIET_MS with
no new change, or MAX_GROUP_MS after the first one when changes never stop). Every sync is the
ordinary one (`ingest.entry.sync_paths`): the same walk, the same crash safety (pending
records), the same single-writer lock, taken for each sync and released between them, so the
chat's uploads and other writers can go in between. No event is trusted for what it says:
an event only means "sync now", and the sync's walk finds what changed. So a rename is what the
sync makes of it (the old name's passages leave, the new name's come in), a folder moved away
is its files deleted, and a change the events missed (an overflowing kernel queue, a network
share) is found by the next sync, at the latest RESCAN_S later.

A sync that fails for a file reports it and watching goes on; a store that is locked by another
writer or unreachable, or a folder that was deleted, is tried again every RETRY_S (a folder
made again is watched anew: its old file events died with it; a share mounted over a watched
folder is seen by the rescan only); an error at the start (a missing folder, an index built
with another model) ends the watch, as it would end a plain sync.

File events come from watchfiles (Rust `notify`: inotify, FSEvents, ReadDirectoryChangesW, or
polling with WATCHFILES_FORCE_POLLING), in a thread of their own that only queues them: a sync
under way never makes the watcher miss what is saved meanwhile.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rag_app.errors import RagError, StoreLocked, StoreUnavailable

if TYPE_CHECKING:
    from ingest.outcomes import SyncReport
    from rag_app.embedders.base import Embedder
    from rag_app.settings import Settings

log = logging.getLogger(__name__)

QUIET_MS = 1_000  # a burst of changes is over after this long without a new one
MAX_GROUP_MS = 10_000  # changes that never stop (a long copy) are synced at least this often
RETRY_S = 5.0  # after the store was locked by another writer, or unreachable
RESCAN_S = 600.0  # a sync this often even without events: finds what events missed
POLL_S = 0.2  # how often the loop looks at its stop event


class WatchError(RagError):
    """The file events stopped coming (the watcher itself failed): the watch ends."""


@dataclass
class Round:
    """One sync of the watch: why it ran, what it did."""

    number: int  # 0: the sync at the start
    changed: list[str]  # paths the watcher saw change (empty: the start, a retry, a rescan)
    started: float  # time.time()
    seconds: float = 0.0
    report: SyncReport | None = None
    error: str = ""  # the sync did not run to its end: why
    retry: bool = False  # ... and it is tried again RETRY_S later

    @property
    def changed_anything(self) -> bool:
        r = self.report
        return r is not None and any(o.status in ("ingested", "updated", "removed", "failed")
                                     for o in r.outcomes)

    def to_dict(self) -> dict[str, Any]:
        return {"round": self.number, "changed": self.changed, "started": self.started,
                "seconds": round(self.seconds, 3), "error": self.error,
                "report": self.report.to_dict() if self.report is not None else None}


@dataclass
class _Watched:
    """What one watchfiles thread looks at: folders (recursively) or the folders of single
    files (not recursively, only those files' events kept)."""

    dirs: list[Path]
    files: set[Path] | None = None  # None: every file under `dirs`
    roots: list[Path] = field(default_factory=list)  # for "hidden" (relative to these)


class ChangeFeed:
    """Queues the changes watchfiles reports under `paths`, in a daemon thread per kind of
    path (folders recursively; single files through their folder, not recursively). Ignored:
    hidden files and folders (the sync skips them too), files of a type the sync does not
    read, and anything under `ignore` (the store's own folder, if it is inside a watched one:
    else every sync would trigger the next)."""

    def __init__(self, paths: Sequence[Path], *, ignore: Iterable[Path] = (),
                 quiet_ms: int = QUIET_MS, max_group_ms: int = MAX_GROUP_MS) -> None:
        resolved = [p.expanduser().resolve() for p in paths]
        folders = [p for p in resolved if p.is_dir()]
        singles = {p for p in resolved if not p.is_dir()}
        self._watched = [w for w in (
            _Watched(folders, None, folders),
            _Watched(sorted({p.parent for p in singles}), singles, []),
        ) if w.dirs]
        self._ignore = [p.expanduser().resolve() for p in ignore]
        self.quiet_ms, self.max_group_ms = quiet_ms, max_group_ms
        self.changes: queue.Queue[set[Path] | BaseException] = queue.Queue()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._started = threading.Barrier(len(self._watched) + 1, timeout=30)

    def start(self) -> None:
        """Start watching; returns once the watchers are set up (so a change made right after
        is seen)."""
        for n, watched in enumerate(self._watched):
            thread = threading.Thread(target=self._run, args=(watched,), daemon=True,
                                      name=f"ingest-watch-{n}")
            thread.start()
            self._threads.append(thread)
        try:
            self._started.wait()
        except threading.BrokenBarrierError:
            log.warning("a file watcher did not start within 30 s")

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)

    def get(self, timeout: float) -> set[Path] | None:
        """The paths changed since the last call (all bursts queued, merged); None if nothing
        changed within `timeout` seconds. Raises what ended a watcher thread."""
        try:
            first = self.changes.get(timeout=timeout)
        except queue.Empty:
            return None
        found: set[Path] = set()
        item: set[Path] | BaseException | None = first
        while item is not None:
            if isinstance(item, BaseException):
                folders = ", ".join(str(d) for w in self._watched for d in w.dirs)
                raise WatchError(
                    f"Watching {folders} for changes failed ({type(item).__name__}: {item}). "
                    "Where file events are not available (some network shares, too many "
                    "folders for the inotify limit fs.inotify.max_user_watches), set "
                    "WATCHFILES_FORCE_POLLING=1 to poll instead.") from item
            found |= item
            try:
                item = self.changes.get_nowait()
            except queue.Empty:
                item = None
        return found

    def _run(self, watched: _Watched) -> None:
        from watchfiles import watch

        def keep(_change: Any, name: str) -> bool:
            return self._keep(Path(name), watched)

        started = False
        try:
            for batch in watch(*watched.dirs, watch_filter=keep, debounce=self.max_group_ms,
                               step=self.quiet_ms, stop_event=self._stop, rust_timeout=500,
                               yield_on_timeout=True, raise_interrupt=False,
                               recursive=watched.files is None):
                if not started:  # the first (empty) timeout: the watcher is set up
                    started = True
                    self._arrived()
                if batch:
                    self.changes.put({Path(name) for _, name in batch})
        except BaseException as exc:  # noqa: BLE001 - handed to the loop, which reports it
            self.changes.put(exc)
        finally:
            if not started:
                self._arrived()

    def _arrived(self) -> None:
        try:
            self._started.wait()
        except threading.BrokenBarrierError:
            pass

    def _keep(self, path: Path, watched: _Watched) -> bool:
        from ingest.loaders import kind_of

        if watched.files is not None and path not in watched.files:
            return False
        if any(path.is_relative_to(i) for i in self._ignore):
            return False
        for root in watched.roots:
            if path.is_relative_to(root) and any(
                    part.startswith(".") for part in path.relative_to(root).parts):
                return False
        # A file of a type the sync skips (an editor's backup, a download's .part) is no
        # change; a folder, or a path gone already, may be (a folder moved, a file deleted).
        try:
            return kind_of(path) is not None or not path.is_file()
        except OSError:
            return True


def watch_and_sync(settings: Settings, paths: Sequence[Path], *,
                   on_round: Callable[[Round], None],
                   stop: threading.Event | None = None,
                   embedder: Embedder | None = None,
                   first_reporter: Any = None,
                   command: str = "python -m ingest --watch",
                   quiet_ms: int = QUIET_MS, max_group_ms: int = MAX_GROUP_MS,
                   rescan_s: float = RESCAN_S, retry_s: float = RETRY_S,
                   **sync_options: Any) -> None:
    """Sync `paths` now, then after every settled burst of changes, until `stop` is set (or
    KeyboardInterrupt: it propagates, as in a plain sync, and the next run repairs what it cut
    short). `on_round` hears every sync. `sync_options` go to each `sync_paths` (passwords,
    drop_missing_roots); `rebuild=True` applies to the first sync that runs to its end only.
    The embedding model is loaded once, for every sync."""
    from ingest.entry import sync_paths, watching
    from rag_app.embedders.auto import make_embedder

    stop = stop or threading.Event()
    emb = embedder if embedder is not None else make_embedder(settings)
    first_options = dict(sync_options)
    sync_options.pop("rebuild", None)
    ignore = [settings.state_dir, settings.cache_dir]
    # Watch before the first sync: a file saved while it runs is synced right after.
    feed = ChangeFeed(paths, ignore=ignore, quiet_ms=quiet_ms, max_group_ms=max_group_ms)
    feed.start()
    number = 0
    synced = False  # a sync has run to its end (the first one may wait for another writer)
    lost = False  # a sync failed as if a folder were gone: watch anew when it is back
    due: float | None = time.monotonic()  # when the next sync runs (None: at the next change)
    changed: set[Path] = set()
    last = time.monotonic()
    try:
        with watching(settings, paths, command):
            while not stop.is_set():
                now = time.monotonic()
                if due is None and now - last >= rescan_s:
                    due = now
                if due is not None and now >= due:
                    if lost and all(p.expanduser().exists() for p in paths):
                        feed.stop()
                        feed = ChangeFeed(paths, ignore=ignore, quiet_ms=quiet_ms,
                                          max_group_ms=max_group_ms)
                        feed.start()
                        lost = False
                    options = sync_options if synced else first_options
                    round_ = Round(number, _shown(changed, paths), time.time())
                    t0 = time.perf_counter()
                    try:
                        round_.report = sync_paths(
                            settings, paths, embedder=emb, command=command,
                            reporter=None if synced else first_reporter, **options)
                    except (StoreLocked, StoreUnavailable) as exc:  # another writer, a server
                        round_.error, round_.retry = str(exc), True  # down: wait, try again
                    except RagError as exc:
                        if not synced:  # a missing folder, a bad setting, an index built
                            raise  # with another model: every sync would fail the same way
                        # e.g. the folder was deleted: its file events went with
                        # it, so try again every retry_s, watching anew once it is back
                        round_.error, round_.retry, lost = str(exc), True, True
                    except Exception as exc:  # a bug: said, and watching goes on
                        log.debug("the sync failed", exc_info=True)
                        round_.error = f"unexpected {type(exc).__name__}: {exc}"
                    round_.seconds = time.perf_counter() - t0
                    last = time.monotonic()
                    due = last + retry_s if round_.retry else None
                    changed = set()
                    number += 1
                    on_round(round_)
                    if not synced and round_.report is not None:
                        synced = True
                        _warm_up(emb)
                wait = POLL_S if due is None else max(0.0, min(POLL_S, due - time.monotonic()))
                got = feed.get(timeout=wait)
                if got:
                    changed |= got
                    due = time.monotonic() if due is None else due
    finally:
        feed.stop()


def _warm_up(embedder: Embedder) -> None:
    """Load the model now (after the first sync, so it is the collection's own), not when the
    first change needs it: measured, that load was 5 of the first change's 7.5 s."""
    try:
        embedder.warm_up()
    except Exception:  # the sync that needs the model reports it
        log.debug("loading the embedding model failed", exc_info=True)


def _shown(changed: set[Path], roots: Sequence[Path], limit: int = 50) -> list[str]:
    """Changed paths relative to the watched folder holding them, sorted, at most `limit`."""
    folders = [r.expanduser().resolve() for r in roots]
    out = []
    for path in sorted(changed)[:limit]:
        base = next((f for f in folders if f.is_dir() and path.is_relative_to(f)), None)
        out.append(path.relative_to(base).as_posix() if base is not None else str(path))
    return out


def round_line(round_: Round) -> str:
    """One line for a sync: when, what changed, passages added and removed, seconds."""
    when = time.strftime("%H:%M:%S", time.localtime(round_.started))
    what = "start" if round_.number == 0 else "sync"
    r = round_.report
    if r is None:
        again = f"; trying again in {RETRY_S:.0f} s" if round_.retry else ""
        return f"{when} {what} failed: {round_.error}{again}"
    files = [o for o in r.outcomes if o.status in ("ingested", "updated", "removed")]
    marks = {"ingested": "+", "updated": "~", "removed": "-"}
    names = " ".join(marks[o.status] + o.source for o in files[:6])
    if len(files) > 6:
        names += f" and {len(files) - 6} more"
    failed = r.failed
    text = (f"{when} {what}: {names or 'no change'}; {r.chunks_added} passages added, "
            f"{r.chunks_removed} removed, {r.chunks_total} in the index, {round_.seconds:.1f} s")
    if failed:
        text += f"; {len(failed)} failed: " + "; ".join(
            f"{o.source} ({o.reason})" for o in failed[:3])
        if len(failed) > 3:
            text += f" and {len(failed) - 3} more"
    return text

