"""Kept for one release so that scripts and notebooks written against it keep working: the
answer path now lives in `rag_app.answering` (import from there)."""

from __future__ import annotations

from rag_app.answering import (
    NO_LLM_LABEL,
    NOT_FOUND,
    Answer,
    AnswerStream,
    Citation,
    Claim,
    Refusal,
    Timings,
    answer,
    build_messages,
)
from rag_app.answering.context import needs_condensing
from rag_app.errors import RagError

__all__ = ["NOT_FOUND", "NO_LLM_LABEL", "Answer", "AnswerStream", "Citation", "Claim",
           "RagError", "Refusal", "Timings", "answer", "build_messages", "needs_condensing"]
