"""The LLM client against a real misbehaving HTTP endpoint on 127.0.0.1: it never hangs, retries
what is worth retrying, and its errors name the endpoint but never the key."""

from __future__ import annotations

import socket
import time
from typing import Any

import pytest

from rag_app.llm.client import ChatClient, Endpoint, LLMError
from tests.conftest import stub_client
from tests.openai_stub import openai_stub

KEY = "sk-test-SECRET-1234567890"
MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def stub() -> Any:
    with openai_stub() as server:
        yield server


def client(base_url: str, model: str, **settings: Any) -> ChatClient:
    return stub_client(base_url, model, KEY, **settings)  # type: ignore[no-any-return]


def test_streams_pieces(stub: Any) -> None:
    assert list(client(stub.base_url, "ok").stream(MESSAGES)) == ["Hello", ", ", "world"]
    assert stub.seen_keys[-1] == f"Bearer {KEY}"


def test_429_is_retried_honouring_retry_after(stub: Any) -> None:
    t0 = time.monotonic()
    # the first-token limit counts retries too, so give it room for two waits
    chat = client(stub.base_url, "429", llm_first_token_timeout_s=10)
    assert chat.complete(MESSAGES) == "Hello, world"
    assert stub.requests["429"] == 3
    assert time.monotonic() - t0 >= 1.8  # waited Retry-After: 1, twice


def test_500_gives_up_after_bounded_retries(stub: Any) -> None:
    with pytest.raises(LLMError) as err:
        client(stub.base_url, "500").complete(MESSAGES)
    assert stub.requests["500"] == 3 and "HTTP 500" in str(err.value)
    assert stub.base_url in str(err.value)


def test_401_is_not_retried_and_the_key_stays_secret(stub: Any) -> None:
    with pytest.raises(LLMError) as err:
        client(stub.base_url, "401").complete(MESSAGES)
    assert stub.requests["401"] == 1
    assert "OPENAI_API_KEY" in str(err.value) and KEY not in str(err.value)
    assert KEY not in repr(Endpoint(stub.base_url, "m", KEY))


def test_stalled_server_times_out_on_first_token(stub: Any) -> None:
    t0 = time.monotonic()
    with pytest.raises(LLMError) as err:
        client(stub.base_url, "stall").complete(MESSAGES)
    assert time.monotonic() - t0 < 10
    assert "no first token" in str(err.value) and "RAG_LLM_FIRST_TOKEN_TIMEOUT_S" in str(err.value)


def test_stream_that_goes_quiet_times_out(stub: Any) -> None:
    got: list[str] = []
    with pytest.raises(LLMError) as err:
        for piece in client(stub.base_url, "stall-mid").stream(MESSAGES):
            got.append(piece)
    assert got == ["Hello"] and "stalled" in str(err.value)


def test_refused_connection_is_reported_quickly() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    t0 = time.monotonic()
    with pytest.raises(LLMError) as err:
        client(f"http://127.0.0.1:{port}/v1", "ok", llm_max_retries=1).complete(MESSAGES)
    assert time.monotonic() - t0 < 15
    assert "cannot connect" in str(err.value) and f"127.0.0.1:{port}" in str(err.value)


def test_a_cancelled_stream_ends_at_once_and_hangs_up_before_any_token(stub: Any) -> None:
    """A caller that left (an API client that hung up) does not keep the model reading the
    prompt: the stream ends at once and the request is closed as soon as the server answers
    it (llama.cpp answers when the prompt starts to be read; the stub after 1 s)."""
    import threading

    cancel = threading.Event()
    before = len(stub.hangups)
    arrived = sum(a.model == "headers-stall" for a in stub.arrivals)
    cancelled_at: list[float] = []

    def cancel_once_sent() -> None:
        # Cancel once the request reached the server (a cancel before that sends nothing,
        # which is right but not what this test is about), within its 1 s of silence.
        end = time.monotonic() + 10
        while (sum(a.model == "headers-stall" for a in stub.arrivals) == arrived
               and time.monotonic() < end):
            time.sleep(0.01)
        cancelled_at.append(time.monotonic())
        cancel.set()

    threading.Thread(target=cancel_once_sent, daemon=True).start()
    pieces = list(client(stub.base_url, "headers-stall",
                         llm_first_token_timeout_s=30).stream(MESSAGES, cancel=cancel))
    assert pieces == [] and time.monotonic() - cancelled_at[0] < 2.0
    end = time.monotonic() + 10
    while len(stub.hangups) == before and time.monotonic() < end:
        time.sleep(0.05)
    assert len(stub.hangups) > before  # the server saw the request closed, with no token sent
