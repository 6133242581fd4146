"""What every check reads (`Inputs`, `Draft`) and returns (`Verdict`), and its shape (`Check`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

from rag_app.answering.records import Claim, Refusal

if TYPE_CHECKING:
    from rag_app.llm.client import Chat, TokenProb
    from rag_app.retrieve import Hit
    from rag_app.settings import Settings


@dataclass(frozen=True)
class Inputs:
    """What every check may read, fixed for one answer."""
    query: str  # the question as searched (condensed with the history)
    settings: Settings
    hits: Sequence[Hit]  # as retrieved, numbered [1], [2] …
    context: Sequence[Hit]  # the hits as the model reads them, whole (widened or not)
    sources: Sequence[str]  # the passages as the model saw them (evidence, neutralised)
    chat: Chat | None
    embedder: Any


@dataclass
class Draft:
    """The model's answer as the checks see and amend it."""
    text: str
    cited: list[int]  # the source numbers the answer cites
    reply: str = ""  # the model's raw reply (a second pass continues after it)
    json_reply: bool = True  # the reply was asked for as JSON (else prose with [n] marks)
    raw_claims: list[dict[str, Any]] | None = None  # RAG_ANSWER_QUOTES=model: its claims
    claims: list[Claim] = field(default_factory=list)  # checked claims, supported or not
    quotes_checked: bool = False
    shown: bool = True  # the text was streamed as it came (False: the server ignored JSON)
    full: str = ""  # all the model said, when checks dropped part of it
    removed_links: int = 0
    notes: list[str] = field(default_factory=list)  # shown after the answer when it stands
    tokens: list[TokenProb] | None = None  # the reply's tokens with their probabilities

    @property
    def kept(self) -> str:
        """What stays visible as the draft when a check refuses the answer."""
        return (self.full or self.text).strip()


@dataclass(frozen=True)
class Verdict:
    """A check's decision, as data. The default passes and changes nothing."""
    refuse: Refusal | None = None  # "not found", and by which check
    say: str = ""  # streamed at once (a refusal's note, a text that was not shown)
    draft: Draft | None = None  # the amended draft
    kept: str = ""  # refused: the draft that stays visible, collapsed
    text: str | None = None  # refused: the answer's text (None: NOT_FOUND)
    ask_again: str | None = None  # a further user turn: the model answers once more
    names: tuple[str, ...] = ()  # the names the verdict is about (shown to the user)
    passed: bool | None = None  # a judging check's own verdict (Answer.checked)


PASS = Verdict()


def amended(draft: Draft, claims: list[Claim]) -> Verdict:
    """The verdict of a check that re-judged the draft's claims one by one: PASS when none
    changed, else the draft with `claims`."""
    return PASS if claims == draft.claims else Verdict(draft=replace(draft, claims=claims))


def flagged(claim: Claim, reason: str | None) -> Claim:
    """The claim marked unsupported with `reason` (it keeps its quote), or the claim as it is
    when there is no reason."""
    return replace(claim, supported=False, reason=reason) if reason else claim


def judged_one_by_one(draft: Draft, judge: Callable[[Claim], Claim]) -> Verdict:
    """The verdict of a check that re-judges the draft's claims one by one with `judge`:
    PASS for a draft with none to judge (no claims, or a reply kept raw), else `amended`."""
    if draft.raw_claims is not None or not draft.claims:
        return PASS
    return amended(draft, [judge(c) for c in draft.claims])


class Check(Protocol):
    @property
    def name(self) -> str:
        """Its name; a `Refusal` when it can refuse (Answer.refused_by)."""

    @property
    def timing(self) -> str | None:
        """The `Timings` field its duration goes to, if any."""

    def enabled(self, settings: Settings) -> bool: ...

    def __call__(self, inputs: Inputs, draft: Draft) -> Verdict: ...
