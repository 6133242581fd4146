"""The one fake chat model of the test suite, for the logic around answers only.

Claims about what the product answers run the real bundled model (tests marked slow); this fake
replays fixed text through the real answer path so that parsing, checks, citations and the
stream can be tested in milliseconds. It follows `rag_app.llm.client.Chat`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from rag_app.llm.client import Endpoint

Reply = str | Callable[[list[dict[str, str]]], str]


class ScriptedChat:
    """Streams `reply` (a text, or a function of the messages) in pieces of `size` characters,
    as a streaming server would, so that pieces split words, escapes and JSON.

    `complete()` answers the answer check (the `answer_check` schema) with `verdict` when it is
    set, any other call with `completion` when it is set, else with the reply. It records what
    it was sent: `calls` (streams), `messages` (the last), `sent` (all), `checks`."""

    def __init__(self, reply: Reply, *, size: int = 5, verdict: bool | None = None,
                 completion: str | None = None, name: str = "scripted") -> None:
        self.reply = reply
        self.size = size
        self.verdict = verdict
        self.completion = completion
        self.endpoint = Endpoint("http://127.0.0.1:1/v1", name, "k")
        self.calls = 0
        self.checks = 0
        self.messages: Any = None
        self.sent: list[Any] = []

    def text_for(self, messages: list[dict[str, str]]) -> str:
        return self.reply(messages) if callable(self.reply) else self.reply

    def stream(self, messages: Sequence[dict[str, str]], **kwargs: Any) -> Iterator[str]:
        self.calls += 1
        self.messages = messages
        self.sent.append(messages)
        text = self.text_for(list(messages))
        for i in range(0, len(text), self.size):
            yield text[i:i + self.size]

    def complete(self, messages: Sequence[dict[str, str]], **kwargs: Any) -> str:
        schema = (kwargs.get("response_format") or {}).get("json_schema", {}).get("name")
        if self.verdict is not None and schema == "answer_check":
            self.checks += 1
            return json.dumps({"supported": self.verdict})
        if self.completion is not None:
            return self.completion
        return "".join(self.stream(messages))


def eval_row(**changes: Any) -> dict[str, Any]:
    """One graded row of `rag_app.eval.qa` as `summarise` reads it: an answered, answerable
    question with a found answer, changed by `changes` (contains, claims …)."""
    row: dict[str, Any] = dict(
        mode="llm", answerable=True, found=True, citations=[], invalid_citations=0,
        source_rank=1, page_rank=None, passage_rank=None, hits=[], f1=0.5,
        contains_unchecked=True, multi_fact=False, evidence_contains=True, refused_by="",
        first_answer="", draft="", retrieve_s=0.1, total_s=1.0, first_token_s=0.5)
    row.update(changes)
    return row
