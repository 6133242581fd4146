"""A question in another language than an English-only collection's model reads: a note, never a
refusal.

The bundled English model (all-MiniLM-L6-v2) cannot match a question in another language to the
passages that answer it (the multilingual dev set, data/eval/multilingual, MiniLM dense nDCG@10:
Russian 0.123, German 0.330 where BM25 scores 0.602 and 0.649), and nothing told the user so.
When the question is confidently in another language (`question_language`) and the collection
was embedded with an English-only model (`english_only`), the answer carries a note saying so
and what to do: rebuild with the multilingual model, or ask in English. A multilingual
collection (RAG_EMBEDDING_MODEL=auto picks one for documents not in English) gets no note.

Identification is py3langid's, in rag_app.language (with its thresholds). Short questions say
little: under MIN_LETTERS letters, or identified below MIN_CONFIDENCE, nothing is said, unless
most letters are of another script than Latin (no English question is written in Cyrillic or
Arabic).
Measured on the 140 English questions of data/eval/*.jsonl and the 38 English ones of the
multilingual dev set: none flagged; of its 114 Russian, German and French questions, all 114
identified in their own language (111 by confidence, the 3 others by script).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rag_app.answering.checks.base import PASS, Draft, Inputs, Verdict
from rag_app.language import foreign_question

if TYPE_CHECKING:
    from rag_app.settings import Settings

NAMES = {  # ISO 639-1 -> English name, for the note (others are shown by their code)
    "ar": "Arabic", "bg": "Bulgarian", "ca": "Catalan", "cs": "Czech", "da": "Danish",
    "de": "German", "el": "Greek", "es": "Spanish", "et": "Estonian", "fa": "Persian",
    "fi": "Finnish", "fr": "French", "he": "Hebrew", "hi": "Hindi", "hr": "Croatian",
    "hu": "Hungarian", "id": "Indonesian", "it": "Italian", "ja": "Japanese", "ko": "Korean",
    "lt": "Lithuanian", "lv": "Latvian", "nb": "Norwegian", "nl": "Dutch", "no": "Norwegian",
    "pl": "Polish", "pt": "Portuguese", "ro": "Romanian", "ru": "Russian", "sk": "Slovak",
    "sl": "Slovenian", "sr": "Serbian", "sv": "Swedish", "th": "Thai", "tr": "Turkish",
    "uk": "Ukrainian", "vi": "Vietnamese", "zh": "Chinese",
}


def note(lang: str, model: str) -> str:
    """What the user reads under the answer."""
    name = NAMES.get(lang)
    looks = f"looks {name}" if name else f"looks to be in another language than English ({lang})"
    short = model.rsplit("/", 1)[-1]
    return (f"Your question {looks}; these documents were indexed with an English-only model "
            f"({short}), which matches other languages poorly: rebuild with "
            "RAG_EMBEDDING_MODEL=multilingual (rag ingest DIR --rebuild) or ask in English.")


class QuestionLanguage:
    """Says, never refuses: a question not in English over an English-only model."""

    name = "language"
    timing = None

    def enabled(self, settings: Settings) -> bool:
        return True

    def __call__(self, inputs: Inputs, draft: Draft) -> Verdict:
        model = str(getattr(inputs.embedder, "name", "") or "")
        lang = foreign_question(inputs.query, model)
        if lang is None:
            return PASS
        return Verdict(say=note(lang, model))
