"""The finished answer leads with the documents' own words (issue 23, point 3) and shows the
sentences the sources do not state, with their reasons, without opening anything (point 2).

Drawn with Streamlit's AppTest from saved answer dicts (`Answer.to_dict()`, as a chat keeps
them): no index and no model, so these run in a second.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from rag_app.ui.components import marked_pieces
from rag_app.ui.text import md

HIT = {"chunk_id": "c1", "location": "warranty.md › Warranty", "similarity": 0.81,
       "text": "Every Aurora kettle comes with a 2-year warranty.", "source": "warranty.md"}
CITATION = {"number": 1, "chunk_id": "c1", "source": "warranty.md", "page_start": None,
            "page_end": None, "passage": HIT["text"], "location": HIT["location"],
            "quotes": ["Every Aurora kettle comes with a 2-year warranty."]}
SUPPORTED = {"text": "It lasts 2 years.", "source": 1,
             "quote": "Every Aurora kettle comes with a 2-year warranty.", "supported": True,
             "reason": "", "score": 0.8}
FLAGGED = {"text": "Extending it costs £4.00.", "source": 1,
           "quote": "The warranty is extended at no cost.", "supported": False,
           "reason": "in the source, £4.00 is given for “AKS-03 silicone lid seal”",
           "score": 0.6}


def found(**changes: Any) -> dict[str, Any]:
    result = {
        "question": "How long is the warranty?", "query": "How long is the warranty?",
        "text": "It lasts 2 years. Extending it costs £4.00.", "found": True,
        "grounded": True, "mode": "llm", "citations": [CITATION], "hits": [HIT],
        "claims": [SUPPORTED, FLAGGED], "quotes_checked": False, "refused_by": "",
        "evidence": [{"source": 1, "text": SUPPORTED["quote"], "score": 0.8}],
    }
    result.update(changes)
    return result


def refused(**changes: Any) -> dict[str, Any]:
    result = found(text="Not found in the documents.", found=False, grounded=False,
                   citations=[], claims=[], refused_by="check", checked=False,
                   draft="It costs £4.00.",
                   evidence=[{"source": 1, "text": "The lid seal AKS-03 costs £4.00.",
                              "score": 1.01},
                             {"source": 1, "text": SUPPORTED["quote"], "score": 0.98}])
    result.update(changes)
    return result


def _page() -> None:
    import streamlit as st

    from rag_app.ui.components import answer_message

    answer_message(st.session_state["result"], key="m0")


def draw(result: dict[str, Any]) -> Any:
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_function(_page, default_timeout=30)
    at.session_state["result"] = result
    at = at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text).replace("\u2060", "")


def markdowns(at: Any) -> list[str]:
    return [unescape(str(m.value)) for m in at.markdown]


def warnings(at: Any) -> str:
    return unescape("\n".join(str(w.value) for w in at.warning))


def test_a_standing_answer_leads_with_the_documents_words_then_the_models() -> None:
    shown = markdowns(draw(found()))
    says = shown.index("**The documents say:**")
    quote = shown.index(f"> “{SUPPORTED['quote']}” **[1]**")
    model = next(i for i, m in enumerate(shown) if m.startswith("It lasts 2 years."))
    assert says < quote < model
    at = draw(found())
    assert "In the model's words:" in [c.value for c in at.caption]


def test_a_flagged_sentence_is_marked_and_its_reason_shown_without_opening_anything() -> None:
    at = draw(found())
    model = next(m for m in markdowns(at) if m.startswith("It lasts 2 years."))
    assert ":orange-background[Extending it costs £4.00.] ⚠" in model
    shown = warnings(at)  # a top-level warning: nothing to expand
    assert "Check these sentences: the sources do not state them as written" in shown
    assert "Extending it costs £4.00." in shown and FLAGGED["reason"] in shown
    assert not at.expander or all("statement" not in e.label for e in at.expander)


def test_removed_statements_stay_listed_apart_and_flagged_ones_stay_visible() -> None:
    removed = dict(FLAGGED, text="It is gold.", reason="the quote is not in source [1]")
    at = draw(found(quotes_checked=True, claims=[SUPPORTED, removed, FLAGGED]))
    box = next(e for e in at.expander if "1 statement(s) removed" in e.label)
    assert "It is gold." in unescape(str(box.markdown[0].value))
    assert "It is gold." not in warnings(at)  # removed from the answer, not flagged in it
    assert FLAGGED["reason"] in warnings(at)


def test_a_refused_answer_shows_the_nearest_sentences_as_not_an_answer() -> None:
    at = draw(refused())
    shown = markdowns(at)
    not_found = shown.index("Not found in the documents.")
    label = shown.index("**Nearest sentences in the documents (not an answer):**")
    assert not_found < label
    assert shown[label + 1] == "> “The lid seal AKS-03 costs £4.00.” **[1]**"
    assert "The documents say:" not in "\n".join(shown)
    draft = next(e for e in at.expander if e.label.startswith("The model's draft"))
    assert not draft.proto.expanded  # the draft stays collapsed
    assert "It costs £4.00." in unescape(str(draft.markdown[0].value))


def test_an_answer_saved_before_evidence_draws_its_supported_quotes() -> None:
    old = found()
    del old["evidence"]
    shown = markdowns(draw(old))
    assert shown.index("**The documents say:**") < shown.index(
        f"> “{SUPPORTED['quote']}” **[1]**")
    old_refused = refused()
    del old_refused["evidence"]
    shown = markdowns(draw(old_refused))
    assert "Not found in the documents." in shown
    assert not any("Nearest sentences" in m for m in shown)


def test_an_answer_with_no_supported_sentence_labels_its_evidence_as_not_checked() -> None:
    at = draw(found(text="Extending it costs £4.00.", claims=[FLAGGED],
                    evidence=[{"source": 1, "text": "The warranty is extended at no cost.",
                               "score": 0.9}]))
    shown = markdowns(at)
    assert "**The documents say:**" not in shown
    model = next(i for i, m in enumerate(shown) if "Extending it costs" in m)
    label = shown.index("**Nearest sentences in the documents (not checked as an answer):**")
    assert model < label
    assert FLAGGED["reason"] in warnings(at)


def test_document_and_model_text_never_renders_as_markup() -> None:
    evil = "![x](http://evil.example/a.png) [click](javascript:alert(1)) <img src=x> www.evil.x"
    at = draw(found(text=f"It lasts 2 years. {evil}",
                    claims=[SUPPORTED, dict(FLAGGED, text=evil, reason=evil)],
                    evidence=[{"source": 1, "text": evil, "score": 0.9}]))
    live = re.compile(r"(?<!\\)(\]\(|!\[|<img|www\.)", re.I)
    for element in (*at.markdown, *at.warning, *at.caption):
        assert not live.search(str(element.value)), element.value
    drawn = draw(refused(evidence=[{"source": 2, "text": evil, "score": 1.0}]))
    for element in drawn.markdown:
        assert not live.search(str(element.value)), element.value


@pytest.mark.parametrize(("text", "flagged", "marked"), [
    ("It lasts 2 years. It costs £4.00.", ["It costs £4.00."], ["It costs £4.00."]),
    ("A. B. C.", ["A.", "C."], ["A.", "C."]),
    ("It lasts 2 years.", ["Not in the text."], []),
    ("One line.\nIt costs £4.00.", ["It costs £4.00."], []),  # over lines: listed, not marked
    ("see www.evil.example", ["www.evil.example"], ["www.evil.example"]),
    ("see www.evil.example", ["w.evil.example"], []),  # a cut in "www." escapes otherwise
])
def test_marked_pieces_cut_only_where_escaping_stays_the_same(
        text: str, flagged: list[str], marked: list[str]) -> None:
    pieces = marked_pieces(text, flagged)
    assert [p for p, m in pieces if m] == marked
    assert " ".join("".join(p for p, _ in pieces).split()) == " ".join(text.split())
    if marked:
        joined = "".join(" " if not p.strip() else md(p) for p, _ in pieces)
        assert " ".join(joined.split()) == " ".join(md(text).split())
