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
from rag_app.language import question_language
from rag_app.names import question_names, unmatched

if TYPE_CHECKING:
    from rag_app.retrieve import Hit
    from rag_app.settings import Settings


# py3langid's confidence above which a question counts as not English here: lower than the
# language note's 0.9 ("Wie oft soll man die Fahrradkette ölen?" scores 0.73); of ~830 English
# questions and passages of the dev sets one passage scores 0.7-0.9 for another language
OTHER_LANGUAGE = 0.7


def unmatched_names(question: str, hits: Sequence[Hit]) -> list[str]:
    """The question's names (`rag_app.names`) that none of the hits mentions (text, headings,
    title, file). In a question confidently not in English (rag_app/language.py) a capitalised
    word is no name by itself: German capitalises every noun, and a multilingual collection
    answers a German question from English passages ("Wie lange gilt die Garantie für den
    Wasserkocher?" was refused for "Garantie" and "Wasserkocher"; a German question over German
    passages for the compound "Fahrradkette")."""
    english = question_language(question, least=OTHER_LANGUAGE) in (None, "en")
    return unmatched(question_names(question, capitalised=english), (h.named_text for h in hits))


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
