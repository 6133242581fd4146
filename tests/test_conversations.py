"""Saved chats survive a restart, hostile ids name no file, feedback feeds an evaluation set."""

from __future__ import annotations

import json
import logging
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from rag_app.answering import Answer, Citation
from rag_app.retrieve import Hit
from rag_app.ui.conversations import (
    NEW_TITLE,
    Conversation,
    ConversationStore,
    export_json,
    export_markdown,
    make_title,
    valid_id,
)


def _hit(chunk_id: str, source: str, page: int | None, text: str,
         headings: tuple[str, ...] = ()) -> Hit:
    return Hit(chunk_id, text, source, "/docs", page, page, headings, None, 0.5, 0.7, 1, 2, None)


def make_result(question: str, text: str = "Hold the button for 3 s [1][2].") -> dict[str, Any]:
    """A real `Answer.to_dict()`, as the chat UI stores it."""
    hits = [
        _hit("c1", "manual.pdf", 3, "Hold the descale button for 3 seconds.\nThe light blinks."),
        _hit("c2", "guide.md", None, "Use citric acid. ![x](http://evil/a.png) <script>",
             ("Care", "Descaling")),
    ]
    citations = [Citation(n, h.chunk_id, h.source, h.page_start, h.page_end, h.text, h.location)
                 for n, h in enumerate(hits, start=1)]
    answer = Answer(question=question, query=question + " (condensed)", text=text,
                    citations=citations, hits=hits, found=True, grounded=True)
    return answer.to_dict()


def chat(store: ConversationStore, *questions: str) -> Conversation:
    conv = store.new()
    for q in questions:
        conv.add("user", q)
        conv.add("assistant", f"answer to {q} [1]", make_result(q))
    store.save(conv)
    return conv


@pytest.fixture
def store(tmp_path: Path) -> ConversationStore:
    return ConversationStore(tmp_path / "chats")


# --- conversations ---------------------------------------------------------------------------
def test_new_is_not_written_until_saved(store: ConversationStore) -> None:
    conv = store.new()
    assert valid_id(conv.id)
    assert conv.title == NEW_TITLE
    assert conv.messages == []
    assert store.load(conv.id) is None
    assert not store.folder.exists()
    assert store.new().id != conv.id


def test_a_saved_chat_survives_a_restart(store: ConversationStore) -> None:
    conv = chat(store, "How do I descale the kettle? ✓ ünïcödé", "And how often?")
    again = ConversationStore(store.folder).load(conv.id)  # a new process: a new store
    assert again == conv
    assert again.title == "How do I descale the kettle? ✓ ünïcödé"
    assert again.messages[1]["result"]["citations"][0]["location"] == "manual.pdf p. 3"
    assert again.messages[1]["result"]["hits"][1]["chunk_id"] == "c2"


def test_save_is_atomic_and_private(store: ConversationStore) -> None:
    conv = chat(store, "q")
    path = store.folder / f"{conv.id}.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    conv.add("user", "second")
    store.save(conv)
    assert [p.name for p in store.folder.iterdir()] == [path.name]  # no temp files left
    assert json.loads(path.read_text(encoding="utf-8"))["messages"][-1]["content"] == "second"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_failed_save_leaves_the_old_file(store: ConversationStore) -> None:
    conv = chat(store, "q")
    conv.messages.append({"role": "user", "content": "x", "result": {"bad": object()}})
    with pytest.raises(TypeError):
        store.save(conv)
    assert len(store.load(conv.id).messages) == 2  # type: ignore[union-attr]
    assert len(list(store.folder.iterdir())) == 1


def test_title_is_the_first_question_cut_short() -> None:
    conv = Conversation("0" * 32)
    conv.add("assistant", "Hello")
    assert conv.title == NEW_TITLE
    question = "What is the   warranty period\nfor the Aurora kettle when it was bought abroad?"
    conv.add("user", question)
    conv.add("user", "second question")
    assert conv.title == "What is the warranty period for the Aurora kettle when it…"
    assert len(conv.title) <= 61
    assert make_title("x" * 500) == "x" * 60 + "…"
    assert make_title("  \u202e\x00 ") == NEW_TITLE
    with pytest.raises(ValueError, match="role"):
        conv.add("system", "x")


