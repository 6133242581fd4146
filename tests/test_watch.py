"""`python -m ingest PATH --watch` (ingest/watch.py): the index follows a folder as files are
added, changed, renamed and deleted; bursts are synced together; the writer lock is respected;
Ctrl+C and a stop end it cleanly. Real Chroma, the real bundled model, real file events."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from ingest.entry import sync_line, sync_status, time_ago
from ingest.watch import Round, round_line, watch_and_sync
from rag_app.index.store import Store, writer_lock
from rag_app.settings import Settings
from tests.conftest import REPO, make_settings

pytestmark = pytest.mark.slow

QUIET_MS = 300  # shorter than the default second: the tests wait less


def wait_for(what: Callable[[], Any], timeout: float = 60.0, every: float = 0.1) -> Any:
    """Poll `what` until it returns something true; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = what()
        if got:
            return got
        time.sleep(every)
    pytest.fail(f"not within {timeout:.0f} s: {getattr(what, '__doc__', None) or what}")


class Watch:
    """watch_and_sync in a thread, its rounds collected."""

    def __init__(self, settings: Settings, folder: Path, embedder: Any, **options: Any) -> None:
        self.settings, self.folder = settings, folder
        self.rounds: list[Round] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None
        options.setdefault("quiet_ms", QUIET_MS)

        def run() -> None:
            try:
                watch_and_sync(settings, [folder], on_round=self.rounds.append, stop=self.stop,
                               embedder=embedder, **options)
            except BaseException as exc:  # noqa: BLE001 - the test reports it
                self.error = exc

        self.thread = threading.Thread(target=run, daemon=True)

    def sources(self) -> set[str]:
        store = Store.open(self.settings)
        return set() if store is None else {r.source for r in store.file_records().values()}

    def search(self, text: str) -> set[str]:
        """The files whose passages a fresh retriever finds for `text` (BM25: exact words)."""
        from rag_app.retrieve import RetrievalOptions, Retriever

        retriever = Retriever(self.settings, embedder=self.embedder)
        hits = retriever.search(text, RetrievalOptions(k=3, mode="lexical"))
        return {h.source for h in hits if text.lower() in h.text.lower()}

    embedder: Any = None


@contextmanager
def watching(settings: Settings, folder: Path, embedder: Any, **options: Any) -> Iterator[Watch]:
    w = Watch(settings, folder, embedder, **options)
    w.embedder = embedder
    w.thread.start()
    try:
        wait_for(lambda: w.rounds or w.error, 120)  # the first sync
        assert w.error is None, w.error
        yield w
    finally:
        w.stop.set()
        w.thread.join(timeout=30)
    assert not w.thread.is_alive(), "the watch did not stop within 30 s of its stop event"
    assert w.error is None, w.error


def test_the_index_follows_adds_changes_renames_and_deletes(settings: Settings, tmp_path: Path,
                                                            embedder: Any) -> None:
    docs = tmp_path / "docs"
    (docs / "guide").mkdir(parents=True)
    (docs / "guide" / "kettle.md").write_text("# Kettle\n\nThe Aurora kettle boils water.\n")
    with watching(settings, docs, embedder) as w:
        assert w.rounds[0].report is not None and w.sources() == {"guide/kettle.md"}
        status = sync_status(settings)
        assert status.watching == [str(docs.resolve())] and status.last_synced is not None

        (docs / "zebra.md").write_text("# Zebra\n\nZebra crossing codes QX77 are listed.\n")
        assert wait_for(lambda: w.search("QX77") == {"zebra.md"})

        (docs / "zebra.md").write_text("# Zebra\n\nZebra crossing codes QY88 replace them.\n")
        assert wait_for(lambda: w.search("QY88") == {"zebra.md"})
        assert w.search("QX77") == set()  # the old passage left with the old version

        (docs / "zebra.md").rename(docs / "guide" / "stripes.md")  # a rename across folders
        assert wait_for(lambda: w.sources() == {"guide/kettle.md", "guide/stripes.md"})
        assert w.search("QY88") == {"guide/stripes.md"}

        (docs / "guide" / "kettle.md").unlink()
        assert wait_for(lambda: w.sources() == {"guide/stripes.md"})
        assert w.search("Aurora") == set()

        (docs / "guide").rename(docs / "moved")  # a whole folder: only the folder gets events
        assert wait_for(lambda: w.sources() == {"moved/stripes.md"})

        (docs / ".notes.md").write_text("hidden: never indexed\n")  # ignored, no sync
        (docs / "draft.md~").write_text("an editor's backup\n")
        time.sleep(1.0)  # nothing to wait for: a sync would have run by now
    changed = [r for r in w.rounds[1:] if r.changed_anything]
    assert all(r.report and not r.report.failed for r in changed)
    assert not any(".notes.md" in name or "draft.md~" in name
                   for r in w.rounds for name in r.changed)
    assert sync_status(settings).watching == []  # the stop cleared the watcher's status


