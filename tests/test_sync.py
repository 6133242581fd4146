"""Sync against real Chroma (embedded and a `chroma run` server) with the real bundled model."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ingest.sync import Ingestor
from rag_app.errors import FingerprintMismatch, StoreLocked
from rag_app.index.store import Store, writer_lock
from rag_app.settings import Settings
from tests.pdfgen import make_pdf

pytestmark = pytest.mark.slow


class CountingEmbedder:
    """The real embedder, counting what it is asked to embed."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.embedded = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def embed_documents(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        self.embedded += len(texts)
        return self.inner.embed_documents(texts, batch_size=batch_size)


LONG_PARAGRAPH = (
    "The Aurora kettle boils one litre of water in three minutes and switches itself off. "
    "Descale it every month with citric acid when the water is hard. "
) * 12


def make_corpus(root: Path) -> Path:
    (root / "guide").mkdir(parents=True)
    (root / "guide" / "setup.md").write_text(
        "---\ntitle: Setup guide\n---\n# Setup\n\nUnpack the kettle.\n\n## Filling\n\n"
        + LONG_PARAGRAPH + "\n\n## Cleaning\n\nRinse with warm water.\n"
    )
    (root / "notes.txt").write_text("Warranty lasts 24 months from the date of purchase.\n")
    (root / "faq.html").write_text(
        "<html><head><title>FAQ</title><script>var leak = 1;</script></head><body>"
        "<nav>Home | Shop</nav><main><h1>FAQ</h1><h2>Is it safe?</h2>"
        "<p>Yes, it has a dry-boil protection.</p></main></body></html>"
    )
    make_pdf(root / "manual.pdf", ["Page one talks about the lid. " * 30,
                                   "Page two covers the filter and the base. " * 30,
                                   "Page three lists error codes E1 to E4."])
    (root / ".hidden.md").write_text("# secret\n")
    (root / "program.exe").write_bytes(b"MZ\x90\x00")
    return root


def run(settings: Settings, embedder: Any, *paths: Path, **kw: Any):  # type: ignore[no-untyped-def]
    return Ingestor(settings, embedder).run(list(paths), **kw)


def state(settings: Settings) -> tuple[set[tuple[str, str]], dict[str, str]]:
    """(chunk id, content hash) pairs and file→hash records: what 'the same state' means."""
    store = Store.open(settings)
    assert store is not None
    chunks = {(i, m["content_hash"]) for ids, metas in store.all_chunks(("metadatas",))
              for i, m in zip(ids, metas, strict=True)}
    files = {r.source: r.sha256 for r in store.file_records().values()}
    return chunks, files


def test_first_run_then_unchanged(settings: Settings, embedder: Any, tmp_path: Path) -> None:
    root = make_corpus(tmp_path / "docs")
    counting = CountingEmbedder(embedder)
    report = run(settings, counting, root)
    counts = report.counts()
    assert counts["ingested"] == 4, report.outcomes
    assert counts["skipped"] == 2  # program.exe and .hidden.md (never read)
    assert {(o.source, o.reason) for o in report.outcomes if o.status == "skipped"} == {
        ("program.exe", "unsupported type"), (".hidden.md", "hidden")}
    assert not report.failed
    assert report.chunks_total == report.chunks_added == counting.embedded > 4

    store = Store.open(settings)
    assert store is not None
    limit = embedder.document_token_limit
    for ids, pairs in store.all_chunks():
        for _id, (text, meta) in zip(ids, pairs, strict=True):
            assert meta["token_count"] <= limit
            assert embedder.count_tokens([text])[0] <= limit
            assert "leak" not in text and "Home | Shop" not in text
            if meta["source"] == "manual.pdf":
                assert 1 <= meta["page_start"] <= meta["page_end"] <= 3
    pdf_pages = {m["page_start"] for _, metas in store.all_chunks(("metadatas",)) for m in metas
                 if m["source"] == "manual.pdf"}
    assert pdf_pages == {1, 2, 3}

    lexical = store.load_lexical()  # built by the run, not on demand
    assert not store.lexical_is_dirty() and len(lexical) == report.chunks_total
    hits = lexical.search("error codes E1 to E4", 3)
    assert hits and store.chunks.get(ids=[hits[0][0]])["metadatas"][0]["source"] == "manual.pdf"

    counting.embedded = 0
    again = run(settings, counting, root)
    assert again.counts()["unchanged"] == 4
    assert counting.embedded == 0 and again.chunks_added == 0
    assert again.chunks_total == report.chunks_total


def test_changes_deletes_and_touches(settings: Settings, embedder: Any, tmp_path: Path) -> None:
    root = make_corpus(tmp_path / "docs")
    run(settings, embedder, root)
    _, files_before = state(settings)
    assert "faq.html" in files_before

    (root / "notes.txt").write_text("Warranty lasts 36 months now. Keep the receipt.\n")
    (root / "faq.html").unlink()
    setup = root / "guide" / "setup.md"
    os.utime(setup, ns=(time.time_ns(), time.time_ns() + 10**9))  # touched, same bytes
    counting = CountingEmbedder(embedder)
    report = run(settings, counting, root)
    by_source = {o.source: o for o in report.outcomes}
    assert by_source["notes.txt"].status == "updated"
    assert by_source["notes.txt"].chunks_removed == 1
    assert by_source["faq.html"].status == "removed"
    assert by_source["guide/setup.md"].status == "unchanged"
    assert counting.embedded == by_source["notes.txt"].chunks_added

    after, files = state(settings)
    assert "faq.html" not in files
    store = Store.open(settings)
    assert store is not None
    texts = [t for _, pairs in store.all_chunks() for t, m in pairs if m["source"] == "notes.txt"]
    assert texts == ["Warranty lasts 36 months now. Keep the receipt."]
    lexical = store.load_lexical()
    assert len(lexical) == len(after)
    top = lexical.search("36 months receipt", 1)[0][0]
    assert store.chunks.get(ids=[top])["documents"][0].startswith("Warranty lasts 36")
    assert len(after) == report.chunks_total

    # the result equals a clean build of the same folder
    clean = settings.model_copy(update={"collection": settings.collection + "-clean"})
    run(clean, embedder, root)
    clean_chunks, _ = state(clean)
    assert {h for _, h in after} == {h for _, h in clean_chunks}


