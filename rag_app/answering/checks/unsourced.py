"""An answer that names what no retrieved passage mentions is asked again, once.

The bundled model answers from what it knows of a library instead of from the passage ("use
as.matrix()" where the passage says "drop = FALSE"). An answer naming a function, an argument, a
code, a constant or a version that no passage mentions (rag_app.names.answer_names) is asked
again in the same conversation, naming those names (RAG_ANSWER_RETRY_UNSOURCED). Measured on the
R manuals: the 4-5 answers asked again per run were all wrong, 6 of 9 became "not found", none
became right (README).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from rag_app.answering.checks.base import PASS, Draft, Inputs, Verdict
from rag_app.answering.prompts import RETRY_PROMPT
from rag_app.answering.records import Refusal
from rag_app.names import answer_names, unsourced

if TYPE_CHECKING:
    from rag_app.retrieve import Hit
    from rag_app.settings import Settings

RETRY_NOTE = "(The answer above names {names}, which no source mentions: asked again.)"


def unsourced_names(text: str, query: str, context: Sequence[Hit]) -> list[str]:
    """The names the text gives (code identifiers, codes, versions, constants) that no
    passage of the context mentions, whole (rag_app.names.answer_names). The context holds
    every hit (widened or not)."""
    return unsourced(answer_names(text, query), (h.named_text for h in context))


class Unsourced:
    name = Refusal.UNSOURCED
    timing = None

    def enabled(self, settings: Settings) -> bool:
        return settings.answer_retry_unsourced

    def __call__(self, inputs: Inputs, draft: Draft) -> Verdict:
        if not draft.json_reply or draft.raw_claims is not None:
            return PASS
        names = unsourced_names(draft.text, inputs.query, inputs.context)
        if not names:
            return PASS
        shown = ", ".join(f"`{n}`" for n in names)
        return Verdict(say="\n\n" + RETRY_NOTE.format(names=shown) + "\n\n",
                       ask_again=RETRY_PROMPT.format(names=shown), names=tuple(names))
