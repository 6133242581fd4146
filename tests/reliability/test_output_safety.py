"""What the app prints and stores is safe to show (REVIEW-reliability items 21, 22, 23).

- Terminal escapes: document text, file names and model text reach `python -m rag_app ask`
  (with and without --no-llm) and `stats` with no ESC/CSI/OSC or other control character but
  newline and tab, and rich markup in names is printed literally.
- URL secrets: a password in the userinfo or a key in the query of OPENAI_BASE_URL appears in no
  LLM error, `Answer.endpoint`, `ask --json`, evaluation result or UI description, while the
  requests still go to the real URL (tests/openai_stub.py on 127.0.0.1 sees the credentials).
- Model replies that are JSON nested 100,000 deep are read as prose, not a RecursionError.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rag_app.answering import answer
from rag_app.answering.replies import parse_reply, parse_verdict
from rag_app.llm.client import ChatClient, Endpoint, LLMError, redact_url
from rag_app.settings import Settings
from tests.conftest import REPO, make_settings, stub_client
from tests.fakes import ScriptedChat
from tests.openai_stub import openai_stub

OSC8 = "\x1b]8;;http://evil.example/x\x07click\x1b]8;;\x07"
CLEAR = "\x1b[2J"
# Anything a terminal acts on: C0 controls but \t and \n, DEL and the C1 range.
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
EVIL_NAME = "evil\x1b[31m red.md"
MARKUP_NAME = "notes[b]bold[red] [link=http:evil.example]x.md"  # no "/" in a file name
PASSWORD = "pw-Hunter2-Secret"
QUERY_KEY = "qk-Query-Secret"
API_KEY = "sk-output-safety-42"
SECRETS = (PASSWORD, QUERY_KEY, API_KEY)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RAG_", "CHROMA_", "OPENAI_"))}
    env.update(extra)
    return env


def rag_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rag_app", *args], cwd=REPO,
                          capture_output=True, text=True, env=env, timeout=300)


def secret_url(base_url: str) -> str:
    """The stub's URL with a password in the userinfo and a key in the query."""
    return (base_url.replace("http://", f"http://alice:{PASSWORD}@")
            + f"?api-version=1&api-key={QUERY_KEY}")


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{secret!r} leaked in {text[:500]!r}"


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory, embedder: Any) -> Settings:
    """An index of files whose text, headings and names carry terminal escapes and markup."""
    from ingest.entry import sync_paths

    root = tmp_path_factory.mktemp("hostile")
    docs = root / "docs"
    docs.mkdir()
    (docs / EVIL_NAME).write_text(
        f"# Kettle {OSC8} warranty\n\nThe kettle warranty lasts two years {CLEAR} from the "
        f"date of purchase. {OSC8} Keep the receipt.\x9b31m Descale it every month.\r\n"
        "\x1b]52;c;ZXZpbA==\x07The base has a cable store.\n")
    (docs / MARKUP_NAME).write_text(
        "# Boiling\n\nThe kettle boils one litre in about three minutes.\n")
    settings = make_settings(root / "state")
    report = sync_paths(settings, [docs], embedder=embedder)
    assert report.counts()["ingested"] == 2, report
    return settings


def assert_terminal_safe(text: str) -> None:
    assert "\x1b" not in text and "\x9b" not in text and "\x07" not in text
    bad = sorted({hex(ord(c)) for c in CONTROL.findall(text)})
    assert not bad, f"control characters {bad} in {text[:500]!r}"


# -- item 21: terminal escape sequences ----------------------------------------------------------
@pytest.mark.parametrize(("raw", "shown"), [
    (f"a {OSC8} b", "a click b"),
    (f"x{CLEAR}y\x1b[38;5;196mz\x1b[0m", "xyz"),
    ("8-bit \x9b31mCSI\x9d0;title\x9c and \x1b]52;c;ZXZpbA==\x1b\\OSC 52", "8-bit CSI and OSC 52"),
    ("keep\ttab\nnewline\rno CR\x00\x08\x7f\x85", "keep\ttab\nnewlineno CR"),
    ("unterminated \x1b]0;title\nnext line", "unterminated \nnext line"),
    ("lone ESC at the end\x1b", "lone ESC at the end"),
    ("plain text, [brackets] and ünïcödé", "plain text, [brackets] and ünïcödé"),
])
def test_for_terminal_drops_escape_sequences_and_control_characters(raw: str,
                                                                    shown: str) -> None:
    from rag_app.terminal import for_rich, for_terminal

    assert for_terminal(raw) == shown
    assert for_rich("[link=https://evil.example]x[/link]\x1b[2J") == \
        "\\[link=https://evil.example]x\\[/link]"


