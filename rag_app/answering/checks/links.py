"""Links in an answer that no source contains are cut (rag_app.guard).

A document can ask the model to send the reader to a URL that leaks the conversation; the model
may also make one up. Only a URL a source itself contains may stay. The stream is filtered as it
arrives; this check cleans the finished text, and shows it when nothing was streamed (a server
that ignored the JSON request).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from rag_app.answering.checks.base import Draft, Inputs, Verdict
from rag_app.guard import strip_unsourced_links

if TYPE_CHECKING:
    from rag_app.settings import Settings


class Links:
    name = "links"
    timing = None

    def enabled(self, settings: Settings) -> bool:
        return True

    def __call__(self, inputs: Inputs, draft: Draft) -> Verdict:
        text, removed = strip_unsourced_links(draft.text, inputs.sources)
        return Verdict(say="" if draft.shown else text,
                       draft=replace(draft, text=text, removed_links=removed, shown=True))
