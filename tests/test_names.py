"""What a question names and whether a passage mentions it (rag_app.names): plain logic."""

from __future__ import annotations

from rag_app.names import answer_names, distinctive_names, mentions, unmatched, unsourced


def test_codes_acronyms_and_capitalised_names() -> None:
    assert distinctive_names("What is the capacity of the AK-300 Pro kettle?") == ["AK-300", "Pro"]
    assert distinctive_names("Can it use Amazon Alexa or a USB stick?") == ["Amazon", "Alexa",
                                                                           "USB"]
    assert distinctive_names("What does a single mug's worth of water cost?") == []


def test_code_identifiers_and_versions_are_names() -> None:
    assert distinctive_names("How do I turn long data wide with tidyr's pivot_wider()?") == [
        "pivot_wider"]
    assert distinctive_names("How does dplyr's mutate() behave on grouped data?") == ["mutate"]
    assert distinctive_names("Is data.table's fread faster than read.csv?") == ["data.table",
                                                                               "read.csv"]
    assert distinctive_names("When was R 4.3.0 released?") == ["4.3.0"]
    assert distinctive_names("What does glm(family = poisson) fit?") == ["glm"]
    assert distinctive_names("Why are __builtin_new and __pure_virtual undefined?") == [
        "__builtin_new", "__pure_virtual"]
    assert distinctive_names("__import__('x.y.z') returns <module 'x'>; how do I get z?") == [
        "__import__"]
    assert mentions("the __import__ function", "__import__")


def test_ordinary_words_are_not_names() -> None:
    # abbreviations, plurals written "(s)", decimals and sentence-initial words
    assert distinctive_names("How do I list the file(s), e.g. logs, i.e. text?") == []
    assert distinctive_names("Does 1.5 litres fit?") == []
    assert distinctive_names("Where is www.python.org?") == ["www.python.org"]


def test_mentions_whole_words_and_hyphenated_compounds() -> None:
    assert mentions("The AK-200 holds 1.7 litres.", "ak-200")
    assert not mentions("The AK-2000 holds 1.7 litres.", "AK-200")
    assert not mentions("The AK-200-2 holds 1.7 litres.", "AK-200")
    assert mentions("Supported on Intel-based Macs.", "Intel")
    assert mentions("files compressed by bzip2 can be used via bzfile", "bzip2-compressed")
    assert mentions("This is OS dependent.", "OS-specific")
    assert not mentions("nothing here", "bzip2-compressed")
    assert not mentions("It holds 300 ml.", "ak-300")  # a code's parts are not plain words
    assert not mentions("Model 300 ships later.", "model-300")
    assert not mentions("read.csv2 writes semicolons", "read.csv")
    assert unmatched(["E5", "AK-200"], ["Error codes E1 to E4.", "The AK-200."]) == ["E5"]


def test_the_names_an_answer_gives_that_no_source_mentions() -> None:
    """What the bundled model answered from its own knowledge of R (measured on the R
    manuals: these were wrong answers), against what the sources say."""
    said = ("To keep it a matrix, use the `as.matrix()` function with var.equal = FALSE. "
            "The files are .RData and .Rhistory; use c(1) or R CMD BATCH on Linux 4.3.0.")
    names = answer_names(said, "How do I keep a row as a matrix on Linux?")
    # not plain capitalised words, single letters, or what the question itself names
    assert names == ["as.matrix", "var.equal", "FALSE", "RData", "CMD", "BATCH", "4.3.0"]
    sources = ["written to a file called .RData5 in the current directory",  # a footnote mark
               "Use R CMD BATCH to run it. R 4.3.01 is out.", "x[1, , drop = FALSE]"]
    assert unsourced(names, sources) == ["as.matrix", "var.equal", "4.3.0"]
    assert unsourced(["AK-200"], ["The AK-2001 is new."]) == ["AK-200"]  # a code is whole
    assert answer_names("It lasts 2 years. Hold both buttons.") == []
    # escapes a small model writes out are not part of a word ("\\nlibrary" is not a name)
    assert answer_names("Run this:\\nlibrary(x)\\n7.32 seconds") == ["library"]


def test_a_question_names_the_version_it_gives_after_a_name() -> None:
    from rag_app.names import question_names

    assert question_names("Which Python-Markdown release first supported Python 3.13?") == [
        "Python-Markdown", "Python", "3.13"]
    assert question_names("What changed in version 2.1?") == ["2.1"]
    assert question_names("What does R 4.3.0 add?") == ["4.3.0"]
    # a number alone is a figure, not a version
    assert question_names("Does it boil 1.5 litres?") == []
    assert question_names("It costs 3.50 pounds, right?") == []


def test_a_question_in_a_language_that_capitalises_nouns_keeps_only_codes_as_names() -> None:
    """German capitalises every noun: "Garantie" and "Wasserkocher" are no names, and the names
    check refused German questions over a multilingual collection for them (a walk through
    issue 25: over English passages, and over German ones for the compound "Fahrradkette")."""
    from rag_app.answering.checks.names import unmatched_names

    assert unmatched_names("Wie lange gilt die Garantie für den Wasserkocher?", []) == []
    assert unmatched_names("Wie oft soll man die Fahrradkette ölen?", []) == []
    # codes and capitals inside a word still count
    assert unmatched_names("Wie viel kostet der AK-300 Pro?", []) == ["AK-300"]
    assert distinctive_names("Wie installiert man PyPI-Pakete mit USB?", capitalised=False) \
        == ["PyPI-Pakete", "USB"]
    # an English question keeps its capitalised names
    assert unmatched_names("Does the kettle work with Alexa?", []) == ["Alexa"]
