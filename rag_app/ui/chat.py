"""The chat page: ask, see the sources at once, read the streamed answer, open citations."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from contextlib import nullcontext
from typing import Any

import streamlit as st

from rag_app.errors import RagError
from rag_app.index.store import StoredChunk
from rag_app.service import describe_llm
from rag_app.ui import components
from rag_app.ui.conversations import (
    Conversation,
    ConversationStore,
    export_json,
    export_markdown,
    make_title,
)
from rag_app.ui.state import explain, load_settings, services, session_options
from rag_app.ui.text import md, short_paths

log = logging.getLogger(__name__)


def _conversations() -> ConversationStore:
    return ConversationStore(load_settings().chats_dir)


def _current(store: ConversationStore) -> Conversation:
    """This tab's conversation: `?chat=<id>` (survives a reload), else a new one."""
    wanted = st.query_params.get("chat")
    conv: Conversation | None = st.session_state.get("conversation")
    if wanted and (conv is None or conv.id != wanted):
        conv = store.load(wanted)
        if conv is None:  # missing, corrupt, or from a newer version: say which (REVIEW L4)
            st.warning(md(store.problem(wanted)))
    elif conv is not None:
        store.refresh(conv)  # what other tabs on this chat saved meanwhile (REVIEW M4)
    if conv is None:
        conv = store.new()
    st.session_state["conversation"] = conv
    return conv


def _switch(conv_id: str | None) -> None:
    st.session_state.pop("conversation", None)
    st.session_state["open_citation"] = None
    if conv_id:
        st.query_params["chat"] = conv_id
    else:
        st.query_params.pop("chat", None)


def _rename(store: ConversationStore, conv: Conversation, name: str) -> None:
    title = make_title(name) if name.strip() else ""
    if title:
        conv.title = title
        store.save(conv)


def _delete(store: ConversationStore, conv_id: str) -> None:
    store.delete(conv_id)
    _switch(None)


def when(stamp: float, now: float) -> str:
    """A chat's last change for the list: 'today 14:05', 'yesterday 09:30', '3 Dec', or
    '3 Dec 2025' in another year (the server's local time)."""
    from datetime import datetime

    then, today = datetime.fromtimestamp(stamp), datetime.fromtimestamp(now)
    days = (today.date() - then.date()).days
    if days == 0:
        return then.strftime("today %H:%M")
    if days == 1:
        return then.strftime("yesterday %H:%M")
    day = f"{then.day} {then.strftime('%b')}"
    return day if then.year == today.year else f"{day} {then.year}"


def chat_labels(past: Iterable[Any], now: float) -> dict[str, str]:
    """Each past chat's label: its title and when it last changed; chats with the same title
    and time get #2, #3… (oldest first), so no two labels are the same."""
    items = list(past)
    labels = {item.id: f"{item.title or NEW_CHAT} · {when(item.updated, now)}" for item in items}
    seen: dict[str, int] = {}
    for item in sorted(items, key=lambda i: (i.updated, i.id)):
        label = labels[item.id]
        seen[label] = seen.get(label, 0) + 1
        if seen[label] > 1:
            labels[item.id] = f"{label} #{seen[label]}"
    return labels


NEW_CHAT = "New chat"


