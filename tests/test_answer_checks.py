"""The answer checks that need no model: contradictions between a sentence and its quote,
and answers cut off inside a bracket, quote or code span (rules only; recorded replies)."""

from __future__ import annotations

import pytest

from rag_app.answering.checks.base import Draft, Inputs
from rag_app.answering.checks.contradiction import Contradiction, contradiction
from rag_app.answering.records import Claim

PRICE_LIST = ("REPLACEMENT PARTS AND PRICES (2024) AKF-12 limescale filter ..................... "
              "£6.50 AKS-03 silicone lid seal .................... £4.00 AKB-2 power base with "
              "75 cm cord ........... £19.00")


@pytest.mark.parametrize(("claim", "quote", "why"), [
    # recorded: the README's sample question, bundled 1.5B, a fresh clone (issue 23)
    ("It can be extended by registering the kettle within 30 days of delivery and paying an "
     "additional fee.",
     "Register your kettle within 30 days of delivery and the warranty is extended at no cost "
     "to 5 years.", "at no cost"),
    ("Descaling is free of charge at any service centre.",
     "Descaling at a service centre costs a fee of £12.", "a charge"),
    ("The kettle must not be immersed in water.", "The kettle must be immersed in water.",
     "must be immersed"),
    ("The base can be washed in the dishwasher.", "The base cannot be washed in the dishwasher.",
     "cannot be washed"),
    ("You don't need to register the kettle.", "You do need to register the kettle.", "do need"),
    ("Use drop = TRUE to keep the dimensions.", "Use drop = FALSE to keep the dimensions.",
     "drop = FALSE"),
    # recorded: samples ak-014 (unanswerable), the price of a lid seal given for a window
    ("The replacement water level window costs £4.00.", PRICE_LIST, "silicone lid seal"),
])
def test_a_claim_its_quote_contradicts_is_caught(claim: str, quote: str, why: str) -> None:
    assert why in contradiction(claim, quote)


@pytest.mark.parametrize(("claim", "quote"), [
    ("The warranty is extended at no cost to 5 years.",
     "Register your kettle within 30 days of delivery and the warranty is extended at no cost "
     "to 5 years."),
    ("The AKS-03 silicone lid seal costs £4.00.", PRICE_LIST),
    ("A replacement limescale filter costs £6.50.", PRICE_LIST),
    # recorded: samples ak-005, right; the row's label holds a figure of its own ("75 cm")
    ("The replacement AKB-2 power base costs £19.00.", PRICE_LIST),
    ("The kettle must not be immersed in water.", "Never immerse it: the kettle must not be "
     "immersed in water."),
    ("The base cannot be washed in the dishwasher.", "The base cannot be washed in the "
     "dishwasher."),
    # recorded right answers (samples ak-030, R manuals): a figure in an ordinary sentence
    ("A full kettle takes about 4 minutes 10 seconds to boil.",
     "A full kettle (1.7 litres) boils in about 4 minutes 10 seconds."),
    ("Returns are free within 30 days.", "You can return it free of charge within 30 days."),
    ("The fee is £10.", "A fee of £10 applies."),
])
def test_a_claim_that_agrees_with_its_quote_is_not_flagged(claim: str, quote: str) -> None:
    assert contradiction(claim, quote) == ""


def test_a_bare_figure_is_read_with_the_question_that_names_its_row() -> None:
    # recorded 2026-12-07: samples ak-005 answered "£19.00" alone, right, and was flagged
    question = "How much does a replacement AKB-2 power base cost?"
    assert contradiction("£19.00", PRICE_LIST, question) == ""
    assert "silicone lid seal" in contradiction("£4.00", PRICE_LIST, question)
    assert "silicone lid seal" in contradiction(
        "£4.00", PRICE_LIST, "How much does a replacement water level window cost?")


