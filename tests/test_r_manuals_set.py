"""The dev question set over the R manuals (`../shared/docs/pdf`) is well formed and true.

`data/eval/r-manuals-qa.jsonl` is read with the evaluation's own loader
(`rag_app.eval.qa.load_questions`), so a row it would reject or misread fails here. Every gold
fact (each `"; "` part of an answer) must occur on one of its gold pages in the text pypdf
extracts — the project's loader reads these manuals with pypdf — ignoring case, white space,
quote and dash style, and with words hyphenated at a line end joined. Each unanswerable
question names, in `absent_terms`, the terms that would answer it; none may occur in any of
the three manuals. The manuals are not in the repository: without `../shared` the checks
that need them skip.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from pypdf import PdfReader

from rag_app.eval.qa import QAItem, load_questions
from tests.shared_data import shared_path

REPO = Path(__file__).resolve().parents[1]
QUESTIONS = REPO / "data" / "eval" / "r-manuals-qa.jsonl"
MANUALS = ("R-FAQ.pdf", "R-data.pdf", "R-intro.pdf")
FIELDS = {"id", "question", "answer", "gold_source", "gold_pages", "answerable"}
KINDS = {"two-fact", "table", "code"}  # `kinds` of an answerable row (the loader ignores it)
PART_SEPARATOR = "; "  # a gold answer made of several facts lists them with this separator
MIN_ANSWERABLE, MIN_UNANSWERABLE = 40, 10
MIN_KIND = {"two-fact": 8, "table": 6, "code": 6}

_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"'})
_DASHES = re.compile(r"[\u2010-\u2015\u2212]")
_LINE_END_HYPHEN = re.compile(r"-[ \t]*\n\s*")


def _normalise(text: str) -> str:
    """Case, white space (line wraps, no-break spaces), quote and dash style ignored."""
    text = _DASHES.sub("-", text.translate(_QUOTES))
    return re.sub(r"\s+", " ", text).strip().casefold()


def _variants(text: str) -> tuple[str, str]:
    """The text as extracted, and with words hyphenated at a line end joined ("identi-\\ncal"
    -> "identical"); a hyphen that belongs there ("R-\\nproject") survives in the first."""
    text = _DASHES.sub("-", text)
    return _normalise(text), _normalise(_LINE_END_HYPHEN.sub("", text))


def _rows() -> list[dict[str, Any]]:
    lines = QUESTIONS.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


ROWS = _rows()
ITEMS = load_questions(QUESTIONS)
ANSWERABLE = [r for r in ROWS if r.get("answerable")]
UNANSWERABLE = [r for r in ROWS if r.get("answerable") is False]


def _parts(row: dict[str, Any]) -> list[str]:
    return [p.strip() for p in row["answer"].split(PART_SEPARATOR)]


@cache
def _pages(manual: str) -> tuple[tuple[str, str], ...]:
    """Each page's text (1-based page n is item n-1), in both `_variants`."""
    path = shared_path("docs", "pdf", manual)
    return tuple(_variants(page.extract_text() or "") for page in PdfReader(path).pages)


def _fact_pattern(fact: str) -> re.Pattern[str]:
    """The fact as a whole: not glued to a letter or digit on either side ("log" is not found
    in "logit", "1954" not in "19542")."""
    return re.compile(r"(?<![0-9a-z])" + re.escape(_normalise(fact)) + r"(?![0-9a-z])")


# -- the file and the loader --------------------------------------------------------------------
def test_the_projects_loader_reads_every_row_as_written() -> None:
    assert len(ITEMS) == len(ROWS)
    for item, row in zip(ITEMS, ROWS, strict=True):
        assert isinstance(item, QAItem)
        assert item.id == row["id"]
        assert item.question == row["question"]
        assert item.answerable is row["answerable"]
        assert item.gold_answer == row["answer"]
        assert item.gold_source == row["gold_source"]
        assert item.gold_pages == tuple(row["gold_pages"])
        assert item.gold_passage is None


