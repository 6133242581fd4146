"""Each sentence of the answer with the words of the sources that support it, as its quote.

The sentence of the sources that best supports each answer sentence is found (cosine and word
overlap, rag_app.answering.attribution.attribute); a sentence nothing supports well enough, or
one with a figure its source never states, is flagged. A sentence naming a function, code or
version that no retrieved passage mentions says something the sources do not, however close its
wording is to a quote: flagged too. The sources cited are those the quotes come from: the small
model numbers its sources wrongly (cites [2] for what [1] says); answers citing a gold page went
from 36 to 47 of 59 on the R manuals (README).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING

from rag_app.answering.attribution import attribute
from rag_app.answering.checks.base import PASS, Draft, Inputs, Verdict
from rag_app.answering.checks.unsourced import unsourced_names
from rag_app.answering.records import Claim
from rag_app.answering.replies import MARK
from rag_app.text.sentences import split_sentences

if TYPE_CHECKING:
    from rag_app.settings import Settings

log = logging.getLogger(__name__)


class Support:
    name = "support"
    timing = None

    def enabled(self, settings: Settings) -> bool:
        return True

    def __call__(self, inputs: Inputs, draft: Draft) -> Verdict:
        if draft.raw_claims is not None:  # quoted claims were checked as given
            return PASS
        claims = self.claims(inputs, draft.text)
        return Verdict(draft=replace(draft, claims=claims,
                                     cited=cited(draft.text, draft.cited, claims,
                                                 len(inputs.hits))))

    @staticmethod
    def claims(inputs: Inputs, text: str) -> list[Claim]:
        try:
            claims = attribute(split_sentences(text), inputs.sources,
                               list(range(1, len(inputs.sources) + 1)), inputs.embedder,
                               inputs.query)
        except Exception:  # quotes are an aid: the answer stands without them
            log.warning("could not find the quotes of an answer", exc_info=True)
            return []
        out = []
        for claim in claims:
            names = (unsourced_names(claim.text, inputs.query, inputs.context)
                     if claim.supported else [])
            out.append(replace(claim, supported=False,
                               reason=f"no source mentions {', '.join(names)}")
                       if names else claim)
        return out


def cited(text: str, numbers: list[int], claims: list[Claim], hits: int) -> list[int]:
    """The sources to cite: those whose sentences support the answer (its quotes), plus any [n]
    the text itself shows; the model's own list only when no quote is supported. The model's
    out-of-range numbers stay, to be counted as invalid."""
    supported = {c.source for c in claims if c.supported}
    if not supported:
        return numbers
    shown = {n for n in map(int, MARK.findall(text)) if 1 <= n <= hits}
    invalid = [n for n in numbers if not 1 <= n <= hits]
    return sorted(supported | shown) + invalid
