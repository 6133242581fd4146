"""The embedding map page: every chunk placed by meaning, the last question and its passages."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import streamlit as st

from rag_app.ui.state import explain, load_settings, services
from rag_app.ui.text import md


def place_question(chunks: list[dict[str, Any]], retrieved: Sequence[str]
                   ) -> tuple[float, float] | None:
    """Where the question is drawn: the centre of the passages it retrieved that are on the
    map (the map is fitted once, on the chunks; placing a question costs nothing). None when
    none of them is on the map (a sampled map)."""
    wanted = set(retrieved)
    points = [(c["x"], c["y"]) for c in chunks if c["id"] in wanted]
    if not points:
        return None
    return (sum(x for x, _ in points) / len(points), sum(y for _, y in points) / len(points))


def render() -> None:
    import altair as alt
    import pandas as pd

    settings = load_settings()
    st.title("Embedding map")
    st.caption("Each dot is a passage of your documents, placed so that passages with similar "
               "meaning lie close together (UMAP of their embedding vectors); the colour is its "
               "file. Your last question is the red diamond, drawn at the centre of the "
               "passages it retrieved, which are ringed in black.")
    try:
        svc = services()
        store = svc.store()
        if store is None or store.count() == 0:
            st.info("Nothing is indexed yet: add documents on the Documents page.")
            return
        question, retrieved = st.session_state.get("last_question", ("", []))
        # fitted once per state of the index, in the background as the server starts and
        # after each upload or delete (Services.map_layout): usually ready when opened
        with st.spinner("Placing the passages (once per change of the documents; the first "
                        "map after a start takes a while)…"):
            records, note = svc.map_layout(settings.map_max_points)
    except Exception as exc:  # noqa: BLE001 - shown where it happens
        st.error(md(explain(exc)))
        return
    frame = pd.DataFrame(records)
    if frame.empty:
        st.caption(md(note))
        return
    chunks = frame[frame.kind == "chunk"].copy()
    chunks["retrieved"] = chunks.id.isin(set(retrieved))
    # frame the points: a margin of 5% around them, no forced zero
    pad_x = (chunks.x.max() - chunks.x.min()) * 0.05 or 1.0
    pad_y = (chunks.y.max() - chunks.y.min()) * 0.05 or 1.0
    x = alt.X("x:Q", axis=None, scale=alt.Scale(
        domain=[chunks.x.min() - pad_x, chunks.x.max() + pad_x], zero=False, nice=False))
    y = alt.Y("y:Q", axis=None, scale=alt.Scale(
        domain=[chunks.y.min() - pad_y, chunks.y.max() + pad_y], zero=False, nice=False))
    files = sorted(chunks.source.dropna().unique())
    where = [alt.Tooltip("location:N", title="where"), alt.Tooltip("text:N", title="passage")]
    base = alt.Chart(chunks).mark_point(size=45, filled=True, opacity=0.8).encode(
        x=x, y=y,
        color=alt.Color("source:N", title="file", scale=alt.Scale(scheme="tableau10"),
                        legend=alt.Legend(orient="bottom", columns=2, labelLimit=320)),
        shape=alt.Shape("source:N", title="file", sort=files,
                        legend=alt.Legend(orient="bottom", columns=2, labelLimit=320)),
        tooltip=where,
    )
    layers = [base]
    hits = chunks[chunks.retrieved]
    if not hits.empty:
        layers.append(alt.Chart(hits).mark_point(size=220, color="black", strokeWidth=2)
                      .encode(x=x, y=y, tooltip=where))
    spot = place_question(chunks.to_dict("records"), retrieved) if question else None
    if spot is not None:
        asked = pd.DataFrame([{"x": spot[0], "y": spot[1], "text": question}])
        layers.append(alt.Chart(asked).mark_point(shape="diamond", size=320, filled=True,
                                                  color="crimson", opacity=1)
                      .encode(x=x, y=y, tooltip=[alt.Tooltip("text:N", title="your question")]))
    st.altair_chart(alt.layer(*layers).properties(height=560).interactive(), width="stretch")
    st.caption(md(_wording(note)))
    if question:
        ringed = _count(len(hits), "of its passages is", "of its passages are")
        sampled = "" if spot is not None else " (none of them is in the map's sample)"
        st.markdown(f"**Last question:** {md(question)} — {md(f'{ringed} ringed{sampled}.')}")
    else:
        st.caption("Ask a question on the Chat page to see where it lands.")


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _wording(note: str) -> str:
    """The layout's note in plain words: "250 chunks; UMAP n_neighbors=15 …" becomes
    "250 passages, placed by UMAP …"."""
    import re

    note = re.sub(r"\b1 chunks\b", "1 passage", note)
    return re.sub(r"\bchunks\b", "passages", note)