def _sidebar(store: ConversationStore, conv: Conversation, info: dict[str, Any]) -> None:
    settings = load_settings()
    with st.sidebar:
        st.button("New chat", icon=":material/add:", on_click=_switch, args=(None,),
                  width="stretch")
        past = store.list(limit=30)
        if past:
            st.caption("Past chats")
            labels = chat_labels(past, time.time())
            for item in past:
                is_open = item.id == conv.id
                st.button(md(labels[item.id]), key=f"past-{item.id}", on_click=_switch,
                          args=(item.id,), type="secondary" if is_open else "tertiary",
                          icon=":material/chat:" if is_open else None, width="stretch",
                          help="The open chat" if is_open else "Open this chat")
        if conv.messages:
            with st.popover("Rename or delete this chat", icon=":material/edit:",
                            width="stretch"):
                name = st.text_input("Name", value=conv.title, max_chars=200,
                                     key=f"rename-{conv.id}")
                st.button("Rename", key=f"do-rename-{conv.id}", on_click=_rename,
                          args=(store, conv, name))
                sure = st.checkbox("Yes, delete this chat", key=f"sure-{conv.id}")
                st.button("Delete this chat", key=f"do-delete-{conv.id}", disabled=not sure,
                          icon=":material/delete:", on_click=_delete, args=(store, conv.id))
        if conv.messages:
            c1, c2 = st.columns(2)
            c1.download_button("Markdown", data=lambda: export_markdown(conv),
                               file_name=f"chat-{conv.id[:8]}.md", mime="text/markdown",
                               icon=":material/download:", on_click="ignore")
            c2.download_button("JSON", data=lambda: export_json(conv),
                               file_name=f"chat-{conv.id[:8]}.json", mime="application/json",
                               icon=":material/download:", on_click="ignore")
        st.divider()
        st.subheader("Answer settings")
        opts = session_options()
        # on_change="ignore": changing a setting never reruns the page, so it never cuts off
        # an answer being written; the next question uses it.
        opts["k"] = st.slider("Passages the model reads", 1, 15, opts["k"],
                              key="opt-k", on_change="ignore",
                              help="How many passages of your documents are found for each "
                              "question and given to the model. More can find an answer "
                              "spread over several places, but the answer takes longer.")
        modes = ["hybrid", "dense", "lexical"]
        plain = {"hybrid": "By meaning and by exact words", "dense": "By meaning only",
                 "lexical": "By exact words only"}
        opts["mode"] = st.selectbox("How passages are found", modes,
                                    index=modes.index(opts["mode"]), key="opt-mode",
                                    on_change="ignore", format_func=plain.__getitem__,
                                    help="By meaning finds passages that say the same thing "
                                    "in other words; by exact words finds names, codes and "
                                    "numbers. Both together work best for most questions.")
        choices = ["", *_source_choices(info)]
        current = opts["source"] if opts["source"] in choices else ""
        opts["source"] = st.selectbox("Only search in", choices, index=choices.index(current),
                                      key="opt-source", on_change="ignore",
                                      format_func=lambda s: s or "all documents")
        opts["mmr"] = st.toggle("Prefer passages that say different things", opts["mmr"],
                                key="opt-mmr", on_change="ignore",
                                help="Skips passages that repeat what a better one already "
                                "says, so the model sees more of your documents (MMR).")
        opts["answer_check"] = st.toggle(
            "Double-check each answer", opts["answer_check"],
            key="opt-check", on_change="ignore",
            help="Asks the model once more, briefly, whether the passages really state the "
            "answer; if not, you get 'not found' instead of a doubtful answer.")
        st.divider()
        model = (info.get("fingerprint") or {}).get("model")
        embeddings = f"  \nEmbeddings: {md(str(model))}" if model else ""
        st.caption(f"LLM: {md(describe_llm(settings))}{embeddings}  \nCollection: "
                   f"{md(settings.collection)} in the "
                   f"{md(short_paths(settings.describe_store()))}")


@st.cache_data(max_entries=16, show_spinner=False)
def _overview_at(key: str, version: tuple[Any, ...]) -> dict[str, Any]:
    from rag_app.service import index_overview

    return index_overview(load_settings()).to_dict()


def _overview() -> dict[str, Any]:
    """What the index holds, re-read whenever it changed (here, in another tab or the CLI)."""
    store = services().store()
    version = store.version() if store is not None else ("", 0)
    return _overview_at(load_settings().model_dump_json(), version)


def _source_choices(info: dict[str, Any]) -> list[str]:
    files = sorted({f["source"] for f in info.get("file_list", [])})
    folders = sorted({f.rsplit("/", 1)[0] + "/" for f in files if "/" in f})
    return folders + files


def render() -> None:
    store = _conversations()
    conv = _current(store)
    st.title("Ask your documents")
    try:
        info = _overview()
    except Exception as exc:  # noqa: BLE001 - shown where it happens
        st.error(md(explain(exc)))
        return
    _sidebar(store, conv, info)
    if info.get("exists") and info.get("chunks"):
        st.caption(f"{int(info['files'])} files, {int(info['pages'])} pages, "
                   f"{int(info['chunks'])} passages "
                   f"indexed with {md(str(info['fingerprint'].get('model', '')))}")
        if not services().ready:
            _warming()
    else:
        st.info("No documents yet. Add some on the **Documents** page, or run "
                "`python -m ingest FOLDER`.")
    for i, message in enumerate(conv.messages):
        _draw(store, conv, i, message)
    if not conv.messages and info.get("chunks"):
        _examples()
    question = st.chat_input("Ask a question about your documents", submit_mode="stop",
                             disabled=not info.get("chunks"), max_chars=2000)
    question = question or st.session_state.pop("example_question", None)
    if question:
        _ask(store, conv, question.strip())


