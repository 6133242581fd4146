"""The embedding map on a real (tiny) collection: PCA fallback, links, determinism, errors.

The UMAP path (≥ 10 chunks) is exercised by tests/test_notebook.py on the samples: UMAP's
numba compilation costs ~25 s per process, so it runs once there, not here too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ingest.sync import Ingestor
from rag_app.errors import ConfigError
from rag_app.eval.maps import MIN_UMAP_POINTS, _project, embedding_map, location_of, plot_map
from rag_app.retrieve import RetrievalOptions, Retriever
from rag_app.store import Store
from tests.conftest import make_settings

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def retriever(tmp_path_factory: pytest.TempPathFactory, embedder: Any) -> Retriever:
    root = tmp_path_factory.mktemp("maps")
    docs = root / "docs"
    docs.mkdir()
    (docs / "kettle.md").write_text(
        "# Descaling\n\nDescale with citric acid every 4 weeks in hard water.\n\n"
        "# Colours\n\nThe kettle comes in slate, ivory and sage.\n")
    (docs / "notes.txt").write_text("The travel kettle folds flat to 6 cm for packing.\n")
    settings = make_settings(root / "state")
    report = Ingestor(settings, embedder).run([docs])
    assert not report.failed
    return Retriever(settings, embedder=embedder)


QUESTIONS = [("q-descale", "How often should I descale?"), ("q-colour", "Which colours?")]


def test_tiny_collection_falls_back_to_pca_and_links_questions(retriever: Retriever) -> None:
    emap = embedding_map(retriever, QUESTIONS, options=RetrievalOptions(k=2))
    chunks, questions = emap.chunks, emap.questions
    assert 0 < len(chunks) < MIN_UMAP_POINTS
    assert emap.method == "pca" and "PCA" in emap.note and "UMAP" in emap.note
    assert emap.total_chunks == retriever.store.count() == len(chunks)
    assert [q.id for q in questions] == ["q-descale", "q-colour"]
    by_id = {c.id: c for c in chunks}
    for q in questions:
        assert 1 <= len(q.retrieved) <= 2 and not q.retrieved_by
        for cid in q.retrieved:
            assert q.id in by_id[cid].retrieved_by
    top = by_id[questions[0].retrieved[0]]
    assert top.location == "kettle.md § Descaling" and top.source == "kettle.md"
    assert "citric acid" in top.text
    assert all(np.isfinite([p.x, p.y]).all() for p in emap.points)
    records = emap.to_records()
    assert {r["kind"] for r in records} == {"chunk", "question"}
    assert set(records[0]) >= {"x", "y", "kind", "id", "source", "location", "retrieved_by"}


def test_map_is_deterministic_and_takes_given_links(retriever: Retriever) -> None:
    first = embedding_map(retriever, QUESTIONS)
    again = embedding_map(retriever, QUESTIONS)
    assert [(p.id, p.x, p.y) for p in first.points] == [(p.id, p.x, p.y) for p in again.points]
    some_chunk = first.chunks[0].id
    given = embedding_map(retriever, QUESTIONS, retrieved={"q-colour": [some_chunk]})
    assert given.questions[0].retrieved == () and given.questions[1].retrieved == (some_chunk,)
    assert [c.id for c in given.chunks if c.retrieved_by] == [some_chunk]


def test_store_needs_an_embedder_for_questions(retriever: Retriever) -> None:
    store: Store = retriever.store
    assert embedding_map(store).questions == []  # chunks only: no embedder needed
    with pytest.raises(ConfigError, match="embedder"):
        embedding_map(store, QUESTIONS)
    dense = embedding_map(store, QUESTIONS, embedder=retriever.embedder,
                          options=RetrievalOptions(k=1))
    assert all(len(q.retrieved) == 1 for q in dense.questions)
    with pytest.raises(ConfigError, match="unique"):
        embedding_map(retriever, [("a", "x?"), ("a", "y?")])
    with pytest.raises(ConfigError, match="n_neighbors"):
        embedding_map(retriever, n_neighbors=1)


def test_sampling_keeps_retrieved_chunks(retriever: Retriever) -> None:
    emap = embedding_map(retriever, QUESTIONS[:1], options=RetrievalOptions(k=1), max_chunks=1)
    kept = {c.id for c in emap.chunks}
    assert set(emap.questions[0].retrieved) <= kept
    assert len(kept) <= 2 and "sample of" in emap.note


def test_pca_handles_one_and_two_points() -> None:
    one, q = _project(np.eye(1, 4, dtype=np.float32), np.ones((1, 4), dtype=np.float32),
                      n_neighbors=15, min_dist=0.1, random_state=0)[:2]
    assert one.shape == (1, 2) and q.shape == (1, 2) and not one.any()
    two = _project(np.eye(2, 4, dtype=np.float32), np.zeros((0, 4), dtype=np.float32),
                   n_neighbors=15, min_dist=0.1, random_state=0)
    assert two[0].shape == (2, 2) and two[1].shape == (0, 2) and two[2] == "pca"
    empty = _project(np.zeros((0, 4)), np.zeros((0, 4)), n_neighbors=15, min_dist=0.1,
                     random_state=0)
    assert empty[2] == "none"


def test_location_and_plot(retriever: Retriever, tmp_path: Path) -> None:
    assert location_of({"source": "m.pdf", "page_start": 3, "page_end": 4}) == "m.pdf pp. 3-4"
    assert location_of({"source": "m.pdf", "page_start": 3, "page_end": 3}) == "m.pdf p. 3"
    assert location_of({"source": "a.txt"}) == "a.txt"
    import matplotlib

    matplotlib.use("Agg")
    ax = plot_map(embedding_map(retriever, QUESTIONS))
    ax.figure.savefig(tmp_path / "map.png")
    assert (tmp_path / "map.png").stat().st_size > 1000
