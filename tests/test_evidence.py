"""Quoted answers: each claim carries the source's words, checked verbatim (rag_app.text.quotes);
claims whose quote is not in the cited source are removed, and an answer with none left is
"not found". Logic tests with a scripted model and fixed passages (fast)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rag_app.answering import NOT_FOUND, answer
from rag_app.answering.attribution import attribute, check_claim
from rag_app.answering.checks.quotes import QUOTES_FAILED_NOTE
from rag_app.answering.replies import StringFields, parse_claims
from rag_app.retrieve import Hit, RetrievalOptions
from rag_app.text.numbers import numbers_in, unstated_numbers
from rag_app.text.quotes import find_quote, quote_pieces
from tests.conftest import make_settings
from tests.fakes import ScriptedChat

WARRANTY = ("Warranty > Standard warranty\nEvery Aurora kettle comes with a **2-year "
            "warranty** from the date of delivery.")
POWER = ("The AK-200 is rated 2,200 W. A full kettle (1.7 litres) boils in about 4 min-\n"
         "utes 10 seconds. Use `drop = FALSE` to keep the matrix.")


@pytest.mark.parametrize(("quote", "expected"), [
    ("Every Aurora kettle comes with a 2-year warranty from the date of delivery.",
     "Every Aurora kettle comes with a **2-year warranty** from the date of delivery"),
    ("“every aurora kettle comes with a 2‑year warranty”",  # typographic marks, case
     "Every Aurora kettle comes with a **2-year warranty"),
    ("Every Aurora kettle ... from the date of delivery", None),  # the whole span
])
def test_a_quote_is_found_despite_markup_case_and_typography(quote: str,
                                                              expected: str | None) -> None:
    span = find_quote(quote, WARRANTY)
    assert span is not None
    found = WARRANTY[span[0]:span[1]]
    assert found == (expected or found) and found.startswith("Every")


def test_quotes_match_across_spacing_and_broken_words_but_not_changed_words() -> None:
    assert find_quote("boils in about 4 minutes 10 seconds", POWER)  # "min-\nutes"
    assert find_quote("Use `drop=FALSE`", POWER)  # code spaced differently
    assert find_quote("rated 2,200 W", POWER)
    assert not find_quote("rated 2,300 W", POWER)  # one changed figure
    assert not find_quote("boils in about 5 minutes", POWER)
    assert not find_quote("10 seconds ... A full kettle", POWER)  # pieces out of order
    assert not find_quote("W", POWER) and not find_quote("", POWER)  # proves nothing
    assert not find_quote("...", POWER)
    assert quote_pieces('"A ... b c d"') == ["a", "bcd"]


def test_numbers_a_statement_takes_from_nowhere_are_found() -> None:
    assert numbers_in("2,200 W, 1.7 litres, R 4.2.0, **30** days") == {"2200", "1.7", "4.2.0",
                                                                      "30"}
    assert unstated_numbers("It is rated 2200 W and boils in 4 minutes.", [POWER]) == []
    assert unstated_numbers("It saves 1,800 W.", [POWER]) == ["1800"]
    assert unstated_numbers("Since R 4.2.0 it is 2200 W.", [POWER], "What changed in R 4.2.0?") \
        == []


def test_a_claim_is_supported_only_by_its_own_words_in_a_retrieved_source() -> None:
    sources = [WARRANTY, POWER]
    ok = check_claim({"source": 1, "quote": "comes with a 2-year warranty",
                      "statement": "It has a 2-year warranty."}, sources)
    assert ok.supported and ok.source == 1
    moved = check_claim({"source": 1, "quote": "is rated 2,200 W",
                         "statement": "It is rated 2200 W."}, sources)
    assert moved.supported and moved.source == 2  # the evidence is real; the number was wrong
    made_up = check_claim({"source": 2, "quote": "is rated 3 kW", "statement": "3 kW."}, sources)
    assert not made_up.supported and "not in the cited source" in made_up.reason
    wrong_figure = check_claim({"source": 2, "quote": "is rated 2,200 W",
                                "statement": "It saves 900 W."}, sources)
    assert not wrong_figure.supported and "900" in wrong_figure.reason
    for raw in ({"source": 7, "quote": "nowhere at all", "statement": "x"},
                {"source": "1", "quote": None, "statement": "x"}, {"source": True},
                {}):
        assert not check_claim(raw, sources).supported


def test_statements_stream_out_of_the_claims_json_in_any_pieces() -> None:
    reply = json.dumps({"claims": [
        {"source": 1, "quote": 'the "statement": "trap"', "statement": 'It lasts "2 years".'},
        {"source": 2, "quote": "x", "statement": "Caf\u00e9 \u2615 opens\nlater."}]})
    for size in (1, 2, 3, 5, 11):
        fields = StringFields("statement", "answer")
        out = "".join(fields.feed(reply[i:i + size]) for i in range(0, len(reply), size))
        assert out == 'It lasts "2 years". Café ☕ opens\nlater.', size
    assert parse_claims(reply) is not None and len(parse_claims(reply) or []) == 2
    assert parse_claims('{"answer": "x", "sources": [1]}') is None  # the older shape
    assert parse_claims("not json") is None and parse_claims("[" * 5000) is None


# -- the answer path with fixed passages and a scripted model ------------------------------------
def _hit(n: int, text: str) -> Hit:
    return Hit(chunk_id=f"c{n}", text=text, source=f"f{n}.md", root="/r", page_start=None,
               page_end=None, headings=(), title=None, score=1.0, similarity=0.9,
               dense_rank=n, lexical_rank=None)


class FixedRetriever:
    """Logic-test stand-in: always the same passages, a constant embedder."""

    class _Embedder:
        def embed_query(self, text: str) -> np.ndarray:
            return np.ones(4, dtype=np.float32) / 2

        def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
            return np.ones((len(texts), 4), dtype=np.float32) / 2

    def __init__(self, hits: list[Hit]) -> None:
        self.hits = hits
        self.embedder = self._Embedder()

    def search(self, query: str, options: RetrievalOptions) -> list[Hit]:
        return list(self.hits)


def _ask(claims: list[dict[str, Any]], **settings: Any) -> tuple[str, Any]:
    s = make_settings(Path("/nonexistent"), **{"answer_quotes": "model", **settings})
    chat = ScriptedChat(json.dumps({"claims": claims}), size=7)
    stream = answer("How long is the warranty, and what power does it draw?", settings=s,
                    retriever=FixedRetriever([_hit(1, WARRANTY), _hit(2, POWER)]),  # type: ignore[arg-type]
                    chat=chat)  # type: ignore[arg-type]
    return "".join(stream), stream.result


def test_supported_claims_make_the_answer_with_their_quotes_on_the_citations() -> None:
    text, result = _ask([
        {"source": 1, "quote": "a 2-year warranty", "statement": "It has a 2-year warranty."},
        {"source": 2, "quote": "The AK-200 is rated 2,200 W.", "statement": "It draws 2200 W."}])
    assert text == "It has a 2-year warranty. It draws 2200 W." == result.text
    assert result.found and result.quotes_checked
    assert [(c.number, c.quotes) for c in result.citations] == [
        (1, ("a 2-year warranty",)), (2, ("The AK-200 is rated 2,200 W.",))]
    assert all(c["supported"] for c in result.to_dict()["claims"])


def test_an_unsupported_claim_is_removed_and_said_so() -> None:
    text, result = _ask([
        {"source": 1, "quote": "a 2-year warranty", "statement": "It has a 2-year warranty."},
        {"source": 2, "quote": "It draws 3 kW", "statement": "It draws 3 kW."}])
    assert result.found and result.text == "It has a 2-year warranty."
    assert "1 statement removed" in text
    assert [c.number for c in result.citations] == [1]
    assert [c.supported for c in result.claims] == [True, False]


def test_an_answer_whose_quotes_are_all_made_up_is_not_found_and_keeps_the_draft() -> None:
    text, result = _ask([{"source": 2, "quote": "The kettle has a 5-year guarantee",
                          "statement": "It has a 5-year guarantee."}])
    assert not result.found and result.text == NOT_FOUND and not result.citations
    assert text.endswith(QUOTES_FAILED_NOTE) and result.draft == "It has a 5-year guarantee."
    # measured without the check, the same reply is an answer
    _, unchecked = _ask([{"source": 2, "quote": "The kettle has a 5-year guarantee",
                          "statement": "It has a 5-year guarantee."}],
                        answer_require_quotes=False)
    assert unchecked.found and unchecked.text == "It has a 5-year guarantee."


def test_no_claims_or_the_models_own_refusal_is_not_found() -> None:
    text, result = _ask([])
    assert text == NOT_FOUND and not result.found and not result.draft
    text, result = _ask([{"source": 1, "quote": "", "statement": NOT_FOUND}])
    assert text == NOT_FOUND and not result.found and not result.draft


def test_a_cut_short_or_repetitive_claims_reply_keeps_its_complete_claims() -> None:
    claim = {"source": 1, "quote": "a 2-year warranty", "statement": "It has a 2-year warranty."}
    reply = json.dumps({"claims": [claim, claim, claim]})
    assert parse_claims(reply) == [claim]  # repeated claims once
    cut = reply[: reply.rindex('"statement"')]  # the token limit hit the third claim
    assert parse_claims(cut) == [claim]
    _, result = _ask([claim, claim])
    assert result.text == "It has a 2-year warranty." and result.found


# -- quotes extracted from the sources (RAG_ANSWER_QUOTES=extract, the default) ----------------
@pytest.mark.slow
def test_each_answer_sentence_gets_the_source_sentence_that_supports_it(embedder: Any) -> None:
    sources = [WARRANTY, POWER + " The base has a 75 cm cord."]
    claims = attribute(["Every kettle has a 2-year warranty.", "It draws 2200 W.",
                        "It is rated 3000 W.", "The moon is made of cheese."],
                       sources, [1, 2], embedder)
    assert [c.source for c in claims[:2]] == [1, 2]
    assert claims[0].supported and "2-year warranty" in claims[0].quote
    assert claims[1].supported and claims[1].quote == "The AK-200 is rated 2,200 W."
    assert all(find_quote(c.quote, sources[c.source - 1]) for c in claims)  # always verbatim
    assert not claims[2].supported and "3000" in claims[2].reason  # a figure from nowhere
    assert not claims[3].supported and "no sentence" in claims[3].reason
    assert attribute([NOT_FOUND], sources, [1], embedder) == []
    # a figure is quoted from the source that states it, not from a closer-worded one
    figures = ["The AK-200 is a smart kettle rated for daily use in busy offices.",
               "Rated power of the AK-200: 2,200 W."]
    claim = attribute(["The AK-200 smart kettle is rated 2200 W."], figures, [1, 2],
                      embedder)[0]
    assert claim.supported and claim.source == 2 and "2,200 W" in claim.quote
    # wd-002, recorded: one sentence, two statements, each figure stated by another source
    history = ["Guido van Rossum started writing Python during the 1989 Christmas holidays.",
               "The first version was posted to the USENET group alt.sources in February 1991."]
    sentence = ("During the 1989 Christmas holidays, Guido van Rossum started writing Python, "
                "and in February 1991, he first posted it to USENET.")
    claims = attribute([sentence], history, [1, 2], embedder)
    assert [(c.source, c.supported) for c in claims] == [(1, True), (2, True)]
    assert all(c.text in sentence for c in claims)
    # a statement whose figure no source states keeps the whole sentence flagged
    claims = attribute([sentence.replace("1991", "1994")], history, [1, 2], embedder)
    assert len(claims) == 1 and not claims[0].supported and "1994" in claims[0].reason


@pytest.mark.slow
def test_the_default_answer_carries_extracted_quotes_on_its_citations(embedder: Any) -> None:
    s = make_settings(Path("/nonexistent"))
    assert s.answer_quotes == "extract"
    retriever = FixedRetriever([_hit(1, WARRANTY), _hit(2, POWER)])
    retriever.embedder = embedder  # type: ignore[assignment]
    chat = ScriptedChat(json.dumps({"answer": "Every kettle has a 2-year warranty. It draws "
                                              "2200 W.", "sources": [1, 2]}), size=7)
    stream = answer("How long is the warranty, and what power does it draw?", settings=s,
                    retriever=retriever, chat=chat)  # type: ignore[arg-type]
    assert "".join(stream) == "Every kettle has a 2-year warranty. It draws 2200 W."
    result = stream.result
    assert result.found and not result.quotes_checked
    assert [c.supported for c in result.claims] == [True, True]
    assert dict((c.number, c.quotes) for c in result.citations)[2] == (
        "The AK-200 is rated 2,200 W.",)
    assert "complete sentences" in chat.messages[0]["content"]
