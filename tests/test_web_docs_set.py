"""The question set over the shared HTML and Markdown documents is well formed and true.

`data/eval/web-docs-qa.jsonl` asks about the Python-Markdown documentation
(`../shared/docs/markdown/python-markdown-docs`, Markdown) and the Python FAQ
(`../shared/docs/html/python-faq`, HTML). Its `gold_source` is a path relative to
`../shared/docs` ("markdown/python-markdown-docs/extensions/toc.md"), so it matches the source
of a hit when the evaluation's `--docs` is a folder holding `html/` and `markdown/` (see
data/eval/README.md). The file is read with the evaluation's own loader
(`rag_app.eval.qa.load_questions`). Every gold fact (each `"; "` part of an answer) must occur,
as a whole, in the text the project's loader (`ingest.loaders.load_file`) makes of its gold
source — a section's heading path counts as its text — ignoring case, white space, quote and
dash style and Markdown emphasis. Each unanswerable question has, in `ABSENT_TERMS`, the terms
an answer would need; none may occur in any document of the two folders. The documents are not
in the repository: without `../shared/docs` the checks that need them skip.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from ingest.loaders import load_file
from rag_app.eval.qa import QAItem, load_questions, source_matches
from tests.shared_data import shared_path

REPO = Path(__file__).resolve().parents[1]
QUESTIONS = REPO / "data" / "eval" / "web-docs-qa.jsonl"
FIELDS = {"id", "question", "answer", "gold_source", "gold_pages", "answerable"}
PART_SEPARATOR = "; "  # a gold answer made of several facts lists them with this separator
# The two folders of ../shared/docs the set is about, and how many answerable rows each has.
FOLDERS = {"markdown/python-markdown-docs": 16, "html/python-faq": 12}
N_UNANSWERABLE = 8
MIX_WINDOW = 9  # the first rows already hold both kinds of document and unanswerable rows

# What an answer to each unanswerable question would have to name; none occurs in the documents.
ABSENT_TERMS: dict[str, list[str]] = {
    "wd-003": ["strikethrough"],                          # no such bundled extension
    "wd-009": ["free-threaded", "PEP 703", "3.13"],       # next to the GIL answer
    "wd-012": ["3.13"],                                   # the changelog has 3.12, 3.14, 3.15
    "wd-018": ["py.ini", "PY_PYTHON", "launcher"],        # next to the `py` command answer
    "wd-021": ["wikilinks.build_url"],                    # the option is there, no default
    "wd-027": ["founded", "2001"],                        # next to "What is the PSF?"
    "wd-030": ["--tab"],                                  # tab_length is a library keyword only
    "wd-036": ["PEP 634", "PEP 636"],                     # match ... case is named, no version
}

_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"'})
_DASHES = re.compile(r"[\u2010-\u2015\u2212]")


def _normalise(text: str) -> str:
    """Case, white space (line wraps, no-break spaces), quote and dash style and Markdown
    emphasis (`**`, backticks) ignored."""
    text = text.replace("**", "").replace("`", "").translate(_QUOTES)
    text = _DASHES.sub("-", text)
    return re.sub(r"\s+", " ", text).strip().casefold()


def _fact_pattern(fact: str) -> re.Pattern[str]:
    """The fact as a whole: not glued to a letter or digit on either side ("span" is not found
    in "spans", "12 months" not in "112 months")."""
    return re.compile(r"(?<![0-9a-z])" + re.escape(_normalise(fact)) + r"(?![0-9a-z])")


def _rows() -> list[dict[str, Any]]:
    lines = QUESTIONS.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


ROWS = _rows()
ITEMS = load_questions(QUESTIONS)
ANSWERABLE = [r for r in ROWS if r.get("answerable")]
UNANSWERABLE = [r for r in ROWS if r.get("answerable") is False]


def _parts(row: dict[str, Any]) -> list[str]:
    return [p.strip() for p in row["answer"].split(PART_SEPARATOR)]


def _folder(source: str) -> str | None:
    return next((f for f in FOLDERS if source.startswith(f + "/")), None)


def _docs() -> Path:
    """../shared/docs with both folders, or skip."""
    for folder in FOLDERS:
        shared_path("docs", *folder.split("/"))
    return shared_path("docs")


@cache
def _documents() -> tuple[str, ...]:
    """Every file of the two folders, relative to ../shared/docs (as the evaluation names a
    hit's source when --docs holds html/ and markdown/)."""
    docs = _docs()
    return tuple(sorted(p.relative_to(docs).as_posix()
                        for folder in FOLDERS for p in (docs / folder).rglob("*")
                        if p.is_file() and not p.name.startswith(".")))


@cache
def _text(source: str) -> str:
    """The loader's text of a document, each section with its heading path, normalised."""
    doc = load_file(_docs() / source)
    return _normalise("\n".join("\n".join((*s.headings, s.text)) for s in doc.sections))


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
        assert item.gold_pages == ()
        assert item.gold_passage is None


def test_every_row_has_exactly_the_fields_with_the_right_types() -> None:
    for row in ROWS:
        assert set(row) == FIELDS, row.get("id")
        assert re.fullmatch(r"wd-\d{3}", row["id"]), row["id"]
        assert isinstance(row["question"], str) and row["question"].strip().endswith("?")
        assert isinstance(row["answerable"], bool)
        assert row["gold_pages"] == [], f"{row['id']}: no pages in HTML or Markdown"


def test_ids_and_questions_are_unique() -> None:
    ids = [r["id"] for r in ROWS]
    assert len(ids) == len(set(ids))
    assert ids == [f"wd-{n:03d}" for n in range(1, len(ROWS) + 1)]
    questions = [_normalise(r["question"]) for r in ROWS]
    assert len(questions) == len(set(questions))


def test_counts_per_folder_and_unanswerable() -> None:
    counts = dict.fromkeys(FOLDERS, 0)
    for row in ANSWERABLE:
        folder = _folder(row["gold_source"])
        assert folder is not None, f"{row['id']}: {row['gold_source']!r} is in neither folder"
        counts[folder] += 1
    assert counts == FOLDERS
    assert len(UNANSWERABLE) == N_UNANSWERABLE
    assert len(ANSWERABLE) + len(UNANSWERABLE) == len(ROWS)


def test_the_first_rows_mix_kinds() -> None:
    first = ROWS[:MIX_WINDOW]
    assert {_folder(r["gold_source"]) for r in first if r["answerable"]} == set(FOLDERS)
    assert any(not r["answerable"] for r in first)


def test_answerable_rows_have_short_distinct_facts() -> None:
    for row in ANSWERABLE:
        assert isinstance(row["answer"], str), row["id"]
        parts = _parts(row)
        assert all(parts), row["id"]
        assert len(parts) == len(set(parts)), row["id"]
        assert all(len(p) <= 40 for p in parts), f"{row['id']}: gold facts are kept short"


def test_unanswerable_rows_have_no_gold_and_name_their_absent_terms() -> None:
    for row in UNANSWERABLE:
        assert row["answer"] is None, row["id"]
        assert row["gold_source"] is None, row["id"]
        assert row["gold_pages"] == [], row["id"]
    assert set(ABSENT_TERMS) == {r["id"] for r in UNANSWERABLE}
    assert all(terms and all(len(t) >= 4 for t in terms) for terms in ABSENT_TERMS.values())


# -- against the documents ----------------------------------------------------------------------
def test_every_gold_source_names_exactly_one_document() -> None:
    """As the evaluation compares them (`source_matches`): a gold source that matched no file
    could never score a hit, one that matched two would score the wrong file too."""
    documents = _documents()
    for row in ANSWERABLE:
        matched = [d for d in documents if source_matches(d, row["gold_source"])]
        assert matched == [row["gold_source"]], f"{row['id']}: {matched}"


@pytest.mark.parametrize("row", ANSWERABLE, ids=[r["id"] for r in ANSWERABLE])
def test_every_gold_fact_is_in_its_gold_source(row: dict[str, Any]) -> None:
    path = _docs() / row["gold_source"]
    assert path.is_file(), f"{row['id']}: {path} not found"
    text = _text(row["gold_source"])
    for part in _parts(row):
        assert _fact_pattern(part).search(text), (
            f"{row['id']}: {part!r} is not in the loader's text of {row['gold_source']}")


@pytest.mark.parametrize("row", UNANSWERABLE, ids=[r["id"] for r in UNANSWERABLE])
def test_no_document_mentions_an_unanswerable_questions_terms(row: dict[str, Any]) -> None:
    for term in ABSENT_TERMS[row["id"]]:
        wanted = _normalise(term)
        found = [d for d in _documents() if wanted in _text(d)]
        assert not found, f"{row['id']}: {term!r} occurs in {', '.join(found)}"
