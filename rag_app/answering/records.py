"""The records an answer is made of: what the checks decide and what every front end shows.

`Answer` is the finished result (text, checked citations, claims, which check refused it);
`Claim` one sentence of it with its quote; `Citation` one cited source; `Refusal` names the part
of the answer path that said "not found".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rag_app.retrieve import Hit


class Refusal(StrEnum):
    """Which part said "not found" (`Answer.refused_by`; the evaluation counts each)."""

    SIMILARITY = "similarity"  # nothing retrieved is similar enough to the question
    NAMES = "names"  # the question names something no retrieved passage mentions
    MODEL = "model"  # the model said it itself
    QUOTES = "quotes"  # RAG_ANSWER_QUOTES=model: no claim's quote is in its source
    UNSOURCED = "unsourced"  # asked again about names no source mentions, the model found none
    KIND = "kind"  # the question asks for a value of a kind the answer does not give
    CHECK = "check"  # the model, asked separately, says the cited passages do not state it


@dataclass(frozen=True, slots=True)
class Claim:
    """One fact of an answer: what the model said, the source it cited and the words it quoted
    from it; `supported` when the quote is in that source and every number of the statement is
    in the cited sources (see rag_app.text.quotes)."""
    text: str
    source: int  # the [n] of the cited source
    quote: str
    supported: bool
    reason: str = ""  # why it is unsupported
    score: float | None = None  # extracted quotes: how well the quote matches (see attribute)
    # the least probability the model gave the first token of one of its names, code or
    # figures (checks/confidence.py); None: not measured
    confidence: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "source": self.source, "quote": self.quote,
                "supported": self.supported, "reason": self.reason, "score": self.score,
                "confidence": self.confidence}


@dataclass(frozen=True, slots=True)
class Citation:
    number: int  # the [n] in the answer
    chunk_id: str
    source: str
    page_start: int | None
    page_end: int | None
    passage: str
    location: str
    quotes: tuple[str, ...] = ()  # the checked quotes of the claims that cite it


@dataclass(frozen=True, slots=True)
class Evidence:
    """A sentence of a retrieved passage that answers the question, as written: the documents'
    own words, shown before the model's."""
    source: int  # the [n] of its passage
    text: str
    score: float  # how well it answers the question (rag_app.compress.score_units)

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "text": self.text, "score": self.score}


@dataclass
class Timings:
    condense_s: float = 0.0
    retrieve_s: float = 0.0
    select_s: float = 0.0  # cutting the passages to the evidence sentences
    first_token_s: float | None = None
    check_s: float = 0.0
    retry_s: float = 0.0  # the second answer, when the first named what no source mentions
    total_s: float = 0.0
    prompt_tokens: int | None = None  # the answer prompt, as the server counted it
    cached_tokens: int | None = None  # of which reused from the server's prompt cache


@dataclass
class Answer:
    question: str
    query: str  # what was searched (after condensing with the history)
    text: str
    citations: list[Citation]
    hits: list[Hit]
    found: bool  # False: "not found in the documents"
    grounded: bool  # at least one valid citation
    invalid_citations: int = 0  # cited numbers that pointed at no retrieved chunk (removed)
    flagged_sources: list[int] = field(default_factory=list)  # [n] whose instructions were cut
    removed_links: int = 0  # URLs in the answer that no source contains (removed)
    support: float | None = None  # best cosine between the answer and a cited passage
    mode: str = "llm"  # "llm" or "no-llm"
    # What the user should know besides the answer: why there is no LLM answer, when no model
    # could be found; a question in another language than the collection's model reads.
    notice: str = ""
    checked: bool | None = None  # the check's verdict; None: not run (off, no answer, failed)
    draft: str = ""  # the model's answer when a check turned it into "not found"
    missing_names: list[str] = field(default_factory=list)  # named in the question, not found
    # Which part said "not found" (a `Refusal` value), "" if found.
    refused_by: str = ""
    claims: list[Claim] = field(default_factory=list)  # every claim, supported or not
    quotes_checked: bool = False  # the reply carried quotes and they were checked
    # The model's first answer and the names in it no source mentions, when it was asked again
    # because of them (RAG_ANSWER_RETRY_UNSOURCED); empty when it was not.
    first_answer: str = ""
    unsourced_names: list[str] = field(default_factory=list)
    # The documents' own words: the supported quotes of the answer, in order; else (refused,
    # or nothing supported) the sentences of the passages that best answer the question.
    evidence: list[Evidence] = field(default_factory=list)
    endpoint: str = ""
    timings: Timings = field(default_factory=Timings)

    def to_dict(self) -> dict[str, Any]:
        return {
            "question": self.question, "query": self.query, "text": self.text,
            "found": self.found, "grounded": self.grounded, "mode": self.mode,
            "invalid_citations": self.invalid_citations, "support": self.support,
            "flagged_sources": self.flagged_sources, "removed_links": self.removed_links,
            "endpoint": self.endpoint, "notice": self.notice, "checked": self.checked,
            "draft": self.draft, "missing_names": self.missing_names,
            "refused_by": self.refused_by,
            "claims": [c.to_dict() for c in self.claims], "quotes_checked": self.quotes_checked,
            "first_answer": self.first_answer, "unsourced_names": self.unsourced_names,
            "evidence": [e.to_dict() for e in self.evidence],
            "citations": [{s: _plain(getattr(c, s)) for s in c.__slots__}
                          for c in self.citations],
            "hits": [h.to_dict() for h in self.hits],
            "timings": self.timings.__dict__,
        }


def _plain(value: Any) -> Any:
    """A value as JSON gives it back (a tuple is a list), so a saved answer equals itself."""
    return list(value) if isinstance(value, tuple) else value
