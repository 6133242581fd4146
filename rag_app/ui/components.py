"""Pieces the pages draw: source cards, the finished answer, the citation viewer.

Nothing from a document, a file name, an error or the model is rendered as HTML or live
Markdown: every such text goes through `rag_app.ui.text.md` (widget labels and image captions
too); a document's own Markdown (bold, code, tables) is rendered through `shown_md`, which keeps
no link, image or HTML; the only HTML is a cited section's, rebuilt by `passage_html` or
`markdown_html` from escaped text with `<mark>` tags.
"""

from __future__ import annotations

import mimetypes
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import streamlit as st

from rag_app.answering import NO_LLM_LABEL, NOT_FOUND
from rag_app.ui.text import md, short_paths, shown_md

if TYPE_CHECKING:
    from rag_app.ui.viewer import Viewer, ViewLimits

PREVIEW_CHARS = 420


NOT_FOUND_REASONS = {
    "similarity": "no passage of the documents is close enough in meaning to the question.",
    "names": "the question names something that none of the passages found mentions.",
    "model": "the model read the passages found and said they do not answer it.",
    "quotes": "the model's answer quoted words that are not in the passages it cited.",
    "unsourced": "the answer named things no passage mentions, and asked again, the model "
                 "found no answer.",
    "kind": "the answer did not give the kind of value the question asks for (a price, a "
            "date, a number…).",
    "check": "a second check found that the passages cited do not state the answer.",
}


def source_list(hits: Sequence[dict[str, Any]], flagged: Sequence[int], *,
                title: str = "Sources", expanded: bool = True) -> None:
    """The retrieved passages, most similar first: [n] (the number citations use), file, page
    or heading path, similarity, a preview."""
    with st.expander(f"{md(title)} ({len(hits)})", expanded=expanded):
        numbered = sorted(enumerate(hits, start=1),
                          key=lambda item: -float(item[1].get("similarity") or 0.0))
        for n, hit in numbered:
            badge = " · :orange-badge[instruction-like text withheld]" if n in flagged else ""
            st.markdown(f"**[{n:d}]** {md(hit['location'])} · similarity "
                        f"{hit['similarity']:.2f}{badge}")
            st.caption(shown_md(hit.get("text", ""), hit.get("source"), flat=True,
                                limit=PREVIEW_CHARS))


