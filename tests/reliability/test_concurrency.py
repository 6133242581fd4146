"""Concurrent readers and writers (review items 7, 8 and 20; section E tests 9, 18 and 19).

Against real Chroma (the embedded store and a `chroma run` server) with the real model:
- a reader never saves the BM25 index nor removes the DIRTY marker; a stale saved index is
  never used; the writer's final save matches the store (E.9);
- the server-mode writer lease: a second writer is refused, a released lease is free, a
  crashed holder's lease is taken over, a writer that loses the write race refuses (item 8);
- two syncs in two threads of one process: the second is refused at once, never interleaved
  (E.19);
- overlapping folders never store a file twice, in either order (item 20, E.18).
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ingest.entry import sync_paths
from ingest.outcomes import FileOutcome
from rag_app.errors import StoreLocked
from rag_app.index import store as store_module
from rag_app.index.lexical import LexicalIndex
from rag_app.index.store import Store, writer_lock
from rag_app.retrieve import RetrievalOptions, Retriever
from rag_app.settings import Settings
from tests.conftest import REPO, make_settings

pytestmark = pytest.mark.slow


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def opened(settings: Settings) -> Store:
    store = Store.open(settings)
    assert store is not None
    return store


def assert_saved_index_matches(settings: Settings) -> None:
    """The saved BM25 index equals the store: no marker, same chunks, current origin."""
    store = opened(settings)
    assert not (store.lexical_dir / "DIRTY").exists()
    assert not store.lexical_is_dirty()
    saved = LexicalIndex.load(store.lexical_dir)
    assert saved is not None
    assert len(saved) == store.count()
    assert saved.origin == store.lexical_origin()
    assert saved.stamp == store_digest(store)  # the same chunk ids and content hashes
    assert store.load_lexical().saved_in == store.lexical_dir  # readers use the saved one


def store_digest(store: Store) -> str:
    """The stamp an index of the store as it is now must carry (see `Store.rebuild_lexical`)."""
    rows = sorted((cid, str(meta.get("content_hash", "")))
                  for ids, metas in store.all_chunks(("metadatas",))
                  for cid, meta in zip(ids, metas, strict=True))
    return hashlib.sha256("".join(f"{cid}:{chash}\n" for cid, chash in rows).encode()).hexdigest()


def assert_no_duplicates(settings: Settings) -> None:
    """Each real file has one record, and every chunk belongs to a record."""
    store = opened(settings)
    records = store.file_records()
    per_file = Counter(Path(r.root) / r.source for r in records.values())
    assert all(n == 1 for n in per_file.values()), per_file
    owners: Counter[str] = Counter()
    for _, metas in store.all_chunks(("metadatas",)):
        owners.update(m["file_key"] for m in metas)
    assert set(owners) <= set(records)
    assert store.count() == sum(r.chunks for r in records.values())


class Gate:
    """A reporter that calls `on_done(n)` after the n-th file is written (n from 1), and can
    hold the run there: the test sees `reached` set and lets it go on with `release`."""

    def __init__(self, on_done: Callable[[int], None] | None = None, hold_at: int = 0,
                 hold_in_start: bool = False) -> None:
        self.on_done = on_done
        self.hold_at = hold_at
        self.hold_in_start = hold_in_start
        self.reached = threading.Event()
        self.release = threading.Event()
        self.done = 0

    def _hold(self) -> None:
        self.reached.set()
        assert self.release.wait(120), "the test never released the run"

    def start(self, files: int, total_bytes: int) -> None:
        if self.hold_in_start:
            self._hold()

    def file_started(self, source: str, size: int) -> None: ...

    def file_progress(self, done_fraction: float) -> None: ...

    def file_done(self, outcome: FileOutcome) -> None:
        if outcome.status not in ("ingested", "updated"):
            return
        self.done += 1
        if self.on_done is not None:
            self.on_done(self.done)
        if self.done == self.hold_at:
            self._hold()


class Background:
    """`sync_paths` in a thread; `result()` returns its report or raises its error."""

    def __init__(self, settings: Settings, paths: list[Path], embedder: Any,
                 reporter: Any) -> None:
        self.report: Any = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(settings, paths, embedder,
                                                               reporter), daemon=True)
        self.thread.start()

    def _run(self, settings: Settings, paths: list[Path], embedder: Any, reporter: Any) -> None:
        try:
            self.report = sync_paths(settings, paths, embedder=embedder, reporter=reporter)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            self.error = exc

    def result(self) -> Any:
        self.thread.join(180)
        assert not self.thread.is_alive()
        if self.error is not None:
            raise self.error
        return self.report


class Killed(BaseException):
    """Stands for a kill of the ingest process at that point (nothing after it runs)."""


# -- E.9: readers and the saved BM25 index ------------------------------------------------------
def test_a_reader_during_an_ingest_builds_in_memory_and_the_ingest_saves_the_final_index(
        settings: Settings, embedder: Any, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    write(docs / "a.md", "# Anvil\n\nThe anvil weighs forty kilograms.\n")
    sync_paths(settings, [docs], embedder=embedder)
    assert_saved_index_matches(settings)
    write(docs / "b.md", "# Bellows\n\nThe bellows feed the forge with air.\n")
    write(docs / "c.md", "# Crucible\n\nThe Quillfeather crucible melts bronze.\n")

    gate = Gate(hold_at=1)
    ingest = Background(settings, [docs], embedder, gate)
    assert gate.reached.wait(120)
    store = opened(settings)  # a reader while the ingest is suspended after one new file
    current = (store.lexical_dir / "CURRENT").read_text()
    assert store.lexical_is_dirty()
    index = store.load_lexical()
    assert index.saved_in is None and len(index) == store.count()
    retriever = Retriever(settings, embedder=embedder, store=store)
    retriever.search("bellows", RetrievalOptions(k=3, mode="lexical"))
    assert retriever.lexical.saved_in is None
    # nothing a reader did touched the saved index or the marker
    assert (store.lexical_dir / "DIRTY").exists()
    assert (store.lexical_dir / "CURRENT").read_text() == current

    gate.release.set()
    report = ingest.result()
    assert report.counts()["ingested"] == 2
    assert_saved_index_matches(settings)
    # the retriever made during the ingest switches to the saved index by itself
    hits = retriever.search("Quillfeather crucible", RetrievalOptions(k=3, mode="lexical"))
    assert retriever.lexical.saved_in is not None
    assert hits and hits[0].source == "c.md"


def test_an_ingest_killed_after_a_reader_loaded_keeps_its_marker_and_the_rerun_saves(
        settings: Settings, embedder: Any, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    write(docs / "a.md", "# Anvil\n\nThe anvil weighs forty kilograms.\n")
    sync_paths(settings, [docs], embedder=embedder)
    write(docs / "b.md", "# Bellows\n\nThe bellows feed the forge with air.\n")
    write(docs / "c.md", "# Crucible\n\nThe crucible melts bronze.\n")
    loaded: list[int] = []

    def reader_then_kill(n: int) -> None:
        if n == 1:  # a reader (e.g. `ask`) while the run is half-way
            loaded.append(len(opened(settings).load_lexical()))
        if n == 2:  # killed after its last write, before the BM25 index is saved
            raise Killed

    with pytest.raises(Killed):
        sync_paths(settings, [docs], embedder=embedder, reporter=Gate(reader_then_kill))
    store = opened(settings)
    assert loaded and loaded[0] < store.count()
    assert (store.lexical_dir / "DIRTY").exists() and store.lexical_is_dirty()
    index = store.load_lexical()  # a reader after the kill: the store as it is, in memory
    assert index.saved_in is None and len(index) == store.count()
    assert (store.lexical_dir / "DIRTY").exists()

    report = sync_paths(settings, [docs], embedder=embedder)  # the rerun: no file changed
    assert report.counts()["unchanged"] == 3 and report.chunks_added == 0
    assert_saved_index_matches(settings)


def test_a_saved_index_that_no_longer_matches_the_store_is_never_used(
        settings: Settings, embedder: Any, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    docs = tmp_path / "docs"
    write(docs / "a.md", "# Anvil\n\nThe anvil weighs forty kilograms.\n")
    write(docs / "b.md", "# Bellows\n\nThe Zephyrine bellows feed the forge.\n")
    sync_paths(settings, [docs], embedder=embedder)
    store = opened(settings)
    current = (store.lexical_dir / "CURRENT").read_text()
    # chunks change behind the index's back, with no DIRTY marker (an older version's reader
    # saved it, or a bug): the count no longer matches what the index recorded
    store.delete_chunks(store.chunk_ids_for(next(
        r.key for r in store.file_records().values() if r.source == "b.md")))
    assert store.lexical_is_dirty()
    with caplog.at_level(logging.WARNING, logger="rag_app.index.store"):
        index = store.load_lexical()
    assert "stale" in caplog.text
    assert index.saved_in is None and len(index) == store.count()
    assert index.search("Zephyrine", 3) == []
    assert (store.lexical_dir / "CURRENT").read_text() == current  # the reader saved nothing

    write(docs / "b.md", "# Bellows\n\nThe Zephyrine bellows feed the forge (v2).\n")
    sync_paths(settings, [docs], embedder=embedder)  # the next writer repairs and saves it
    assert_saved_index_matches(settings)


@pytest.mark.server
def test_each_host_sees_another_hosts_writes_through_the_generation(
        chroma_server: tuple[str, int], embedder: Any, tmp_path: Path) -> None:
    """Server mode: the BM25 folder is per host. A write from host A (same chunk count) makes
    host B's saved index stale through the write generation in the catalog."""
    host, port = chroma_server
    collection = f"gen-{os.getpid()}-{time.monotonic_ns()}"
    host_a = make_settings(tmp_path / "a", chroma_host=host, chroma_port=port,
                           collection=collection)
    host_b = make_settings(tmp_path / "b", chroma_host=host, chroma_port=port,
                           collection=collection)
    docs = tmp_path / "docs"
    write(docs / "a.md", "The Marlowe ladder has nine rungs.\n")
    sync_paths(host_a, [docs], embedder=embedder)
    sync_paths(host_b, [docs], embedder=embedder)  # nothing to do; B saves its own index
    assert_saved_index_matches(host_b)
    count = opened(host_b).count()

    write(docs / "a.md", "The Pemberton ladder has nine rungs.\n")
    sync_paths(host_a, [docs], embedder=embedder)
    store_b = opened(host_b)
    assert store_b.count() == count  # the count alone would not tell
    assert store_b.lexical_is_dirty()
    index = store_b.load_lexical()
    assert index.saved_in is None and index.search("Pemberton", 1)


