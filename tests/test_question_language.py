"""A question in another language than an English-only collection's model reads (issue 25
point 1): identified without false alarms on the English questions of every dev set, retrieved
leaning on BM25, and a note (never a refusal) in the answer the chat, `rag ask` and the API
give. The end-to-end tests ingest the sample documents with the real bundled English model."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from ingest.sync import Ingestor
from rag_app.answering import answer
from rag_app.answering.checks import PRE, Draft, Inputs
from rag_app.answering.checks.language import QuestionLanguage
from rag_app.api.answers import rag_fields
from rag_app.cli import main
from rag_app.embedders.base import ENGLISH_DEFAULT
from rag_app.embedders.nano import NAME as MULTILINGUAL
from rag_app.language import english_only, foreign_question, question_language
from rag_app.retrieve import Retriever
from tests.conftest import REPO, SAMPLES, make_settings
from tests.fakes import ScriptedChat

EVAL = REPO / "data" / "eval"
GERMAN = "Wie lange gilt die Garantie für den Wasserkocher?"
ENGLISH = "How long is the warranty on the kettle?"


def _questions() -> list[tuple[str, str]]:
    """(language, question) of every dev set: the QA sets (English) and the multilingual set."""
    out = [("en", json.loads(line)["question"]) for path in sorted(EVAL.glob("*.jsonl"))
           for line in path.read_text().splitlines() if line.strip()]
    for line in (EVAL / "multilingual" / "queries.jsonl").read_text().splitlines():
        row = json.loads(line)
        out.append((row["lang"], row["text"]))
    return out


def test_no_english_question_of_the_dev_sets_is_taken_for_another_language() -> None:
    questions = _questions()
    english = [q for lang, q in questions if lang == "en"]
    assert len(english) >= 170
    assert [q for q in english if foreign_question(q, ENGLISH_DEFAULT)] == []
    others = [(lang, q) for lang, q in questions if lang != "en"]
    wrong = [(lang, q, question_language(q)) for lang, q in others
             if question_language(q) != lang]
    assert len(others) == 114 and wrong == []


@pytest.mark.parametrize("question", [
    "help", "refund?", "What is Rcpp?", "ls -S", "lm vs glm", "Is it safe?", "tl;dr",
    "Define mutex", "pandas dataframe merge", "descale kettle", "apropos regex", "Garantie",
    "Preis", "Tell me more", "Python asyncio gather example", "What's new in 3.12?",
])
def test_short_or_unsure_questions_say_nothing(question: str) -> None:
    assert question_language(question) in (None, "en")
    assert foreign_question(question, ENGLISH_DEFAULT) is None


def test_a_short_question_in_another_script_is_not_english() -> None:
    assert question_language("Что такое ls?") == "ru"  # p = 0.33, but no English is Cyrillic
    assert question_language("Как удалить файл?") == "ru"
    assert question_language("Kann ich das zurückgeben?") == "de"


def test_which_models_read_english_only() -> None:
    assert english_only(ENGLISH_DEFAULT) and english_only("BAAI/bge-small-en-v1.5")
    assert english_only("sentence-transformers/all-mpnet-base-v2")
    for name in (MULTILINGUAL, "intfloat/multilingual-e5-small", "BAAI/bge-m3",
                 "sentence-transformers/paraphrase-multilingual-MiniLM-L12-v2", "my/model"):
        assert not english_only(name), name


class _Named:
    def __init__(self, name: str) -> None:
        self.name = name


def _verdict(question: str, model: str) -> Any:
    inputs = Inputs(query=question, settings=make_settings(Path("/nonexistent")), hits=(),
                    context=(), sources=(), chat=None, embedder=_Named(model))
    return QuestionLanguage()(inputs, Draft("", []))


def test_the_check_notes_and_never_refuses() -> None:
    assert isinstance(PRE[0], QuestionLanguage)  # first: a refusal after it keeps its note
    verdict = _verdict(GERMAN, ENGLISH_DEFAULT)
    assert verdict.refuse is None and verdict.ask_again is None
    assert verdict.say.startswith("Your question looks German; these documents were indexed "
                                  "with an English-only model (all-MiniLM-L6-v2)")
    assert "RAG_EMBEDDING_MODEL=multilingual (rag ingest DIR --rebuild)" in verdict.say
    assert not _verdict(GERMAN, MULTILINGUAL).say  # a multilingual collection reads it
    assert not _verdict(ENGLISH, ENGLISH_DEFAULT).say


# -- end to end: the sample documents, the real English model, a real store -------------------
@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory, embedder: Any) -> Any:
    settings = make_settings(tmp_path_factory.mktemp("language") / "state")
    assert not Ingestor(settings, embedder).run([SAMPLES]).failed
    return settings


@pytest.mark.slow
def test_retrieval_leans_on_bm25_for_a_question_the_model_cannot_read(samples: Any,
                                                                      embedder: Any) -> None:
    retriever = Retriever(samples, embedder=embedder)
    default = retriever.fusion
    assert retriever.fusion_for(ENGLISH, "hybrid").alpha == default.alpha == 0.7
    assert retriever.fusion_for(GERMAN, "hybrid").alpha == default.foreign_alpha == 0.5
    assert retriever.fusion_for(GERMAN, "dense").mode == "dense"
    assert retriever.search(GERMAN)  # it still finds passages


@pytest.mark.slow
def test_the_answer_carries_the_note_and_stands(samples: Any, embedder: Any) -> None:
    retriever = Retriever(samples, embedder=embedder)
    reply = json.dumps({"answer": "Zwei Jahre.", "sources": [1]})
    # The English model finds nothing similar enough to the German question: "not found", by
    # the similarity check, and the note says why.
    stream = answer(GERMAN, settings=samples, retriever=retriever,
                    chat=ScriptedChat(reply))  # type: ignore[arg-type]
    streamed = "".join(stream)
    result = stream.result
    assert not result.found and result.refused_by == "similarity"
    assert "looks German" in result.notice and "looks German" not in streamed
    assert "looks German" in result.to_dict()["notice"]
    assert "looks German" in rag_fields(result)["notice"]  # the API's answer fields
    # The note alone never refuses: with no similarity floor and no names check (German nouns
    # are capitalised: "Garantie" and "Wasserkocher" are taken for names) the model answers.
    lenient = samples.model_copy(update={"answer_min_similarity": 0.0,
                                         "answer_require_names": False})
    stream = answer(GERMAN, settings=lenient, retriever=retriever,
                    chat=ScriptedChat(reply))  # type: ignore[arg-type]
    assert "".join(stream) == "Zwei Jahre." and stream.result.found
    assert "looks German" in stream.result.notice

    english = answer(ENGLISH, settings=samples, retriever=retriever,
                     chat=ScriptedChat(reply))  # type: ignore[arg-type]
    "".join(english)
    assert english.result.notice == ""


@pytest.mark.slow
def test_rag_ask_prints_the_note(samples: Any, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    for name in list(os.environ):
        if name.startswith(("RAG_", "CHROMA_", "OPENAI_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("RAG_STATE_DIR", str(samples.state_dir))
    monkeypatch.setenv("RAG_COLLECTION", samples.collection)
    assert main(["ask", GERMAN, "--no-llm"], prog="rag") == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "Your question looks German" in err and "ask in English" in err

    assert main(["ask", ENGLISH, "--no-llm"], prog="rag") == 0
    assert "looks" not in capsys.readouterr().err


# -- the chat shows it ---------------------------------------------------------------------------
def _page() -> None:
    import streamlit as st

    from rag_app.ui.components import answer_message

    answer_message(st.session_state["result"], key="m0")


@pytest.mark.parametrize("found", [True, False])
def test_the_chat_shows_the_note(found: bool) -> None:
    from streamlit.testing.v1 import AppTest

    note = _verdict(GERMAN, ENGLISH_DEFAULT).say
    hit = {"chunk_id": "c1", "location": "warranty.md", "similarity": 0.6, "text": "2 years.",
           "source": "warranty.md"}
    result = {"question": GERMAN, "query": GERMAN, "text": "Zwei Jahre." if found else
              "Not found in the documents.", "found": found, "grounded": False, "mode": "llm",
              "citations": [], "hits": [hit], "claims": [], "refused_by": "" if found
              else "similarity", "evidence": [], "notice": note}
    at = AppTest.from_function(_page, default_timeout=30)
    at.session_state["result"] = result
    at = at.run()
    assert not at.exception, [e.value for e in at.exception]
    shown = " ".join(i.value for i in at.info).replace("\\", "")
    assert "Your question looks German" in shown and "ask in English" in shown
