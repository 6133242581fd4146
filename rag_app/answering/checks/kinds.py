"""A question that asks for a value of a kind gets "not found" when the answer gives none.

Asked a price, the small model gives the figure it has ("it costs 1.7 litres"). A question
asking for a price, watts, a voltage, a weight, a temperature, a number in decimal or a count
(rag_app.kinds) needs a value in that kind's units or a bare number (RAG_ANSWER_REQUIRE_KIND).
Replayed on every recorded evaluation answer (35 runs): it refused 12 of 20 answers to such
unanswerable questions, 4 of 5 wrong answers, 0 of 15 right ones.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rag_app.answering.checks.base import PASS, Draft, Inputs, Verdict
from rag_app.answering.prompts import NOT_FOUND
from rag_app.answering.records import Refusal
from rag_app.kinds import missing_kinds

if TYPE_CHECKING:
    from rag_app.settings import Settings

KIND_FAILED_NOTE = "The question asks for {kinds}; the answer the model gave has none."


class Kinds:
    name = Refusal.KIND
    timing = None

    def enabled(self, settings: Settings) -> bool:
        return settings.answer_require_kind

    def __call__(self, inputs: Inputs, draft: Draft) -> Verdict:
        missing = missing_kinds(inputs.query, draft.text)
        if not missing:
            return PASS
        note = KIND_FAILED_NOTE.format(kinds=" or ".join(missing))
        return Verdict(refuse=self.name, say=f"\n\n{NOT_FOUND} {note}", kept=draft.kept)
