"""The chat page with two tabs on one chat, and with a chat file it cannot read (REVIEW
M4, L4), through Streamlit's AppTest with the real index and the OpenAI-compatible stub."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.test_ui import app, ask, env, index_dir, ok, stub, texts, unescape  # noqa: F401

pytestmark = pytest.mark.slow


def _chat_id(at: object) -> str:
    value = at.query_params["chat"]  # type: ignore[attr-defined]
    return value[0] if isinstance(value, list) else value


def test_two_tabs_on_one_chat_both_keep_their_turns(env: dict[str, str]) -> None:  # noqa: F811
    tab_a = ask(ok(app()), "How long is the standard warranty?")
    chat_id = _chat_id(tab_a)
    tab_b = ok(app(chat=chat_id))  # the same ?chat= in a second tab
    tab_a = ask(tab_a, "How do I descale the AK-200 kettle?")
    tab_b = ask(tab_b, "What does the warranty not cover?")
    saved = json.loads((Path(env["RAG_CHATS_DIR"]) / f"{chat_id}.json").read_text())
    questions = [m["content"] for m in saved["messages"] if m["role"] == "user"]
    assert questions == ["How long is the standard warranty?",
                         "How do I descale the AK-200 kettle?",
                         "What does the warranty not cover?"]
    assert len(saved["messages"]) == 6
    tab_a = ok(tab_a.run())  # tab A shows tab B's turn on its next run
    shown = unescape(texts(tab_a))
    assert "What does the warranty not cover?" in shown


def test_a_corrupt_chat_file_is_reported_as_corrupt(env: dict[str, str]) -> None:  # noqa: F811
    chats = Path(env["RAG_CHATS_DIR"])
    chats.mkdir(parents=True, exist_ok=True)
    (chats / f"{'c' * 32}.json").write_text('{"id": "' + "c" * 32 + '", "messages": [')
    shown = unescape(texts(ok(app(chat="c" * 32))))
    assert "corrupt or unreadable" in shown and "no longer exists" not in shown
    data = {"version": 99, "id": "d" * 32, "title": "t", "created": 1, "updated": 1,
            "messages": []}
    (chats / f"{'d' * 32}.json").write_text(json.dumps(data))
    shown = unescape(texts(ok(app(chat="d" * 32))))
    assert "newer version" in shown
