"""Uploads in the chat UI lose nothing (REVIEW-ui-security M3, M5, L3, L6, L9): different names
never share a stored file, a delete never removes a newer upload, failed uploads stay listed,
temp files are private and never shared, and upload budgets say what to do."""

from __future__ import annotations

import stat
import threading
from pathlib import Path
from typing import Any

import pytest

from rag_app.errors import ConfigError
from tests.conftest import make_settings


@pytest.fixture
def settings(tmp_path: Path) -> Any:
    return make_settings(tmp_path / "state", documents_dir=tmp_path / "uploads")


def _stored(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


@pytest.mark.parametrize("first, second", [("报告.pdf", "日本.pdf"),
                                           ("résumé.pdf", "r?sum?.pdf"),
                                           ("Договор аренды.md", "Договор оренди.md"),
                                           ("a" * 120 + "1.md", "a" * 120 + "2.md")])
def test_two_names_that_map_to_one_safe_name_are_both_kept(settings: Any, first: str,
                                                           second: str) -> None:
    from rag_app.ui.services import read_manifest, save_upload

    a = save_upload(settings, first, b"%PDF-1.4 first file\n")
    b = save_upload(settings, second, b"%PDF-1.4 second file\n")
    assert a != b and a.parent == b.parent
    assert a.read_bytes().endswith(b" first file\n")
    assert b.read_bytes().endswith(b" second file\n")
    manifest = read_manifest(a.parent)
    assert manifest[a.name].name == first and manifest[b.name].name == second  # for display
    # each name again: a new version replaces its own file, never the other one
    assert save_upload(settings, second, b"%PDF-1.4 second, v2\n") == b
    assert save_upload(settings, first, b"%PDF-1.4 first, v2\n") == a
    assert a.read_bytes().endswith(b"first, v2\n") and b.read_bytes().endswith(b"second, v2\n")
    assert len(_stored(a.parent)) == 2


def test_the_same_name_and_content_is_one_file(settings: Any) -> None:
    from rag_app.ui.services import save_upload

    a = save_upload(settings, "notes.md", b"# Notes\n")
    mtime = a.stat().st_mtime_ns
    assert save_upload(settings, "notes.md", b"# Notes\n") == a
    assert a.stat().st_mtime_ns == mtime and _stored(a.parent) == ["notes.md"]


def test_a_file_put_in_the_folder_by_hand_is_not_replaced_by_another_name(settings: Any
                                                                          ) -> None:
    from rag_app.ui.services import save_upload, uploads_dir

    folder = uploads_dir(settings)
    (folder / "__.pdf").write_bytes(b"by hand")
    saved = save_upload(settings, "报告.pdf", b"%PDF-1.4 uploaded")
    assert saved.name != "__.pdf" and (folder / "__.pdf").read_bytes() == b"by hand"


def test_uploads_are_private_and_leave_no_temp_files(settings: Any) -> None:
    from rag_app.ui.services import save_upload

    saved = save_upload(settings, "x.md", b"# X\n")
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert stat.S_IMODE(saved.parent.stat().st_mode) == 0o700
    with pytest.raises(ConfigError, match="empty"):
        save_upload(settings, "y.md", b"")
    assert not [p for p in saved.parent.iterdir() if p.name.endswith(".part")]


def test_concurrent_uploads_of_one_name_never_fail(settings: Any) -> None:
    """The old fixed `.name.part` path made one of two sessions fail (REVIEW L9)."""
    from rag_app.ui.services import save_upload

    errors: list[BaseException] = []

    def upload(i: int) -> None:
        try:
            save_upload(settings, "same.md", f"# version {i}\n".encode() * 20000)
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=upload, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    folder = settings.documents_dir.resolve()
    assert _stored(folder) == ["same.md"]
    assert not [p for p in folder.iterdir() if p.name.endswith(".part")]


def test_leftover_temp_files_are_swept(settings: Any) -> None:
    import os

    from rag_app.ui.services import sweep_parts, uploads_dir

    folder = uploads_dir(settings)
    old = folder / ".a.md.x1.part"
    old.write_bytes(b"x")
    os.utime(old, (1, 1))
    fresh = folder / ".b.md.x2.part"
    fresh.write_bytes(b"x")
    assert sweep_parts(folder) == 1 and not old.exists() and fresh.exists()


def test_an_upload_over_the_limit_is_refused_in_mb_below_one(tmp_path: Path) -> None:
    from rag_app.ui.services import save_upload

    settings = make_settings(tmp_path / "s", documents_dir=tmp_path / "u", upload_max_mb=0.5)
    save_upload(settings, "small.md", b"x" * 400_000)
    with pytest.raises(ConfigError, match="RAG_UPLOAD_MAX_MB"):
        save_upload(settings, "big.md", b"x" * 600_000)
    assert _stored(tmp_path / "u") == ["small.md"]


def test_an_upload_batch_has_a_file_and_byte_budget(tmp_path: Path) -> None:
    from rag_app.ui.services import check_upload_batch

    settings = make_settings(tmp_path, upload_max_files=3, upload_batch_max_mb=1)
    check_upload_batch(settings, [("a.md", 300_000)] * 3)
    with pytest.raises(ConfigError, match=r"at most 3 .*RAG_UPLOAD_MAX_FILES"):
        check_upload_batch(settings, [("a.md", 10)] * 4)
    with pytest.raises(ConfigError, match=r"RAG_UPLOAD_BATCH_MAX_MB.*smaller groups"):
        check_upload_batch(settings, [("a.md", 600_000), ("b.md", 600_000)])


def test_a_delete_asked_before_a_new_upload_of_the_name_keeps_the_new_file(settings: Any
                                                                           ) -> None:
    from rag_app.ui.services import file_identity, remove_upload_files, save_upload

    old = save_upload(settings, "foo.md", b"# Foo v1\n")
    asked = file_identity(old)  # what submit_delete records
    new = save_upload(settings, "foo.md", b"# Foo v2\n")  # arrives while the delete waits
    assert new == old
    assert remove_upload_files(settings, [old], [asked]) == [old]
    assert new.read_bytes() == b"# Foo v2\n"
    # a file that did not exist when the delete was asked is not the one it meant
    late = settings.documents_dir.resolve() / "late.md"
    assert remove_upload_files(settings, [late], [None]) == []
    late2 = save_upload(settings, "late.md", b"# Late\n")
    assert remove_upload_files(settings, [late2], [None]) == [late2] and late2.exists()
    # asked again, it goes
    assert remove_upload_files(settings, [new], [file_identity(new)]) == []
    assert not new.exists()


@pytest.mark.slow
def test_delete_queued_behind_an_upload_of_the_same_name_removes_nothing_new(
        settings: Any, embedder: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The review's reproduction (M5) through `Services`: a busy worker, delete(foo.md)
    queued, then foo.md v2 and bar.md uploaded. Both new files stay and are indexed, and
    the upload job does not fail."""
    import rag_app.embedders.auto
    from ingest.entry import sync_paths
    from rag_app.service import index_overview
    from rag_app.ui import services as services_module
    from rag_app.ui.services import Services, save_upload

    monkeypatch.setattr(rag_app.embedders.auto, "make_embedder", lambda s: embedder)
    monkeypatch.setattr(Services, "_warm_llm", lambda self: None)
    gate = threading.Event()
    real = services_module.run_ingest

    def run_ingest(s: Any, job: Any, emb: Any) -> None:
        if job.label == "busy":
            gate.wait(30)
        real(s, job, emb)

    monkeypatch.setattr(services_module, "run_ingest", run_ingest)
    foo = save_upload(settings, "foo.md", b"# Foo\n\nThe first version of foo.\n")
    sync_paths(settings, [foo], embedder=embedder)
    key = next(r.key for r in index_overview(settings).files if r.source == "foo.md")
    svc = Services(settings)
    svc.submit_ingest([], label="busy")
    deleting = svc.submit_delete([key], label="delete foo.md", delete_files=[foo])
    foo2 = save_upload(settings, "foo.md", b"# Foo\n\nThe second version of foo.\n")
    bar = save_upload(settings, "bar.md", b"# Bar\n\nBar is another document.\n")
    uploading = svc.submit_ingest([foo2, bar], label="upload foo.md, bar.md")
    gate.set()
    for _ in range(600):
        if not svc.busy():
            break
        threading.Event().wait(0.1)
    assert deleting.state == "done" and uploading.state == "done", uploading.error
    assert foo2.read_bytes().endswith(b"second version of foo.\n") and bar.is_file()
    assert {r.source for r in index_overview(settings).files} == {"foo.md", "bar.md"}


def test_a_deleted_path_is_one_failed_outcome_not_a_failed_job(settings: Any) -> None:
    from rag_app.ui.services import Job, run_ingest, uploads_dir

    gone = uploads_dir(settings) / "gone.md"
    job = Job(1, "ingest", "upload gone.md", paths=[gone])
    run_ingest(settings, job, None)
    assert [o["status"] for o in job.outcomes] == ["failed"]
    assert "removed before" in job.outcomes[0]["reason"]


@pytest.mark.slow
def test_a_failed_upload_is_recorded_for_the_documents_page(settings: Any, embedder: Any
                                                            ) -> None:
    from rag_app.errors import StoreLocked
    from rag_app.index.store import writer_lock
    from rag_app.ui.services import Job, read_manifest, run_ingest, save_upload

    with pytest.raises(ConfigError, match=r"archive\.pdf is not a PDF.*save it as PDF"):
        save_upload(settings, "archive.pdf", b"PK\x03\x04 not a pdf at all")
    assert not (settings.documents_dir / "archive.pdf").exists()
    bad = save_upload(settings, "archive.pdf", b"%PDF-1.4\nbut nothing a PDF reader can use")
    job = Job(1, "ingest", "upload archive.pdf", paths=[bad])
    run_ingest(settings, job, embedder)
    record = read_manifest(bad.parent)["archive.pdf"]
    assert record.state == "failed" and record.reason
    locked = save_upload(settings, "locked.md", b"# Locked\n\ntext\n")
    with writer_lock(settings, "python -m ingest docs"), pytest.raises(StoreLocked):
        run_ingest(settings, Job(2, "ingest", "upload locked.md", paths=[locked]), embedder)
    record = read_manifest(bad.parent)["locked.md"]
    assert record.state == "failed" and "python -m ingest docs" in record.reason
    ok = save_upload(settings, "ok.md", b"# Fine\n\nA fine document.\n")
    run_ingest(settings, Job(3, "ingest", "upload ok.md", paths=[ok]), embedder)
    assert read_manifest(bad.parent)["ok.md"].state == "indexed"


# -- the Documents page (AppTest) ---------------------------------------------------------------
@pytest.mark.slow
def test_the_documents_page_lists_failed_uploads_and_keeps_budgets(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """RAG_UPLOAD_MAX_MB=0.5 renders (it crashed: REVIEW L3); a batch over
    RAG_UPLOAD_MAX_FILES is refused with what to do (L6); a failed upload is listed with retry
    and delete, and delete removes it (M5)."""
    import time

    from streamlit import config
    from streamlit.testing.v1 import AppTest

    from rag_app.ui.services import update_manifest
    from tests.test_ui import APP, DOCS_PAGE

    uploads = tmp_path / "uploads"
    uploads.mkdir()
    (uploads / "archive.pdf").write_bytes(b"PK\x03\x04 a zip")
    update_manifest(uploads, "archive.pdf", name="archive.pdf", state="failed",
                    reason="not a readable PDF")
    (uploads / "later.md").write_bytes(b"# Later\n\nThe Quibble lamp needs a 9 V battery.\n")
    update_manifest(uploads, "later.md", name="later.md", state="failed",
                    reason="the store was being written by python -m ingest docs")
    for name in ("OPENAI_API_KEY", "CHROMA_HOST", "RAG_LLM_MODEL_PATH"):
        monkeypatch.delenv(name, raising=False)
    for name, value in {"RAG_STATE_DIR": str(tmp_path / "state"),
                        "RAG_COLLECTION": "uploads-page", "RAG_CHATS_DIR": str(tmp_path / "c"),
                        "RAG_DOCUMENTS_DIR": str(uploads), "RAG_UPLOAD_MAX_MB": "0.5",
                        "RAG_UPLOAD_MAX_FILES": "2", "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
                        "RAG_LLM_MODEL": "none", "RAG_LLM_MAX_RETRIES": "0"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    before = config.get_option("server.address")
    config.set_option("server.address", "127.0.0.1")
    try:
        at = AppTest.from_file(APP, default_timeout=180).run()
        at.switch_page(DOCS_PAGE)
        at = at.run()
        assert not at.exception, [e.value for e in at.exception]
        table = at.dataframe[0].value
        assert list(table["file"]) == ["archive.pdf", "later.md"]
        assert list(table["status"]) == ["failed", "failed"]
        assert "not a readable PDF" in set(table["reason"])
        at.file_uploader[0].set_value([(f"{n}.md", b"# N\n\ntext\n", "text/markdown")
                                       for n in "abc"])
        at = at.run()
        at = at.button(key="upload-go").click().run()
        assert not at.exception, [e.value for e in at.exception]
        shown = "\n".join(str(e.value) for e in at.error).replace("\\", "")
        assert "RAG_UPLOAD_MAX_FILES" in shown and not (uploads / "a.md").exists()
        at.selectbox(key="upload-pick").set_value("later.md")
        at = at.button(key="upload-retry").click().run()
        for _ in range(600):  # the retry indexes it: it moves to the indexed files
            at = at.run()
            tables = [t.value for t in at.dataframe]
            if any("later.md" in set(t["file"]) and "chunks" in t for t in tables):
                break
            time.sleep(0.2)
        assert not at.exception, [e.value for e in at.exception]
        assert list(at.dataframe[0].value["file"]) == ["archive.pdf"]
        at.selectbox(key="upload-pick").set_value("archive.pdf")
        at = at.button(key="upload-delete").click().run()
        for _ in range(100):
            if not (uploads / "archive.pdf").exists():
                break
            time.sleep(0.1)
        assert not (uploads / "archive.pdf").exists()
    finally:
        config.set_option("server.address", before)
