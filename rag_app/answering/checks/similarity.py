"""Nothing retrieved is similar enough to the question: "not found", and the model is not asked.

When no retrieved passage reaches RAG_ANSWER_MIN_SIMILARITY (cosine to the question), nothing
here can answer it, and small models answer anyway from what they know.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rag_app.answering.checks.base import PASS, Draft, Inputs, Verdict
from rag_app.answering.prompts import NOT_FOUND
from rag_app.answering.records import Refusal

if TYPE_CHECKING:
    from rag_app.settings import Settings


class Similarity:
    name = Refusal.SIMILARITY
    timing = None

    def enabled(self, settings: Settings) -> bool:
        return True

    def __call__(self, inputs: Inputs, draft: Draft) -> Verdict:
        best = max((h.similarity for h in inputs.hits), default=0.0)
        if inputs.hits and best >= inputs.settings.answer_min_similarity:
            return PASS
        return Verdict(refuse=self.name, say=NOT_FOUND)
