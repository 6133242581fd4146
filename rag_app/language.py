"""Which language a question is written in, and whether an embedding model reads English only.

Shared from below by the retrieval (`Retriever.fusion_for`: a question not in English over an
English-only model leans on BM25) and the answering checks (the language note, the names
check); ingest.languages identifies the documents' languages with the same py3langid model
(`identifier`).

Identification is py3langid's. Short questions say little: under MIN_LETTERS letters, or
identified below MIN_CONFIDENCE, nothing is said, unless most letters are of another script
than Latin (no English question is written in Cyrillic or Arabic). Measured on the 140 English
questions of data/eval/*.jsonl and the 38 English ones of the multilingual dev set: none
flagged; of its 114 Russian, German and French questions, all 114 identified in their own
language (111 by confidence, the 3 others by script).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from typing import Any

MIN_LETTERS = 12  # letters a question needs before its language counts
MIN_CONFIDENCE = 0.9  # py3langid's normalised probability
MIN_SCRIPT_LETTERS = 4  # letters of a question mostly not in Latin script, to say anything


@functools.cache
def identifier() -> Any:
    """py3langid's identifier (langid.py's model, 97 languages, shipped in the package), loaded
    once: the questions' language here, the documents' in ingest.languages."""
    from py3langid import langid

    return langid.LanguageIdentifier.from_modelpath(langid.MODEL_DIR / langid.MODEL_FILE,
                                                    norm_probs=True)


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
    lang, prob = identifier().classify(question)
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


def foreign_question(question: str, model: str) -> str | None:
    """The question's language when it is not English and `model` reads English only, else
    None."""
    if not english_only(model):
        return None
    lang = question_language(question)
    return lang if lang is not None and lang != "en" else None
