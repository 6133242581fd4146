"""The kind of value a question asks for, and whether an answer gives one (rag_app.kinds)."""

from __future__ import annotations

import pytest

from rag_app.kinds import asked_kinds, missing_kinds


@pytest.mark.parametrize(("question", "kinds"), [
    ("How much does a replacement AKB-2 power base cost?", ["a price"]),
    ("What is the price of the descaling kit?", ["a price"]),
    ("What fee is charged for express delivery?", ["a price"]),
    ("How many watts does the AK-90 Travel kettle use?", ["a power in watts"]),
    ("What is the AK-200's power rating, and how long does a full kettle take to boil?",
     ["a power in watts"]),
    ("What voltage does the travel kettle take?", ["a voltage"]),
    ("How heavy is the AK-200?", ["a weight"]),
    ("How much does the empty kettle weigh, and what does it cost?", ["a weight", "a price"]),
    ("At what temperature should green tea be brewed?", ["a temperature"]),
    ("When an R NA is written out in binary, what low-word value (in decimal) marks it?",
     ["a number in decimal"]),
    ("How many people work at Aurora Kettle Co.?", ["a count"]),
    ("Roughly how many significant decimal figures can I trust in a Python float?",
     ["a count"]),
    ("After registering an AK-90 Travel, how long is its warranty, and within how many days "
     "of delivery must I register?", ["a count"]),
    # "how many" that is not what is asked
    ("read.table keeps failing; which helper shows how many items each line holds?", []),
    ("How does facet_wrap() decide how many panels go on each row?", []),
    # asks no value of a kind, or asks yes or no
    ("How much citric acid powder do I add when descaling?", []),
    ("Unless I override them, how much vector memory does R allow?", []),
    ("Does the price include VAT?", []),
    ("Is the power base dishwasher safe?", []),
    ("Which fuse protects the power supply?", []),
    ("What is the cost of a failure in the build?", []),
    ("How long is the standard warranty?", []),
])
def test_the_kinds_a_question_asks_for(question: str, kinds: list[str]) -> None:
    assert [k.name for k in asked_kinds(question)] == kinds


@pytest.mark.parametrize(("question", "answer", "missing"), [
    ("How much does the AK-200 cost?", "The AK-200 kettle itself costs 1.7 litres.",
     ["a price"]),
    ("How much does the AK-200 cost?", "It costs £59.99.", []),
    ("How much does the AK-200 cost?", "It costs 59.99 EUR.", []),
    ("How much does the AK-200 cost?", "US$ 1,299.00", []),
    ("How much does the AK-200 cost?", "It costs 59.99.", []),  # a bare number: the passage's unit
    # rm-063, recorded: the hexadecimal beside the decimal the question asks for
    ("What low-word value (in decimal) marks an NA?", "0x7a2", ["a number in decimal"]),
    ("What low-word value (in decimal) marks an NA?", "It is 1954 (0x7a2).", []),
    ("What low-word value (in decimal) marks an NA?", "1954", []),
    # ak-031, three live runs: an address for a head count
    ("How many people work at Aurora Kettle Co.?",
     "Aurora Kettle Co. Ltd, 14 Cutlers Yard, Sheffield S1 4PQ, United Kingdom.", ["a count"]),
    ("How many people work at Aurora Kettle Co.?", "About forty people work there.", []),
    # rm-033, fourth live run, right: a count with its magnitude glued on
    ("Unless I override them, how much vector memory and how many cons cells does R allow?",
     "R allows up to 6MB of vector memory and 350k cons cells.", []),
    ("Roughly how many significant decimal figures can I trust in a Python float?",
     "The typical precision of 53 bits gives 15–16 decimal digits of accuracy.", []),
    ("How much does the AK-200 cost?", "6.95", []),
    ("How much does the AK-200 cost?", "Delivery is free.", []),
    ("What fee applies to late returns?", "A late fee of 10% of the price.", []),
    ("What is the cost of the app?", "It is included with every AK-200 Smart.", []),
    ("How much does the AK-200 cost?", "The AK-200 is the smart model.", ["a price"]),
    ("How many watts does the AK-90 use?", "110-120 V", ["a power in watts"]),
    ("How many watts does the AK-90 use?", "It holds 0.5 litres of water.", ["a power in watts"]),
    ("How many watts does the AK-90 use?", "It draws 1.2 kW.", []),
    ("How many watts does the AK-90 use?", "1000 watts", []),
    ("What is the AK-200's power rating, and how long does a full kettle take to boil?",
     "The AK-200's power rating is 230 V, and it boils in 4 minutes 10 seconds.",
     ["a power in watts"]),
    ("What is the AK-200's power rating, and how long does a full kettle take to boil?",
     "2200 W; about 4 minutes 10 seconds.", []),
    ("How heavy is the AK-200?", "It weighs 1.2 kg.", []),
    ("How heavy is the AK-200?", "It holds 1.7 l.", ["a weight"]),
    ("At what temperature should green tea be brewed?", "At 80 °C.", []),
    ("Which buttons pair the kettle?", "Hold power for 3 seconds.", []),  # no kind asked
])
def test_an_answer_must_give_a_value_of_the_kind_asked(question: str, answer: str,
                                                       missing: list[str]) -> None:
    assert missing_kinds(question, answer) == missing
