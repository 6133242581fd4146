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
from rag_app.index.store import Store
from rag_app.maps import MIN_UMAP_POINTS, _project, embedding_map, location_of, plot_map
from rag_app.retrieve import RetrievalOptions, Retriever
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


class _CountingChunks:
    """The chunk collection, counting the vectors each `get` returns."""

    def __init__(self, collection: Any) -> None:
        self.collection = collection
        self.vectors_read = 0

    def get(self, **kwargs: Any) -> Any:
        got = self.collection.get(**kwargs)
        if "embeddings" in kwargs.get("include", []):
            self.vectors_read += len(got["ids"])
        return got

    def __getattr__(self, name: str) -> Any:
        return getattr(self.collection, name)


def _old_read_chunks(store: Store, wanted: set[str], max_chunks: int, random_state: int
                     ) -> tuple[list[str], np.ndarray, list[str], list[dict[str, Any]]]:
    """The sample as `_read_chunks` drew it before it read the kept ids only: every row read,
    the seeded sample of the sorted ids plus `wanted` kept."""
    got: Any = store.chunks.get(include=["embeddings", "documents", "metadatas"])
    all_ids = sorted(got["ids"])
    picked = np.random.default_rng(random_state).choice(len(all_ids), size=max_chunks,
                                                        replace=False)
    keep = {all_ids[i] for i in picked} | wanted
    rows = sorted((cid, np.asarray(emb, dtype=np.float32), doc, dict(meta))
                  for cid, emb, doc, meta in zip(got["ids"], got["embeddings"], got["documents"],
                                                 got["metadatas"], strict=True) if cid in keep)
    return ([r[0] for r in rows], np.stack([r[1] for r in rows]), [r[2] for r in rows],
            [r[3] for r in rows])


def test_a_sampled_map_reads_the_vectors_of_the_sample_only(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rag_app import maps

    store = Store.create(make_settings(tmp_path / "state"), {"model": "synthetic"})
    n, dim, max_chunks = 120, 8, 9
    vectors = np.random.default_rng(0).normal(size=(n, dim)).astype(np.float32)
    store.chunks.add(ids=[f"c{i:04d}" for i in range(n)], embeddings=vectors,
                     documents=[f"passage {i}" for i in range(n)],
                     metadatas=[{"source": f"f{i % 3}.md", "n": i} for i in range(n)])
    monkeypatch.setattr(maps, "PAGE", 4)  # several pages of ids, listed and kept
    wanted = {"c0077", "c0101", "gone"}  # retrieved chunks are kept; an id no longer stored
    old = _old_read_chunks(store, wanted - {"gone"}, max_chunks, 42)

    spy = _CountingChunks(store.chunks)
    store.chunks = spy  # type: ignore[assignment]
    ids, matrix, docs, metas = maps._read_chunks(store, n, wanted, max_chunks, 42)
    assert len(ids) <= max_chunks + 2 and {"c0077", "c0101"} <= set(ids) and "gone" not in ids
    assert spy.vectors_read == len(ids)  # was all 120: every page read whole
    assert ids == old[0] and docs == old[2] and metas == old[3]  # the same seeded sample
    assert np.array_equal(matrix, old[1])
    again = maps._read_chunks(store, n, wanted, max_chunks, 42)[0]
    other_seed = maps._read_chunks(store, n, wanted, max_chunks, 7)[0]
    assert again == ids and other_seed != ids

    spy.vectors_read = 0  # not sampled: every chunk, as before
    everything = maps._read_chunks(store, n, set(), None, 42)
    assert everything[0] == sorted(f"c{i:04d}" for i in range(n)) and spy.vectors_read == n
    assert np.allclose(everything[1], vectors, atol=1e-6)  # as stored (float32 round trip)