def test_there_are_enough_answerable_and_unanswerable_questions() -> None:
    assert len(ANSWERABLE) >= MIN_ANSWERABLE
    assert len(UNANSWERABLE) >= MIN_UNANSWERABLE
    assert len(ANSWERABLE) + len(UNANSWERABLE) == len(ROWS)


def test_ids_and_questions_are_unique() -> None:
    ids = [r["id"] for r in ROWS]
    assert len(ids) == len(set(ids))
    questions = [_normalise(r["question"]) for r in ROWS]
    assert len(questions) == len(set(questions))


def test_every_row_has_the_fields_with_the_right_types() -> None:
    for row in ROWS:
        extra = {"kinds"} if row["answerable"] else {"absent_terms"}
        assert set(row) == FIELDS | extra, row.get("id")
        assert re.fullmatch(r"rm-\d{3}", row["id"]), row["id"]
        assert isinstance(row["question"], str) and row["question"].strip().endswith("?")
        assert isinstance(row["answerable"], bool)
        assert isinstance(row["gold_pages"], list)
        assert all(isinstance(p, int) and p >= 1 for p in row["gold_pages"]), row["id"]


def test_answerable_rows_name_a_manual_pages_and_short_facts() -> None:
    for row in ANSWERABLE:
        assert row["gold_source"] in MANUALS, row["id"]  # relative to the docs folder
        assert row["gold_pages"], row["id"]
        assert row["gold_pages"] == sorted(set(row["gold_pages"])), row["id"]
        parts = _parts(row)
        assert all(parts), row["id"]
        assert len(parts) == len(set(parts)), row["id"]
        assert all(len(p) <= 40 for p in parts), f"{row['id']}: gold facts are kept short"
    assert {r["gold_source"] for r in ANSWERABLE} == set(MANUALS)


def test_unanswerable_rows_have_no_gold_and_name_their_absent_terms() -> None:
    for row in UNANSWERABLE:
        assert row["answer"] is None, row["id"]
        assert row["gold_source"] is None, row["id"]
        assert row["gold_pages"] == [], row["id"]
        terms = row["absent_terms"]
        assert isinstance(terms, list) and terms, row["id"]
        assert all(isinstance(t, str) and len(t.strip()) >= 4 for t in terms), row["id"]


def test_the_set_mixes_kinds_of_question() -> None:
    counts = dict.fromkeys(KINDS, 0)
    for row in ANSWERABLE:
        kinds = row["kinds"]
        assert isinstance(kinds, list) and set(kinds) <= KINDS, row["id"]
        assert len(kinds) == len(set(kinds)), row["id"]
        # "two-fact" is exactly the rows whose answer has several parts, all of them needed
        assert ("two-fact" in kinds) == (len(_parts(row)) >= 2), row["id"]
        for kind in kinds:
            counts[kind] += 1
    for kind, least in MIN_KIND.items():
        assert counts[kind] >= least, f"only {counts[kind]} {kind} questions"


# -- against the manuals ------------------------------------------------------------------------
@pytest.mark.parametrize("row", ANSWERABLE, ids=[r["id"] for r in ANSWERABLE])
def test_every_gold_fact_is_on_one_of_its_gold_pages(row: dict[str, Any]) -> None:
    pages = _pages(row["gold_source"])
    assert max(row["gold_pages"]) <= len(pages), f"{row['id']}: {len(pages)} pages only"
    texts = [text for n in row["gold_pages"] for text in pages[n - 1]]
    for part in _parts(row):
        pattern = _fact_pattern(part)
        assert any(pattern.search(t) for t in texts), (
            f"{row['id']}: {part!r} is not on {row['gold_source']} pages {row['gold_pages']}")


@pytest.mark.parametrize("row", UNANSWERABLE, ids=[r["id"] for r in UNANSWERABLE])
def test_no_manual_mentions_an_unanswerable_questions_terms(row: dict[str, Any]) -> None:
    for term in row["absent_terms"]:
        wanted = _normalise(term)
        found = [f"{manual} p{n}" for manual in MANUALS
                 for n, texts in enumerate(_pages(manual), start=1)
                 if any(wanted in t for t in texts)]
        assert not found, f"{row['id']}: {term!r} occurs in {', '.join(found)}"