def test_a_burst_of_writes_is_one_or_few_syncs(tmp_path: Path, embedder: Any) -> None:
    settings = make_settings(tmp_path / "state")
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "first.md").write_text("The first note.\n")
    with watching(settings, docs, embedder, quiet_ms=1000) as w:  # the default quiet second
        for n in range(30):
            (docs / f"note{n:02}.md").write_text(f"Note number {n} mentions token T{n}X.\n")
            time.sleep(0.02)
        wait_for(lambda: len(w.sources()) == 31)
        time.sleep(1.5)  # a late round would show now
    resyncs = [r for r in w.rounds[1:] if r.changed_anything]
    assert 1 <= len(resyncs) <= 2, [round_line(r) for r in resyncs]
    assert sum(r.report.chunks_added for r in resyncs if r.report) == 30


def test_a_bad_file_is_reported_and_watching_goes_on(tmp_path: Path, embedder: Any) -> None:
    settings = make_settings(tmp_path / "state")
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "ok.md").write_text("A good note about kettles.\n")
    with watching(settings, docs, embedder) as w:
        (docs / "broken.pdf").write_bytes(b"%PDF-1.7\nthis is not a PDF at all\n")
        failed = wait_for(lambda: [r for r in w.rounds if r.report and r.report.failed])
        line = round_line(failed[0])
        assert "1 failed: broken.pdf" in line
        (docs / "later.md").write_text("Written after the broken one: Quokka.\n")
        assert wait_for(lambda: w.search("Quokka") == {"later.md"})


def test_a_sync_waits_for_another_writer(tmp_path: Path, embedder: Any) -> None:
    """One writer at a time: a change while another process holds the lock is synced once
    the lock is free, and the wait is said once."""
    settings = make_settings(tmp_path / "state")
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("Alpha.\n")
    with watching(settings, docs, embedder, retry_s=0.3) as w:
        with writer_lock(settings, "python -m ingest elsewhere"):
            (docs / "b.md").write_text("Bravo.\n")
            locked = wait_for(lambda: [r for r in w.rounds if r.retry])
            assert "python -m ingest elsewhere" in locked[0].error
            assert "trying again" in round_line(locked[0])
            assert w.sources() == {"a.md"}
        assert wait_for(lambda: w.sources() == {"a.md", "b.md"})


def test_ctrl_c_ends_the_cli_watch_with_130_and_one_line(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("Alpha note.\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAG_", "CHROMA_"))}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", RAG_COLLECTION="test-watch",
               RAG_EMBEDDING_MODEL="sentence-transformers/all-MiniLM-L6-v2")
    out, err = tmp_path / "out.txt", tmp_path / "err.txt"
    with out.open("w") as o, err.open("w") as e:
        proc = subprocess.Popen([sys.executable, "-m", "ingest", str(docs), "--watch",
                                 "--store", str(tmp_path / "state")],
                                cwd=tmp_path, env={**env, "PYTHONPATH": str(REPO)},
                                stdout=o, stderr=e)
        try:
            wait_for(lambda: "for changes (Ctrl+C stops)" in err.read_text(), 180, 0.2)
            (docs / "b.md").write_text("Bravo note.\n")
            wait_for(lambda: "+b.md" in out.read_text(), 60, 0.2)
            proc.send_signal(signal.SIGINT)
            code = proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
    lines = out.read_text().splitlines()
    assert lines[0].split(" ", 1)[1].startswith("start: +a.md; 1 passages added"), lines
    assert " sync: +b.md; 1 passages added, 0 removed, 2 in the index" in lines[1], lines
    assert code == 130
    assert err.read_text().strip().splitlines()[-1].startswith("stopped watching")


def test_watch_refuses_dry_run_and_serve_watch_needs_docs(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]
                                                          ) -> None:
    from ingest.cli import main as ingest_main
    from rag_app.cli import main as rag_main

    monkeypatch.chdir(tmp_path)
    assert ingest_main([str(tmp_path), "--watch", "--dry-run"]) == 2
    assert "--dry-run" in capsys.readouterr().err
    assert rag_main(["serve", "--watch"]) == 2
    assert "--docs" in capsys.readouterr().err
    assert "RAG_WATCH" in subprocess.run([sys.executable, "-m", "rag_app", "serve", "--help"],
                                         capture_output=True, text=True, cwd=REPO).stdout


