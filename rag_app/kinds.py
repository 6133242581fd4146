"""The kind of quantity a question asks for (a price, a power in watts, a weight…), and
whether an answer gives one.

Asked "How much does the AK-200 cost?", a small model that finds no price answers with the
figure it has ("it costs 1.7 litres"); asked for watts, it gives the capacity. The passages do
mention the kettle, so neither the similarity floor nor the names check refuses. An answer
that gives no quantity of the kind asked for does not answer the question, whatever its
quotes: `missing_kinds` names what is missing, and the answer becomes "not found".

Only questions that ask for a value are checked: a yes/no question ("Does the price include
VAT?") or one that merely mentions a kind ("Which fuse protects the power supply?") is not.
Each kind lists the units that give it; the list is what the answer must match, so a kind
is added only with the units it is written in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Kind:
    name: str  # as the refusal note says it: "a price"
    asks: re.Pattern[str]  # matches a question that asks for this kind
    gives: re.Pattern[str]  # matches an answer that gives it


def _asks(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.IGNORECASE)


_NUM = r"\d(?:[\d,.]*\d)?"
_CURRENCY = r"[£$€¥₹]|\b(?:USD|EUR|GBP|CHF|JPY|CAD|AUD)\b"

KINDS: tuple[Kind, ...] = (
    Kind("a price",
         _asks(r"\bhow much (?:\S+\s+){0,8}?(?:costs?|charged?|pay|paid|is charged)\b"
               r"|\bwhat (?:\S+\s+){0,3}?(?:price|cost|fee|charge)s?\b(?! (?:of|for) (?:a )?"
               r"(?:failure|error|mistake))"),
         re.compile(rf"(?:{_CURRENCY})\s*{_NUM}|{_NUM}\s*(?:{_CURRENCY}|(?:dollars?|euros?|"
                    rf"pounds?|pence|cents?|p|eur|usd|gbp)\b)"
                    rf"|{_NUM}\s*(?:%|per ?cent\b)"  # a fee as a share: "10% of the price"
                    r"|\b(?:free|included|no (?:extra |additional )?(?:charge|cost|fee))\b",
                    re.IGNORECASE)),
    Kind("a power in watts",
         _asks(r"\bhow many (?:kilo)?watts\b|\bwattage\b|\bwhat (?:\S+\s+){0,3}?power "
               r"(?:rating|consumption|draw|output)\b|\bhow much power\b"),
         re.compile(rf"{_NUM}\s*(?:[kKmM]?W\b|(?:kilo|milli)?watts?\b)")),
    Kind("a voltage",
         _asks(r"\bhow many volts\b|\bwhat (?:\S+\s+){0,3}?voltage\b"),
         re.compile(rf"{_NUM}\s*(?:[kKm]?V\b|volts?\b)")),
    Kind("a weight",
         _asks(r"\bhow heavy\b|\bhow much does (?:\S+\s+){1,8}?weigh\b"
               r"|\bwhat (?:\S+\s+){0,3}?weight\b"),
         re.compile(rf"{_NUM}\s*(?:kg|g|mg|lbs?|oz|t|grams?|kilo(?:gram)?s?|pounds?|ounces?|"
                    r"tonnes?|tons?)\b", re.IGNORECASE)),
    Kind("a temperature",
         _asks(r"\bwhat temperature\b|\bhow hot\b|\bat what temperature\b"),
         re.compile(rf"{_NUM}\s*(?:°|º|degrees?\b|K\b)|\b(?:boiling|boil)\b", re.IGNORECASE)),
    # asked how many people work at a company the documents never size, the model gave its
    # address ("14 Cutlers Yard, Sheffield S1 4PQ") in every live run: a count is a number that
    # stands alone, not a house number before a street's name nor a postcode's digit
    Kind("a count",
         _asks(r"(?:^\s*|,\s*|\b(?:roughly|about|approximately|within|in|after|and|for)\s+)"
               r"how many\b(?!\s+(?:kilo)?watts\b)"),
         re.compile(r"(?<![\w.])(?:\d[\d,.]*(?:[kKmM]|bn)?|one|two|three|four|five|six|seven|eight|nine|ten|"
                    r"eleven|twelve|twenty|thirty|forty|fifty|hundred|thousand|million|dozen|"
                    r"once|twice|none|no)(?![\w])(?!\s+(?-i:[A-Z]))", re.IGNORECASE)),
    # asked for a value "in decimal", the model copied the hexadecimal beside it: 0x7a2 for 1954
    Kind("a number in decimal",
         _asks(r"\bin decimal\b|\bdecimal (?:value|number|form)\b"),
         re.compile(rf"(?<![\w.]){_NUM}(?!\w)")),
)

# A question that starts so is a yes/no question: its answer need give no value.
_YES_NO = re.compile(r"\s*(?:does|do|did|is|are|was|were|can|could|will|would|should|has|"
                     r"have|had|may|must)\b", re.IGNORECASE)


def asked_kinds(question: str) -> list[Kind]:
    """The kinds of quantity the question asks for (several: "what does it cost and how
    heavy is it?")."""
    parts = [p for p in re.split(r"[?;]|,? and (?=how|what|which)", question) if p.strip()]
    found: list[Kind] = []
    for part in parts:
        if _YES_NO.match(part):
            continue
        found += [k for k in KINDS if k.asks.search(part) and k not in found]
    return found


# A number with no unit after it ("It costs 6.95."): the unit is the passage's, not a wrong one.
_BARE_NUMBER = re.compile(rf"(?<![\w.'’-]){_NUM}"
                          r"(?![\w'’]|[.,]\d|\s*[-–]\s*\d|\s*[^\W\d_]|\s*[%°º])")


def missing_kinds(question: str, answer: str) -> list[str]:
    """The names of the kinds the question asks for that the answer gives no value of: no
    value in one of the kind's units, nor a bare number (a value in another unit, "costs 1.7
    litres", is not one)."""
    kinds = asked_kinds(question)
    if not kinds or _BARE_NUMBER.search(answer):
        return []
    return [k.name for k in kinds if not k.gives.search(answer)]


__all__ = ["KINDS", "Kind", "asked_kinds", "missing_kinds"]
