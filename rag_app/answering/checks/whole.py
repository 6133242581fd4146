"""An answer that ends inside an open bracket, quote or code span, or on a word no sentence ends
on ("and", "the", "like"), was cut off: flagged.

One answer kept aside ended in the middle of a code call, right where its source has a quoted
argument: it stopped at `…testInstalled…(` where the source says `f("x")`, and was shown as
supported. The reply reader is not the cause (every escaped quote, backslash and code span reads
back whole, in pieces of any size: tests/test_answer.py); the model is: writing the argument's
quote unescaped ends the JSON string, and the server's JSON grammar then closes the reply. Such
an answer cannot be trusted to say what it meant, so its last sentence is flagged ("cut off").
Another, on the web docs, stopped at "…but ASCII symbols like ' and": a sentence that ends on
"and" was cut too, whatever its brackets.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import TYPE_CHECKING

from rag_app.answering.checks.base import PASS, Draft, Inputs, Verdict
from rag_app.answering.records import Claim
from rag_app.text.sentences import sentence_breaks, split_sentences

if TYPE_CHECKING:
    from rag_app.settings import Settings

_PAIRS = {")": "(", "]": "[", "}": "{"}
_CODE = re.compile(r"```.*?```|`[^`]*`", re.S)
# a word no sentence ends on: an answer that stops after it was cut ("…symbols like ' and")
_DANGLING = re.compile(
    r"(?<![\w'’.-])(and|or|but|nor|the|an|of|than|including|whose|whereas|because|e\.g\.|"
    r"i\.e\.)\s*[,:;–—-]?\s*$", re.I)  # not "on", "to", "with": "switch it on" ends well


def unclosed(text: str) -> str:
    """What the text leaves open at its end: a code span, or a bracket or quotation mark opened
    in its last sentence ("" if nothing). Brackets and quotes inside closed code spans are code
    (`d("[", "terms")`), and one left open in an earlier sentence is prose ("(e.g., [.terms)"):
    neither is counted."""
    if text.count("```") % 2 or text.replace("```", "").count("`") % 2:
        return "a code span"
    prose = _CODE.sub(" ", text)
    breaks = sentence_breaks(prose)
    last = breaks[-1] if breaks else 0
    stack: list[tuple[str, int]] = []
    for i, ch in enumerate(prose):
        if ch in "([{":
            stack.append((ch, i))
        elif ch in _PAIRS and stack and stack[-1][0] == _PAIRS[ch]:
            stack.pop()
    if stack and stack[-1][1] >= last:
        return f"an open “{stack[-1][0]}”"
    if (prose.count('"') % 2 and prose.rindex('"') >= last) or \
            (prose.count("“") > prose.count("”") and prose.rindex("“") >= last):
        return "an open quotation mark"
    dangling = _DANGLING.search(_CODE.sub(" code ", text).rstrip())
    if dangling:
        return f"a sentence, after “{dangling.group(1)}”"
    return ""


class Whole:
    name = "whole"
    timing = None

    def enabled(self, settings: Settings) -> bool:
        return True

    def __call__(self, inputs: Inputs, draft: Draft) -> Verdict:
        what = unclosed(draft.text.strip())
        if not what:
            return PASS
        reason = f"the answer stops inside {what}: it was cut off"
        claims = list(draft.claims)
        last = split_sentences(draft.text)[-1:] or [draft.text.strip()]
        if claims and claims[-1].text == last[0]:
            claims[-1] = replace(claims[-1], supported=False, reason=reason)
        else:
            claims.append(Claim(last[0], 0, "", False, reason))
        return Verdict(draft=replace(draft, claims=claims))