# -- item 8: the writer lease in server mode ----------------------------------------------------
@pytest.fixture
def server_settings(chroma_server: tuple[str, int], tmp_path: Path) -> Settings:
    host, port = chroma_server
    return make_settings(tmp_path / "state", chroma_host=host, chroma_port=port,
                         collection=f"lease-{os.getpid()}-{time.monotonic_ns()}")


def lease_row(settings: Settings) -> dict[str, Any] | None:
    catalog = store_module._catalog(store_module.make_client(settings))
    return store_module._read_lease(catalog, f"lease:{settings.collection}")


class Holder:
    """`writer_lock` held in another thread until `release` is set."""

    def __init__(self, settings: Settings, command: str) -> None:
        self.held = threading.Event()
        self.release = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(settings, command), daemon=True)
        self.thread.start()
        assert self.held.wait(60) or self.error is not None

    def _run(self, settings: Settings, command: str) -> None:
        try:
            with writer_lock(settings, command):
                self.held.set()
                self.release.wait(120)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            self.error = exc
            self.held.set()

    def done(self) -> None:
        self.release.set()
        self.thread.join(60)
        assert not self.thread.is_alive() and self.error is None


@pytest.mark.server
def test_a_second_server_writer_is_refused_until_the_lease_is_released(
        server_settings: Settings) -> None:
    first = Holder(server_settings, "python -m ingest ./docs")
    assert first.error is None
    row = lease_row(server_settings)
    assert row is not None and row["pid"] == os.getpid()
    with pytest.raises(StoreLocked) as err, writer_lock(server_settings, "second"):
        pass
    message = str(err.value)
    assert f"process {os.getpid()}" in message and "python -m ingest ./docs" in message
    assert server_settings.collection in message and "lease expires" in message
    assert lease_row(server_settings) == row  # the refused writer changed nothing

    first.done()
    assert lease_row(server_settings) is None  # released at exit
    with writer_lock(server_settings, "after release"):
        assert (lease_row(server_settings) or {}).get("command") == "after release"


