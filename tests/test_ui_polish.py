"""Issue 24 point 5, the logic behind the polish (the pages themselves: tests/test_ui.py and the
screenshots under data/screenshots/): past chats' labels, upload stages, the map's question
spot, sources by similarity, why "not found"."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from rag_app.ui.chat import chat_labels, example_questions, when
from rag_app.ui.documents import stage_text
from rag_app.ui.embedding_map import _wording, place_question
from rag_app.ui.services import Job


@dataclass
class Summary:
    id: str
    title: str
    updated: float


def test_past_chats_have_dates_and_distinct_labels() -> None:
    now = time.mktime((2026, 12, 7, 15, 0, 0, 0, 0, -1))
    at = time.mktime((2026, 12, 7, 9, 5, 0, 0, 0, -1))
    past = [Summary("b", "How long is the warranty?", at),
            Summary("a", "How long is the warranty?", at),
            Summary("c", "Descaling", at - 86400),
            Summary("d", "Old one", time.mktime((2025, 3, 2, 9, 0, 0, 0, 0, -1))),
            Summary("e", "This month", time.mktime((2026, 12, 1, 9, 0, 0, 0, 0, -1)))]
    labels = chat_labels(past, now)
    assert labels["a"] == "How long is the warranty? · today 09:05"
    assert labels["b"] == "How long is the warranty? · today 09:05 #2"
    assert labels["c"] == "Descaling · yesterday 09:05"
    assert labels["d"] == "Old one · 2 Mar 2025" and labels["e"] == "This month · 1 Dec"
    assert len(set(labels.values())) == len(past)
    assert when(now, now) == "today 15:00"


def test_upload_progress_names_the_stage() -> None:
    job = Job(1, "ingest", "upload manual.pdf", state="running", files_total=2, files_done=0,
              current="manual.pdf", fraction=0.15)
    assert stage_text(job) == "file 1 of 2, manual.pdf: reading the file (50% of its pages)"
    job.fraction = 0.3 + 0.7 * 0.25
    assert stage_text(job) == "file 1 of 2, manual.pdf: embedding its passages (25%)"
    job.state = "queued"
    assert stage_text(job) == "waiting for the job before it"


def test_the_question_is_drawn_among_its_passages() -> None:
    chunks: list[dict[str, Any]] = [{"id": "a", "x": 0.0, "y": 0.0},
                                    {"id": "b", "x": 2.0, "y": 4.0},
                                    {"id": "c", "x": 9.0, "y": 9.0}]
    assert place_question(chunks, ["a", "b", "zz"]) == (1.0, 2.0)
    assert place_question(chunks, ["zz"]) is None
    assert _wording("1 chunks; PCA") == "1 passage; PCA"
    assert _wording("250 chunks (a sample of 900)") == "250 passages (a sample of 900)"


def test_example_questions_come_from_three_files_headings() -> None:
    rows = (("a.md", ("Guide", "Filling the kettle"), ""), ("a.md", ("Guide", "Descaling"), ""),
            ("b.pdf", (), "Customer policies 2024"), ("c.txt", (), "notes"),
            ("d.md", ("Warranty", "Extended warranty"), ""))
    got = example_questions.__wrapped__(("v", 1), rows)  # type: ignore[attr-defined]
    assert got == ["What do the documents say about Filling the kettle?",
                   "What is “Customer policies 2024” about?",
                   "What do the documents say about Extended warranty?"]


def test_not_found_says_why_and_keeps_the_passages_closed_sorted_by_similarity() -> None:
    from tests.test_ui_evidence import draw, refused

    hits = [{"chunk_id": f"c{n}", "location": f"f{n}.md", "similarity": sim,
             "text": f"passage {n}", "source": f"f{n}.md"}
            for n, sim in enumerate([0.69, 0.74, 0.71], start=1)]
    at = draw(refused(hits=hits))
    assert any(str(c.value).startswith("Why: a second check found") for c in at.caption)
    nearest = next(e for e in at.expander if e.label.startswith("Nearest passages"))
    assert nearest.proto.expanded is False
    order = [str(m.value) for m in nearest.markdown]
    assert [o.split("]")[0] for o in order] == ["**[2", "**[3", "**[1"]  # 0.74, 0.71, 0.69
