"""The subject check: a name or figure the sources give only about something else is flagged."""

from __future__ import annotations

from rag_app.answering.checks.subject import OFF_SUBJECT, checked, off_subject, subject_stems
from rag_app.answering.records import Claim

FAQ = ("Python was created by Guido van Rossum in the late 1980s at CWI in the Netherlands. "
       "The first release, 0.9.0, was posted to alt.sources in February 1991. "
       + "Python is used for many kinds of work, from scripting to web servers. " * 4
       + "The Python Software Foundation is an independent non-profit organisation that holds "
       "the copyright on Python versions 2.1 and newer.")
FAQ_HEADING = "general.html § General Python FAQ > What is Python?"

OTHER_FAQ = ("Python is an interpreted, interactive, object-oriented programming language.",
             "general.html § General Python FAQ > Why is it called Python?")

DISTRIBUTIONS = (
    "R provides the density, distribution function, quantile function and random generation "
    "for many distributions. Prefix the name given here by 'd' for the density. "
    + "The names of the functions follow one rule for every distribution listed below. " * 3
    + "normal norm mean, sd. "
    + "Poisson pois lambda. Student's t t df, ncp. Weibull weibull shape, scale. " * 3
    + "lognormal lnorm meanlog, sdlog. So dlnorm gives the log-normal density.")
DIST_HEADING = "R-intro.pdf p. 41 § Probability distributions"


def claim(text: str) -> Claim:
    return Claim(text=text, source=1, quote="", supported=True)


def test_a_year_given_only_about_something_else_is_flagged() -> None:
    question = "In what year was the Python Software Foundation founded?"
    # "Python" is in every passage: it tells no place from another
    out = checked(claim("The Python Software Foundation was founded in 1991."), question,
                  [(FAQ, FAQ_HEADING), OTHER_FAQ])
    assert not out.supported
    assert out.reason.startswith(f"{OFF_SUBJECT} 1991 only where they do not mention")
    assert "founded" in out.reason or "foundation" in out.reason


def test_a_figure_given_next_to_the_subject_stands() -> None:
    question = "Who holds the copyright on Python 2.1 and newer?"
    out = checked(claim("The Python Software Foundation holds it."), question,
                  [(FAQ, FAQ_HEADING), OTHER_FAQ])
    assert out.supported  # names: Python Software Foundation, next to "copyright"


def test_the_right_function_stands_and_the_neighbouring_row_is_flagged() -> None:
    question = "Which function gives the density of the log-normal distribution?"
    passages = [(DISTRIBUTIONS, DIST_HEADING)]
    assert checked(claim("Use `dlnorm`."), question, passages).supported
    text = ("For the normal, dnorm(x) is the default. " + "Weibull shape. " * 20
            + "lognormal lnorm meanlog, sdlog; prefix 'd' for the density.")
    out = checked(claim("Use `dnorm`."), question, [(text, "R-intro.pdf p. 41"), OTHER_FAQ])
    assert not out.supported and "dnorm" in out.reason


def test_the_heading_path_counts_as_next_to_every_place() -> None:
    question = "How long is the warranty on a kettle?"
    text = "It lasts 24 months from the date of delivery. " + "Keep your receipt. " * 30
    assert checked(claim("It lasts 24 months."), question,
                   [(text, "warranty.md § Warranty > How long")]).supported


def test_question_words_no_passage_uses_prove_nothing() -> None:
    question = "What makes R forget every object I created?"  # paraphrase of rm(list = ls())
    text = "To remove all the objects in the workspace use rm(list = ls())."
    # 'forget', 'created' are nowhere in the passage; 'object' is: anchored
    assert checked(claim("Run `rm(list = ls())`."), question, [(text, "R-intro.pdf")]).supported
    # no subject word in any passage at all: nothing to judge by
    assert checked(claim("Run `rm(list = ls())`."), "Make R forget everything I made",
                   [(text, "R-intro.pdf")]).supported


def test_terms_no_passage_gives_are_left_to_the_unsourced_check() -> None:
    assert off_subject("qnorm", {"logno"}, [(DISTRIBUTIONS, DIST_HEADING)]) is None


def test_unsupported_claims_keep_their_reason() -> None:
    flagged = Claim(text="It is 1991.", source=1, quote="", supported=False, reason="other")
    assert checked(flagged, "When was the foundation founded?", [(FAQ, "")]) == flagged


def test_subject_words_leave_out_what_kind_of_answer_is_asked() -> None:
    assert subject_stems("Which function gives the log-normal density?") == {"logno", "densi"}
