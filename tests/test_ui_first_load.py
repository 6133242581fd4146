"""The first page load does not wait for the models (issue 24 polish: "the first page load takes
18 s while models warm up, with nothing to read"). The page reads the index, not the models: it
is drawn at once, with a note on what is loading and how the chat works, while the embedding
model loads in the background; and `streamlit run` (which `rag serve` runs) imports app.py as
the server starts, which already starts loading them.

AppTest with an embedding model that is still loading (it loads only when the test lets it).
"""

from __future__ import annotations

import importlib.util
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.test_ui import APP, env, index_dir, ok, stub, texts, unescape  # noqa: F401

pytestmark = pytest.mark.slow


class _LoadingEmbedder:
    """An embedding model that takes until `release` is set to load."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.loaded = False
        self.name = "loading-model"

    def warm_up(self) -> None:
        self.release.wait(120)
        self.loaded = True

    def adopt(self, model: str | None) -> None:
        pass


@pytest.fixture
def loading(env: dict[str, str], monkeypatch: pytest.MonkeyPatch  # noqa: F811
            ) -> Any:
    """Services made from now on get a model that is still loading. A setting of their own
    makes them new ones (services are kept per settings, for the whole process)."""
    import rag_app.embedders.auto

    model = _LoadingEmbedder()
    monkeypatch.setattr(rag_app.embedders.auto, "make_embedder", lambda settings: model)
    monkeypatch.setenv("RAG_VIEW_TIMEOUT_S", f"{14 + time.time() % 1:.6f}")
    yield model
    model.release.set()


def test_the_page_is_drawn_while_the_embedding_model_loads(loading: Any) -> None:
    from streamlit.testing.v1 import AppTest

    t0 = time.perf_counter()
    at = ok(AppTest.from_file(APP, default_timeout=60).run())  # waited for the model before
    took = time.perf_counter() - t0
    shown = unescape(texts(at))
    assert "**Getting ready:** the embedding model is loading" in shown
    assert "click a citation to see the page with the passage marked" in shown
    assert "passages indexed with" in shown  # what the index holds
    assert at.chat_input and at.sidebar.button  # the question box, New chat and past chats
    assert any(str(b.label).startswith("What ") for b in at.button)  # example questions
    assert not loading.loaded and took < 55
    loading.release.set()
    deadline = time.monotonic() + 30
    while not loading.loaded and time.monotonic() < deadline:
        time.sleep(0.1)
    at = ok(at.run())
    assert "Getting ready" not in unescape(texts(at))


def test_the_server_starts_loading_the_models_when_it_imports_the_app(loading: Any) -> None:
    """`streamlit run` imports app.py as a module (to find its ASGI app) as the server starts:
    that starts the services, whose model then loads in the background."""
    from rag_app.settings import Settings
    from rag_app.ui import state

    key = state._key(Settings())
    assert key not in state._STARTED
    spec = importlib.util.spec_from_file_location("rag_app_ui_app_as_served", Path(APP))
    assert spec is not None and spec.loader is not None
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
    deadline = time.monotonic() + 30
    while key not in state._STARTED and time.monotonic() < deadline:
        time.sleep(0.05)
    services = state._STARTED[key].result(timeout=60)
    assert services.embedder is loading and not services.ready
    loading.release.set()
    while not services.ready and time.monotonic() < deadline + 30:
        time.sleep(0.05)
    assert services.ready
    while services._map is None and time.monotonic() < deadline + 240:  # then the map
        time.sleep(0.1)
    assert services._map is not None


def test_the_embedding_map_is_fitted_as_the_server_starts(loading: Any,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    """Issue 24 polish: the map's first draw took 35 s (UMAP compiles its code in each new
    process). The server fits it in the background as it starts, after the models: opening
    the map page then costs no fit."""
    from streamlit.testing.v1 import AppTest

    import rag_app.maps as maps
    from rag_app.settings import Settings
    from rag_app.ui import state

    fits: list[float] = []
    fit = maps.embedding_map

    def counted(*args: Any, **kwargs: Any) -> Any:
        fits.append(time.monotonic())
        return fit(*args, **kwargs)

    monkeypatch.setattr(maps, "embedding_map", counted)
    spec = importlib.util.spec_from_file_location("rag_app_ui_app_as_served_map", Path(APP))
    assert spec is not None and spec.loader is not None
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
    loading.release.set()
    key = state._key(Settings())
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not (
            key in state._STARTED and state._STARTED[key].done()
            and state._STARTED[key].result()._map is not None):
        time.sleep(0.2)
    assert len(fits) == 1, "the map was not fitted as the server started"
    at = ok(AppTest.from_file(APP, default_timeout=120).run())
    at.switch_page("views/embedding_map_page.py")
    at = ok(at.run())
    kinds = {getattr(e, "type", "") for e in at.main}
    assert {"arrow_vega_lite_chart", "vega_lite_chart"} & kinds, f"no chart drawn: {kinds}"
    assert len(fits) == 1  # opening the page fitted nothing


def test_a_spawned_child_does_not_start_the_services(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ingest's parser is a spawned child that runs the parent's `__main__` (app.py, in the
    chat server) again as `__mp_main__`: seen in the server's log, an upload's parser loaded a
    second embedding model and fitted the map again. It must start nothing."""
    import runpy

    from rag_app.ui import state

    started: list[bool] = []
    monkeypatch.setattr(state, "prestart", lambda: started.append(True))
    runpy.run_path(APP, run_name="__mp_main__")
    assert started == []
    runpy.run_path(APP, run_name="rag_app_ui_app_as_served_probe")  # as the server imports it
    assert started == [True]
