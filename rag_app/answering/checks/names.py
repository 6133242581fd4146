"""The question names something no retrieved passage mentions: "not found" before the model.

A model number, a code, a product, a function (rag_app.names.question_names) that none of the
hits mentions means nothing here answers the question ("the capacity of the AK-300 Pro" over the
AK-200's manual), and small models answer anyway from the nearest passage (README: the names
check makes most of the refusals of unanswerable questions on the samples).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from rag_app.answering.checks.base import PASS, Draft, Inputs, Verdict
from rag_app.answering.prompts import NOT_FOUND
from rag_app.answering.records import Refusal
from rag_app.names import question_names, unmatched

if TYPE_CHECKING:
    from rag_app.retrieve import Hit
    from rag_app.settings import Settings


def unmatched_names(question: str, hits: Sequence[Hit]) -> list[str]:
    """The question's names (`rag_app.names`) that none of the hits mentions (text, headings,
    title, file)."""
    return unmatched(question_names(question), (h.named_text for h in hits))


class QuestionNames:
    name = Refusal.NAMES
    timing = None

    def enabled(self, settings: Settings) -> bool:
        return settings.answer_require_names

    def __call__(self, inputs: Inputs, draft: Draft) -> Verdict:
        missing = unmatched_names(inputs.query, inputs.hits)
        if not missing:
            return PASS
        note = f" The documents found do not mention {', '.join(missing)}."
        return Verdict(refuse=self.name, say=NOT_FOUND + note, names=tuple(missing))
