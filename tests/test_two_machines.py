"""Past one machine (issue 26 point 6): a writer and a reader with their own state folders (as on
two machines) against one `chroma run` server. What the README's "Past one machine" says, checked:
the reader has no saved BM25 index, so it builds one in memory from the collection and finds
what the writer wrote; after the writer adds a file, a retriever made afresh (the chat and the
API make one when the catalog's write generation changes) finds it by BM25 too, while a
retriever kept from before finds it only by its vectors; the writer's lease is seen from the
other machine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from rag_app.retrieve import RetrievalOptions, Retriever
from tests.conftest import make_settings

pytestmark = [pytest.mark.server, pytest.mark.slow]

WORD = "zyxquorblat"  # in no sample


def test_a_reader_on_another_machine_builds_bm25_itself_and_sees_new_files(
        chroma_server: tuple[str, int], embedder: Any, tmp_path: Path) -> None:
    from ingest.sync import Ingestor
    from rag_app.errors import StoreLocked
    from rag_app.index.store import Store, writer_lock

    host, port = chroma_server
    common = {"chroma_host": host, "chroma_port": port, "collection": "two-machines"}
    writer = make_settings(tmp_path / "machine-a", **common)
    reader = make_settings(tmp_path / "machine-b", **common)
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "kettle.md").write_text("# Kettle\n\nThe kettle boils a litre in three minutes.\n")
    assert not Ingestor(writer, embedder).run([docs]).failed

    store_b = Store.open(reader)
    assert store_b is not None
    assert not store_b.lexical_dir.exists()  # nothing saved on machine B
    kept = Retriever(reader, embedder=embedder)
    hits = kept.search("kettle boils litre", RetrievalOptions(k=3, mode="lexical"))
    assert hits and hits[0].source.endswith("kettle.md")  # BM25 built in memory from the server
    assert not store_b.lexical_dir.exists()  # a reader never saves it

    (docs / "new.md").write_text(f"# New\n\nThe {WORD} valve is new.\n")
    assert not Ingestor(writer, embedder).run([docs]).failed
    lexical = RetrievalOptions(k=3, mode="lexical")
    fresh = Retriever(reader, embedder=embedder).search(WORD, lexical)
    assert fresh and fresh[0].source.endswith("new.md")
    assert not any(h.source.endswith("new.md") for h in kept.search(WORD, lexical))
    dense = kept.search(f"the {WORD} valve", RetrievalOptions(k=3, mode="dense"))
    assert any(h.source.endswith("new.md") for h in dense)

    with writer_lock(writer, "test: machine A writes"):
        with pytest.raises(StoreLocked, match="machine A writes"):
            with writer_lock(reader, "test: machine B writes"):
                pass
