"""The library entry points the CLIs, the evaluation and the UI share (rag_app.service)."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest

from ingest.cli import redact_command
from ingest.entry import sync_paths
from rag_app.errors import StoreError, StoreLocked
from rag_app.index.store import Store, writer_lock
from rag_app.retrieve import RetrievalOptions, Retriever
from rag_app.service import index_overview, remove_documents
from tests.conftest import make_settings


def test_secret_option_values_never_reach_the_lock_file(tmp_path: Path) -> None:
    argv = ["docs", "--password", "s3cret", "--password-for", "a/*.pdf", "g1obpw",
            "--password=inl1ne", "--password-for=b/*.pdf", "pw2", "--json"]
    command = redact_command(argv)
    for secret in ("s3cret", "g1obpw", "inl1ne", "pw2", "a/*.pdf"):
        assert secret not in command
    assert command.startswith("python -m ingest docs") and command.endswith("--json")
    settings = make_settings(tmp_path / "state")
    with writer_lock(settings, command):
        holder = settings.state_dir / "writer.lock.json"
        assert stat.S_IMODE(holder.stat().st_mode) == 0o600
        assert "s3cret" not in holder.read_text()
        with pytest.raises(StoreLocked, match="python -m ingest docs --password \\*\\*\\*"), \
                writer_lock(settings, "second"):
            pass


def test_sync_remove_and_overview(settings: Any, embedder: Any, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "keep.md").write_text("# Keep\n\nThe garden hose is stored in the blue shed.\n")
    (docs / "gone.md").write_text("# Gone\n\nThe Zorblax adapter fits every socket.\n")
    report = sync_paths(settings, [docs], embedder=embedder)
    assert report.counts()["ingested"] == 2
    overview = index_overview(settings)
    assert overview.exists and [r.source for r in overview.files] == ["gone.md", "keep.md"]
    assert json.dumps(overview.to_dict())  # JSON-safe, as `python -m rag_app stats --json`

    key = next(r.key for r in overview.files if r.source == "gone.md")
    before = overview.chunks
    removed = remove_documents(settings, [key])
    assert removed >= 1
    after = index_overview(settings)
    assert after.chunks == before - removed and [r.source for r in after.files] == ["keep.md"]
    store = Store.open(settings)
    assert store is not None and len(store.load_lexical()) == store.count()
    hits = Retriever(settings, embedder=embedder).search(
        "Zorblax adapter", RetrievalOptions(k=5, mode="lexical"))
    assert all(h.source != "gone.md" for h in hits)  # it stops answering at once
    with pytest.raises(StoreError, match="Not in the index"):
        remove_documents(settings, [key])