@pytest.mark.slow
def test_ask_no_llm_and_stats_print_no_escape_sequences(hostile: Settings) -> None:
    env = _env(RAG_STATE_DIR=str(hostile.state_dir))
    out = rag_cli("ask", "How long is the kettle warranty?", "--no-llm", "--collection",
                  hostile.collection, env=env)
    assert out.returncode == 0, out.stderr
    assert_terminal_safe(out.stdout + out.stderr)
    assert "two years" in out.stdout and "click" in out.stdout
    assert "evil red.md § Kettle click warranty" in out.stdout  # the name, made inert

    stats = rag_cli("stats", "--collection", hostile.collection, env=env | {"COLUMNS": "200"})
    assert stats.returncode == 0, stats.stderr
    assert_terminal_safe(stats.stdout + stats.stderr)
    assert "evil red.md" in stats.stdout
    assert MARKUP_NAME in stats.stdout  # markup printed literally, not interpreted


def hostile_chat(reply: str | None = None,
                 verdict: str = '{"quote": "", "supported": true}') -> ScriptedChat:
    """A model whose answer carries escape sequences (JSON-escaped, as a server sends them) and
    a raw one, in 7-character pieces so that sequences are split across pieces; any other
    request gets `verdict`."""
    return ScriptedChat(reply if reply is not None else json.dumps(
        {"answer": f"Two years{CLEAR} {OSC8} [1] \x1b[5mblink\x1b[0m", "sources": [1]}),
        size=7, completion=verdict, name="hostile")