def answer_message(result: dict[str, Any], *, key: str,
                   on_feedback: Callable[[int], None] | None = None,
                   feedback: int | None = None, stopped: bool = False) -> None:
    """A finished answer, drawn from the typed result (never parsed from the text)."""
    hits = result.get("hits", [])
    flagged = result.get("flagged_sources", [])
    query, question = result.get("query", ""), result.get("question", "")
    if query and query.strip() != question.strip():
        st.caption(f"Searched for: {md(query)}")
    if result.get("mode") == "no-llm":
        st.info(NO_LLM_LABEL + (f"\n\n{md(result['notice'])}" if result.get("notice") else ""))
        source_list(hits, flagged, title="Best passages", expanded=True)
        return
    if result.get("notice"):  # e.g. a question in another language than the model reads
        st.info(md(result["notice"]))
    if not result.get("found", True):
        st.markdown(md(NOT_FOUND))
        reason = NOT_FOUND_REASONS.get(str(result.get("refused_by") or ""))
        if reason:
            st.caption(f"Why: {md(reason)}")
        if result.get("missing_names"):
            st.caption("The documents found do not mention "
                       f"{md(', '.join(result['missing_names']))}.")
        nearest = _evidence(result)  # never the refused draft's own quotes
        if nearest:
            st.markdown("**Nearest sentences in the documents (not an answer):**")
            quotes(nearest, hits)
        if result.get("draft"):
            why = ("rejected by the answer check" if result.get("checked") is False
                   else "rejected: it gives no value of the kind the question asks for"
                   if result.get("refused_by") == "kind"
                   else "which names what no source mentions "
                        f"({md(', '.join(result.get('unsourced_names') or []))}); asked "
                        "again, the model found no answer"
                   if result.get("refused_by") == "unsourced"
                   else "rejected: its quotes are not in the sources it cites")
            with st.expander(f"The model's draft, {why}"):
                st.markdown(md(result["draft"]))
        if hits:
            source_list(hits, flagged, title="Nearest passages (they do not answer it)",
                        expanded=False)
        return
    evidence(result, stopped=stopped)
    if result.get("first_answer"):
        names = ", ".join(result.get("unsourced_names") or [])
        with st.expander(f"The model's first answer, asked again: no source mentions "
                         f"{md(names)}"):
            st.markdown(md(result["first_answer"]))
    citations = result.get("citations", [])
    if citations:
        cols = st.columns(min(len(citations), 4))
        for i, c in enumerate(citations):
            label = f"[{int(c['number'])}] {md(c['location'])}"
            cols[i % len(cols)].button(
                label, key=f"{key}-cite-{c['number']}", icon=":material/description:",
                help="Open the cited passage at its place", on_click=_open, args=(key, c),
                type="tertiary")
        opened = st.session_state.get("open_citation")
        if opened and opened[0] == key:
            citation_card(opened[1], hits)
    elif result.get("mode") == "llm":
        st.warning("This answer cites no retrieved source: treat it as ungrounded.")
    notes = []
    if flagged:
        notes.append(f"instruction-like text in source(s) {', '.join(map(str, flagged))} was "
                     "not shown to the model")
    if result.get("removed_links"):
        notes.append(f"{result['removed_links']} link(s) that no source contains were removed")
    if result.get("invalid_citations"):
        notes.append(f"{result['invalid_citations']} citation(s) to no retrieved passage removed")
    if notes:
        st.caption(md("; ".join(notes).capitalize() + "."))
    source_list(hits, flagged, title="Retrieved passages", expanded=False)
    if on_feedback is not None:
        st.feedback("thumbs", key=f"{key}-feedback", default=feedback,
                    on_change=lambda: on_feedback(st.session_state[f"{key}-feedback"]))


def evidence(result: dict[str, Any], *, stopped: bool = False) -> None:
    """A standing answer, the documents' own words first: "The documents say:" and the
    sentences of the sources that support it, each with its [n]; then the model's wording,
    labelled as its summary, with every sentence the sources do not state marked, and those
    sentences listed with their reasons in a warning that is always open. Statements the
    answer path removed (their quotes are not in the cited source) are in a collapsed list.

    A found answer none of whose sentences is supported carries, as its evidence, the sentences
    nearest the question: they are shown after the model's words, labelled as not checked as an
    answer. A chat saved before answers carried `evidence` shows the supported claims' quotes."""
    claims = [c for c in result.get("claims") or [] if isinstance(c, dict)]
    text = str(result.get("text") or "")
    lines = evidence_lines(result)
    supported = any(c.get("supported") for c in claims)
    if lines and supported:
        st.markdown("**The documents say:**")
        quotes(lines, result.get("hits") or [])
        st.caption("In the model's words:")
    unsupported = [c for c in claims if not c.get("supported") and c.get("text")]
    in_text = [c for c in unsupported if str(c["text"]).strip() in text]
    removed = [c for c in unsupported if c not in in_text] if result.get("quotes_checked") \
        else []
    flagged = [c for c in unsupported if c not in removed]
    body = md(text)
    pieces = marked_pieces(text, [str(c["text"]) for c in in_text])
    if len(pieces) > 1:
        body = ""
        for piece, marked in pieces:
            body = body + (f":orange-background[{md(piece)}] ⚠" if marked
                           else " " if not piece.strip() else md(piece))
    st.markdown(body)
    if stopped:
        st.caption("Stopped before the answer was complete.")
    if flagged:
        warning = "**Check these sentences: the sources do not state them as written**"
        for c in flagged:
            warning = warning + (f"\n\n⚠ {md(c['text'])} — "
                                 f"*{md(c.get('reason') or 'no cited source states it')}*")
        st.warning(warning)
    if lines and not supported:
        st.markdown("**Nearest sentences in the documents (not checked as an answer):**")
        quotes(lines, result.get("hits") or [])
    if removed:
        with st.expander(f"{len(removed)} statement(s) removed: not stated in the cited "
                         "source"):
            for c in removed:
                st.markdown(f"- {md(c['text'])} — *{md(c.get('reason') or 'unsupported')}*")