def test_failed_file_keeps_previous_chunks(settings: Settings, embedder: Any,
                                           tmp_path: Path) -> None:
    root = make_corpus(tmp_path / "docs")
    run(settings, embedder, root)
    before = {i for i, _ in state(settings)[0]}
    (root / "manual.pdf").write_bytes(b"%PDF-1.7\n garbage with no objects")
    report = run(settings, embedder, root)
    failed = report.failed
    assert [o.source for o in failed] == ["manual.pdf"]
    assert "previous version kept" in failed[0].reason
    assert {i for i, _ in state(settings)[0]} == before


def test_model_mismatch_refused_and_rebuild_switches(settings: Settings, embedder: Any,
                                                      tmp_path: Path) -> None:
    root = make_corpus(tmp_path / "docs")
    run(settings, embedder, root)
    smaller = settings.model_copy(update={"chunk_tokens": 64, "chunk_overlap": 8})
    with pytest.raises(FingerprintMismatch) as err:
        run(smaller, embedder, root)
    assert "chunk_tokens: 254 (index) vs 64 (now)" in str(err.value)
    assert "--rebuild" in str(err.value)
    store = Store.open(settings)
    assert store is not None
    other_model = {**store.fingerprint, "model": "intfloat/e5-small-v2", "dimension": 384}
    with pytest.raises(FingerprintMismatch) as err:
        store.check_fingerprint(other_model)
    message = str(err.value)
    assert "'sentence-transformers/all-MiniLM-L6-v2'" in message
    assert "'intfloat/e5-small-v2'" in message and "--rebuild" in message
    old_chunks = store.chunks.name

    report = run(smaller, embedder, root, rebuild=True)
    assert report.counts()["ingested"] == 4
    store = Store.open(smaller)
    assert store is not None and store.chunks.name != old_chunks
    assert store.fingerprint["chunk_tokens"] == 64
    names = {c if isinstance(c, str) else c.name for c in store.client.list_collections()}
    assert old_chunks not in names  # the old pair is dropped after the switch
    assert run(smaller, embedder, root).counts()["unchanged"] == 4


def test_new_chunking_code_rebuilds_once_by_itself(settings: Settings, embedder: Any,
                                                   tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import ingest.split
    import ingest.sync

    root = make_corpus(tmp_path / "docs")
    run(settings, embedder, root)
    old = Store.open(settings)
    assert old is not None
    old_chunks = old.chunks.name
    # as after upgrading to a release whose splitter chunks differently
    monkeypatch.setattr(ingest.sync, "SPLITTER_VERSION", "recursive-tokens-next")
    monkeypatch.setattr(ingest.split, "SPLITTER_VERSION", "recursive-tokens-next")
    report = run(settings, embedder, root)
    assert report.rebuilt and report.counts()["ingested"] == 4
    store = Store.open(settings)
    assert store is not None and store.chunks.name != old_chunks
    assert store.fingerprint["splitter"] == "recursive-tokens-next"
    assert run(settings, embedder, root).counts()["unchanged"] == 4  # and only once


def test_dry_run_writes_nothing(settings: Settings, embedder: Any, tmp_path: Path) -> None:
    root = make_corpus(tmp_path / "docs")
    report = run(settings, embedder, root, dry_run=True)
    assert report.counts()["ingested"] == 4
    assert Store.open(settings) is None


def test_second_writer_is_told_who_holds_the_lock(tmp_path: Path) -> None:
    from tests.conftest import make_settings

    settings = make_settings(tmp_path / "state")
    with writer_lock(settings, "python -m ingest ./docs"):
        with pytest.raises(StoreLocked) as err:
            with writer_lock(settings, "second"):
                pass
    message = str(err.value)
    assert f"process {os.getpid()}" in message and "python -m ingest ./docs" in message
    assert "CHROMA_HOST" in message
    with writer_lock(settings, "after release"):
        pass


def test_nothing_to_do_loads_no_model(settings: Settings, embedder: Any, tmp_path: Path) -> None:
    from rag_app.embedders.auto import make_embedder

    root = make_corpus(tmp_path / "docs")
    run(settings, embedder, root)
    (root / "faq.html").unlink()
    cold = make_embedder(settings)
    report = run(settings, cold, root)
    assert report.counts()["removed"] == 1 and report.counts()["unchanged"] == 3
    assert not cold.loaded, "an unchanged folder must not pay for loading the model"


def test_appending_to_a_long_file_embeds_only_new_chunks(settings: Settings, embedder: Any,
                                                         tmp_path: Path) -> None:
    root = tmp_path / "docs"
    root.mkdir()
    log = root / "log.txt"
    log.write_text("\n\n".join(f"Entry {i}: " + "the kettle was descaled " * 20
                               for i in range(30)))
    first = run(settings, embedder, root)
    total = first.chunks_added
    log.write_text(log.read_text() + "\n\nEntry 30: a brand new entry at the end.")
    counting = CountingEmbedder(embedder)
    report = run(settings, counting, root)
    assert report.counts()["updated"] == 1
    assert 1 <= counting.embedded <= 2 < total, (counting.embedded, total)
    assert report.chunks_total == total + counting.embedded - report.chunks_removed
