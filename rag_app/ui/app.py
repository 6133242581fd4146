"""The chat UI. Start it with `python -m rag_app serve` (or `make run`): 127.0.0.1 only, a Host
allow-list, XSRF protection, no error details in the page, the upload limit of
RAG_UPLOAD_MAX_MB, security headers (rag_app/ui/server.py).

`streamlit run rag_app/ui/app.py` keeps the same protections: the options come from
rag_app/ui/.streamlit/config.toml (read wherever it is started from) and this file is also the
ASGI app that adds the headers and refuses foreign Host names. Only `--server.address` with a
non-loopback address exposes it, and then the page says so in a banner: the chat has no login.

Thin on purpose: the pages call the library (`rag_app.answering`, `rag_app.service`) and the
UI's own helpers (`rag_app.ui.sources`, `rag_app.ui.conversations`); process-wide objects come
from one `st.cache_resource` (`services()`), per-user state lives in `st.session_state` only.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from rag_app.ui.state import load_settings
from rag_app.ui.text import md, short_paths


def main() -> None:
    st.set_page_config(page_title="Ask your documents", page_icon="📚",
                       layout="wide")
    exposure_banner()
    try:
        load_settings()
    except Exception as exc:  # noqa: BLE001 - shown to the user; no traceback in the page
        st.error(f"The settings are invalid: {md(short_paths(str(exc)))}. Fix them in .env or "
                 "the RAG_* environment variables (see .env.example) and reload.")
        st.stop()
    keep_chat_in_url()
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


def keep_chat_in_url() -> None:
    """`?chat=<id>` stays in the URL on every page: moving to the Documents page and back (which
    drops query parameters) and then reloading opens the same chat, not an empty one."""
    conv = st.session_state.get("conversation")
    if conv is not None and conv.messages and not st.query_params.get("chat"):
        st.query_params["chat"] = conv.id


def exposure_banner() -> None:
    """A warning on every page while the server listens beyond this machine."""
    from rag_app.ui.server import is_loopback

    address = st.get_option("server.address") or ""
    if is_loopback(address):
        return
    where = f"on {md(address)}" if address else "on every network interface"
    st.warning(f"This chat is served {where}: anyone who can reach this address can read "
               "every chat and document and delete documents (it has no login). Restart it "
               "with `python -m rag_app serve` to keep it on this machine.",
               icon=":material/public:")


if __name__ == "__main__":  # Streamlit runs this file as `__main__` on every rerun
    main()
elif __name__ != "__mp_main__":  # `streamlit run` imports it as a module, as the server
    # starts, and serves this ASGI app. (A spawned child, e.g. ingest's parser, runs the
    # parent's `__main__` again as `__mp_main__`: it must not start services and models.)
    from starlette.middleware import Middleware

    from rag_app.ui.server import SecurityHeaders
    from rag_app.ui.state import prestart

    app = st.App(__file__, middleware=[Middleware(SecurityHeaders)])
    prestart()  # the models load now, not when the first page is opened
