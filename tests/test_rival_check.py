"""The rival check: a figure, version or chord given where the sources give another one beside
the question's own word is flagged; the right item, or an item beside it, is not."""

from __future__ import annotations

from rag_app.answering.checks.rival import checked, rival
from rag_app.answering.checks.subject import OFF_SUBJECT
from rag_app.answering.records import Claim

PRESETS = ("The control panel\nThe control panel on the handle has a power button and five "
           "temperature buttons.\nTemperature presets\n- 70 °C: green tea\n- 80 °C: white tea\n"
           "- 85 °C: oolong tea\n- 90 °C: French press coffee\n- 100 °C: black tea, herbal tea "
           "and instant drinks\nThe default temperature, used when you only press the power "
           "button, is 100 °C.\nKeep-warm function\nHold a temperature button for 3 seconds.")
PRESETS_AT = "manual.pdf p. 3"
ALTITUDE = ("Above 2,000 metres water boils below 100 °C. The AK-200 Smart with firmware 2.3.0 "
            "has an altitude mode. On the standard AK-200, choose the 90 °C preset instead.",
            "faq.html § Can I use the kettle at high altitude?")
STACK = ("The pointer protection stack holds the objects in use.\n"
         "The pointer protection stack defaults to 10000, but can be increased to allow "
         "big and complicated calculations to be done.\nIt is set by the command-line "
         "option --max-ppsize.\nThe largest value accepted is 100000.\n"
         "Overflowing the pointer protection stack is an error.", "R-ints.pdf p. 12")
HISTORY = ("C-p Go to the previous command (backwards in the history).\n"
           "C-n Go to the next command (forwards in the history).\n"
           "C-r text Find the last command with the text string in it.\n"
           "M-b Go back one word.", "R-intro.pdf p. 90")
OOLONG = "Which temperature preset should I use for oolong tea?"


def claim(text: str) -> Claim:
    return Claim(text=text, source=1, quote="", supported=True)


DESCALE = ("Descale the kettle every 4 weeks in hard water areas.", "manual.pdf p. 4")


def passages() -> list[tuple[str, str]]:
    return [(PRESETS, PRESETS_AT), ALTITUDE, DESCALE]


def test_a_figure_where_the_question_word_stands_beside_another_is_flagged() -> None:
    text = "The default temperature, used when you only press the power button, is 100 °C."
    out = checked(claim(text), OOLONG, passages(), text)
    assert not out.supported
    # counted by the evaluation with the subject check's flags
    assert out.reason == f"{OFF_SUBJECT} 85 °C beside “oolong”, not 100"


def test_the_right_figure_passes() -> None:
    # "presets" pins two places too (the list's heading, the altitude answer's 90 °C preset):
    # beside one of the question's pinpoint words ("oolong") is enough (seen live: the right
    # 85 °C was flagged for the 90 °C beside "presets")
    text = "The temperature preset for oolong tea is 85 °C."
    assert checked(claim(text), OOLONG, passages(), text).supported


def test_a_figure_on_the_line_beside_the_question_word_passes() -> None:
    # the item may sit on the line before or after the word (a list's label and its value)
    text = "Use 90 °C."
    assert rival(claim(text), OOLONG, passages(), text) is None


def test_a_largest_value_given_as_the_default_is_flagged() -> None:
    question = ("What is the default depth of the pointer protection stack, and what is the "
                "largest value R will accept?")
    text = "The default depth is 10000, and R will accept at most 10000."
    why = rival(claim(text), question, [STACK, (PRESETS, PRESETS_AT)], text)
    assert why is not None and "100000" in why and "not 10000" in why
    right = "The default depth is 10000, and R will accept at most 100000."
    # the answer gives the rival itself elsewhere: no flag for the default's figure
    assert rival(claim("The default depth is 10000."), question,
                 [STACK, (PRESETS, PRESETS_AT)], right) is None


def test_items_of_another_kind_are_no_rivals() -> None:
    # beside "oolong" stands a temperature, not a time: a time is not judged against it
    text = "Hold it for 3 seconds."
    assert rival(claim(text), OOLONG, passages(), text) is None


def test_names_and_code_are_left_to_the_other_checks() -> None:
    text = "Use the `oolong_preset()` function."
    assert rival(claim(text), OOLONG, passages(), text) is None


def test_a_common_question_word_is_no_pinpoint() -> None:
    # "history" stands in three lines: it pins nothing down, so C-n is not judged by it
    question = "Which keystroke moves through the history?"
    text = "C-n"
    assert rival(claim(text), question, [HISTORY, (PRESETS, PRESETS_AT)], text) is None


def test_a_flagged_claim_keeps_its_reason() -> None:
    flagged = Claim(text="It is 100 °C.", source=1, quote="", supported=False, reason="earlier")
    assert checked(flagged, OOLONG, passages(), flagged.text) == flagged


PACKAGES = ("The R distribution comes with the following packages:\n"
            "compiler R byte code compiler (added in R 2.13.0).\n"
            "datasets Base R datasets (added in R 2.0.0).\n"
            "parallel Support for parallel computation, including by forking and by sockets, "
            "and\nrandom-number generation (added in R 2.14.0).\n"  # as the PDF breaks it
            "splines Regression spline functions and classes.", "R-FAQ.pdf p. 25")
SKELETON = ("R version 1.3.0 has added the function package.skeleton() which will set up "
            "directories, save data and code, and create skeleton help files.",
            "R-exts.pdf p. 9")
CORES = ("Which package bundled with R lets me spread work over several cores, and in which R "
         "version was it added?")


def test_a_figure_about_the_item_the_answer_named_belongs_beside_it() -> None:
    # rm-062, recorded: `parallel` named right, then "It was added in R version 1.3.0" from a
    # sentence about package.skeleton(); the sources give 2.14.0 on parallel's own line
    first = claim("The package `parallel` bundled with R lets me spread work over several "
                  "cores.")
    second = claim("It was added in R version 1.3.0.")
    answer = f"{first.text} {second.text}"
    why = rival(second, CORES, [PACKAGES, SKELETON], answer, [first])
    assert why is not None and "2.14.0 beside “parallel”, not 1.3.0" in why
    right = claim("It was added in R version 2.14.0.")
    assert rival(right, CORES, [PACKAGES, SKELETON], f"{first.text} {right.text}",
                 [first]) is None
    assert rival(second, CORES, [PACKAGES, SKELETON], answer) is None  # no item named before
