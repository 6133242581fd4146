"""The queue in front of the model's slots (rag_app.llm.queue): true places, first come first
served, a caller that gives up leaves it, a wait has a limit; and through the real answer path
against the OpenAI stub, a second asker is told it waits behind one question, then answered."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from rag_app.llm.client import ChatClient, Endpoint, LLMError, resolve
from rag_app.llm.local import choose_slots
from rag_app.llm.queue import (
    QueueCancelled,
    QueueStatus,
    QueueTimeout,
    SlotQueue,
    listening,
    queue_for,
)
from tests.conftest import make_settings


def _until(cond: Any, limit: float = 5.0) -> None:
    end = time.monotonic() + limit
    while not cond():
        assert time.monotonic() < end, "timed out waiting"
        time.sleep(0.01)


class _Waiter:
    """A thread that takes a ticket, records what it hears, holds its slot until released."""

    def __init__(self, q: SlotQueue, name: str, admitted: list[str],
                 cancel: threading.Event | None = None, raise_on: int | None = None) -> None:
        self.heard: list[int] = []
        self.release = threading.Event()
        self.error: BaseException | None = None
        self.inside = threading.Event()

        def listener(status: QueueStatus) -> None:
            if self.heard[-1:] != [status.ahead]:  # the places, not the ticks between
                self.heard.append(status.ahead)
            if raise_on is not None and status.ahead == raise_on:
                raise KeyboardInterrupt("stopped by the UI")

        def run() -> None:
            try:
                with q.enter(cancel=cancel, listener=listener):
                    admitted.append(name)
                    self.inside.set()
                    self.release.wait(10)
            except BaseException as exc:  # noqa: BLE001 - the test reads it
                self.error = exc

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()


def test_places_are_true_and_the_queue_is_first_come_first_served() -> None:
    q = SlotQueue(1)
    admitted: list[str] = []
    first = _Waiter(q, "first", admitted)
    first.inside.wait(5)
    assert first.heard == []  # a free slot: no wait, nothing said
    waiters = []
    for i in range(3):
        waiters.append(_Waiter(q, f"w{i}", admitted))
        _until(lambda i=i: q.waiting == i + 1 and waiters[i].heard)
    assert [w.heard for w in waiters] == [[1], [2], [3]]
    first.release.set()
    waiters[0].inside.wait(5)
    # each waiter hears its new place on its own thread: wait for both, in any order
    _until(lambda: waiters[1].heard[-1] == 1 and waiters[2].heard[-1] == 2)
    assert waiters[0].heard == [1, 0]  # 0: it has the model now
    assert waiters[1].heard == [2, 1] and waiters[2].heard == [3, 2]
    for w in waiters:
        w.release.set()
        w.thread.join(5)
    assert admitted == ["first", "w0", "w1", "w2"]
    assert q.waiting == 0 and q.holding == 0 and q.served == 4 and q.waited == 3


def test_two_slots_let_two_in_and_the_third_waits_behind_one() -> None:
    q = SlotQueue(2)
    admitted: list[str] = []
    a, b = _Waiter(q, "a", admitted), _Waiter(q, "b", admitted)
    a.inside.wait(5)
    b.inside.wait(5)
    c = _Waiter(q, "c", admitted)
    _until(lambda: c.heard == [1])
    b.release.set()
    c.inside.wait(5)
    assert c.heard == [1, 0] and a.heard == b.heard == []
    a.release.set()
    c.release.set()
    for w in (a, b, c):  # each leaves on its own thread
        w.thread.join(5)
    assert q.holding == 0


def test_a_caller_that_gives_up_leaves_the_queue_and_those_behind_move_up() -> None:
    q = SlotQueue(1)
    admitted: list[str] = []
    holder = _Waiter(q, "holder", admitted)
    holder.inside.wait(5)
    cancel = threading.Event()
    leaver = _Waiter(q, "leaver", admitted, cancel=cancel)
    _until(lambda: leaver.heard == [1])
    behind = _Waiter(q, "behind", admitted)
    _until(lambda: behind.heard == [2])
    cancel.set()
    leaver.thread.join(5)
    assert isinstance(leaver.error, QueueCancelled)
    _until(lambda: behind.heard == [2, 1])  # no ghost place
    assert q.waiting == 1
    # a listener that raises (Streamlit stopping the script) leaves it too
    stopped = _Waiter(q, "stopped", admitted, raise_on=2)
    stopped.thread.join(5)
    assert isinstance(stopped.error, KeyboardInterrupt) and q.waiting == 1
    holder.release.set()
    behind.inside.wait(5)
    behind.release.set()
    behind.thread.join(5)
    assert admitted == ["holder", "behind"] and q.holding == 0 and q.waiting == 0


def test_a_wait_past_the_limit_fails_and_leaves_the_queue() -> None:
    q = SlotQueue(1, timeout_s=0.3)
    admitted: list[str] = []
    holder = _Waiter(q, "holder", admitted)
    holder.inside.wait(5)
    t = time.monotonic()
    with pytest.raises(QueueTimeout, match=r"1 question still ahead.*RAG_LLM_QUEUE_TIMEOUT_S"):
        with q.enter():
            pass
    assert 0.25 < time.monotonic() - t < 2.0
    assert q.waiting == 0 and q.holding == 1
    holder.release.set()
    holder.thread.join(5)
    assert q.holding == 0


def test_a_waiter_hears_from_the_queue_every_tick() -> None:
    """Also when its place does not change: the seconds waited move on, and a UI whose stop
    is raised from its own calls (Streamlit) gets the chance to leave."""
    q = SlotQueue(1)
    q.tick_s = 0.05
    heard: list[QueueStatus] = []
    with q.enter():
        thread = threading.Thread(target=lambda: q.enter(listener=heard.append).__enter__())
        thread.start()
        _until(lambda: len(heard) >= 4)
    thread.join(5)
    waiting = [s for s in heard if s.ahead == 1]
    assert len(waiting) >= 3 and waiting[-1].waited_s > waiting[0].waited_s


def test_the_listener_comes_from_the_context() -> None:
    q = SlotQueue(1)
    heard: list[str] = []
    with q.enter():
        def other() -> None:
            with listening(lambda s: heard.append(s.text)), q.enter():
                pass
        thread = threading.Thread(target=other)
        thread.start()
        _until(lambda: heard)
    thread.join(5)
    assert heard[0].startswith("Waiting for the model: 1 question ahead of yours")
    assert heard[-1].startswith("The model is free")


def test_slots_from_the_machine() -> None:
    gib = 1 << 30
    slot = 4096 * 28672  # the 1.5B model's KV cache at 4,096 tokens: 117 MB
    assert choose_slots(2, 8 * gib, gib, slot) == 1
    assert choose_slots(8, 8 * gib, gib, slot) == 2
    assert choose_slots(64, 64 * gib, gib, slot) == 4
    assert choose_slots(64, gib + slot, gib, slot) == 1  # memory decides


def test_a_remote_endpoint_has_no_queue_unless_a_setting_says_so(tmp_path: Path) -> None:
    remote = {"openai_base_url": "http://127.0.0.1:9/v1", "llm_model": "m"}
    endpoint, _ = resolve(make_settings(tmp_path, **remote))
    assert endpoint is not None and endpoint.slots is None
    endpoint, _ = resolve(make_settings(tmp_path, llm_slots=3, **remote))
    assert endpoint is not None and endpoint.slots == 3


def test_the_client_waits_its_turn_and_gives_up_cleanly(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, llm_queue_timeout_s=0.3, llm_connect_timeout_s=1)
    endpoint = Endpoint("http://127.0.0.1:9/v1", "busy", "k", slots=1)
    chat = ChatClient(endpoint, settings)
    q = queue_for(endpoint.base_url, endpoint.model, 1, 0.3)
    with q.enter():  # another question holds the one slot
        with pytest.raises(LLMError, match=r"waited 0 s for the model, 1 question still ahead"):
            "".join(chat.stream([{"role": "user", "content": "hi"}]))
        assert q.waiting == 0
        cancel = threading.Event()
        threading.Timer(0.1, cancel.set).start()
        settings_long = settings.model_copy(update={"llm_queue_timeout_s": 30.0})
        assert "".join(ChatClient(endpoint, settings_long).stream(
            [{"role": "user", "content": "hi"}], cancel=cancel)) == ""  # left, quietly
        assert q.waiting == 0


@pytest.mark.slow
def test_a_second_asker_is_told_it_waits_behind_one_then_answered(
        tmp_path_factory: pytest.TempPathFactory, embedder: Any) -> None:
    """Two questions at once through `answer()` against the stub, one slot: the second hears
    "1 question ahead" while the first holds the model, then gets its answer."""
    from ingest.sync import Ingestor
    from rag_app.answering import answer
    from rag_app.retrieve import Retriever
    from tests.conftest import SAMPLES
    from tests.openai_stub import openai_stub

    settings = make_settings(tmp_path_factory.mktemp("queue") / "state", answer_check=False,
                             condense_questions=False)
    assert not Ingestor(settings, embedder).run([SAMPLES]).failed
    retriever = Retriever(settings, embedder=embedder)
    with openai_stub() as stub:
        endpoint = Endpoint(stub.base_url, "json", "k", slots=1)
        chat = ChatClient(endpoint, settings)
        first = iter(answer("How long is the warranty?", settings=settings,
                            retriever=retriever, chat=chat))
        piece = next(first)  # the first question holds the model, mid-answer
        assert piece
        heard: list[QueueStatus] = []
        second: dict[str, Any] = {}

        def ask() -> None:
            with listening(heard.append):
                stream = answer("How long is the warranty?", settings=settings,
                                retriever=retriever, chat=chat)
                second["sources"] = len(stream.hits)  # retrieval did not wait for the model
                second["text"] = "".join(stream)
                second["result"] = stream.result

        thread = threading.Thread(target=ask)
        thread.start()
        _until(lambda: heard, limit=30)
        assert "sources" in second and heard[0].ahead == 1
        assert heard[0].text.startswith("Waiting for the model: 1 question ahead of yours")
        rest = "".join(first)
        thread.join(30)
    assert piece + rest
    places = [s.ahead for s in heard]
    assert [p for i, p in enumerate(places) if i == 0 or places[i - 1] != p] == [1, 0]
    assert second["result"].found and "2 years" in second["text"]


class _Out:
    """An `st.empty()` stand-in: what it shows now."""

    def __init__(self) -> None:
        self.shown = "(nothing)"

    def caption(self, text: str) -> None:
        self.shown = text

    def empty(self) -> None:
        self.shown = ""


def test_the_chat_shows_the_place_then_what_follows() -> None:
    from rag_app.ui.chat import _QueueLine
    from rag_app.ui.text import md

    out = _Out()
    line = _QueueLine(out, "The model is reading the sources…")
    line.show(QueueStatus(0, 1, 0.0))  # never waited: nothing is drawn
    assert out.shown == "(nothing)"
    line.show(QueueStatus(2, 1, 0.5))
    assert "2 questions ahead of yours" in out.shown  # escaped for Markdown (md)
    line.show(QueueStatus(1, 1, 3.0))
    assert "1 question ahead" in out.shown
    line.show(QueueStatus(0, 1, 9.0))
    assert out.shown == md("The model is reading the sources…")


@pytest.mark.slow
def test_the_api_stream_says_where_the_request_waits(
        tmp_path_factory: pytest.TempPathFactory, embedder: Any) -> None:
    """A streamed chat completion whose model is busy: a chunk with no content and a `queue`
    field ({"ahead": 1, ...}), then, once the slot is free, the answer."""
    import httpx

    from ingest.entry import sync_paths
    from rag_app.api.app import create_app
    from rag_app.ui.services import Services
    from tests.conftest import SAMPLES
    from tests.openai_stub import openai_stub
    from tests.test_api import Running, _ask, _events

    root = tmp_path_factory.mktemp("api-queue")
    with openai_stub() as stub:
        settings = make_settings(root / "state", openai_base_url=stub.base_url,
                                 llm_model="json", openai_api_key="stub-key", llm_slots=1,
                                 llm_first_token_timeout_s=5, llm_idle_timeout_s=5)
        assert not sync_paths(settings, [SAMPLES], embedder=embedder).failed
        services = Services(settings)
        services.embedder = embedder
        endpoint, _ = resolve(settings)
        assert endpoint is not None and endpoint.slots == 1
        gate = queue_for(endpoint.base_url, endpoint.model, 1, 60.0)
        events: list[Any] = []
        with Running(create_app(settings, services=services)) as api:
            holder = gate.enter()
            holder.__enter__()  # another question has the model
            try:
                def ask() -> None:
                    with httpx.stream("POST", f"{api.url}/v1/chat/completions",
                                      json=_ask(stream=True), timeout=60) as r:
                        assert r.status_code == 200
                        events.extend(_events(r))

                thread = threading.Thread(target=ask)
                thread.start()
                _until(lambda: gate.waiting == 1, limit=30)
            finally:
                time.sleep(0.3)
                holder.__exit__(None, None, None)
            thread.join(30)
    queued = [e["queue"] for e in events if isinstance(e, dict) and "queue" in e]
    assert queued[0]["ahead"] == 1 and queued[0]["slots"] == 1
    assert queued[0]["text"].startswith("Waiting for the model: 1 question ahead of yours")
    assert queued[-1]["ahead"] == 0
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events
                   if isinstance(e, dict) and e.get("choices"))
    assert "2 years" in text and events[-1] == "[DONE]"
