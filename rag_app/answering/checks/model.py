"""The model said "not found" itself (or nothing): the answer is "not found", as it said."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rag_app.answering.checks.base import PASS, Draft, Inputs, Verdict
from rag_app.answering.records import Refusal
from rag_app.answering.replies import is_refusal

if TYPE_CHECKING:
    from rag_app.settings import Settings


class ModelRefusal:
    name = Refusal.MODEL
    timing = None

    def enabled(self, settings: Settings) -> bool:
        return True

    def __call__(self, inputs: Inputs, draft: Draft) -> Verdict:
        if not is_refusal(draft.text):
            return PASS
        return Verdict(refuse=self.name, text=draft.text.strip())