WARMING = ("**Getting ready:** the embedding model is loading (once after the server starts: "
           "about 10–20 s on a laptop's CPU). You can type a question now; it is answered as "
           "soon as the model is ready.\n\n"
           "How it works: the passages of your documents closest to the question are listed at "
           "once, then the answer is written. It opens with the documents' own sentences, each "
           "with its [n]; click a citation to see the page with the passage marked. Add or "
           "remove files on the **Documents** page; your chats are kept in the sidebar.")


@st.fragment(run_every=2)
def _warming() -> None:
    """While the embedding model loads (after a server start), something to read; the page is
    drawn again once it is ready."""
    if services().ready:
        st.rerun()  # the whole page, now without this note
    st.info(WARMING, icon=":material/hourglass_top:")


def _examples() -> None:
    """An empty chat offers a few questions made from the documents' own headings."""
    store = services().store()
    if store is None:
        return
    questions = example_questions(store.version(), _rows(store))
    if not questions:
        return
    st.caption("Not sure where to start? Try one of these:")
    for n, question in enumerate(questions):
        st.button(md(question), key=f"example-{n}", icon=":material/lightbulb:",
                  on_click=st.session_state.__setitem__, args=("example_question", question))


def _rows(store: Any) -> tuple[tuple[str, tuple[str, ...], str], ...]:
    """(file, heading path, title) of up to 300 passages, read without their text."""
    got = store.chunks.get(limit=300, include=["metadatas"])
    rows = []
    for meta in got.get("metadatas") or []:
        chunk = StoredChunk.from_row("", "", meta)
        rows.append((chunk.source, chunk.headings, chunk.title or ""))
    return tuple(rows)


@st.cache_data(max_entries=8, show_spinner=False)
def example_questions(version: tuple[Any, ...],
                      rows: tuple[tuple[str, tuple[str, ...], str], ...]) -> list[str]:
    """Up to three questions, each on another file: about a section's heading (the deepest one,
    if it says something: at least two words) or, else, the document's title."""
    out: list[str] = []
    files: set[str] = set()
    for source, headings, title in sorted(rows):
        if source in files:
            continue
        topic = next((h for h in reversed(headings) if len(h.split()) >= 2), "")
        if topic:
            out.append(f"What do the documents say about {topic.strip().rstrip('?:.')}?")
        elif len(title.split()) >= 2:
            out.append(f"What is “{title.strip()}” about?")
        else:
            continue
        files.add(source)
        if len(out) == 3:
            break
    return out


def _draw(store: ConversationStore, conv: Conversation, i: int, message: dict[str, Any]) -> None:
    """One saved message. A message this version cannot draw (saved by another version, or
    edited by hand: REVIEW L4) is replaced by a note, and the rest of the chat is drawn."""
    with st.chat_message(message["role"]):
        slot = st.empty()
        try:
            with slot.container():
                _draw_message(store, conv, i, message)
        except Exception:  # one unreadable message never breaks the chat
            log.warning("chat %s: message %d cannot be drawn", conv.id, i, exc_info=True)
            slot.warning("This message cannot be shown: it was saved in a form this version "
                         "cannot read. The rest of the conversation is unaffected.")


def _draw_message(store: ConversationStore, conv: Conversation, i: int,
                  message: dict[str, Any]) -> None:
    if message["role"] == "user":
        st.markdown(md(message["content"]))
        return
    if message.get("error"):
        st.error(md(message["error"]))
        return
    result = message.get("result")
    if not result:
        st.markdown(md(message.get("content", "")))
        if message.get("stopped"):
            st.caption("Stopped before the answer was complete.")
        return

    def feedback(rating: int | None) -> None:
        if rating is not None:
            store.add_feedback(conv, i, rating)

    components.answer_message(result, key=f"m{i}", on_feedback=feedback,
                              feedback=message.get("feedback"),
                              stopped=message.get("stopped", False))


