"""Settings, process-wide services and per-session state for the pages."""

from __future__ import annotations

import logging
from typing import Any

import streamlit as st

from rag_app.errors import RagError
from rag_app.settings import Settings
from rag_app.ui.services import Services
from rag_app.ui.text import short_paths

log = logging.getLogger(__name__)


def load_settings() -> Settings:
    """Read every rerun (cheap): .env and RAG_* variables, as the CLIs do."""
    return Settings()


@st.cache_resource(show_spinner="Loading the embedding model and the index…")
def _services(key: str, _settings: Settings) -> Services:
    logging.basicConfig(level=_settings.log_level,
                        format="%(levelname)s %(name)s: %(message)s")
    services = Services(_settings)
    services.embedder.warm_up()  # once, before any session thread uses it
    return services


def services() -> Services:
    """One `Services` per process and settings (`st.cache_resource`: shared by all sessions,
    so it holds no user state)."""
    import hashlib

    settings = load_settings()
    secrets = "\x00".join(v.get_secret_value() for v in (settings.openai_api_key,
                                                          settings.pdf_password) if v)
    key = settings.model_dump_json() + hashlib.sha256(secrets.encode()).hexdigest()
    return _services(key, settings)


def session_options() -> dict[str, Any]:
    """The user's answer settings (sidebar), with the defaults from Settings."""
    settings = load_settings()
    defaults = {"k": settings.retrieval_k, "mode": "hybrid", "source": "", "mmr": False,
                "answer_check": settings.answer_check}
    opts = st.session_state.setdefault("options", dict(defaults))
    for key, value in defaults.items():
        opts.setdefault(key, value)
    return opts


def explain(exc: BaseException) -> str:
    """An error as the page shows it, as plain text (escape it with `md` to show it): our
    messages say what to do, with paths made short; others get a short line (the traceback goes
    to the server log, never into the page)."""
    if isinstance(exc, RagError):
        return short_paths(str(exc))
    log.exception("unexpected error in the chat UI", exc_info=exc)
    return (f"Something went wrong ({type(exc).__name__}). The details are in the server's "
            "log; please report it if it happens again.")
