"""The warned check: code the passages only warn against, given as the answer, is flagged.
Logic tests on the recorded live case (R FAQ 7.10, answered `as.numeric()` in three runs) and
the cases it must pass."""

from __future__ import annotations

from rag_app.answering.checks.warned import WARNED, warned
from rag_app.answering.records import Claim

QUESTION = ("My numeric column turned into a factor when I imported it; how do I recover the "
            "original values rather than the level numbers?")
FAQ = """7.10 How do I convert factors to numeric?
It may happen that when reading numeric data into R (usually, when reading in a file),
they come in as factors. If f is such a factor object, you can use
as.numeric(as.character(f))
to get the numbers back. More efficient, but harder to remember, is
as.numeric(levels(f))[as.integer(f)]
In any case, do not call as.numeric() or their likes directly for the task at hand (as
as.numeric() or unclass() give the internal codes)."""


def claim(text: str, supported: bool = True) -> Claim:
    return Claim(text, 1, "If f is such a factor object, you can use as.numeric(as.character(f))",
                 supported)


def test_code_the_passage_only_warns_against_is_flagged() -> None:
    said = "You can use the `as.numeric()` function on the factor column."
    assert warned(claim(said), QUESTION, [FAQ]) == (
        f"{WARNED} as.numeric(): “do not call as.numeric()”")


def test_code_the_passage_also_gives_without_a_warning_passes() -> None:
    """`as.numeric` (no brackets) stands in "you can use as.numeric(as.character(f))" too."""
    for said in ("Use `as.numeric(as.character(f))` to get the numbers back.",
                 "Call as.numeric on the result of as.character."):
        assert warned(claim(said), QUESTION, [FAQ]) is None, said


def test_a_sentence_that_gives_the_warning_itself_passes() -> None:
    said = "Use `as.numeric(as.character(f))`; do not call `as.numeric()` directly."
    assert warned(claim(said), QUESTION, [FAQ]) is None


def test_only_a_warning_in_the_same_clause_and_close_counts() -> None:
    for passage in ("You do not need to call anything else first: update.packages() does it.",
                    "It returns try-error instead of an error, or preferably tryCatch() does.",
                    "Never mind the details, update.packages() does it.",
                    "Do not worry. update.packages() does it."):
        said = "Run `update.packages()` to update them."
        assert warned(claim(said), "How do I update my packages?", [passage]) is None, passage
    for passage in ("Do not use update.packages() here.", "Avoid `update.packages()` on a server.",
                    "Use install.packages() rather than\nupdate.packages() for that."):
        said = "Run `update.packages()` to update them."
        assert warned(claim(said), "How do I update my packages?", [passage]), passage


def test_words_names_and_figures_are_not_judged_nor_are_flagged_claims() -> None:
    passage = "UTF-8 files should never have a BOM, and never use version 4.2.0."
    assert warned(claim("The file has a BOM, in R 4.2.0."), "Why does it fail?", [passage]) is None
    said = "You can use the `as.numeric()` function on the factor column."
    assert warned(claim(said, supported=False), QUESTION, [FAQ]) is None
