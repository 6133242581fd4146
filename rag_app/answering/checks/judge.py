"""RAG_ANSWER_CHECK: the model, asked apart, whether the cited passages state the answer.

Small models "answer" unanswerable questions from a passage about something else (the AK-90's
wattage from the AK-200's page). Asked separately, with only the cited passages, to copy the
sentence that answers the question and then judge it, the same model tells these apart better
than when it answers. Off by default: with the bundled 1.5B model it cost more correct answers
than it caught wrong ones (README).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from rag_app.answering.checks.base import PASS, Draft, Inputs, Verdict
from rag_app.answering.prompts import (
    CHECK_PROMPT,
    CHECK_PROMPT_PLAIN,
    CHECK_SCHEMA,
    NOT_FOUND,
    source_body,
)
from rag_app.answering.records import Refusal
from rag_app.answering.replies import parse_verdict
from rag_app.llm.client import LLMError, RequestRejected

if TYPE_CHECKING:
    from rag_app.settings import Settings

log = logging.getLogger(__name__)

CHECK_FAILED_NOTE = "The sources were found, but they do not state this answer."


class Judge:
    name = Refusal.CHECK
    timing = "check_s"

    def enabled(self, settings: Settings) -> bool:
        return settings.answer_check

    def __call__(self, inputs: Inputs, draft: Draft) -> Verdict:
        verdict = self.ask(inputs, draft.text, draft.cited)
        if verdict is False:
            return Verdict(refuse=self.name, say=f"\n\n{NOT_FOUND} {CHECK_FAILED_NOTE}",
                           kept=draft.kept, passed=False)
        return PASS if verdict is None else Verdict(passed=True)

    @staticmethod
    def ask(inputs: Inputs, text: str, numbers: list[int]) -> bool | None:
        """Do the cited passages (else the top two) state this answer? None: no verdict."""
        chat = inputs.chat
        if chat is None:
            return None
        context = inputs.context
        cited = [context[n - 1] for n in sorted(set(numbers)) if 1 <= n <= len(context)]
        passages = "\n".join(f"<source>\n{source_body(h.text)}\n</source>"
                             for h in (cited or context[:2])[:3])
        messages = [{"role": "system", "content": CHECK_PROMPT},
                    {"role": "user", "content": f"{passages}\n\nQuestion: {inputs.query.strip()}"
                                                f"\nProposed answer: {text.strip()}"}]
        try:
            reply = chat.complete(messages, response_format=CHECK_SCHEMA, max_tokens=160,
                                  temperature=0.0)
        except RequestRejected:
            try:
                reply = chat.complete(
                    [{"role": "system", "content": CHECK_PROMPT_PLAIN}, messages[1]],
                    max_tokens=4, temperature=0.0)
            except LLMError as exc:
                log.warning("answer check failed: %s", exc)
                return None
        except LLMError as exc:
            log.warning("answer check failed: %s", exc)
            return None
        return parse_verdict(reply)
