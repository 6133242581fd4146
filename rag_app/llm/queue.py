"""A first-come-first-served queue in front of the model's slots, inside this process.

The bundled llama.cpp server answers `slots` requests at once; more would wait inside the server,
where nobody can say how many are ahead. So every LLM request of this process (chat sessions,
API requests, `rag ask`) takes a ticket here first: at most `slots` hold the model, the others
wait in arrival order and are told their place ("2 questions ahead of yours") each time it
changes. Retrieval is not in the queue: only the LLM call is
(`rag_app.llm.client.ChatClient.stream`).

A waiter whose caller gives up (its cancel event, a closed stream, an exception raised by the
listener, e.g. Streamlit stopping the script) leaves the queue at once, so the places behind it
move up: no ghost places. A wait longer than `timeout_s` fails with a message that says so.

Who listens: `listening(callback)` around the code that asks (a context variable, so the answer
path in between needs no new argument); the callback gets a `QueueStatus` when the request is
queued, when its place changes, every TICK_S while it waits (the seconds waited move on, and a
UI whose stop is raised from its own calls, as Streamlit's is, gets the chance within that
time), and once with `ahead == 0` when it reaches the model.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from rag_app.errors import RagError


class QueueTimeout(RagError):
    """A request waited for a free slot longer than the queue's limit."""


class QueueCancelled(RagError):
    """The caller gave up while the request was waiting for a slot."""


@dataclass(frozen=True, slots=True)
class QueueStatus:
    """A waiting request's place: `ahead` requests are before it (0: it has the model now),
    `slots` answer at once, it has waited `waited_s` seconds."""

    ahead: int
    slots: int
    waited_s: float

    @property
    def text(self) -> str:
        if self.ahead <= 0:
            return f"The model is free: answering (waited {self.waited_s:.0f} s)."
        other = "question" if self.ahead == 1 else "questions"
        return (f"Waiting for the model: {self.ahead} {other} ahead of yours "
                f"({self.slots} answered at a time; waited {self.waited_s:.0f} s).")


Listener = Callable[[QueueStatus], object]
_listener: contextvars.ContextVar[Listener | None] = contextvars.ContextVar(
    "rag_llm_queue_listener", default=None)


@contextlib.contextmanager
def listening(callback: Listener | None) -> Iterator[None]:
    """Send the queue status of the LLM requests made in this context (this thread, and the
    threads started with a copy of its context) to `callback`."""
    token = _listener.set(callback)
    try:
        yield
    finally:
        _listener.reset(token)


def current_listener() -> Listener | None:
    return _listener.get()


POLL_S = 0.1  # how often a waiter looks at its cancel event
TICK_S = 1.0  # how often a waiter's listener hears from it when its place has not changed


class SlotQueue:
    """`slots` holders at a time, the rest in FIFO order. `enter()` is a context manager."""

    def __init__(self, slots: int, *, timeout_s: float | None = None) -> None:
        if slots < 1:
            raise ValueError("a queue needs at least one slot")
        self.slots = slots
        self.timeout_s = timeout_s
        self._cond = threading.Condition()
        self._waiting: deque[object] = deque()
        self._holding = 0
        self.tick_s = TICK_S
        self.served = 0  # tickets that got a slot (for tests and benches)
        self.waited = 0  # ... of them after a wait in the queue

    # -- what the tests and the bench read --------------------------------------------------
    @property
    def holding(self) -> int:
        with self._cond:
            return self._holding

    @property
    def waiting(self) -> int:
        with self._cond:
            return len(self._waiting)

    def _ahead(self, ticket: object) -> int:
        """Requests before `ticket`: those waiting in front of it, plus the slots' holders
        beyond the free slots (a holder that finishes lets one waiter in)."""
        index = self._waiting.index(ticket)
        return index + max(0, self._holding - self.slots + 1)

    @contextlib.contextmanager
    def enter(self, *, cancel: threading.Event | None = None,
              listener: Listener | None = None) -> Iterator[float]:
        """Hold a slot for the body; yields the seconds waited for it. Raises QueueCancelled
        when `cancel` is set while waiting, QueueTimeout after `timeout_s`; either way the
        ticket leaves the queue (so does one whose listener raises)."""
        waited = self._acquire(cancel, listener if listener is not None else _listener.get())
        try:
            yield waited
        finally:
            with self._cond:
                self._holding -= 1
                self._cond.notify_all()

    def _acquire(self, cancel: threading.Event | None, listener: Listener | None) -> float:
        ticket = object()
        started = time.monotonic()
        with self._cond:
            if not self._waiting and self._holding < self.slots:
                self._holding += 1
                self.served += 1
                return 0.0
            self._waiting.append(ticket)
        told, told_at = -1, 0.0
        try:
            while True:
                with self._cond:
                    if self._waiting[0] is ticket and self._holding < self.slots:
                        self._waiting.popleft()
                        self._holding += 1
                        self.served += 1
                        self.waited += 1
                        self._cond.notify_all()  # the next waiter's place changed
                        break
                    ahead = self._ahead(ticket)
                waited = time.monotonic() - started
                if listener is not None and (ahead != told
                                             or time.monotonic() - told_at >= self.tick_s):
                    told, told_at = ahead, time.monotonic()
                    listener(QueueStatus(ahead, self.slots, waited))
                if cancel is not None and cancel.is_set():
                    raise QueueCancelled("the caller gave up while waiting for the model")
                if self.timeout_s is not None and waited >= self.timeout_s:
                    raise QueueTimeout(
                        f"waited {waited:.0f} s for the model, {ahead} "
                        f"{'question' if ahead == 1 else 'questions'} still ahead "
                        f"({self.slots} answered at a time): the model is too busy; try again, "
                        "or raise RAG_LLM_QUEUE_TIMEOUT_S or RAG_LLM_SLOTS")
                with self._cond:
                    if self._waiting[0] is ticket and self._holding < self.slots:
                        continue
                    limit = POLL_S
                    if self.timeout_s is not None:
                        limit = min(limit, max(0.0, self.timeout_s - waited))
                    self._cond.wait(limit)
        except BaseException:
            with self._cond:
                if ticket in self._waiting:
                    self._waiting.remove(ticket)
                self._cond.notify_all()  # those behind move up
            raise
        waited = time.monotonic() - started
        if listener is not None:
            try:
                listener(QueueStatus(0, self.slots, waited))
            except BaseException:
                with self._cond:
                    self._holding -= 1
                    self._cond.notify_all()
                raise
        return waited


# --- one queue per endpoint in this process ----------------------------------------------------
_queues: dict[tuple[str, str], SlotQueue] = {}
_queues_lock = threading.Lock()


def queue_for(base_url: str, model: str, slots: int, timeout_s: float | None) -> SlotQueue:
    """The process's queue in front of this endpoint and model, made on first use; its slots
    and time limit follow the latest call's settings."""
    with _queues_lock:
        q = _queues.get((base_url, model))
        if q is None:
            q = _queues[(base_url, model)] = SlotQueue(slots, timeout_s=timeout_s)
        with q._cond:
            q.slots, q.timeout_s = slots, timeout_s
            q._cond.notify_all()
        return q
