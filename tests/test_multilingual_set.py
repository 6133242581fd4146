"""The multilingual dev set (data/eval/multilingual) is a usable BEIR set: fast, no model."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pytest

from rag_app.eval.beir import load_beir

SET = Path(__file__).resolve().parents[1] / "data" / "eval" / "multilingual"

# Unicode blocks of non-Latin scripts (Cyrillic, Greek, Arabic, Hebrew, CJK, kana, Hangul).
NON_LATIN = [(0x0370, 0x03FF), (0x0400, 0x052F), (0x0590, 0x06FF), (0x3040, 0x30FF),
             (0x4E00, 0x9FFF), (0xAC00, 0xD7AF)]


def _non_latin_share(text: str) -> float:
    letters = [c for c in text if c.isalpha()]
    hits = sum(any(lo <= ord(c) <= hi for lo, hi in NON_LATIN) for c in letters)
    return hits / max(1, len(letters))


def _lang(item_id: str) -> str:
    return item_id.split("-", 1)[0]


@pytest.fixture(scope="module")
def beir():
    return load_beir(SET)


def test_loads_with_enough_passages_and_judged_queries(beir):
    assert len(beir.doc_ids) >= 1000
    assert len(beir.queries) >= 30
    assert all(beir.qrels[q] for q in beir.queries)


def test_two_non_english_languages_one_non_latin(beir):
    per_lang = Counter(_lang(q) for q in beir.queries)
    non_english = {lang: n for lang, n in per_lang.items() if lang != "en"}
    assert len(non_english) >= 2
    assert all(n >= 30 for n in non_english.values()), per_lang
    # one language whose queries and passages are written in a non-Latin script
    scripts = {lang: _non_latin_share(" ".join(t for q, t in beir.queries.items()
                                                if _lang(q) == lang)) for lang in per_lang}
    non_latin = [lang for lang, share in scripts.items() if share > 0.5]
    assert non_latin, scripts
    for lang in non_latin:
        bodies = [b for d, b in zip(beir.doc_ids, beir.bodies, strict=True) if _lang(d) == lang]
        assert len(bodies) >= 100
        assert _non_latin_share(" ".join(bodies)) > 0.5


def test_every_judgement_names_a_real_query_and_passage_of_its_language():
    corpus_ids = {json.loads(line)["_id"]
                  for line in (SET / "corpus.jsonl").read_text(encoding="utf-8").splitlines()}
    query_ids = {json.loads(line)["_id"]
                 for line in (SET / "queries.jsonl").read_text(encoding="utf-8").splitlines()}
    with (SET / "qrels" / "test.tsv").open(encoding="utf-8") as fh:
        rows = list(csv.reader(fh, delimiter="\t"))
    assert rows[0] == ["query-id", "corpus-id", "score"]
    assert len(rows) > 30
    for qid, doc_id, grade in rows[1:]:
        assert qid in query_ids, qid
        assert doc_id in corpus_ids, doc_id
        assert int(grade) in (1, 2)
        assert _lang(qid) == _lang(doc_id)  # queries are judged in their own language
    graded_2 = {qid for qid, _, grade in rows[1:] if grade == "2"}
    assert graded_2 == query_ids  # every query has the passage that answers it


def test_passages_are_paragraph_packs_of_roughly_100_to_250_words(beir):
    words = sorted(len(b.split()) for b in beir.bodies)
    assert words[len(words) // 2] >= 100
    assert words[-1] <= 300
