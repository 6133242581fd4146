"""Answering a chat completion: the conversation made into a question and its history, the one
answer path (`rag_app.answering.answer`) run in a thread of its own, and the result written as
OpenAI's chat-completion objects with the sources added.

A client that hangs up sets `AnswerRun.cancel`: the answer stops at the next piece, and the
model's request is closed (`CancellableChat`), so the model server stops generating for nobody.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from rag_app.errors import ConfigError, RagError

if TYPE_CHECKING:
    from rag_app.answering import Answer
    from rag_app.api.schemas import ChatMessage
    from rag_app.llm.client import Chat
    from rag_app.retrieve import RetrievalOptions, Retriever
    from rag_app.settings import Settings

log = logging.getLogger(__name__)

HISTORY_TURNS = 6  # as the chat keeps (Conversation.history)
_POLL_S = 0.1


class Cancelled(RagError):
    """The client hung up: the answer is not wanted any more."""


class CancellableChat:
    """A `Chat` whose requests end when `cancel` is set: the inner stream is read in a thread of
    its own, so a caller waiting for the model's first token is released at once, and the inner
    stream (down to its HTTP response) is closed as soon as it hands over its next piece."""

    def __init__(self, inner: Chat, cancel: threading.Event) -> None:
        self._inner = inner
        self._cancel = cancel
        self.endpoint = inner.endpoint  # type: ignore[attr-defined]

    def stream(self, messages: Sequence[dict[str, str]], **kwargs: Any) -> Iterator[str]:
        if self._cancel.is_set():
            raise Cancelled()
        pieces: queue.Queue[tuple[str, Any]] = queue.Queue()
        stop = threading.Event()
        # run in a copy of this context: the queue's listener (rag_app.llm.queue) goes along
        worker = threading.Thread(target=contextvars.copy_context().run,
                                  args=(self._pump, messages, kwargs, pieces, stop),
                                  daemon=True, name="api-llm-stream")
        worker.start()
        try:
            while True:
                try:
                    kind, value = pieces.get(timeout=_POLL_S)
                except queue.Empty:
                    if self._cancel.is_set():
                        raise Cancelled() from None
                    continue
                if kind == "done":
                    return
                if kind == "error":
                    raise value
                yield value
        finally:
            stop.set()

    def _pump(self, messages: Sequence[dict[str, str]], kwargs: dict[str, Any],
              out: queue.Queue[tuple[str, Any]], stop: threading.Event) -> None:
        # the model's request ends as soon as the client hangs up, even before the first token
        it = iter(self._inner.stream(messages, **{**kwargs, "cancel": self._cancel}))
        try:
            for piece in it:
                if stop.is_set() or self._cancel.is_set():
                    return
                out.put(("piece", piece))
            out.put(("done", None))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            out.put(("error", exc))
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()  # ends the model's HTTP response (rag_app.llm.client.ChatClient.stream)

    def complete(self, messages: Sequence[dict[str, str]], **kwargs: Any) -> str:
        return "".join(self.stream(messages, **kwargs))


def split_conversation(messages: Sequence[ChatMessage]
                       ) -> tuple[str, list[dict[str, str]]]:
    """The question (the last message, from the user) and the turns before it, as the answer
    path takes them. System messages are not passed on: the answer path has its own
    instructions, and a client's cannot loosen its rules."""
    last = messages[-1]
    if last.role != "user":
        raise ConfigError(f"The last message is from {last.role!r}: end the messages with the "
                          "user's question (role 'user').")
    question = last.text().strip()
    if not question:
        raise ConfigError("The last message has no text: put the question in its content.")
    history = [{"role": m.role, "content": m.text()} for m in messages[:-1]
               if m.role in ("user", "assistant") and m.text().strip()]
    return question, history[-HISTORY_TURNS:]


