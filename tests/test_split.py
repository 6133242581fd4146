"""Chunking in the real model's tokens: limits, pages, headings, determinism."""

from __future__ import annotations

from typing import Any

import pytest

from ingest.split import effective_config, make_splitter
from rag_app.embedders.base import default_prompts
from rag_app.records import LoadedDocument, Section


@pytest.fixture()
def splitter(embedder: Any):  # type: ignore[no-untyped-def]
    return make_splitter(embedder, 256, 32, embedder.document_token_limit)


def test_no_chunk_exceeds_what_the_model_reads(splitter: Any, embedder: Any) -> None:
    unbroken = "x" * 5000 + " " + "supercalifragilistic" * 300  # no separators to split on
    prose = " ".join(f"Sentence number {i} talks about kettles." for i in range(400))
    doc = LoadedDocument(kind="text", sections=(Section(unbroken), Section(prose)))
    chunks = splitter.split(doc, "a.txt", "root::a.txt")
    limit = embedder.document_token_limit
    assert limit == 254 and len(chunks) > 10
    counts = embedder.count_tokens([c.text for c in chunks])
    assert max(counts) <= limit
    assert [c.token_count for c in chunks] == counts
    assert "".join(c.text for c in chunks).count("supercalifragilistic") >= 299


def test_pdf_chunks_know_their_pages(splitter: Any) -> None:
    pages = tuple(Section(f"Page {n} text. " + "Filler words here. " * 40, page_start=n,
                          page_end=n) for n in (1, 2, 3, 5))
    chunks = splitter.split(LoadedDocument(kind="pdf", sections=pages, pages=5), "m.pdf", "k")
    assert {c.page_start for c in chunks} >= {1, 2, 3, 5}
    for c in chunks:
        assert c.page_start is not None and c.page_end is not None
        assert c.page_start <= c.page_end
        first_page = int(c.text.split("Page ")[1].split()[0]) if c.text.startswith("Page") else 0
        if first_page:
            assert c.page_start == first_page
    assert any(c.page_end != c.page_start for c in chunks) or len(chunks) >= 4


def test_headings_ids_and_overlap(splitter: Any) -> None:
    body = " ".join(f"Point {i} about descaling." for i in range(120))
    doc = LoadedDocument(kind="markdown", title="Care",
                         sections=(Section("## Cleaning\n" + body, headings=("Care", "Cleaning")),
                                   Section("## Empty", headings=("Care", "Empty"))))
    first = splitter.split(doc, "care.md", "root::care.md")
    again = splitter.split(doc, "care.md", "root::care.md")
    assert [c.id for c in first] == [c.id for c in again]  # deterministic
    assert len({c.id for c in first}) == len(first)
    assert all(c.headings == ("Care", "Cleaning") and c.title == "Care" for c in first)
    assert len(first) >= 2
    assert all(c.text.startswith("Care > Cleaning\nPoint") for c in first)  # heading path
    tail_words = first[0].text.split()[-3:]
    assert " ".join(tail_words) in first[1].text  # consecutive chunks overlap
    other = splitter.split(doc, "care.md", "other-root::care.md")
    assert not {c.id for c in first} & {c.id for c in other}


def test_config_is_capped_at_the_model_limit() -> None:
    assert effective_config(1000, 32, 254).chunk_tokens == 254
    assert effective_config(100, 80, 254).chunk_overlap == 50


@pytest.mark.parametrize(("name", "query", "document"), [
    ("intfloat/e5-small-v2", "query: ", "passage: "),
    ("intfloat/multilingual-e5-small", "query: ", "passage: "),
    ("BAAI/bge-small-en-v1.5", "Represent this sentence for searching relevant passages: ", ""),
    ("sentence-transformers/all-MiniLM-L6-v2", "", ""),
])
def test_query_and_document_prompts_by_family(name: str, query: str, document: str) -> None:
    assert default_prompts(name, {}) == (query, document)


def test_model_configured_prompts_win() -> None:
    assert default_prompts("intfloat/e5-small-v2", {"query": "q: ", "document": "d: "}) == (
        "q: ", "d: ")