@pytest.mark.server
def test_a_server_lease_is_renewed_while_held_and_taken_over_once_its_holder_died(
        server_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    ttl = 3.0
    monkeypatch.setattr(store_module, "LEASE_TTL_S", ttl)
    code = (
        "import sys, time\n"
        "from rag_app.index import store\n"
        "from tests.conftest import make_settings\n"
        f"store.LEASE_TTL_S = {ttl}\n"
        "s = make_settings(__import__('pathlib').Path(sys.argv[1]), chroma_host=sys.argv[2],\n"
        "                  chroma_port=int(sys.argv[3]), collection=sys.argv[4])\n"
        "with store.writer_lock(s, 'python -m ingest ./crashing'):\n"
        "    print('held', flush=True)\n"
        "    time.sleep(600)\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code, str(server_settings.state_dir),
         str(server_settings.chroma_host), str(server_settings.chroma_port),
         server_settings.collection],
        cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "held"
        time.sleep(ttl * 1.5)  # longer than the TTL: the holder's thread renews it
        with pytest.raises(StoreLocked, match=f"process {child.pid} on .*crashing"):
            with writer_lock(server_settings, "second"):
                pass
        child.send_signal(signal.SIGKILL)  # dies holding it: no release
        child.wait(10)
        assert lease_row(server_settings) is not None
        deadline = time.monotonic() + ttl + 5
        while True:
            try:
                with writer_lock(server_settings, "takes over"):
                    assert (lease_row(server_settings) or {}).get("command") == "takes over"
                break
            except StoreLocked:
                assert time.monotonic() < deadline, "the expired lease was never taken over"
                time.sleep(0.5)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)


