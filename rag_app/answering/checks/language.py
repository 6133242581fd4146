"""A question in another language than an English-only collection's model reads: a note, never a
refusal.

The bundled English model (all-MiniLM-L6-v2) cannot match a question in another language to the
passages that answer it (the multilingual dev set, data/eval/multilingual, MiniLM dense nDCG@10:
Russian 0.123, German 0.330 where BM25 scores 0.602 and 0.649), and nothing told the user so.
When the question is confidently in another language (`question_language`) and the collection
was embedded with an English-only model (`english_only`), the answer carries a note saying so
and what to do: rebuild with the multilingual model, or ask in English. A multilingual
collection (RAG_EMBEDDING_MODEL=auto picks one for documents not in English) gets no note.

Identification is py3langid's (ingest.languages). Short questions say little: under
MIN_LETTERS letters, or identified below MIN_CONFIDENCE, nothing is said, unless most letters
are of another script than Latin (no English question is written in Cyrillic or Arabic).
Measured on the 140 English questions of data/eval/*.jsonl and the 38 English ones of the
multilingual dev set: none flagged; of its 114 Russian, German and French questions, all 114
identified in their own language (111 by confidence, the 3 others by script).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from typing import TYPE_CHECKING

from rag_app.answering.checks.base import PASS, Draft, Inputs, Verdict

if TYPE_CHECKING:
    from rag_app.settings import Settings

MIN_LETTERS = 12  # letters a question needs before its language counts
MIN_CONFIDENCE = 0.9  # py3langid's normalised probability
MIN_SCRIPT_LETTERS = 4  # letters of a question mostly not in Latin script, to say anything

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

# Model names known to be trained on English only (the bundled one first).
_ENGLISH_ONLY = re.compile(r"all-minilm|all-mpnet|all-distilroberta|multi-qa-|msmarco-"
                           r"|(^|[/_-])en([/_.-]|$)")


def english_only(model: str) -> bool:
    """`model` (an embedding model's name) reads English only: the bundled all-MiniLM-L6-v2 and
    names of English models (all-mpnet-base-v2, bge-small-en-v1.5, ...). An unknown name is
    not assumed to be English-only."""
    lower = model.lower()
    return "multilingual" not in lower and bool(_ENGLISH_ONLY.search(lower))


def _mostly_not_latin(letters: str) -> bool:
    latin = sum(unicodedata.name(ch, "").startswith("LATIN") for ch in letters)
    return latin * 2 < len(letters)


@functools.lru_cache(maxsize=256)
def _classified(question: str) -> tuple[str, float]:
    """py3langid's (language, confidence) for a question: the note, the names check and the
    retrieval's fusion each ask, so it is worked out once."""
    from ingest.languages import _identifier

    lang, prob = _identifier().classify(question)
    return str(lang), float(prob)


def question_language(question: str, least: float = MIN_CONFIDENCE) -> str | None:
    """The ISO 639-1 code of the language `question` is written in with at least `least`
    confidence, or None (too short, or unsure)."""
    letters = "".join(ch for ch in question if ch.isalpha())
    other_script = len(letters) >= MIN_SCRIPT_LETTERS and _mostly_not_latin(letters)
    if len(letters) < MIN_LETTERS and not other_script:
        return None
    lang, prob = _classified(question)
    if prob >= least or (other_script and lang != "en"):
        return str(lang)
    return None


def note(lang: str, model: str) -> str:
    """What the user reads under the answer."""
    name = NAMES.get(lang)
    looks = f"looks {name}" if name else f"looks to be in another language than English ({lang})"
    short = model.rsplit("/", 1)[-1]
    return (f"Your question {looks}; these documents were indexed with an English-only model "
            f"({short}), which matches other languages poorly: rebuild with "
            "RAG_EMBEDDING_MODEL=multilingual (rag ingest DIR --rebuild) or ask in English.")


def foreign_question(question: str, model: str) -> str | None:
    """The question's language when it is not English and `model` reads English only, else
    None."""
    if not english_only(model):
        return None
    lang = question_language(question)
    return lang if lang is not None and lang != "en" else None


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