def test_ask_prints_no_escape_sequences_from_the_model_or_the_sources(
        hostile: Settings, embedder: Any, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    import rag_app.answering
    from rag_app.cli import ask, build_parser
    from rag_app.retrieve import Retriever

    real = rag_app.answering.answer
    retriever = Retriever(hostile, embedder=embedder)

    def with_hostile_model(question: str, history: Any = (), **kwargs: Any) -> Any:
        return real(question, history, retriever=retriever, chat=hostile_chat(),  # type: ignore[arg-type]
                    **kwargs)

    monkeypatch.setattr(rag_app.answering, "answer", with_hostile_model)
    args = build_parser().parse_args(["ask", "How long is the kettle warranty?"])
    assert ask(args, hostile) == 0
    out = capsys.readouterr()
    assert_terminal_safe(out.out + out.err)
    assert out.out.startswith("Two years") and "blink" in out.out
    assert "\nSources:\n  [1] evil red.md § Kettle click warranty" in out.out


def test_stats_table_escapes_every_field(capsys: pytest.CaptureFixture[str]) -> None:
    from rag_app.cli import _print_stats

    info = {"exists": True, "collection": "docs", "store": f"local store in /tmp/[b]x{CLEAR}",
            "files": 1, "pages": 0, "chunks": 1,
            "fingerprint": {"model": f"m{OSC8}", "dimension": 384, "chunk_tokens": 256},
            "languages": {f"d{CLEAR}e": 1}, "languages_unknown": 0,
            "file_list": [{"source": f"a{CLEAR}[/b].md", "kind": "md\x1b[31m", "pages": 0,
                           "kind_label": "Markdown\x1b[31m", "length": f"2 [b]pages{CLEAR}",
                           "ocr": f"OCR{OSC8}", "language": "de\x1b[31m",
                           "chunks": 1, "error": f"bad {OSC8} [link=x]y[/link]"}]}
    _print_stats(info)
    out = capsys.readouterr().out
    assert_terminal_safe(out)
    assert "/tmp/[b]x" in out and "mclick" in out and "a[/b].md" in out


# -- item 22: secrets in the endpoint URL --------------------------------------------------------
@pytest.mark.parametrize(("url", "shown"), [
    ("https://user:pw@host.example/v1", "https://user:***@host.example/v1"),
    ("https://sk-token@host.example/v1", "https://***@host.example/v1"),
    ("https://h.example/v1?api-version=2024-06-01&api-key=K&key=K2&x=1",
     "https://h.example/v1?api-version=2024-06-01&api-key=***&key=***&x=1"),
    ("https://h.example/v1?token=T&sig=S&X-Amz-Signature=Z&access_token=A%20B&flag",
     "https://h.example/v1?token=***&sig=***&X-Amz-Signature=***&access_token=***&flag"),
    ("https://u:p%40ss@h.example:8443/v1?API_KEY=K#frag",
     "https://u:***@h.example:8443/v1?API_KEY=***#***"),
    ("http://127.0.0.1:8080/v1", "http://127.0.0.1:8080/v1"),
    ("http://u:pw@[::1/v1?key=K", "http://***@[::1/v1?***"),  # urlsplit refuses it
])
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


@pytest.fixture
def stub() -> Iterator[Any]:
    with openai_stub() as server:
        yield server


def _client(url: str, model: str, **values: Any) -> ChatClient:
    return stub_client(  # type: ignore[no-any-return]
        url, model, API_KEY, **{"llm_first_token_timeout_s": 1, "llm_max_retries": 0, **values})


def test_llm_errors_never_show_url_secrets_but_requests_use_the_real_url(stub: Any) -> None:
    url = secret_url(stub.base_url)
    host = stub.base_url.removeprefix("http://").removesuffix("/v1")
    assert _client(url, "ok").complete([{"role": "user", "content": "hi"}]) == "Hello, world"
    basic = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    assert stub.seen_keys[-1] == f"Basic {basic}"  # httpx sends the URL's userinfo
    for model in ("401", "500", "stall", "no-schema"):
        kwargs = {"response_format": {"type": "json_object"}} if model == "no-schema" else {}
        with pytest.raises(LLMError) as info:
            _client(url, model).complete([{"role": "user", "content": "hi"}], **kwargs)
        message = str(info.value)
        assert_no_secret(message)
        assert f"http://alice:***@{host}/v1?api-version=1&api-key=***" in message, message
    endpoint = Endpoint(url, "m", API_KEY)
    assert_no_secret(repr(endpoint))
    assert endpoint.base_url == url  # the real URL is kept for the requests


@pytest.mark.slow
def test_answer_ask_json_eval_and_ui_description_hold_no_url_secrets(
        stub: Any, hostile: Settings, embedder: Any, tmp_path: Path) -> None:
    from rag_app.eval import DEFAULT_CONFIGS, evaluate_qa
    from rag_app.eval.qa import QAItem
    from rag_app.retrieve import Retriever
    from rag_app.service import describe_llm

    url = secret_url(stub.base_url)
    # Answer.endpoint
    stream = answer("How long is the kettle warranty?", settings=hostile,
                    retriever=Retriever(hostile, embedder=embedder), chat=_client(url, "json"))
    assert "".join(stream).startswith("It lasts 2 years.")
    result = stream.result
    assert result.endpoint == redact_url(url) and "***" in result.endpoint
    assert_no_secret(json.dumps(result.to_dict()))
    assert stub.requests["json"] >= 1  # answered by the real URL

    # python -m rag_app ask --json
    env = _env(RAG_STATE_DIR=str(hostile.state_dir), RAG_COLLECTION=hostile.collection,
               OPENAI_BASE_URL=url, RAG_LLM_MODEL="json", OPENAI_API_KEY=API_KEY)
    out = rag_cli("ask", "How long is the kettle warranty?", "--json", env=env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["endpoint"] == redact_url(url)
    assert_no_secret(out.stdout + out.stderr)

    # the evaluation's results
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "faq.md").write_text("# Kettle\n\nThe kettle warranty lasts two years.\n")
    item = QAItem("w", "How long is the kettle warranty?", True, "two years", "faq.md", (),
                  None)
    evaluated = evaluate_qa([item], docs, [DEFAULT_CONFIGS[0]], make_settings(tmp_path / "s"),
                            index_dir=tmp_path / "index", embedder=embedder,
                            chat=_client(url, "json"))
    assert evaluated.meta["endpoint"] == f"{redact_url(url)} (json)"
    assert evaluated.runs[0].rows[0].get("answer") is not None
    assert_no_secret(json.dumps(evaluated.to_dict(), default=str))

    # the UI's description of the LLM
    described = describe_llm(make_settings(tmp_path / "ui", openai_base_url=url,
                                           llm_model="gpt-x"))
    assert described == f"gpt-x at {redact_url(url)}"


# -- item 23: deeply nested JSON from the model ----------------------------------------------------
DEEP = "[" * 100_000


def test_deeply_nested_replies_are_read_as_prose() -> None:
    assert parse_reply(DEEP) == (DEEP, [])
    assert parse_reply(DEEP + " see [2]") == (DEEP + " see [2]", [2])
    assert parse_verdict(DEEP) is None
    assert parse_verdict('{"a": ' * 100_000) is None
    assert parse_verdict("yes" + "[" * 100_000) is True


def test_an_answer_nested_100000_deep_does_not_crash_the_stream(hostile: Settings,
                                                               embedder: Any) -> None:
    from rag_app.retrieve import Retriever

    chat = hostile_chat(reply=DEEP, verdict="[" * 100_000)
    stream = answer("How long is the kettle warranty?", settings=hostile,
                    retriever=Retriever(hostile, embedder=embedder),
                    chat=chat)  # type: ignore[arg-type]
    text = "".join(stream)
    assert text.count("[") == 100_000
    assert stream.result.checked is None and stream.result.citations == []
