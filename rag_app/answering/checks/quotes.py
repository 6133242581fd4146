"""RAG_ANSWER_QUOTES=model: each claim's quote must be, word for word, in the source it cites.

The model copies a quote for each claim before stating it; a claim whose quote is not in its
source (or whose numbers the source never states) is removed, and an answer with no claim left
is "not found", its claims kept as the draft (rag_app.answering.attribution.check_claim). With
the bundled 1.5B model this cost correct answers (README), so it is not the default mode.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from rag_app.answering.attribution import check_claim
from rag_app.answering.checks.base import PASS, Draft, Inputs, Verdict
from rag_app.answering.prompts import NOT_FOUND
from rag_app.answering.records import Refusal
from rag_app.answering.replies import is_refusal

if TYPE_CHECKING:
    from rag_app.settings import Settings

QUOTES_FAILED_NOTE = "The model's answer quotes nothing that the cited sources say."


class Quotes:
    name = Refusal.QUOTES
    timing = None

    def enabled(self, settings: Settings) -> bool:
        return True  # acts on quoted replies only

    def __call__(self, inputs: Inputs, draft: Draft) -> Verdict:
        if draft.raw_claims is None:
            return PASS
        claims = [check_claim(c, inputs.sources, inputs.query) for c in draft.raw_claims]
        claims = [c for c in claims if c.text or c.quote]
        kept = [c for c in claims if c.supported and not is_refusal(c.text)]
        if not inputs.settings.answer_require_quotes:  # measuring without the quote check
            kept = [c for c in claims if c.text and not is_refusal(c.text)
                    and 1 <= c.source <= len(inputs.hits)]
        full = " ".join(c.text.strip() for c in claims if c.text.strip())
        checked = replace(draft, claims=claims, quotes_checked=True, full=full, shown=True)
        if not kept:
            checked.text, checked.cited = "", []
            if claims and not all(is_refusal(c.text) for c in claims):
                return Verdict(refuse=self.name, say=f"\n\n{NOT_FOUND} {QUOTES_FAILED_NOTE}",
                               draft=checked, kept=full)
            # the model said "not found" itself (that is what was streamed), or said nothing
            return Verdict(refuse=Refusal.MODEL, say="" if claims else NOT_FOUND,
                           draft=checked)
        checked.text = " ".join(c.text.strip() for c in kept)
        checked.cited = [c.source for c in kept]
        dropped = len([c for c in claims if c.text.strip()]) - len(kept)
        if dropped:
            checked.notes = [*draft.notes, f"\n\n({dropped} statement{'s' if dropped > 1 else ''}"
                                           " removed: not stated in the cited source.)"]
        return Verdict(draft=checked)