def test_the_last_sync_is_said_in_time_ago() -> None:
    assert time_ago(100.0, now=102.0) == "just now"
    assert time_ago(100.0, now=140.0) == "40 s ago"
    assert time_ago(0.0, now=3 * 60 + 5) == "3 min ago"
    assert time_ago(0.0, now=86400 + 10) == "1 day ago"
    from ingest.entry import SyncStatus

    line = sync_line(SyncStatus(last_synced=0.0, failed=1, watching=["/srv/docs"]), now=7300)
    assert line.startswith("Last synced 2 h ago (") and "1 file(s) failed" in line
    assert line.endswith("Watching docs: changes are synced within seconds.")
    assert sync_line(SyncStatus()).startswith("Not synced on this machine yet.")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_watch_keeps_the_docs_folder_in_sync_and_ctrl_c_ends_both(tmp_path: Path) -> None:
    """`rag serve --docs DIR --watch`: the chat runs (a child process) while this one syncs;
    Ctrl+C (to the process group, as a terminal sends it) ends both with 130."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("Alpha note.\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAG_", "CHROMA_", "OPENAI"))}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", RAG_COLLECTION="test-serve",
               RAG_STATE_DIR=str(tmp_path / "state"), PYTHONPATH=str(REPO),
               RAG_EMBEDDING_MODEL="sentence-transformers/all-MiniLM-L6-v2",
               OPENAI_BASE_URL="http://127.0.0.1:9/v1", RAG_LLM_MODEL="none")
    err = tmp_path / "err.txt"
    with err.open("w") as e:
        proc = subprocess.Popen([sys.executable, "-m", "rag_app", "serve", "--docs", str(docs),
                                 "--watch", "--port", str(_free_port())], cwd=tmp_path, env=env,
                                stdout=e, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_for(lambda: " start: " in err.read_text(), 180, 0.2)
            settings = make_settings(tmp_path / "state", collection="test-serve")
            status = sync_status(settings)
            assert status.watching == [str(docs.resolve())] and status.last_synced
            (docs / "b.md").write_text("Bravo note.\n")
            wait_for(lambda: " sync: +b.md; 1 passages added" in err.read_text(), 60, 0.2)
            os.killpg(proc.pid, signal.SIGINT)
            code = proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    assert code == 130, err.read_text()[-2000:]
    assert sync_status(settings).watching == []


def test_the_documents_page_says_when_the_index_last_synced(tmp_path: Path, embedder: Any,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    from streamlit.testing.v1 import AppTest

    from ingest.entry import sync_paths, watching

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("Alpha note.\n")
    settings = make_settings(tmp_path / "state", collection="ui-watch")
    sync_paths(settings, [docs], embedder=embedder)
    for name in ("OPENAI_API_KEY", "CHROMA_HOST", "RAG_LLM_MODEL_PATH"):
        monkeypatch.delenv(name, raising=False)
    for name, value in {"RAG_STATE_DIR": str(tmp_path / "state"), "RAG_COLLECTION": "ui-watch",
                        "RAG_CHATS_DIR": str(tmp_path / "chats"),
                        "RAG_DOCUMENTS_DIR": str(tmp_path / "uploads"),
                        "RAG_EMBEDDING_MODEL": "sentence-transformers/all-MiniLM-L6-v2",
                        "OPENAI_BASE_URL": "http://127.0.0.1:9/v1", "RAG_LLM_MODEL": "none",
                        "RAG_LLM_MAX_RETRIES": "0"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    app = str(REPO / "rag_app" / "ui" / "app.py")
    with watching(settings, [docs], "python -m ingest docs --watch"):
        at = AppTest.from_file(app, default_timeout=180).run()
        at.switch_page("views/documents_page.py")
        at = at.run()
    assert not at.exception, [e.value for e in at.exception]
    captions = re.sub(r"\\(.)", r"\1", "\n".join(str(c.value) for c in at.caption))
    captions = captions.replace("\u2060", "")  # md() escapes Markdown and breaks up links
    assert "Last synced just now" in captions
    assert "Watching docs: changes are synced within seconds." in captions


def test_a_watch_started_while_another_writer_writes_starts_when_it_is_done(
        tmp_path: Path, embedder: Any) -> None:
    """The first sync waits for the lock like the others; --rebuild goes to the first sync
    that runs, not to the one the lock turned away."""
    settings = make_settings(tmp_path / "state")
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("Alpha.\n")
    with writer_lock(settings, "python -m ingest elsewhere"):
        w = Watch(settings, docs, embedder, retry_s=0.3, quiet_ms=QUIET_MS, rebuild=True)
        w.thread.start()
        wait_for(lambda: w.rounds)
        assert w.rounds[0].retry and w.rounds[0].report is None
    try:
        done = wait_for(lambda: [r for r in w.rounds if r.report is not None])
        assert done[0].report is not None and done[0].report.rebuilt
        assert w.sources() == {"a.md"}
    finally:
        w.stop.set()
        w.thread.join(timeout=30)
    assert w.error is None, w.error


def test_a_folder_deleted_and_made_again_is_watched_again(tmp_path: Path, embedder: Any) -> None:
    """Deleting the watched folder takes its file events with it: the failed sync is said, and
    once the folder is back it is watched anew, without waiting for the 10-minute rescan."""
    import shutil

    settings = make_settings(tmp_path / "state")
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("Alpha.\n")
    with watching(settings, docs, embedder, retry_s=0.3) as w:
        shutil.rmtree(docs)
        gone = wait_for(lambda: [r for r in w.rounds if r.error])
        assert "No such file or folder" in gone[0].error and gone[0].retry
        assert w.sources() == {"a.md"}  # a plain sync of a missing folder changes nothing
        since = len(w.rounds)
        docs.mkdir()
        (docs / "a.md").write_text("Alpha.\n")
        wait_for(lambda: any(r.report is not None for r in w.rounds[since:]))  # a retry found it
        (docs / "b.md").write_text("Bravo, written once the folder was back.\n")
        assert wait_for(lambda: w.sources() == {"a.md", "b.md"})
