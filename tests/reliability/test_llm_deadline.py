"""A request the caller gave up on is never sent again; every request has a deadline (review 15).

Against tests/openai_stub.py on 127.0.0.1: retries are made by `ChatClient` (429/5xx/connection
errors, honouring Retry-After, at most `llm_max_retries`, never 401), not by the openai client,
which used to retry a stalled request in the background after the caller's LLMError.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from rag_app.llm.client import MIN_TOKENS_PER_S, ChatClient, LLMError
from tests.conftest import stub_client
from tests.openai_stub import openai_stub

MESSAGES = [{"role": "user", "content": "hi"}]
# The openai client's retry window for a 1 s read timeout and 2 retries: attempts at about
# 0 s, 1.5-2 s and 3.3-4.5 s. Waiting this long after the caller's error sees them all.
SDK_RETRY_WINDOW_S = 5.0


@pytest.fixture
def stub() -> Iterator[Any]:
    with openai_stub() as server:
        yield server


def client(base_url: str, model: str, **settings: Any) -> ChatClient:
    return stub_client(  # type: ignore[no-any-return]
        base_url, model, "sk-test", **{"llm_first_token_timeout_s": 1, **settings})


def test_a_stalled_request_is_not_retried_after_the_caller_gave_up(stub: Any) -> None:
    t0 = time.monotonic()
    with pytest.raises(LLMError, match="no first token"):
        client(stub.base_url, "stall").complete(MESSAGES)
    assert time.monotonic() - t0 < 3
    time.sleep(SDK_RETRY_WINDOW_S)
    assert stub.requests["stall"] == 1


def test_retries_stop_as_soon_as_the_caller_gives_up(stub: Any) -> None:
    with pytest.raises(LLMError):
        client(stub.base_url, "500", llm_max_retries=10).complete(MESSAGES)
    sent = stub.requests["500"]
    assert 1 <= sent <= 3  # 1 s of backoff: 0.5 s, then 1 s
    time.sleep(3)
    assert stub.requests["500"] == sent


def test_429_then_ok_succeeds_honouring_retry_after(stub: Any) -> None:
    t0 = time.monotonic()
    chat = client(stub.base_url, "429", llm_first_token_timeout_s=10)
    assert chat.complete(MESSAGES) == "Hello, world"
    assert stub.requests["429"] == 3 and time.monotonic() - t0 >= 1.8  # Retry-After: 1, twice


def test_a_5xx_retry_after_is_honoured(stub: Any) -> None:
    t0 = time.monotonic()
    chat = client(stub.base_url, "503-retry-after", llm_first_token_timeout_s=10)
    assert chat.complete(MESSAGES) == "Hello, world"
    assert stub.requests["503-retry-after"] == 2 and time.monotonic() - t0 >= 0.9


@pytest.mark.parametrize("model", ["500-once", "drop-once"])
def test_a_passing_failure_is_retried(stub: Any, model: str) -> None:
    chat = client(stub.base_url, model, llm_first_token_timeout_s=10)
    assert chat.complete(MESSAGES) == "Hello, world"
    assert stub.requests[model] == 2


def test_401_is_never_retried(stub: Any) -> None:
    with pytest.raises(LLMError, match="OPENAI_API_KEY"):
        client(stub.base_url, "401", llm_max_retries=5).complete(MESSAGES)
    time.sleep(1)
    assert stub.requests["401"] == 1


@pytest.mark.parametrize("retries", [0, 1, 3])
def test_500_is_retried_exactly_llm_max_retries_times(stub: Any, retries: int) -> None:
    before = stub.requests["500"]
    with pytest.raises(LLMError, match="HTTP 500"):
        client(stub.base_url, "500", llm_max_retries=retries,
               llm_first_token_timeout_s=15).complete(MESSAGES)
    time.sleep(1)
    assert stub.requests["500"] - before == retries + 1


def collect_until_error(chat: ChatClient, give_up_s: float = 20) -> tuple[list[str], float, str]:
    got: list[str] = []
    t0 = time.monotonic()
    try:
        for piece in chat.stream(MESSAGES, max_tokens=4):
            got.append(piece)
            if time.monotonic() - t0 > give_up_s:
                pytest.fail(f"an endless stream was still running after {give_up_s} s")
    except LLMError as exc:
        return got, time.monotonic() - t0, str(exc)
    pytest.fail("an endless stream ended")


def test_an_endless_stream_hits_the_overall_deadline(stub: Any) -> None:
    # no RAG_LLM_TOTAL_TIMEOUT_S: the first-token limit plus max_tokens at the slowest rate
    chat = client(stub.base_url, "drip", llm_first_token_timeout_s=2)
    got, took, message = collect_until_error(chat)
    deadline = 2 + 4 / MIN_TOKENS_PER_S
    assert got and deadline - 0.5 <= took <= deadline + 2
    assert "did not finish" in message and "RAG_LLM_TOTAL_TIMEOUT_S" in message


def test_the_total_timeout_setting_is_the_deadline(stub: Any) -> None:
    chat = client(stub.base_url, "drip", llm_first_token_timeout_s=2)
    # RAG_LLM_TOTAL_TIMEOUT_S, read with getattr until Settings declares it
    chat._settings = chat._settings.model_copy(update={"llm_total_timeout_s": 1.5})
    got, took, message = collect_until_error(chat)
    assert got and 1.2 <= took <= 3 and "within 1.5 s" in message