def test_history_is_the_last_turns_as_role_and_content() -> None:
    conv = Conversation("0" * 32)
    for i in range(5):
        conv.add("user", f"q{i}")
        conv.add("assistant", f"a{i}", make_result(f"q{i}"))
    assert conv.history(3) == [{"role": "assistant", "content": "a3"},
                               {"role": "user", "content": "q4"},
                               {"role": "assistant", "content": "a4"}]
    assert len(conv.history()) == 6
    assert conv.history(0) == []
    assert Conversation("1" * 32).history() == []


HOSTILE_IDS = [
    "../../etc/passwd", "../outside", "..", "", "/etc/passwd", "a" * 32 + "\n", "A" * 32,
    "a" * 31, "a" * 33, "g" * 32, "a" * 31 + "/", "%2e%2e%2f" * 4, "０" * 32, "a" * 31 + "\x00",
    "..\\..\\x", " " + "a" * 31,
]


@pytest.mark.parametrize("conv_id", HOSTILE_IDS)
def test_hostile_ids_name_no_file(store: ConversationStore, conv_id: str) -> None:
    store.folder.mkdir()
    outside = store.folder.parent / "outside.json"
    outside.write_text(json.dumps(Conversation("a" * 32).to_dict()))
    assert not valid_id(conv_id)
    assert store.load(conv_id) is None
    assert store.delete(conv_id) is False
    assert outside.exists()
    with pytest.raises(ValueError, match="invalid conversation id"):
        store.save(Conversation(conv_id))
    assert list(store.folder.iterdir()) == []


def test_non_string_ids_are_refused(store: ConversationStore) -> None:
    for conv_id in (None, 123, b"a" * 32, ["a" * 32]):
        assert store.load(conv_id) is None  # type: ignore[arg-type]
        assert store.delete(conv_id) is False  # type: ignore[arg-type]


CORRUPT = [
    b"{not json",
    b"",
    b"\xff\xfe\x00garbage",
    b"[]",
    b'{"id": "%s", "title": "t", "created": 1, "updated": 1, "messages": {}}',
    b'{"id": "%s", "title": 5, "created": 1, "updated": 1, "messages": []}',
    b'{"id": "%s", "title": "t", "created": true, "updated": 1, "messages": []}',
    b'{"id": "%s", "title": "t", "created": 1, "updated": 1, "messages": [{"role": "system",'
    b' "content": "x", "result": null}]}',
    b'{"id": "%s", "title": "t", "created": 1, "updated": 1, "messages": [{"role": "user",'
    b' "content": "x", "result": []}]}',
    b'{"id": "ffffffffffffffffffffffffffffffff", "title": "t", "created": 1, "updated": 1,'
    b' "messages": []}',
]


