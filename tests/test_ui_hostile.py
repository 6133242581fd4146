"""A page drawn from hostile headings, titles and file names holds no live Markdown or HTML in any
element (REVIEW-ui-security H1, L2): every string Streamlit is sent, in every element of the
chat (answer, citation chips, opened citation cards with their PDF page captions and section
titles, source lists, past chats), the Documents page (table, file picker, jobs) and errors, is
checked — not only the Markdown elements. AppTest sees what the browser is sent, not what it
renders: tests/test_ui_browser.py checks the same documents in chromium.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO
from tests.hostile_docs import QUESTION, hostile_names, write_hostile_docs
from tests.openai_stub import openai_stub

pytestmark = pytest.mark.slow

APP = str(Path(__file__).resolve().parents[1] / "rag_app" / "ui" / "app.py")
ATTACKER = "http://127.0.0.1:8766"
# "](" or "![" not escaped by a backslash (a Markdown link or image), or raw HTML.
LIVE_MARKDOWN = re.compile(r"(?<!\\)(\]\(|!\[)")
LIVE_HTML = re.compile(r"(?<!\\)<(img|a|script|iframe|svg)\b", re.I)
# Fields Streamlit shows as plain text, never as Markdown (select box options, the value a
# widget holds, ids): the browser test checks these in chromium.
PLAIN_FIELDS = re.compile(r"\.(options|default|raw_value|raw_values|value|id|form_id|"
                          r"formatted_value|default_values|file_name|url|data)$")


@pytest.fixture(scope="module")
def hostile_index(tmp_path_factory: pytest.TempPathFactory, embedder: Any) -> Path:
    from ingest.entry import sync_paths
    from tests.conftest import make_settings

    base = tmp_path_factory.mktemp("hostile")
    docs = base / "docs ![d](https:127.0.0.1:8766?folder)"
    write_hostile_docs(docs, ATTACKER)
    settings = make_settings(base / "state", collection="hostile-docs")
    report = sync_paths(settings, [docs], embedder=embedder)
    assert report.counts()["ingested"] == 5, report.outcomes
    return base


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, hostile_index: Path, tmp_path: Path) -> Iterator[None]:
    from streamlit import config

    for name in ("OPENAI_API_KEY", "CHROMA_HOST", "RAG_LLM_MODEL_PATH"):
        monkeypatch.delenv(name, raising=False)
    with openai_stub() as stub:
        for name, value in {
            "RAG_STATE_DIR": str(hostile_index / "state"), "RAG_COLLECTION": "hostile-docs",
            "RAG_CHATS_DIR": str(tmp_path / "chats"),
            "RAG_DOCUMENTS_DIR": str(tmp_path / "uploads"), "OPENAI_BASE_URL": stub.base_url,
            "RAG_LLM_MODEL": "json", "RAG_LLM_MAX_RETRIES": "0", "RAG_RETRIEVAL_K": "5",
            "RAG_CACHE_DIR": str(REPO / "data" / "cache"),
        }.items():
            monkeypatch.setenv(name, value)
        monkeypatch.chdir(tmp_path)
        before = config.get_option("server.address")
        config.set_option("server.address", "127.0.0.1")
        try:
            yield
        finally:
            config.set_option("server.address", before)


def strings(message: Any, path: str) -> Iterator[tuple[str, str]]:
    """Every string field of a protobuf message, with its path."""
    for field, value in message.ListFields():
        items = value if field.is_repeated else [value]
        for item in items:
            if field.type == field.TYPE_MESSAGE:
                yield from strings(item, f"{path}.{field.name}")
            elif field.type == field.TYPE_STRING:
                yield f"{path}.{field.name}", item


def nodes(node: Any) -> Iterator[Any]:
    yield node
    for child in getattr(node, "children", {}).values():
        yield from nodes(child)


def live_markup(at: Any) -> list[str]:
    """Each string sent to the browser that would render an image, a link or HTML."""
    found = []
    for node in nodes(at._tree):
        proto = getattr(node, "proto", None)
        if proto is None or not hasattr(proto, "ListFields"):
            continue
        kind = getattr(node, "type", type(node).__name__)
        for path, text in strings(proto, kind):
            if kind in ("html",) and path.endswith(".body"):
                hit = LIVE_HTML.search(text)  # st.html: escaped text and <mark> only
            elif kind in ("arrow_vega_lite_chart", "vega_lite_chart") or PLAIN_FIELDS.search(path):
                continue
            else:
                hit = LIVE_MARKDOWN.search(text) or LIVE_HTML.search(text)
            if hit:
                found.append(f"{path}: {text[:200]!r}")
    return found


def app() -> Any:
    from streamlit.testing.v1 import AppTest

    return AppTest.from_file(APP, default_timeout=180).run()


def ok(at: Any) -> Any:
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_the_chat_and_every_opened_citation_hold_no_live_markup(env: None) -> None:
    at = ok(ok(app()).chat_input[0].set_value(QUESTION).run())
    assert not live_markup(at), live_markup(at)
    # the hostile names and headings are on the page, as text
    shown = " ".join(e.value for e in at.markdown)
    assert "lamp \\!\\[c\\]" in shown or "manual \\!\\[p\\]" in shown, shown[:2000]
    chips = [b for b in at.button if re.match(r"\[\d+\] ", b.label)]
    assert chips, [b.label for b in at.button]
    for chip in chips:
        assert "![" not in chip.label.replace("\\!\\[", ""), chip.label
    # every retrieved file, opened as a citation card (PDF page with its caption, or section)
    hits = at.session_state["conversation"].messages[-1]["result"]["hits"]
    assert len({h["source"] for h in hits}) >= 4, [h["source"] for h in hits]
    from rag_app.ui import components

    for n, hit in enumerate(hits, start=1):
        citation = {"number": n, "chunk_id": hit["chunk_id"], "source": hit["source"],
                    "location": hit["location"], "passage": hit["text"],
                    "page_start": hit.get("page_start"), "page_end": hit.get("page_end"),
                    "quotes": []}
        at.session_state["open_citation"] = ("m1", citation)
        at = ok(at.run())
        opened = [*at.image, *at.html]
        assert opened, f"citation card of {hit['source']} not drawn"
        assert not live_markup(at), (hit["source"], live_markup(at))
    assert components  # the card drawn is components.citation_card
    # the PDF's page image has its (hostile) file name as caption, escaped
    pdf = hostile_names(ATTACKER)["pdf"]
    assert any(h["source"] == pdf for h in hits)


def test_the_documents_page_and_errors_hold_no_live_markup(env: None) -> None:
    at = ok(app())
    at.switch_page("views/documents_page.py")
    at = ok(at.run())
    assert not live_markup(at), live_markup(at)
    files = set(at.dataframe[-1].value["file"])
    assert set(hostile_names(ATTACKER).values()) <= files
    # no absolute path in the table (REVIEW L8)
    folders = set(at.dataframe[-1].value["folder"])
    assert folders == {"…/docs ![d](https:127.0.0.1:8766?folder)"}, folders
    # an upload refused with a hostile name: the error shows it as text
    at.file_uploader[0].set_value([("x ![e](https:127.0.0.1:8766?err).md", b"",
                                    "text/markdown")])
    at = ok(ok(at.run()).button(key="upload-go").click().run())
    assert at.error and "is empty" in " ".join(e.value for e in at.error).replace("\\", "")
    assert not live_markup(at), live_markup(at)


def test_a_saved_error_with_markup_is_shown_as_text(env: None) -> None:
    """Errors are saved with the chat and drawn again on every visit (REVIEW L2)."""
    from rag_app.settings import Settings
    from rag_app.ui.conversations import ConversationStore

    store = ConversationStore(Settings().chats_dir)
    conv = store.new()
    conv.title = "t ![t](https:127.0.0.1:8766?title)"
    conv.messages = [{"role": "user", "content": "q ![u](https:127.0.0.1:8766?q)"},
                     {"role": "assistant", "content": "",
                      "error": "The endpoint said: ![e](https:127.0.0.1:8766?error) "
                               "<img src=x>"}]
    store.save(conv)
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=180)
    at.query_params["chat"] = conv.id
    at = ok(at.run())
    assert at.error and "The endpoint said" in at.error[0].value
    assert not live_markup(at), live_markup(at)


def test_a_non_loopback_address_shows_a_warning_banner(env: None) -> None:
    from streamlit import config

    assert not [w for w in ok(app()).warning if "no login" in w.value]
    config.set_option("server.address", "0.0.0.0")
    at = ok(app())
    banner = [w.value for w in at.warning if "no login" in w.value]
    assert banner and "0\\.0\\.0\\.0" in banner[0]


# -- saved chats --------------------------------------------------------------------------------
def test_a_saved_answer_this_version_cannot_draw_leaves_the_rest_of_the_chat(env: None) -> None:
    """REVIEW L4: a chat whose saved answer has `"similarity": null` (another version, or a
    hand edit) crashed the page on every visit; now that message says it cannot be shown."""
    from streamlit.testing.v1 import AppTest

    from rag_app.settings import Settings
    from rag_app.ui.conversations import ConversationStore

    store = ConversationStore(Settings().chats_dir)
    conv = store.new()
    bad = {"found": True, "mode": "llm", "text": "It lasts 2 years.", "citations": [],
           "hits": [{"location": "a.md", "similarity": None, "text": "t"}]}
    conv.messages = [{"role": "user", "content": "first question"},
                     {"role": "assistant", "content": "It lasts 2 years.", "result": bad},
                     {"role": "user", "content": "second question"},
                     {"role": "assistant", "content": "A plain answer."}]
    store.save(conv)
    at = AppTest.from_file(APP, default_timeout=180)
    at.query_params["chat"] = conv.id
    at = ok(at.run())
    assert len(at.chat_message) == 4
    assert "cannot be shown" in at.chat_message[1].warning[0].value
    assert "A plain answer" in at.chat_message[3].markdown[0].value.replace("\\", "")
    assert "second question" in at.chat_message[2].markdown[0].value


def test_chat_titles_are_one_clean_line(env: None) -> None:
    """REVIEW L5: the title was the question's first 60 characters, newlines, bidi overrides
    and zero-width characters included, in the sidebar every session lists."""
    question = ("How long is the\nQuartz \u202elamp\u200b warranty, and what does it cover "
                "when the lamp is used outdoors?")
    at = ok(ok(app()).chat_input[0].set_value(question).run())
    title = at.session_state["conversation"].title
    assert "\n" not in title and "\u202e" not in title and "\u200b" not in title
    assert title.endswith("…") and len(title) <= 61
    past = [b.label for b in at.sidebar.button if b.key and b.key.startswith("past-")]
    assert past and "\u202e" not in past[0] and "\n" not in past[0]
