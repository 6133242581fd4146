"""The parts check: a question of two parts (or a plural "which") answered in part is flagged;
answers that give each part its own item, in code, names, figures or plain lists, are not.
The wrong cases are recorded replies of the bundled model on the dev sets; so are most of the
right ones, beside a few written to probe plain-word answers."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag_app.answering.checks.base import Draft, Inputs
from rag_app.answering.checks.parts import PARTIAL, Parts, parts, unanswered
from rag_app.answering.records import Claim
from tests.conftest import make_settings
from tests.fakes import eval_row

PARTIAL_ANSWERS = [
    # rm-050: one command for two
    ("After compiling R myself, which command verifies the build and which one puts it in place "
     "system-wide?",
     "To verify the build and place it in place system-wide, you can use the `make install` "
     "command.", "it asks 2 things"),
    # rm-059: the year is never spoken of
    ("When citing R, how do I look up the year to give, and which function prints ready-made "
     "citation text?",
     "To cite R in publications, use `citation()`. The function prints ready-made citation text.",
     "does not speak to “how do I look up the year to give”"),
    # rm-005: a plural asked, one named in plain words
    ("If I fit a count model with glm() and the Poisson family, which link functions can I pick "
     "without any extra work?",
     "The Poisson family has a default link of the log.", "several"),
    # rm-043
    ("Which base functions can turn the wide MRI measurement columns V1 to V4 into one long "
     "response column?",
     "The reshape function can turn the wide MRI measurement columns V1 to V4 into one long "
     "response column.", "several"),
    # wd-014: two tools named in plain words, neither an item
    ("Among the tools the Python FAQ lists for turning a script into a stand-alone executable, "
     "which one is for macOS only and which one for Windows only?",
     "The freeze tool is for Windows only and the env program is for macOS only.",
     "the answer gives none"),
    # wd-016: "the same encoding" is no encoding
    ("When Python-Markdown converts one file straight into another, which text encoding does it "
     "assume unless told otherwise, and which error handler does it use when writing characters "
     "out?",
     "Python-Markdown assumes the same encoding for input and output unless told otherwise. The "
     "`xmlcharrefreplace` error handler is used when encoding the output.",
     "the answer gives one"),
    # wd-026, wd-021: a which-question of one part answered with a category, or a tautology
    ("Which antivirus product does the Python FAQ single out for making the interpreter slow to "
     "launch on Windows?",
     "The problem may be caused by a misconfiguration of virus checking software on the problem "
     "machine.", "names nothing the question does not"),
    ("Which function does the WikiLinks extension use for its build_url option when I don't "
     "pass one?",
     "The WikiLinks extension uses the default `build_url` function when you don't pass one.",
     "names nothing"),
]

WHOLE_ANSWERS = [
    # recorded, right
    ("Which buttons do I hold to pair the AK-200 Smart with the Aurora Home app, and for how "
     "long?",
     "To pair the AK-200 Smart with the Aurora Home app, hold the power button and the 100 °C "
     "button together for 3 seconds until the ring around the power button flashes blue."),
    ("When was firmware 2.2.0 released, and what feature did it add?",
     "Firmware 2.2.0 was released on 2023-09-12. It added the feature of scheduled boiling, "
     "where the kettle boils if it holds at least 0.5 litres of water."),
    ("During which holiday season did Guido van Rossum start writing Python, and in which month "
     "and year did he first post it to USENET?",
     "During the 1989 Christmas holidays, Guido van Rossum started writing Python, and in "
     "February 1991, he first posted it to USENET."),
    ("How can I write all my current objects to disk without quitting, and which file do they go "
     "to by default?",
     "To write all your current objects to disk without quitting, you can use the "
     "`save.image()` function. It saves them to the file `.RData` in the working directory."),
    ("For a GLM on yes/no outcomes, which link choices come built in?",
     "The binomial family has built-in link choices: logit, probit, log, cloglog."),
    ("Which CRAN package, and which function in it, can bring black-and-white, greyscale or "
     "colour bitmaps of the old Unix netpbm kind into R?",
     "The CRAN package `pixmap` has a function `read.pnm` to read 'portable anymap' images."),
    ("When I quit and choose to keep my work, which files in the working folder end up holding "
     "my objects and my typed commands?",
     "They are .RData and .Rhistory."),
    ("Which R functions do the jobs of the shell's touch and mkdir?",
     "file.create and dir.create"),
    # recorded, right: a bare item is the answer
    ("With DBI, which call runs an SQL statement and hands back the whole result as a data "
     "frame?", "dbGetQuery"),
    ("Besides Hewlett-Packard, which computer maker does the Python FAQ name as shipping Windows "
     "machines with Python already installed?", "HP/Compaq"),
    # fourth live run, right: an all-capitals name opens the sentence
    ("Which environment variable keeps Python from saving compiled copies of the modules it "
     "imports?",
     "PYTHONDONTWRITEBYTECODE environment variable keeps Python from saving compiled copies of "
     "the modules it imports."),
    ("Which call runs the query?", "The dbGetQuery call runs it."),
    # written: plain-word items, lists without a colon, a definition beside an item
    ("What is BM25, and which library implements it here?",
     "BM25 is a ranking function over word counts; the bm25s library implements it."),
    ("What is the capital of France, and which river runs through it?",
     "The capital of France is Paris, and the Seine runs through it."),
    ("Which options does the kettle's app offer?",
     "It offers keep warm, scheduled boiling and child lock."),
    ("How long is the warranty, and how can it be extended?",
     "The warranty lasts 2 years; registering the kettle within 30 days extends it to 5 years."),
]


@pytest.mark.parametrize(("question", "answer", "why"), PARTIAL_ANSWERS)
def test_an_answer_to_part_of_the_question_is_flagged(question: str, answer: str,
                                                      why: str) -> None:
    reason = unanswered(question, answer)
    assert reason is not None and reason.startswith(PARTIAL) and why in reason


@pytest.mark.parametrize(("question", "answer"), WHOLE_ANSWERS)
def test_an_answer_to_every_part_passes(question: str, answer: str) -> None:
    assert unanswered(question, answer) is None


def test_a_question_of_one_part_without_which_is_not_judged() -> None:
    assert unanswered("What function closes every graphics device?", "Use the closer.") is None
    assert unanswered("What does the warranty not cover?", "Damage from misuse.") is None


def test_parts_start_at_their_question_word() -> None:
    asked = parts("When citing R, how do I look up the year to give, and which function prints "
                  "ready-made citation text?")
    assert [p.text for p in asked] == ["how do I look up the year to give",
                                       "which function prints ready-made citation text"]
    assert [p.asks_item for p in asked] == [False, True]
    asked = parts("Which package bundled with R lets me spread work over several cores, and in "
                  "which R version was it added?")
    assert [p.text for p in asked][1] == "in which R version was it added"
    assert parts("Which of the functions reads CSV files?")[0].plural is False
    asked = parts("Py_BuildValue() cannot build a tuple whose length is only known at run time; "
                  "which C API function should I call instead?")
    assert [p.text for p in asked] == ["which C API function should I call instead"]


def _verdict_claims(question: str, claims: list[Claim], tmp_path: Path) -> list[Claim]:
    draft = Draft(" ".join(c.text for c in claims), [1], claims=claims)
    inputs = Inputs(query=question, settings=make_settings(tmp_path), hits=[], context=[],
                    sources=[], chat=None, embedder=None)
    verdict = Parts()(inputs, draft)
    return (verdict.draft or draft).claims


def test_the_sentence_that_gives_the_item_is_flagged_and_keeps_its_quote(
        tmp_path: Path) -> None:
    question, answer, _ = PARTIAL_ANSWERS[1]
    first, second = (Claim(text=t + ".", source=1, quote="q" + str(n), supported=True)
                     for n, t in enumerate(answer.rstrip(".").split(". ")))
    out = _verdict_claims(question, [first, second], tmp_path)
    assert out[1] == second
    assert not out[0].supported and out[0].quote == "q0" and out[0].reason.startswith(PARTIAL)


def test_nothing_is_flagged_when_no_sentence_reads_as_right(tmp_path: Path) -> None:
    question, answer, _ = PARTIAL_ANSWERS[0]
    unsupported = Claim(text=answer, source=1, quote="", supported=False, reason="unsupported")
    assert _verdict_claims(question, [unsupported], tmp_path) == [unsupported]


def test_the_setting_turns_it_off(tmp_path: Path) -> None:
    assert Parts().enabled(make_settings(tmp_path))
    assert not Parts().enabled(make_settings(tmp_path, answer_flag_partial=False))


def test_the_evaluation_counts_what_the_check_flagged() -> None:
    from rag_app.eval.qa import summarise

    question, answer, _ = PARTIAL_ANSWERS[0]
    flag = unanswered(question, answer)
    rows = [eval_row(contains=False, claims=[{"text": answer, "supported": False,
                                              "reason": flag}]),
            eval_row(contains=True, claims=[{"text": "Use `make check`.", "supported": True}])]
    m = summarise(rows, use_llm=True, judge=False)
    assert (m["wrong_flagged"], m["right_flagged"], m["misleading"]) == (1.0, 0.0, 0.0)
    assert (m["wrong_flagged_partial"], m["right_flagged_partial"]) == (1.0, 0.0)


def test_a_figure_answers_a_quantity_and_word_forms_match() -> None:
    # the sample set's shape: "what power" is answered by 2200 W; "draws" speaks to "draw"
    assert unanswered("How long is the warranty, and what power does it draw?",
                      "Every kettle has a 2-year warranty. It draws 2200 W.") is None
    assert unanswered("How do I descale it, and how do I clean the filter?",
                      "Descale it with citric acid; rinse the filters under the tap.") is None
