"""The evaluation question set over data/samples is well formed and its gold answers are true.

Each answerable row's gold answer must be found in the text the project's own loader makes of
its gold source — for a PDF, in the text of the gold pages — so a wrong page number or a fact
that is not in the document fails here, not silently in an evaluation run.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from ingest.loaders import load_file

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "data" / "samples"
QUESTIONS = REPO / "data" / "eval" / "samples-qa.jsonl"
FIELDS = {"id", "question", "answer", "gold_source", "gold_pages", "answerable"}
PART_SEPARATOR = "; "  # a gold answer made of several facts lists them with this separator


def _rows() -> list[dict[str, Any]]:
    lines = QUESTIONS.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def _normalise(text: str) -> str:
    """Case, whitespace (line wraps, no-break spaces), dashes and Markdown emphasis ignored."""
    text = text.replace("**", "").replace("`", "")
    text = re.sub(r"[\u2010-\u2015\u2212]", "-", text)
    return re.sub(r"\s+", " ", text).strip().casefold()


@cache
def _source_text(source: str, pages: tuple[int, ...]) -> str:
    """The loader's text of a source (only the given pages of a PDF), normalised.

    A section's heading path counts as its text: a heading with only sub-headings under it
    (e.g. "Version 2.3.0 (2024-02-06)" above "Added") is in no section's text, only in the
    heading path of the sections below it, and a reader sees it there.
    """
    doc = load_file(SAMPLES / source)
    sections = doc.sections
    if pages:
        sections = tuple(s for s in sections if s.page_start is not None
                         and any(s.page_start <= p <= (s.page_end or s.page_start)
                                 for p in pages))
    return _normalise("\n".join("\n".join((*s.headings, s.text)) for s in sections))


ROWS = _rows()
ANSWERABLE = [r for r in ROWS if r.get("answerable")]


def test_every_row_has_exactly_the_fields_with_the_right_types() -> None:
    assert len(ROWS) >= 30
    for row in ROWS:
        assert set(row) == FIELDS, row.get("id")
        assert isinstance(row["id"], str) and row["id"].startswith("ak-")
        assert isinstance(row["question"], str) and row["question"].strip().endswith("?")
        assert isinstance(row["answerable"], bool)
        assert isinstance(row["gold_pages"], list)
        assert all(isinstance(p, int) and p >= 1 for p in row["gold_pages"]), row["id"]


def test_ids_and_questions_are_unique() -> None:
    ids = [r["id"] for r in ROWS]
    assert len(ids) == len(set(ids))
    questions = [_normalise(r["question"]) for r in ROWS]
    assert len(questions) == len(set(questions))


def test_the_set_covers_every_sample_document_and_has_unanswerable_questions() -> None:
    documents = {p.name for p in SAMPLES.iterdir() if p.is_file()}
    assert {r["gold_source"] for r in ANSWERABLE} == documents
    assert sum(1 for r in ROWS if not r["answerable"]) >= 6


def test_unanswerable_rows_have_no_gold() -> None:
    for row in ROWS:
        if not row["answerable"]:
            assert row["answer"] is None, row["id"]
            assert row["gold_source"] is None, row["id"]
            assert row["gold_pages"] == [], row["id"]


@pytest.mark.parametrize("row", ANSWERABLE, ids=[r["id"] for r in ANSWERABLE])
def test_gold_answer_is_in_the_gold_source(row: dict[str, Any]) -> None:
    source = row["gold_source"]
    assert isinstance(source, str) and (SAMPLES / source).is_file(), source
    assert isinstance(row["answer"], str) and row["answer"].strip()
    is_pdf = source.lower().endswith(".pdf")
    pages = tuple(row["gold_pages"])
    if is_pdf:
        assert pages, f"{row['id']}: a PDF source needs its gold pages"
        assert max(pages) <= load_file(SAMPLES / source).pages, row["id"]
    else:
        assert not pages, f"{row['id']}: only PDF sources have pages"
    text = _source_text(source, pages)
    for part in row["answer"].split(PART_SEPARATOR):
        assert _normalise(part) in text, (
            f"{row['id']}: {part!r} is not in {source}"
            + (f" pages {list(pages)}" if pages else ""))


@pytest.mark.parametrize("row", [r for r in ANSWERABLE if len(r["gold_pages"]) == 1],
                         ids=lambda r: r["id"])
def test_single_page_answers_are_not_on_the_other_pages(row: dict[str, Any]) -> None:
    """A one-page gold answer that also sat on other pages would make page metrics unfair."""
    source, (page,) = row["gold_source"], row["gold_pages"]
    others = tuple(p for p in range(1, load_file(SAMPLES / source).pages + 1) if p != page)
    text = _source_text(source, others)
    for part in row["answer"].split(PART_SEPARATOR):
        assert _normalise(part) not in text, f"{row['id']}: {part!r} is on another page too"
