"""A running chat server sees what a second writer adds to the same embedded Chroma store.

The bug (issue 24): after `python -m ingest` added documents to the store a chat server had
open, the server's searches missed them and reading their vectors failed with Chroma's
"Error finding id": an embedded client keeps each collection's vector index in memory and never
sees another process's writes. The UI's `IndexReader` opens the store with a new client when
the index changed on disk. Real parts: the bundled embedding model, real Chroma, the real
ingest CLI in its own process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import make_settings

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]


def _ingest_in_another_process(state: Path, folder: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAG_", "CHROMA_"))}
    env["RAG_COLLECTION"] = "test-docs"
    done = subprocess.run([sys.executable, "-m", "ingest", str(folder), "--store", str(state)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
                          check=False)
    assert done.returncode == 0, done.stderr[-3000:]


def test_a_running_reader_sees_chunks_another_process_added(tmp_path: Path,
                                                            embedder: Any) -> None:
    from ingest.entry import sync_paths
    from rag_app.index.store import make_client
    from rag_app.retrieve import Retriever
    from rag_app.ui.services import IndexReader

    state = tmp_path / "state"
    settings = make_settings(state)
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    (first / "kettle.md").write_text("# Kettle\n\nThe kettle descales in twenty minutes.\n")
    for n in range(30):  # enough new chunks that the stale vector index cannot hold them
        (second / f"pump-{n}.md").write_text(
            f"# Pump {n}\n\nPump model P{n} is primed by opening the red valve {n} times.\n")
    sync_paths(settings, [first], embedder=embedder)

    reader = IndexReader(settings, make_client(settings))  # as the chat server holds it
    store, _ = reader.open()
    assert store is not None
    hits = Retriever(settings, embedder=embedder, store=store).search("descaling the kettle")
    assert hits and hits[0].source == "kettle.md"

    _ingest_in_another_process(state, second)  # the second writer: `python -m ingest`

    store, _ = reader.open()
    assert store is not None
    new = store.chunk_ids({"file_key": {"$ne": ""}})
    assert len(new) == 31
    got = store.get_chunks(sorted(new), vectors=True)  # before: "Error finding id"
    assert len(got) == 31
    hits = Retriever(settings, embedder=embedder, store=store).search(
        "How is pump model P17 primed?")
    assert hits and hits[0].source == "pump-17.md"  # before: only the kettle was searched
    assert reader.reopened == 1

    store, _ = reader.open()  # nothing changed since: the same client goes on
    assert reader.reopened == 1
