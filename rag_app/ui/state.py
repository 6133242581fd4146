"""Settings, process-wide services and per-session state for the pages."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future
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


# One `Services` per settings, started at most once per process: by the first page, or already
# when the server starts (`prestart`, from app.py), so that the models are loading before anyone
# opens the page.
_STARTED: dict[str, Future[Services]] = {}
_STARTED_LOCK = threading.Lock()


def _start(key: str, settings: Settings, warm_map: bool = False) -> Future[Services]:
    with _STARTED_LOCK:
        future = _STARTED.get(key)
        first = future is None
        if future is None:
            future = _STARTED[key] = Future()
    if first:
        try:
            logging.basicConfig(level=settings.log_level,
                                format="%(levelname)s %(name)s: %(message)s")
            # the models load (and the map is fitted) in its own thread
            future.set_result(Services(settings, warm_map=warm_map))
        except Exception as exc:  # noqa: BLE001 - handed to the page that waits for it
            with _STARTED_LOCK:  # the next page tries again, and shows why it failed
                _STARTED.pop(key, None)
            future.set_exception(exc)
    return future


@st.cache_resource(show_spinner="Opening the index…")
def _services(key: str, _settings: Settings) -> Services:
    return _start(key, _settings).result()


def _key(settings: Settings) -> str:
    import hashlib

    secrets = "\x00".join(v.get_secret_value() for v in (settings.openai_api_key,
                                                          settings.pdf_password) if v)
    return settings.model_dump_json() + hashlib.sha256(secrets.encode()).hexdigest()


def services() -> Services:
    """One `Services` per process and settings (`st.cache_resource`: shared by all sessions,
    so it holds no user state). It opens the index at once and loads the models in the
    background (`Services.ready`)."""
    settings = load_settings()
    return _services(_key(settings), settings)


def prestart() -> None:
    """Start the services in the background as the server starts (`streamlit run` imports
    app.py then), so the models load, and the embedding map is fitted, before the first page
    is opened. Invalid settings are left for the page to report."""
    try:
        settings = load_settings()
    except Exception:  # noqa: BLE001 - the page says what is wrong with them
        return
    threading.Thread(target=_start, args=(_key(settings), settings, True),
                     name="rag-prestart", daemon=True).start()


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
