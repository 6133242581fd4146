"""The opposite check: an item whose own name or quoted line says the opposite of what the
question asks is flagged; the right item, and words of the opposite sense elsewhere, are not.
The cases are recorded replies of the bundled model on the R manuals and web docs dev sets."""

from __future__ import annotations

from rag_app.answering.checks.opposite import OPPOSITE, checked, opposite
from rag_app.answering.records import Claim
from tests.fakes import eval_row

HISTORY_Q = ("At the R prompt on Linux, which keystroke hunts backwards through my earlier "
             "commands for one containing some word?")
WRITER_Q = ("I need a CSV for colleagues whose spreadsheets use a comma as the decimal mark and "
            "semicolons between fields; which writer should I use?")
CSV2 = ("The variations read.csv2 and read.delim2 are appropriate for use in those locales "
        "where the comma is used for the decimal point and (for read.csv2) for spreadsheets "
        "which use semicolons to separate fields.")
PYGMENTS_Q = ("With CodeHilite, which option do I turn off so that Pygments stops trying to work "
              "out the language of code blocks that don't name one?")
PYGMENTS = ("The option is `True` by default, however, it allows one to turn off Pygments code "
            "highlighting (set to `False`) while preserving the language detection features of "
            "the extension.")


def claim(text: str, quote: str) -> Claim:
    return Claim(text=text, source=1, quote=quote, supported=True)


def test_a_key_whose_line_goes_the_other_way_is_flagged() -> None:
    # rm-013, two live runs: C-n for C-r, at probability 1.0 (the confidence check passes it)
    said = claim("C-n", "… C-n Go to the next command (forwards in the history).")
    reason = opposite(said, HISTORY_Q)
    assert reason is not None and reason.startswith(OPPOSITE)
    assert "“forwards” beside C-n" in reason and "“backwards”" in reason


def test_the_right_key_passes() -> None:
    said = claim("C-r", "C-r text Find the last command with the text string in it.")
    assert opposite(said, HISTORY_Q) is None


def test_a_reader_given_for_a_writer_is_flagged() -> None:
    # rm-003: read.csv2 where the manual says write.csv2
    said = claim("To create a CSV file for colleagues whose spreadsheets use a comma as the "
                 "decimal mark and semicolons between fields, you should use `read.csv2`.", CSV2)
    reason = opposite(said, WRITER_Q)
    assert reason is not None and "“read” beside read.csv2" in reason and "“writer”" in reason


def test_the_writer_passes() -> None:
    said = claim("Use `write.csv2`.", "In some locales the comma is used as the decimal point "
                 "and there CSV files use the semicolon as the field separator: use write.csv2 "
                 "for appropriate defaults.")
    assert opposite(said, WRITER_Q) is None


def test_an_option_quoted_as_preserving_what_the_question_stops_is_flagged() -> None:
    # wd-006, three live runs: use_pygments = False for guess_lang
    said = claim("To turn off Pygments code highlighting, you can set the `use_pygments` "
                 "configuration option to `False`.", PYGMENTS)
    reason = opposite(said, PYGMENTS_Q)
    assert reason is not None and "“preserving”" in reason and "“stops”" in reason


def test_a_hyphenated_word_is_no_opposite() -> None:
    # rm-065, right: "add-on" in the question is no "add" against REMOVE
    said = claim("To uninstall an add-on package from the shell prompt, use `R CMD REMOVE pkg_1 "
                 "... pkg_n` where pkg_1, ..., pkg_n are the names of the packages you want to "
                 "remove.", "Use $ R CMD REMOVE pkg_1 ... pkg_n to remove the packages pkg 1, "
                 ". . ., pkg n from the library tree rooted at the first directory given in "
                 "R_LIBS if this is set and non-null, and from the default library otherwise.")
    assert opposite(said, "How do I uninstall an add-on package from the shell prompt?") is None