def _ask(store: ConversationStore, conv: Conversation, question: str) -> None:
    from rag_app.answering import answer
    from rag_app.answering.context import needs_condensing
    from rag_app.llm import queue as llm_queue
    from rag_app.retrieve import RetrievalOptions

    if not question:
        return
    svc = services()
    opts = session_options()
    history = conv.history()
    conv.messages.append({"role": "user", "content": question})
    if not conv.title or conv.title == "New chat":
        conv.title = make_title(question)
    store.save(conv)
    st.query_params["chat"] = conv.id
    with st.chat_message("user"):
        st.markdown(md(question))
    with st.chat_message("assistant"):
        message: dict[str, Any] = {"role": "assistant", "content": ""}
        t0 = time.perf_counter()
        try:
            if not svc.ready:
                with st.spinner("Loading the embedding model (once after the server starts)…"):
                    svc.embedder.warm_up()
            retriever = svc.retriever()
            if retriever is None:
                raise _NoIndex()
            with st.spinner("Waking up the model…"):
                chat, notice = svc.chat()
            settings = svc.settings.model_copy(update={"answer_check": opts["answer_check"]})
            options = RetrievalOptions(k=opts["k"], mode=opts["mode"],
                                       source=opts["source"] or None, mmr=opts["mmr"])
            condense = chat is not None and needs_condensing(question, history)
            # Other sessions' questions ahead of this one at the model: said, with the place
            # (rag_app.llm.queue), above the sources while rewriting, then where the answer goes.
            line = _QueueLine(st.empty())
            with st.status("Rewriting the question with the conversation…",
                           expanded=False) if condense else nullcontext(), \
                    llm_queue.listening(line.show):
                stream = answer(question, history, settings=settings, retriever=retriever,
                                chat=chat, options=options, use_llm=chat is not None)
            line.clear()
            stream.notice = notice
            if stream.query != question:
                st.caption(f"Searched for: {md(stream.query)}")
            components.source_list([h.to_dict() for h in stream.hits], stream.flagged)
            st.session_state["last_question"] = (stream.query, [h.chunk_id for h in stream.hits])
            sources_s = time.perf_counter() - t0
            written: list[str] = []
            out = st.empty()
            reading = ""
            if chat is not None and stream.hits:
                reading = ("The model is reading the sources… (a model on a CPU takes "
                           "15–30 s before its first word)")
                out.caption(reading)
            line = _QueueLine(out, reading)
            try:
                with llm_queue.listening(line.show):
                    write_stream(stream, written, out)
            finally:
                if not stream.finished:  # stopped midway: keep what was written
                    message.update(content="".join(written), stopped=True)
            result = stream.result.to_dict()
            result["ui"] = {"sources_s": round(sources_s, 3)}
            result["hits"] = components.saved_hits(result.get("hits", []))
            message.update(content=result["text"], result=result)
        except _NoIndex:
            message["error"] = ("No documents are indexed yet: add some on the Documents page "
                                "(or run python -m ingest FOLDER), then ask again.")
        except Exception as exc:  # noqa: BLE001 - shown where it happens, saved with the chat
            message["error"] = explain(exc)
        finally:
            if any(message.get(k) for k in ("content", "error", "result", "stopped")):
                conv.messages.append(message)
                store.save(conv)
    st.rerun()


class _NoIndex(RagError):
    pass


class _QueueLine:
    """Shows a waiting question's place in the model's queue in `out` (an `st.empty()`), and
    `after` (or nothing) once the model takes it. Called in the script's thread, from inside
    the model's stream: a stop raised by Streamlit here leaves the queue (rag_app.llm.queue)."""

    def __init__(self, out: Any, after: str = "") -> None:
        self.out, self.after, self.shown = out, after, False

    def show(self, status: Any) -> None:
        if status.ahead > 0:
            self.out.caption(md(status.text))
            self.shown = True
        elif self.shown:
            self.clear()

    def clear(self) -> None:
        if self.shown:
            self.shown = False
            if self.after:
                self.out.caption(md(self.after))
            else:
                self.out.empty()


def write_stream(stream: Iterable[str], written: list[str], out: Any) -> None:
    """Show the answer as it streams into `out` (an `st.empty()`), replacing what it held: the
    whole text so far, escaped as one piece each time. Escaping piece by piece would let
    Markdown split across two pieces through (a "www." or a "](" in halves: REVIEW L11). The
    stream is closed however this ends (the stop button, an error), down to the HTTP response
    of the model server."""
    pieces = iter(stream)
    try:
        for piece in pieces:
            written.append(piece)  # first: a stop can end the run at the next Streamlit call
            out.markdown(md("".join(written)))
    finally:
        close = getattr(pieces, "close", None)
        if close is not None:
            close()