def evidence_lines(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The answer's evidence ({source, text}); for a chat saved before answers carried it, the
    supported claims' quotes, in order, each once."""
    lines = _evidence(result)
    if lines:
        return lines
    seen: dict[str, dict[str, Any]] = {}
    for c in result.get("claims") or []:
        if isinstance(c, dict) and c.get("supported") and c.get("quote") \
                and c["quote"] not in seen:
            seen[c["quote"]] = {"source": c.get("source"), "text": c["quote"]}
    return list(seen.values())


def _evidence(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for e in result.get("evidence") or []
            if isinstance(e, dict) and str(e.get("text") or "").strip()]


def quotes(lines: Sequence[dict[str, Any]], hits: Sequence[dict[str, Any]] = ()) -> None:
    """Sentences of the documents, each as a quote with the [n] of its passage, their Markdown
    rendered (bold, code…: `shown_md`) unless the passage is of a plain text file."""
    for e in lines:
        number = e.get("source")
        if not isinstance(number, int) or isinstance(number, bool):
            number = None
        hit = hits[number - 1] if number is not None and 0 < number <= len(hits) else {}
        text = shown_md(e["text"], hit.get("source") if isinstance(hit, dict) else None,
                        flat=True)
        if number is not None:
            st.markdown(f"> “{text}” **[{number:d}]**")
        else:
            st.markdown(f"> “{text}”")


def marked_pieces(text: str, flagged: Sequence[str]) -> list[tuple[str, bool]]:
    """`text` cut into pieces, each flagged sentence (found in it, in order) a piece of its
    own marked True; the white space between pieces a piece of its own. One unmarked piece
    when there is nothing to mark, or when the pieces would not escape as the whole text does
    (a sentence over several lines, a "www." across a cut): the reasons are listed anyway."""
    cuts: list[tuple[int, int]] = []
    at = 0
    for sentence in flagged:
        sentence = sentence.strip()
        start = text.find(sentence, at) if sentence else -1
        if start < 0 or "\n" in sentence:
            continue
        cuts.append((start, start + len(sentence)))
        at = start + len(sentence)
    if not cuts or "\n" in text:
        return [(text, False)]
    pieces: list[tuple[str, bool]] = []
    at = 0
    for start, end in cuts:
        pieces += _plain_pieces(text[at:start])
        pieces.append((text[start:end], True))
        at = end
    pieces += _plain_pieces(text[at:])
    joined = "".join(" " if not p.strip() else md(p) for p, _ in pieces)
    if " ".join(joined.split()) != " ".join(md(text).split()):
        return [(text, False)]
    return pieces


def _plain_pieces(text: str) -> list[tuple[str, bool]]:
    """An unmarked stretch of the answer: its leading and trailing white space apart, so no
    piece starts with a space (escaping would keep it as a no-break space)."""
    core = text.strip()
    if not core:
        return [(" ", False)] if text else []
    lead, trail = text[: len(text) - len(text.lstrip())], text[len(text.rstrip()):]
    return [*([(" ", False)] if lead else []), (core, False),
            *([(" ", False)] if trail else [])]


def _open(key: str, citation: dict[str, Any]) -> None:
    current = st.session_state.get("open_citation")
    same = current and current[0] == key and current[1]["number"] == citation["number"]
    st.session_state["open_citation"] = None if same else (key, citation)


@st.cache_resource(show_spinner=False)
def _viewer(key: str, _limits: ViewLimits) -> Viewer:
    from rag_app.ui.viewer import Viewer

    return Viewer(_limits)


def viewer() -> Viewer:
    """The process's citation viewer (child processes and a cache shared by all sessions), one
    per set of RAG_VIEW_* limits."""
    from rag_app.settings import Settings
    from rag_app.ui.viewer import ViewLimits

    limits = ViewLimits.from_settings(Settings())
    return _viewer(repr(limits), limits)


def root_id(root: str) -> str:
    """A folder as saved chats name it: a short hash, never its path (the chat files and their
    exports do not reveal where documents live on this machine)."""
    import hashlib

    return hashlib.sha256(root.encode()).hexdigest()[:16]


def saved_hits(hits: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The retrieved passages as a chat saves them: the folder as `root_id`, no path."""
    out = []
    for hit in hits:
        kept = {k: v for k, v in hit.items() if k != "root"}
        if hit.get("root"):
            kept["root_id"] = root_id(str(hit["root"]))
        out.append(kept)
    return out


def indexed_path(hit: dict[str, Any], source: str) -> Path | None:
    """The file of a saved passage, if the index still holds it (the folder given as
    `root_id`, or as a path in chats saved before); None when it was deleted or never was."""
    from rag_app.ui.state import services

    wanted = str(hit.get("root_id") or (root_id(str(hit["root"])) if hit.get("root") else ""))
    store = services().store() if wanted else None
    if store is None:
        return None
    for record in store.file_records().values():
        if record.source == source and root_id(record.root) == wanted:
            return Path(record.root) / record.source
    return None


def citation_card(citation: dict[str, Any], hits: Sequence[dict[str, Any]]) -> None:
    """The cited passage at its place: the PDF page with the passage marked, or the section
    of a Markdown/HTML/text file with the passage marked; and the original file. Only a file
    the index still holds is opened: a deleted document's passage is shown as it was indexed,
    saying so (REVIEW L10)."""
    hit = next((h for h in hits if h.get("chunk_id") == citation["chunk_id"]), {})
    path = indexed_path(hit, citation["source"])
    with st.container(border=True, key=f"card-{citation['chunk_id']}"):
        st.markdown(f"**[{int(citation['number'])}] {md(citation['location'])}**")
        if path is None or not path.is_file():
            st.warning("This document was deleted from the index (or moved) since this answer "
                       "was given: below is its passage as it was indexed then, not the "
                       "document as it is now." if path is None else
                       "The original file is no longer where it was ingested from; this is "
                       "the passage as indexed.")
            st.markdown(shown_md(citation["passage"], citation["source"]))
            return
        from rag_app.errors import RagError

        try:
            quotes = tuple(citation.get("quotes") or ())
            if path.suffix.lower() == ".pdf" and citation.get("page_start"):
                # the quoted words marked; the whole passage when they cannot be located
                pages = viewer().pdf_pages(path, int(citation["page_start"]),
                                           citation.get("page_end"), quotes,
                                           citation["passage"])
                for page, png, marks in pages:
                    note = "" if marks else " (the passage could not be located on this page)"
                    st.image(png, caption=md(f"{citation['source']} — page {page}{note}"))
            else:
                title, html = viewer().section(path, citation["passage"],
                                               tuple(hit.get("headings", ())), quotes)
                st.caption(md(title))
                st.html(html)
        except RagError as exc:
            st.warning(f"Cannot show the page: {md(short_paths(str(exc)))}. This is the passage "
                       "as indexed.")
            st.markdown(shown_md(citation["passage"], citation["source"]))
        st.download_button("Download the original file", data=path.read_bytes,
                           file_name=path.name, key=f"dl-{citation['chunk_id']}",
                           mime=mimetypes.guess_type(path.name)[0] or
                           "application/octet-stream", icon=":material/download:")
