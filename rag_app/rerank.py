"""An optional cross-encoder reranker: reads each (question, passage) pair together.

Off by default: no cross-encoder ships in any package this project can install offline, so the
default path cannot depend on one. Set RAG_RERANKER_MODEL to a hub name (e.g.
cross-encoder/ms-marco-MiniLM-L6-v2, on a machine that reaches the hub) or to a local folder
holding a sentence-transformers CrossEncoder; the retriever then reorders its best
RAG_RERANKER_DEPTH candidates by the model's score before taking k.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rag_app.errors import ConfigError

log = logging.getLogger(__name__)


class Reranker:
    """Loads the model on first use; `score` returns one relevance score per passage."""

    def __init__(self, model: str, *, device: str = "auto", batch_size: int = 32) -> None:
        if not model.strip():
            raise ConfigError("the reranker model name is empty")
        self.name = model.strip()
        self._device = device
        self._batch_size = batch_size
        self._model: Any = None

    def _load(self) -> Any:
        if self._model is None:
            from sentence_transformers import CrossEncoder

            from rag_app.hardware import detect

            device = self._device
            if device == "auto":
                device = "cuda" if detect().cuda else "cpu"
            path = Path(self.name).expanduser()
            source = str(path.resolve()) if path.exists() else self.name
            try:
                self._model = CrossEncoder(source, device=device)
            except Exception as exc:
                raise ConfigError(
                    f"Could not load the reranker model {self.name!r} ({type(exc).__name__}: "
                    f"{str(exc)[:300]}). Set RAG_RERANKER_MODEL to a local folder holding a "
                    "cross-encoder (or a hub name on a machine that reaches the hub), or leave "
                    "it empty to turn reranking off."
                ) from exc
            log.info("reranker %s loaded on %s", self.name, device)
        return self._model

    def warm_up(self) -> None:
        self._load()

    def score(self, query: str, passages: Sequence[str]) -> np.ndarray:
        if not passages:
            return np.zeros(0, dtype=np.float32)
        model = self._load()
        scores = model.predict([(query, p) for p in passages], batch_size=self._batch_size,
                               show_progress_bar=False, convert_to_numpy=True)
        return np.asarray(scores, dtype=np.float32).reshape(len(passages), -1)[:, 0]
