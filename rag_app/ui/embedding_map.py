"""The embedding map page: every chunk placed by meaning, the last question and its passages."""

from __future__ import annotations

from typing import Any

import streamlit as st

from rag_app.ui.state import explain, load_settings, services
from rag_app.ui.text import md


@st.cache_data(max_entries=8, show_spinner=False)
def _map(version: tuple[Any, ...], question: str, retrieved: tuple[str, ...],
         max_points: int) -> tuple[list[dict[str, Any]], str]:
    """Cached per index version and question: UMAP is fitted on the chunks only, with a fixed
    seed, so the chunks keep their places from one question to the next."""
    from rag_app.eval.maps import embedding_map

    svc = services()
    retriever = svc.retriever()
    if retriever is None:
        return [], "the collection is empty: nothing to map"
    questions = [("question", question)] if question else []
    emap = embedding_map(retriever, questions, retrieved={"question": list(retrieved)},
                         max_chunks=max_points)
    return emap.to_records(), emap.note


def render() -> None:
    import altair as alt
    import pandas as pd

    settings = load_settings()
    st.title("Embedding map")
    st.caption("Each point is a passage, placed so that passages with similar meaning lie close "
               "together (UMAP of the embedding vectors). The last question you asked is the "
               "star; the passages it retrieved are ringed.")
    try:
        svc = services()
        store = svc.store()
        if store is None or store.count() == 0:
            st.info("Nothing is indexed yet: add documents on the Documents page.")
            return
        question, retrieved = st.session_state.get("last_question", ("", []))
        with st.spinner("Placing the passages (the first map takes a while)…"):
            records, note = _map(store.version(), question, tuple(retrieved),
                                 settings.map_max_points)
    except Exception as exc:  # noqa: BLE001 - shown where it happens
        st.error(md(explain(exc)))
        return
    st.caption(md(note))
    frame = pd.DataFrame(records)
    if frame.empty:
        return
    chunks = frame[frame.kind == "chunk"].copy()
    chunks["retrieved"] = chunks.retrieved_by.map(bool)
    base = alt.Chart(chunks).mark_circle(size=40, opacity=0.7).encode(
        x=alt.X("x", axis=None), y=alt.Y("y", axis=None),
        color=alt.Color("source:N", legend=alt.Legend(title="file", orient="bottom",
                                                      columns=3)),
        tooltip=[alt.Tooltip("location:N", title="where"),
                 alt.Tooltip("text:N", title="passage")],
    )
    layers = [base]
    hits = chunks[chunks.retrieved]
    if not hits.empty:
        layers.append(alt.Chart(hits).mark_point(size=160, color="black", strokeWidth=2)
                      .encode(x="x", y="y", tooltip=[alt.Tooltip("location:N", title="where"),
                                                     alt.Tooltip("text:N", title="passage")]))
    asked = frame[frame.kind == "question"]
    if not asked.empty:
        layers.append(alt.Chart(asked).mark_point(shape="diamond", size=300, filled=True,
                                                  color="crimson")
                      .encode(x="x", y="y", tooltip=[alt.Tooltip("text:N",
                                                                 title="your question")]))
    st.altair_chart(alt.layer(*layers).properties(height=560).interactive(), width="stretch")
    if question:
        st.markdown(f"**Last question:** {md(question)} — {len(hits)} of its passages ringed.")
    else:
        st.caption("Ask a question on the Chat page to see where it lands.")