def test_the_check_flags_the_sentence_and_keeps_its_quote() -> None:
    good = Claim("The seal costs £4.00.", 1, PRICE_LIST, True, score=0.6)
    bad = Claim("The water level window costs £4.00.", 1, PRICE_LIST, True, score=0.4)
    gone = Claim("Unsupported.", 1, "x", False, "no sentence of the cited sources states it")
    draft = Draft("…", [1], claims=[good, bad, gone])
    inputs = Inputs(query="q", settings=None, hits=(), context=(), sources=(),  # type: ignore[arg-type]
                    chat=None, embedder=None)
    verdict = Contradiction()(inputs, draft)
    assert verdict.refuse is None and verdict.draft is not None
    claims = verdict.draft.claims
    assert claims[0] == good and claims[2] == gone
    assert not claims[1].supported and "silicone lid seal" in claims[1].reason
    assert claims[1].quote == PRICE_LIST  # the reader sees the words it contradicts
    assert Contradiction()(inputs, Draft("…", [1], claims=[good])).draft is None


@pytest.mark.parametrize(("text", "what"), [
    # the answer kept aside: cut where its source has f("x")
    ("Use `tools::testInstalledPackage(", "a code span"),
    ("Call testInstalledPackages(", "an open “(”"),
    ('Set the option to "fast', "an open quotation mark"),
    ("The options are [a, b", "an open “[”"),
    # recorded (web docs wd-006, wrong, shown as supported): it stops after "and"
    ("The SmartyPants extension converts ASCII dashes, quotes and ellipses to their HTML entity "
     "equivalents, but ASCII symbols like ' and", "a sentence, after “and”"),
    ("Set the value to the", "a sentence, after “the”"),
    ("Use `read.csv` or", "a sentence, after “or”"),
])
def test_an_answer_that_stops_inside_an_open_span_is_flagged(text: str, what: str) -> None:
    from rag_app.answering.checks.whole import Whole, unclosed

    assert unclosed(text) == what
    supported = Claim(text, 1, "quote", True, score=0.5)
    inputs = Inputs(query="q", settings=None, hits=(), context=(), sources=(),  # type: ignore[arg-type]
                    chat=None, embedder=None)
    verdict = Whole()(inputs, Draft(text, [1], claims=[supported]))
    assert verdict.draft is not None
    (claim,) = verdict.draft.claims
    assert not claim.supported and "cut off" in claim.reason
    # no claims to mark (the quotes could not be found): the flag is added as one
    verdict = Whole()(inputs, Draft(text, [1]))
    assert verdict.draft is not None and not verdict.draft.claims[0].supported


@pytest.mark.parametrize("text", [
    "Use `f(\"x\")` to test it.", "It lasts 2 years (from delivery).", "Steps: 1) fill 2) boil.",
    'The "drop" argument keeps dimensions.', "Run ```R CMD check pkg``` first.",
    # recorded (R manuals rm-022, right): brackets and quotes inside closed code spans
    '`getS3method("[", "terms")` returns the code for the `[` method.',
    "For an S3 method (e.g., [.terms) use getS3method. It returns the code.",
    "file.create and dir.create", "C-n", "Use `read.csv` or `read.table`", "Yes, it is on",
    "Pick A or B.", "The answer is `and`", "Plug it in", "the one it came with",
])
def test_a_whole_answer_is_not_flagged(text: str) -> None:
    from rag_app.answering.checks.whole import unclosed

    assert unclosed(text) == ""


def test_escaped_quotes_backslashes_and_code_spans_never_end_a_streamed_answer() -> None:
    """The reply reader gives back every answer whole, in pieces of any size."""
    import json
    import random

    from rag_app.answering.replies import StringFields, parse_reply

    rng = random.Random(7)
    alphabet = 'ab "\\`(){}[]\n\t/u\u00e9\u2603x'
    for _ in range(500):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        raw = json.dumps({"answer": text, "sources": [1]}, ensure_ascii=rng.random() < 0.5)
        for size in (1, 2, 3, 5):
            reader = StringFields("statement", "answer")
            assert "".join(reader.feed(raw[i:i + size])
                           for i in range(0, len(raw), size)) == text
        assert parse_reply(raw)[0] == text
