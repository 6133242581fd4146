"""The chat UI: `streamlit run rag_app/ui/app.py` (or `make run`).

Thin on purpose: the pages call the library (`rag_app.answer`, `rag_app.service`,
`rag_app.sources`, `rag_app.conversations`); process-wide objects come from one
`st.cache_resource` (`services()`), per-user state lives in `st.session_state` only.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from rag_app.ui.state import load_settings


def main() -> None:
    st.set_page_config(page_title="Ask your documents", page_icon="📚",
                       layout="wide")
    try:
        load_settings()
    except Exception as exc:  # noqa: BLE001 - shown to the user; no traceback in the page
        st.error(f"The settings are invalid: {exc}. Fix them in .env or the RAG_* environment "
                 "variables (see .env.example) and reload.")
        st.stop()
    views = Path(__file__).parent / "views"
    pages = [
        st.Page(views / "chat_page.py", title="Chat", icon=":material/chat:",
                default=True),
        st.Page(views / "documents_page.py", title="Documents", icon=":material/folder:",
                url_path="documents"),
        st.Page(views / "embedding_map_page.py", title="Embedding map",
                icon=":material/scatter_plot:", url_path="map"),
    ]
    st.navigation(pages).run()


main()
