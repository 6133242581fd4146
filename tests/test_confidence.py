"""The confidence check: a name, code or figure whose first token the model gave a low
probability is flagged. Logic tests on token lists; the real server's tokens are tested in
test_local_llm.py and, through the whole answer path, in test_answer.py."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from rag_app.answering.checks.base import Draft, Inputs
from rag_app.answering.checks.confidence import (
    Confidence,
    Reply,
    key_terms,
    rival_items,
    wanted,
)
from rag_app.answering.records import Claim
from rag_app.llm.client import TokenProb
from tests.conftest import make_settings
from tests.fakes import eval_row

QUESTION = "In the console's line editor, how do I cut everything to the right of the cursor?"


def tokens_of(reply: str, unsure: dict[str, float], size: int = 3,
              weighed: tuple[str, ...] = ("C",)) -> list[TokenProb]:
    """The reply in tokens of `size` characters, each certain except those where a term of
    `unsure` starts (given its probability and the alternatives `weighed`)."""
    starts = {reply.find(term): p for term, p in unsure.items()}
    out = []
    for i in range(0, len(reply), size):
        p = next((p for at, p in starts.items() if i <= at < i + size), 1.0)
        alts = tuple((w, math.log(0.3 / len(weighed))) for w in weighed) if p < 1.0 else ()
        out.append(TokenProb(reply[i:i + size], math.log(p), alts))
    return out


def check(answer: str, unsure: dict[str, float], *, question: str = QUESTION,
          supported: bool = True, weighed: tuple[str, ...] = ("C",), passage: str = "",
          **settings: Any) -> list[Claim]:
    from types import SimpleNamespace

    reply = json.dumps({"answer": answer, "sources": [1]})
    s = make_settings(Path("/nonexistent"), **settings)
    draft = Draft(answer, [1], reply=reply, tokens=tokens_of(reply, unsure, weighed=weighed),
                  claims=[Claim(answer, 1, "C-k Kill from cursor to end of command.", supported)])
    context: Any = [SimpleNamespace(text=passage)] if passage else []
    inputs = Inputs(query=question, settings=s, hits=[], context=context, sources=[],
                    chat=None, embedder=None)
    verdict = Confidence()(inputs, draft)
    return (verdict.draft or draft).claims


def test_a_key_term_the_model_was_unsure_of_flags_its_sentence() -> None:
    [claim] = check("Press `M-d` to cut it.", {"M-d": 0.25})
    assert not claim.supported and claim.confidence == 0.25
    assert claim.reason == "the model was unsure of 'M-d' (25%; it also weighed 'C')"


def test_only_another_item_weighed_there_flags_not_another_wording() -> None:
    """Recorded live cases: "try" (43%) where the model also weighed "the" and a code quote
    (it would have written "the try() function" or "`try()`"), "rep" beside "is" and
    "contains": the same answer in other words, not flagged. "C" and "Python" beside "the"
    (C++), "header" and "row" (`row.names`): another item, flagged."""
    passage = "Use try(expr) or tryCatch(). write.table(x, row.names = FALSE, header = TRUE)"
    for weighed in (("the", "`"), ("is", "contains"), ("`[",)):
        [claim] = check("Use `try` to go on.", {"try": 0.43}, weighed=weighed,
                        passage=passage, question="How do I keep going after an error?")
        assert claim.supported and claim.confidence == 0.43, weighed
    for weighed, shown in ((("the", "Python"), "'the', 'Python'"),
                           (("header", "row"), "'header', 'row'"), (("3",), "'3'"),
                           (("d", "ln"), "'d', 'ln'")):
        [claim] = check("Use `try` to go on.", {"try": 0.43}, weighed=weighed,
                        passage=passage, question="How do I keep going after an error?")
        assert not claim.supported, weighed
        assert claim.reason == f"the model was unsure of 'try' (43%; it also weighed {shown})"


def test_the_same_token_in_a_code_quote_is_no_rival() -> None:
    assert rival_items(["`try", "\u201ctry", "Try", "tryCatch"], " try", "") == ["tryCatch"]


def test_a_plain_word_is_an_item_only_where_the_passages_begin_code_with_it() -> None:
    question = "How do I keep going after an error?"
    [kept] = check("Use `try` to go on.", {"try": 0.4}, weighed=("create",),
                   passage="You create an object. Connections are created. Then",
                   question=question)
    [flagged] = check("Use `try` to go on.", {"try": 0.4}, weighed=("create",),
                      passage="Call createObject(x).", question=question)
    assert kept.supported and not flagged.supported


def test_a_sure_answer_passes_with_its_confidence_recorded() -> None:
    [claim] = check("Press `C-k` to cut it.", {"C-k": 0.9})
    assert claim.supported and claim.confidence == 0.9 and claim.reason == ""


def test_plain_words_never_count_only_names_code_and_figures() -> None:
    [claim] = check("You press the key to cut it.", {"key": 0.1})
    assert claim.supported and claim.confidence is None
    assert key_terms("Use `fill = TRUE` with read.table in R 4.2.0 or C-r.", "How?") == [
        "TRUE", "read.table", "4.2.0", "C-r", "fill = TRUE"]


def test_what_the_question_gives_is_not_the_model_s_choice() -> None:
    [claim] = check("Use read.table to read it.", {"read.table": 0.2},
                    question="How does read.table read a file?")
    assert claim.supported
    [claim] = check("Use read.table to read it.", {"read.table": 0.2},
                    question="How do I read a file?")
    assert not claim.supported


def test_terms_are_found_as_the_reply_escapes_them() -> None:
    answer = 'Call f("x") with "quotes".'
    reply = Reply(tokens_of(json.dumps({"answer": answer}), {'f(\\"x\\")': 0.2}),
                  json_reply=True)
    found = reply.probability('f("x")', near=answer)
    assert found is not None and round(found[0], 2) == 0.2


def test_a_flag_already_given_keeps_its_reason_and_the_setting_is_obeyed() -> None:
    [claim] = check("Press `M-d` to cut it.", {"M-d": 0.25}, supported=False)
    assert not claim.supported and claim.reason == "" and claim.confidence == 0.25
    [claim] = check("Press `M-d` to cut it.", {"M-d": 0.25}, answer_confidence_min=0.2)
    assert claim.supported


def test_on_by_itself_with_the_bundled_model_only() -> None:
    local = make_settings(Path("/nonexistent"))
    remote = make_settings(Path("/nonexistent"), openai_base_url="http://127.0.0.1:9/v1",
                           llm_model="m")
    assert wanted(local) and not wanted(remote)
    assert wanted(make_settings(Path("/nonexistent"), openai_base_url="http://127.0.0.1:9/v1",
                                llm_model="m", answer_confidence="on"))
    assert not wanted(make_settings(Path("/nonexistent"), answer_confidence="off"))


def test_a_bare_answer_s_first_token_is_not_weighed_against_sentence_openings() -> None:
    """At the start of the answer the model also chooses how to begin ("Modula-3" or "The
    idea…"): opening words are no rivals; another term is."""
    reply = json.dumps({"answer": "Modula-3", "sources": [1]})
    start = reply.index("Modula")
    opening = [TokenProb(reply[:start], 0.0), TokenProb("Mod", math.log(0.26),
                                                         (("The", math.log(0.6)),)),
               TokenProb(reply[start + 3:], 0.0)]
    found = Reply(opening, json_reply=True).probability("Modula-3", near="Modula-3")
    assert found is not None and found[0] == 1.0
    rival = [opening[0], TokenProb("Mod", math.log(0.26), (("pascal", math.log(0.6)),)),
             opening[2]]
    found = Reply(rival, json_reply=True).probability("Modula-3", near="Modula-3")
    assert found is not None and round(found[0], 2) == 0.30 and found[1] == ["pascal"]


def test_the_evaluation_counts_what_the_check_flagged() -> None:
    from rag_app.eval.qa import summarise

    unsure = "the model was unsure of 'M-d' (25%)"
    rows = [eval_row(contains=False, claims=[{"text": "M-d.", "supported": False,
                                                "reason": unsure}]),
            eval_row(contains=True, claims=[{"text": "C-k.", "supported": False,
                                               "reason": unsure}]),
            eval_row(contains=False, claims=[{"text": "Free.", "supported": False,
                                                "reason": "the source says a fee"}]),
            eval_row(contains=False, claims=[{"text": "C-n.", "supported": True}])]
    m = summarise(rows, use_llm=True, judge=False)
    assert (m["wrong_flagged"], m["right_flagged"], m["misleading"]) == (2.0, 1.0, 0.25)
    assert (m["wrong_flagged_unsure"], m["right_flagged_unsure"]) == (1.0, 1.0)