class AnswerRun:
    """One answer, computed in a thread; its events arrive on an asyncio queue: ("ready", None)
    once the sources are retrieved, ("piece", text) as the answer streams, then
    ("done", Answer); or ("error", exc) or ("cancelled", None) at any point. While its model
    request waits for a slot, ("queued", QueueStatus) each time its place changes (the last
    one is kept in `queue_status`: it may come before "ready", while rewriting the question)."""

    def __init__(self, question: str, history: list[dict[str, str]], *, settings: Settings,
                 retriever: Retriever, chat: Chat | None, notice: str,
                 options: RetrievalOptions, loop: asyncio.AbstractEventLoop,
                 on_exit: Callable[[], object] | None = None) -> None:
        self.cancel = threading.Event()
        self.queue_status: Any = None  # the latest rag_app.llm.queue.QueueStatus, if it waited
        self._on_exit = on_exit  # called when the thread ends (the answer slot is freed)
        self.events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._loop = loop
        self._args = (question, history, settings, retriever, chat, notice, options)
        self.thread = threading.Thread(target=self._run, daemon=True, name="api-answer")

    def start(self) -> AnswerRun:
        self.thread.start()
        return self

    def _put(self, kind: str, value: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(self.events.put_nowait, (kind, value))
        except RuntimeError:  # the server's loop is closed: nobody is listening
            self.cancel.set()

    def _queued(self, status: Any) -> None:
        changed = self.queue_status is None or self.queue_status.ahead != status.ahead
        self.queue_status = status
        if changed:  # not the queue's ticks: a chunk when the place changes
            self._put("queued", status)

    def _run(self) -> None:
        from rag_app.llm.queue import listening

        with listening(self._queued):
            self._answer()

    def _answer(self) -> None:
        from rag_app.answering import answer

        question, history, settings, retriever, chat, notice, options = self._args
        try:
            model = CancellableChat(chat, self.cancel) if chat is not None else None
            stream = answer(question, history, settings=settings, retriever=retriever,
                            chat=model, options=options, use_llm=model is not None,
                            notice=notice)
            stream.notice = notice
            self._put("ready", None)  # retrieved (and condensed): the answer starts
            pieces = iter(stream)
            try:
                for piece in pieces:
                    if self.cancel.is_set():
                        break
                    self._put("piece", piece)
            finally:
                close = getattr(pieces, "close", None)
                if close is not None:
                    close()
            if self.cancel.is_set():
                self._put("cancelled", None)
            else:
                self._put("done", stream.result)
        except Cancelled:
            self._put("cancelled", None)
        except Exception as exc:  # noqa: BLE001 - reported to the client by the route
            self._put("error", exc)
        finally:
            if self._on_exit is not None:
                self._on_exit()


# --- OpenAI's objects ------------------------------------------------------------------------
def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


def citations_of(result: Answer) -> list[dict[str, Any]]:
    """The cited sources, structured: file, pages, passage, the checked quotes."""
    return [{"number": c.number, "file": c.source, "page_start": c.page_start,
             "page_end": c.page_end, "location": c.location, "passage": c.passage,
             "quotes": list(c.quotes), "chunk_id": c.chunk_id} for c in result.citations]


def rag_fields(result: Answer) -> dict[str, Any]:
    """What the answer path decided beyond its text: found or refused (and by which check), the
    sentences the sources do not state as written, the documents' own words."""
    flagged = [{"text": c.text, "source": c.source, "reason": c.reason or "unsupported"}
               for c in result.claims if c.text and not c.supported] if result.found else []
    return {
        "text": result.text, "found": result.found, "refused_by": result.refused_by,
        "grounded": result.grounded, "checked": result.checked, "query": result.query,
        "mode": result.mode, "notice": result.notice, "draft": result.draft,
        "flagged_claims": flagged, "instruction_like_sources": result.flagged_sources,
        "missing_names": result.missing_names, "invalid_citations": result.invalid_citations,
        "removed_links": result.removed_links,
        "evidence": [e.to_dict() for e in result.evidence],
        "sources": [{"number": n, "file": h.source, "location": h.location,
                     "similarity": h.similarity} for n, h in enumerate(result.hits, start=1)],
        "timings": {k: v for k, v in result.timings.__dict__.items() if v is not None},
    }


def sources_note(result: Answer, text: str) -> str:
    """What follows the answer's text in `content`: the [n] of each cited source the text does
    not already carry, then a "Sources:" list, so a client that reads only the text still has
    them. Nothing for a refusal or an answer without citations."""
    if not result.found or not result.citations:
        return ""
    missing = "".join(f"[{c.number}]" for c in result.citations if f"[{c.number}]" not in text)
    lines = "\n".join(f"[{c.number}] {c.location}" for c in result.citations)
    return (f" {missing}" if missing else "") + f"\n\nSources:\n{lines}"


def completion(result: Answer, model: str, cid: str, created: int) -> dict[str, Any]:
    """The non-streamed response: the checked answer's text with its [n] and sources list."""
    content = result.text + sources_note(result, result.text)
    return {
        "id": cid, "object": "chat.completion", "created": created, "model": model,
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": content}}],
        "citations": citations_of(result), "rag": rag_fields(result),
    }


def queue_chunk(status: Any, cid: str, model: str, created: int) -> dict[str, Any]:
    """A chunk with no content that says where the request waits for the model: `queue` has
    `ahead` (requests before it; 0 once the model has it), `slots`, `waited_s` and `text`."""
    return chunk(cid, model, created, {}, queue={
        "ahead": status.ahead, "slots": status.slots, "waited_s": round(status.waited_s, 3),
        "text": status.text})


def chunk(cid: str, model: str, created: int, delta: dict[str, Any],
          finish: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}


def final_chunk(result: Answer, streamed: str, cid: str, model: str, created: int
                ) -> dict[str, Any]:
    """The last chunk: the citations the streamed text lacks, the sources list, and the
    structured citations and flags (`rag.text` is the checked answer, which may differ from
    what streamed: a check can turn a draft into "not found")."""
    note = sources_note(result, streamed)
    return chunk(cid, model, created, {"content": note} if note else {}, "stop",
                 citations=citations_of(result), rag=rag_fields(result))


def now() -> int:
    return int(time.time())