@pytest.mark.parametrize("content", CORRUPT)
def test_corrupt_files_load_as_none_with_a_warning(store: ConversationStore, content: bytes,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    good = chat(store, "fine")
    conv_id = "b" * 32
    (store.folder / f"{conv_id}.json").write_bytes(content.replace(b"%s", conv_id.encode()))
    with caplog.at_level(logging.WARNING, logger="rag_app.ui.conversations"):
        assert store.load(conv_id) is None
        assert [s.id for s in store.list()] == [good.id]
    assert caplog.records, "a corrupt file is logged"
    assert all(r.levelno == logging.WARNING for r in caplog.records)


def test_an_unreadable_file_is_skipped(store: ConversationStore,
                                       caplog: pytest.LogCaptureFixture) -> None:
    good = chat(store, "fine")
    (store.folder / f"{'c' * 32}.json").mkdir()  # reading it fails with an OSError
    with caplog.at_level(logging.WARNING, logger="rag_app.ui.conversations"):
        assert [s.id for s in store.list()] == [good.id]
        assert store.load("c" * 32) is None
    assert caplog.records


def test_a_missing_file_is_not_a_warning(store: ConversationStore,
                                         caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert store.load("d" * 32) is None
        assert store.list() == []
    assert caplog.records == []


def test_list_is_newest_first_and_skips_other_files(store: ConversationStore) -> None:
    convs = [chat(store, f"question {i}") for i in range(4)]
    for i, conv in enumerate(convs):  # distinct, known times
        conv.updated = 1000.0 + i
        store._write(conv)
    (store.folder / "notes.json").write_text("{}")
    (store.folder / f".{'e' * 32}.abc.tmp").write_text("partial")
    (store.folder / "feedback.jsonl").write_text("")
    summaries = store.list()
    assert [s.id for s in summaries] == [c.id for c in reversed(convs)]
    assert summaries[0].title == "question 3"
    assert summaries[0].messages == 2
    assert summaries[0].updated == 1003.0
    assert [s.id for s in store.list(limit=2)] == [convs[3].id, convs[2].id]

    convs[0].add("user", "a follow-up")  # saving moves it to the top
    store.save(convs[0])
    top = store.list()[0]
    assert (top.id, top.messages) == (convs[0].id, 3)

    assert store.delete(convs[1].id) is True
    assert store.delete(convs[1].id) is False
    assert convs[1].id not in [s.id for s in store.list()]
    assert store.load(convs[1].id) is None


def test_list_of_a_missing_folder_is_empty(tmp_path: Path) -> None:
    assert ConversationStore(tmp_path / "nowhere").list() == []


# --- feedback --------------------------------------------------------------------------------
def test_feedback_is_recorded_in_the_message_and_the_jsonl(store: ConversationStore) -> None:
    conv = chat(store, "How do I descale it?", "How often?")
    conv.updated = 1.0
    store._write(conv)
    store.add_feedback(conv, 1, 1)
    store.add_feedback(conv, 3, 0, comment="wrong page")

    lines = store.feedback_path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    assert first["conversation"] == conv.id
    assert (first["message"], first["rating"]) == (1, 1)
    assert first["question"] == "How do I descale it?"
    assert first["query"] == "How do I descale it? (condensed)"
    assert first["answer"] == "answer to How do I descale it? [1]"
    assert first["citations"][0] == {
        "number": 1, "chunk_id": "c1", "source": "manual.pdf", "page_start": 3,
        "page_end": 3, "location": "manual.pdf p. 3",
        "passage": "Hold the descale button for 3 seconds.\nThe light blinks.",
    }
    assert first["retrieved"] == ["c1", "c2"]
    assert first["time"] > 0
    assert json.loads(lines[1])["comment"] == "wrong page"
    assert stat.S_IMODE(store.feedback_path.stat().st_mode) == 0o600

    saved = store.load(conv.id)
    assert saved is not None
    assert saved.messages[1]["feedback"] == 1
    assert saved.messages[3]["feedback"] == 0
    assert saved.messages[3]["feedback_comment"] == "wrong page"
    assert saved.updated == 1.0  # rating does not reorder the chat list


def test_a_second_rating_replaces_the_first(store: ConversationStore) -> None:
    conv = chat(store, "q1", "q2")
    store.add_feedback(conv, 1, 0, comment="bad")
    store.add_feedback(conv, 3, 1)
    store.add_feedback(conv, 1, 1)
    assert len(store.feedback_path.read_text().splitlines()) == 3  # the file keeps every line
    saved = store.load(conv.id)
    assert saved is not None
    assert saved.messages[1]["feedback"] == 1
    assert "feedback_comment" not in saved.messages[1]
    latest = store.feedback()
    assert [(r["message"], r["rating"]) for r in latest] == [(3, 1), (1, 1)]


def test_feedback_skips_corrupt_lines(store: ConversationStore,
                                      caplog: pytest.LogCaptureFixture) -> None:
    assert store.feedback() == []
    conv = chat(store, "q")
    store.add_feedback(conv, 1, 1)
    with store.feedback_path.open("a") as f:
        f.write('{"broken\n[1, 2]\n{"conversation": "x"}\n\n')
    store.add_feedback(conv, 1, 0)
    with caplog.at_level(logging.WARNING, logger="rag_app.ui.conversations"):
        latest = store.feedback()
    assert [(r["conversation"], r["rating"]) for r in latest] == [(conv.id, 0)]
    assert "3 corrupt" in caplog.text


def test_feedback_lines_escape_line_separators(store: ConversationStore) -> None:
    conv = store.new()
    conv.add("user", "a\u2028b\u2029c\r\nd")
    conv.add("assistant", "x\u2028y", None)
    store.add_feedback(conv, 1, 1)
    text = store.feedback_path.read_text(encoding="utf-8")
    assert text.count("\n") == 1
    assert len(text.splitlines()) == 1  # also for readers that split on U+2028
    assert store.feedback()[0]["question"] == "a\u2028b\u2029c\r\nd"
    assert store.feedback()[0]["citations"] == []


@pytest.mark.parametrize(("index", "rating"), [(0, 1), (2, 1), (-1, 1), (1, 2), (1, -1),
                                               (1, True)])
def test_invalid_feedback_is_refused(store: ConversationStore, index: int, rating: int) -> None:
    conv = chat(store, "q")
    with pytest.raises(ValueError):
        store.add_feedback(conv, index, rating)
    assert not store.feedback_path.exists()


# --- several sessions at once ----------------------------------------------------------------
def test_concurrent_sessions(tmp_path: Path) -> None:
    folder = tmp_path / "chats"

    def session(n: int) -> str:
        store = ConversationStore(folder)  # each session its own store object
        conv = store.new()
        for i in range(10):
            conv.add("user", f"s{n} q{i} " + "x" * 2000)
            conv.add("assistant", f"s{n} a{i}", make_result(f"q{i}"))
            store.save(conv)
            store.add_feedback(conv, len(conv.messages) - 1, i % 2)
            store.list()
        return conv.id

    with ThreadPoolExecutor(max_workers=8) as pool:
        made = list(pool.map(session, range(8)))  # re-raises any session's exception
    store = ConversationStore(folder)
    assert sorted(s.id for s in store.list()) == sorted(made)
    assert all(len(store.load(i).messages) == 20 for i in made)  # type: ignore[union-attr]
    lines = store.feedback_path.read_text().splitlines()
    assert len(lines) == 80
    assert all(json.loads(line)["conversation"] in made for line in lines)
    assert len(store.feedback()) == 80
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [f"{i}.json" for i in made] + ["feedback.jsonl"])


# --- export ----------------------------------------------------------------------------------
def hostile_chat(store: ConversationStore) -> Conversation:
    conv = store.new()
    conv.add("user", "![x](http://evil/a.png) <script>alert(1)</script> $x^2$ :red[hi]")
    conv.add("assistant", "See [click](javascript:alert(1)) https://evil.example/?q=1 [1]\n"
             "<img src=x onerror=alert(1)>", make_result("q"))
    store.save(conv)
    return conv


def test_export_markdown_layout(store: ConversationStore) -> None:
    conv = chat(store, "How do I descale it?")
    md = export_markdown(conv)
    assert md.startswith("# How do I descale it\\?\n")
    assert "**You:** How do I descale it\\?" in md
    assert "**Assistant:** answer to How do I descale it\\? \\[1\\]" in md
    assert "- \\[1\\] manual\\.pdf p\\. 3" in md
    assert "  > Hold the descale button for 3 seconds\\.  \n  > The light blinks\\." in md
    assert "- \\[2\\] guide\\.md § Care \\> Descaling" in md
    assert export_markdown(store.new()).startswith(f"# {NEW_TITLE}\n")


def test_export_markdown_renders_no_links_images_or_html(store: ConversationStore) -> None:
    markdown_it = pytest.importorskip("markdown_it")
    md = markdown_it.MarkdownIt("commonmark", {"html": True})
    html = md.render(export_markdown(hostile_chat(store)))
    for tag in ("<a", "<img", "<script", "<h2", "<code", "<pre"):
        assert tag not in html, (tag, html)
    assert "<h1>" in html
    assert html.count("<blockquote>") == 2
    assert html.count("<li>") == 2
    assert "<strong>You:</strong>" in html
    assert "&lt;script&gt;" in html  # shown as text


def test_export_json_round_trips(store: ConversationStore) -> None:
    conv = hostile_chat(store)
    conv.add("user", "ünïcödé ✓")
    text = export_json(conv)
    assert "ünïcödé ✓" in text
    assert text.startswith('{\n  "version": 1,\n  "id": ')
    assert Conversation.from_dict(json.loads(text)) == conv


# --- two tabs on one chat (REVIEW-ui-security M4) ----------------------------------------------
def _contents(store: ConversationStore, conv_id: str) -> list[str]:
    saved = store.load(conv_id)
    assert saved is not None
    return [m["content"] for m in saved.messages]


def _turn(store: ConversationStore, conv: Conversation, question: str) -> None:
    """What chat.py does: append the question and save, then the answer and save."""
    conv.messages.append({"role": "user", "content": question})
    store.save(conv)
    conv.messages.append({"role": "assistant", "content": f"answer {question}",
                          "result": make_result(question)})
    store.save(conv)


def test_two_tabs_on_one_chat_keep_each_others_messages(tmp_path: Path) -> None:
    """The review's reproduction: tabs A and B load chat X, each adds a turn, then A rates
    its answer. Before, the file ended with A's turn only."""
    first = chat(ConversationStore(tmp_path), "first question")
    tab_a, tab_b = ConversationStore(tmp_path), ConversationStore(tmp_path)  # two sessions
    conv_a, conv_b = tab_a.load(first.id), tab_b.load(first.id)
    assert conv_a is not None and conv_b is not None
    _turn(tab_a, conv_a, "question from tab A")
    _turn(tab_b, conv_b, "question from tab B")
    tab_a.add_feedback(conv_a, 3, 1)
    assert _contents(tab_a, first.id) == [
        "first question", "answer to first question [1]", "question from tab A",
        "answer question from tab A", "question from tab B", "answer question from tab B"]
    saved = tab_a.load(first.id)
    assert saved is not None and saved.messages[3]["feedback"] == 1
    assert conv_b.messages[2]["content"] == "question from tab A"  # B got A's turn on save


def test_a_turn_stays_together_when_another_tab_asks_meanwhile(tmp_path: Path) -> None:
    first = chat(ConversationStore(tmp_path), "q0")
    store = ConversationStore(tmp_path)
    conv_a, conv_b = store.load(first.id), store.load(first.id)
    assert conv_a is not None and conv_b is not None
    conv_a.messages.append({"role": "user", "content": "qA"})
    store.save(conv_a)  # A's answer is still being written…
    _turn(store, conv_b, "qB")  # …when B asks and is answered
    conv_a.messages.append({"role": "assistant", "content": "aA", "result": None})
    store.save(conv_a)
    assert _contents(store, first.id) == ["q0", "answer to q0 [1]", "qA", "aA", "qB",
                                          "answer qB"]


def test_ratings_in_two_tabs_are_both_kept_and_the_later_wins(tmp_path: Path) -> None:
    first = chat(ConversationStore(tmp_path), "q0", "q1")
    store = ConversationStore(tmp_path)
    conv_a, conv_b = store.load(first.id), store.load(first.id)
    assert conv_a is not None and conv_b is not None
    store.add_feedback(conv_a, 1, 1)
    store.add_feedback(conv_b, 3, 0)
    store.add_feedback(conv_b, 1, 0)  # B changes A's rating later
    saved = store.load(first.id)
    assert saved is not None
    assert (saved.messages[1]["feedback"], saved.messages[3]["feedback"]) == (0, 0)


def test_a_chat_saved_before_messages_had_ids_merges_without_duplicates(tmp_path: Path
                                                                         ) -> None:
    conv = Conversation("a" * 32)
    conv.messages = [{"role": "user", "content": "old q", "result": None},
                     {"role": "assistant", "content": "old a", "result": None}]
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / f"{conv.id}.json").write_text(json.dumps(conv.to_dict()))
    store = ConversationStore(tmp_path)
    conv_a, conv_b = store.load(conv.id), store.load(conv.id)
    assert conv_a is not None and conv_b is not None
    _turn(store, conv_a, "qA")
    _turn(store, conv_b, "qB")
    assert _contents(store, conv.id) == ["old q", "old a", "qA", "answer qA", "qB", "answer qB"]