def test_a_quoted_line_that_says_both_sides_passes() -> None:
    # rm-023, right: the quote says "read" beside fileEncoding, as the question does
    said = claim("On Linux, you can read a UTF-8 file that starts with a byte order mark by "
                 "using the `read.table` function with the `fileEncoding` argument set to "
                 "'UTF-8-BOM'.",
                 "So faced with a file which file reports as intro.dat: UTF-8 Unicode (with BOM) "
                 "text it can be read on Windows by read.table(\"intro.dat\", fileEncoding = "
                 "\"UTF-8\") but on a Unix-alike might need read.table(\"intro.dat\", "
                 "fileEncoding = \"UTF-8-BOM\")")
    assert opposite(said, "On Linux, how do I read a UTF-8 file that starts with a byte order "
                          "mark?") is None


def test_an_opposite_outside_the_quote_is_not_looked_at() -> None:
    # rm-019, right in one run: read.csv for an "exported" file; the quote does not give it
    said = claim("To read a spreadsheet-like text file with ragged rows, you can set the fill "
                 "argument to TRUE in the read.csv function.",
                 "In Section 1.2 [Export to text files], page 4, we saw a number of variations "
                 "on the format of a spreadsheet-like text file.")
    assert opposite(said, "Rows in my exported spreadsheet file are ragged because empty "
                          "trailing cells were dropped; how do I still read it?") is None


def test_a_question_with_both_sides_is_not_judged() -> None:
    said = claim("C-n", "C-n Go to the next command (forwards in the history).")
    assert opposite(said, "Which key goes forwards, not backwards, through the history?") is None


def test_checked_flags_and_keeps_the_quote() -> None:
    said = claim("C-n", "C-n Go to the next command (forwards in the history).")
    out = checked(said, HISTORY_Q)
    assert not out.supported and out.quote == said.quote and out.reason.startswith(OPPOSITE)
    unsupported = Claim(text="C-n", source=1, quote=said.quote, supported=False, reason="x")
    assert checked(unsupported, HISTORY_Q) is unsupported


def test_the_evaluation_counts_what_the_check_flagged() -> None:
    from rag_app.eval.qa import summarise

    flag = opposite(claim("C-n", "C-n Go to the next command (forwards in the history)."),
                    HISTORY_Q)
    rows = [eval_row(contains=False, claims=[{"text": "C-n", "supported": False,
                                                "reason": flag}]),
            eval_row(contains=False, claims=[{"text": "M-d.", "supported": False,
                                                "reason": "the model was unsure of 'M-d'"}]),
            eval_row(contains=True, claims=[{"text": "C-r", "supported": True}])]
    m = summarise(rows, use_llm=True, judge=False)
    assert (m["wrong_flagged"], m["right_flagged"], m["misleading"]) == (2.0, 0.0, 0.0)
    assert (m["wrong_flagged_opposite"], m["right_flagged_opposite"]) == (1.0, 0.0)


def test_a_sentence_that_itself_says_the_other_side_is_flagged() -> None:
    # wd-007, recorded: a third-party extension asked, one "included in the standard library"
    question = ("Why won't a backtick-fenced code block work inside a bulleted item or a quote, "
                "and which third-party extension do the docs point to for that?")
    said = claim("The Fenced Code Blocks extension is included in the standard Markdown library "
                 "and is not specifically designed to handle nested code blocks.",
                 "The Fenced Code Blocks extension adds a secondary way to define code blocks.")
    reason = opposite(said, question)
    assert reason is not None and "the answer says “standard”" in reason
    assert "“third-party”" in reason
    right = claim("The docs point to the third-party SuperFences extension, which is not part "
                  "of the standard library.", "SuperFences (a third-party extension) …")
    assert opposite(right, question) is None  # it says the question's side too


def test_a_sentence_that_says_the_question_s_side_is_not_undone_by_a_quoted_line() -> None:
    # rm-007, fourth live run, right: the quote is read.table's line about col.names
    question = ("Which write.table setting gives Excel an empty header cell above the row "
                "labels?")
    said = claim("The write.table setting that gives Excel an empty header cell above the row "
                 "labels is `col.names = NA`.",
                 "If presented with a file that has a (possibly empty) header field for the row "
                 "labels, read it in by something like read.table(\"file.dat\", header = TRUE, "
                 "row.names = 1) Column names can be given explicitly via the col.names.")
    assert opposite(said, question) is None
    # its own name still counts: read.csv2 for a writer, whatever the sentence says
    named = claim("To write it, use `read.csv2`.", CSV2)
    reason = opposite(named, WRITER_Q)
    assert reason is not None and "“read” beside read.csv2" in reason