@pytest.mark.server
def test_a_server_writer_that_loses_the_write_race_refuses(
        server_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both read a free lease and write theirs; the later write wins, so the first writer,
    reading back after the pause, finds the other's row and refuses."""
    catalog = store_module._catalog(store_module.make_client(server_settings))
    lease_id = f"lease:{server_settings.collection}"
    rival = {"token": "rival", "pid": 4242, "host": "elsewhere", "command": "python -m ingest x",
             "since": "now"}

    def rival_writes_meanwhile(seconds: float) -> None:
        store_module._write_lease(catalog, lease_id, rival, 60.0)

    monkeypatch.setattr(store_module, "_lease_pause", rival_writes_meanwhile)
    with pytest.raises(StoreLocked, match="process 4242 on elsewhere"):
        with writer_lock(server_settings, "loser"):
            pass
    assert (lease_row(server_settings) or {}).get("token") == "rival"


# -- E.19: two syncs in two threads of one process -----------------------------------------------
def test_a_second_sync_in_another_thread_is_refused_at_once_never_interleaved(
        settings: Settings, embedder: Any, tmp_path: Path) -> None:
    """The second `sync_paths` (as a second UI job could make) gets StoreLocked at once; it
    does not wait. Nothing of it reaches the store."""
    first_docs, second_docs = tmp_path / "first", tmp_path / "second"
    write(first_docs / "a.md", "# Anvil\n\nThe anvil weighs forty kilograms.\n")
    write(second_docs / "b.md", "# Bellows\n\nThe bellows feed the forge with air.\n")
    gate = Gate(hold_in_start=True)
    first = Background(settings, [first_docs], embedder, gate)
    assert gate.reached.wait(120)  # the first run holds the lock and is about to write
    before = opened(settings).file_records()
    started = time.monotonic()
    with pytest.raises(StoreLocked, match=f"process {os.getpid()}"):
        sync_paths(settings, [second_docs], embedder=embedder)
    assert time.monotonic() - started < 10  # refused, not queued
    assert opened(settings).file_records() == before

    gate.release.set()
    assert first.result().counts()["ingested"] == 1
    assert sync_paths(settings, [second_docs], embedder=embedder).counts()["ingested"] == 1
    assert sorted(r.source for r in opened(settings).file_records().values()) == ["a.md", "b.md"]
    assert_no_duplicates(settings)
    assert_saved_index_matches(settings)


# -- item 20 / E.18: overlapping folders ---------------------------------------------------------
def overlap_corpus(root: Path) -> Path:
    write(root / "a.md", "# Anvil\n\nThe anvil weighs forty kilograms.\n")
    write(root / "sub" / "b.md", "# Bellows\n\nThe bellows feed the forge with air.\n")
    write(root / "sub" / "c.md", "# Crucible\n\nThe crucible melts bronze.\n")
    return root


def keys(settings: Settings) -> set[tuple[str, str]]:
    return {(r.root, r.source) for r in opened(settings).file_records().values()}


def test_a_path_inside_an_indexed_folder_is_synced_under_that_folders_keys(
        settings: Settings, embedder: Any, tmp_path: Path) -> None:
    docs = overlap_corpus(tmp_path / "docs")
    sync_paths(settings, [docs], embedder=embedder)
    first = keys(settings)
    count = opened(settings).count()

    report = sync_paths(settings, [docs / "sub"], embedder=embedder)
    assert report.counts()["unchanged"] == 2 and report.chunks_added == 0
    report = sync_paths(settings, [docs / "sub" / "b.md"], embedder=embedder)
    assert report.counts()["unchanged"] == 1 and report.chunks_added == 0
    assert keys(settings) == first and opened(settings).count() == count

    # edits inside the subfolder are synced there, under the outer folder's keys
    write(docs / "sub" / "b.md", "# Bellows\n\nThe leather bellows feed the forge.\n")
    (docs / "sub" / "c.md").unlink()
    write(docs / "sub" / "d.md", "# Dross\n\nSkim the dross before pouring.\n")
    (docs / "a.md").unlink()  # outside the subfolder: not this run's business
    report = sync_paths(settings, [docs / "sub"], embedder=embedder)
    outcome = {o.source: o.status for o in report.outcomes}
    assert outcome == {"sub/b.md": "updated", "sub/c.md": "removed", "sub/d.md": "ingested"}
    assert keys(settings) == {(str(docs), "a.md"), (str(docs), "sub/b.md"),
                              (str(docs), "sub/d.md")}
    assert_no_duplicates(settings)
    assert_saved_index_matches(settings)


def test_a_folder_holding_an_indexed_folder_leaves_its_files_under_their_own_keys(
        settings: Settings, embedder: Any, tmp_path: Path) -> None:
    docs = overlap_corpus(tmp_path / "docs")
    sub = docs / "sub"
    sync_paths(settings, [sub], embedder=embedder)
    report = sync_paths(settings, [docs], embedder=embedder)
    outcome = {(o.root, o.source): o.status for o in report.outcomes}
    assert outcome == {(str(docs), "a.md"): "ingested", (str(sub), "b.md"): "unchanged",
                       (str(sub), "c.md"): "unchanged"}
    assert report.chunks_added == opened(settings).file_records()[f"{docs}::a.md"].chunks
    assert keys(settings) == {(str(docs), "a.md"), (str(sub), "b.md"), (str(sub), "c.md")}

    # the indexed folder inside is synced whole by the outer run: deletions included
    (sub / "c.md").unlink()
    report = sync_paths(settings, [docs], embedder=embedder)
    assert {o.source: o.status for o in report.outcomes if o.status != "unchanged"} == {
        "c.md": "removed"}
    assert keys(settings) == {(str(docs), "a.md"), (str(sub), "b.md")}
    assert_no_duplicates(settings)
    assert_saved_index_matches(settings)


def test_overlapping_paths_given_together_store_each_file_once(
        settings: Settings, embedder: Any, tmp_path: Path) -> None:
    docs = overlap_corpus(tmp_path / "docs")
    report = sync_paths(settings, [docs / "sub", docs, docs / "sub" / "b.md"],
                        embedder=embedder)
    assert report.counts()["ingested"] == 3
    assert keys(settings) == {(str(docs), "a.md"), (str(docs), "sub/b.md"),
                              (str(docs), "sub/c.md")}
    assert_no_duplicates(settings)


def test_a_hidden_folder_given_on_its_own_keeps_its_own_keys(
        settings: Settings, embedder: Any, tmp_path: Path) -> None:
    """A walk of docs skips docs/.private, so files given from there are not docs' files: a
    later `ingest docs` must not take them as deleted."""
    docs = overlap_corpus(tmp_path / "docs")
    private = docs / ".private"
    write(private / "p.md", "# Padlock\n\nThe padlock code is kept elsewhere.\n")
    sync_paths(settings, [docs], embedder=embedder)
    sync_paths(settings, [private], embedder=embedder)
    report = sync_paths(settings, [docs], embedder=embedder)
    assert not [o for o in report.outcomes if o.status == "removed"]
    assert (str(private), "p.md") in keys(settings)
    assert_no_duplicates(settings)