def test_many_sessions_adding_to_one_chat_lose_nothing(tmp_path: Path) -> None:
    conv_id = chat(ConversationStore(tmp_path), "start").id

    def session(n: int) -> None:
        store = ConversationStore(tmp_path)
        conv = store.load(conv_id)
        assert conv is not None
        for i in range(5):
            _turn(store, conv, f"s{n} q{i}")

    with ThreadPoolExecutor(max_workers=6) as pool:
        list(pool.map(session, range(6)))
    contents = _contents(ConversationStore(tmp_path), conv_id)
    assert len(contents) == 2 + 6 * 5 * 2 and len(set(contents)) == len(contents)
    for n in range(6):  # each answer right after its question
        for i in range(5):
            k = contents.index(f"s{n} q{i}")
            assert contents[k + 1] == f"answer s{n} q{i}"


def test_refresh_shows_what_another_tab_saved(tmp_path: Path) -> None:
    first = chat(ConversationStore(tmp_path), "q0")
    store = ConversationStore(tmp_path)
    conv_a, conv_b = store.load(first.id), store.load(first.id)
    assert conv_a is not None and conv_b is not None
    _turn(store, conv_a, "qA")
    store.refresh(conv_b)
    assert [m["content"] for m in conv_b.messages][-2:] == ["qA", "answer qA"]


# --- a chat file that cannot be read is reported as such, and never overwritten --------------
def test_a_corrupt_chat_is_reported_as_corrupt_not_missing(store: ConversationStore) -> None:
    conv = chat(store, "q")
    path = store.folder / f"{conv.id}.json"
    path.write_text('{"id": "' + conv.id + '", "messages": [')
    assert store.load(conv.id) is None
    assert "corrupt or unreadable" in store.problem(conv.id)
    assert "no longer exists" not in store.problem(conv.id)
    assert "no longer exists" in store.problem("b" * 32)
    assert "does not name a saved chat" in store.problem("../x")
    path.write_bytes(b"\xff\xfe bad")
    assert "not UTF-8" in store.problem(conv.id)
    store.delete(conv.id)
    assert store.problem(chat(store, "q2").id) == ""


def test_a_chat_from_a_newer_version_is_reported_and_kept(store: ConversationStore) -> None:
    conv = chat(store, "q")
    path = store.folder / f"{conv.id}.json"
    data = json.loads(path.read_text())
    data["version"] = 99
    path.write_text(json.dumps(data))
    assert store.load(conv.id) is None
    assert "newer version" in store.problem(conv.id) and "format 99" in store.problem(conv.id)
    for bad in ("2", True, 0, None):
        data["version"] = bad
        path.write_text(json.dumps(data))
        assert "corrupt" in store.problem(conv.id)
    data["version"] = 99
    path.write_text(json.dumps(data))
    conv.add("user", "more")  # a tab that had it open saves: the newer file is set aside
    store.save(conv)
    aside = [p for p in store.folder.iterdir() if ".unreadable-" in p.name]
    assert len(aside) == 1 and json.loads(aside[0].read_text())["version"] == 99


def test_feedback_from_two_tabs_on_one_chat_is_kept_per_message(tmp_path: Path) -> None:
    """The same index names different answers in two tabs' copies: both ratings count."""
    first = chat(ConversationStore(tmp_path), "q0")
    store = ConversationStore(tmp_path)
    conv_a, conv_b = store.load(first.id), store.load(first.id)
    assert conv_a is not None and conv_b is not None
    _turn(store, conv_a, "qA")
    conv_b.messages.append({"role": "user", "content": "qB"})
    conv_b.messages.append({"role": "assistant", "content": "aB", "result": None})
    store.add_feedback(conv_a, 3, 1)  # A's answer, index 3 in A's copy…
    rated_b = conv_b.messages[3]
    store.add_feedback(conv_b, conv_b.messages.index(rated_b), 0)  # …and B's answer
    ratings = {r["answer"]: r["rating"] for r in store.feedback()}
    assert ratings == {"answer qA": 1, "aB": 0}
    assert all(r["message_id"] for r in store.feedback())
