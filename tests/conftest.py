"""Shared fixtures: one real embedding model per session, fresh stores, a real Chroma server."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rag_app.settings import Settings

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "data" / "samples"


def pytest_configure(config: pytest.Config) -> None:
    # Nothing in the test run may reach a model hub: the bundled model must be enough.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    os.environ["ANONYMIZED_TELEMETRY"] = "False"


# Tables that tests measure (not assert) and print at the end of the run.
MEASUREMENTS: dict[str, list[str]] = {}


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for title, lines in MEASUREMENTS.items():
        terminalreporter.write_sep("-", title)
        for line in lines:
            terminalreporter.write_line(line)


def make_settings(state_dir: Path, **overrides: object) -> Settings:
    """Settings that ignore the developer's .env and RAG_* variables."""
    values: dict[str, object] = {"state_dir": state_dir, "collection": "test-docs"}
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def stub_client(base_url: str, model: str, key: str, **values: Any) -> Any:
    """A ChatClient with short time limits, for the OpenAI-compatible stub (tests/openai_stub)."""
    from rag_app.llm.client import ChatClient, Endpoint

    limits: dict[str, Any] = {"llm_first_token_timeout_s": 2, "llm_idle_timeout_s": 1,
                              "llm_connect_timeout_s": 2, "llm_max_retries": 2}
    limits.update(values)
    return ChatClient(Endpoint(base_url, model, key), make_settings(Path("/tmp/x"), **limits))


@pytest.fixture(scope="session")
def embedder():  # type: ignore[no-untyped-def]
    """The real bundled model, loaded once for the whole session."""
    from rag_app.embedders.auto import make_embedder

    # named, not "auto": a test ingesting another language must not switch the shared model
    emb = make_embedder(make_settings(Path("/nonexistent"),
                                      embedding_model="sentence-transformers/all-MiniLM-L6-v2"))
    emb.warm_up()
    return emb


# -- a real `chroma run` server ---------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def chroma_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    exe = shutil.which("chroma") or str(Path(sys.executable).with_name("chroma"))
    if not Path(exe).exists():
        pytest.fail("the `chroma` command is missing: install the project (`make install`)")
    port = _free_port()
    path = tmp_path_factory.mktemp("chroma-server")
    log = (path / "server.log").open("w")
    proc = subprocess.Popen([exe, "run", "--host", "127.0.0.1", "--port", str(port),
                             "--path", str(path / "data")], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"chroma run exited with {proc.returncode}: "
                        f"{(path / 'server.log').read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("chroma run did not start listening within 60 s")
    yield "127.0.0.1", port
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


_collection_counter = iter(range(10**6))


@pytest.fixture(params=["embedded", pytest.param("server", marks=pytest.mark.server)])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """Fresh settings for one test, against the embedded store and against a real server."""
    if request.param == "server":
        host, port = request.getfixturevalue("chroma_server")
        return make_settings(tmp_path / "state", chroma_host=host, chroma_port=port,
                             collection=f"test-{next(_collection_counter)}-docs")
    return make_settings(tmp_path / "state")


@pytest.fixture(autouse=True)
def _main_module_restored() -> Iterator[None]:
    """Streamlit's AppTest.from_function leaves its script as `__main__`; a parse worker started
    later (multiprocessing spawn) re-imports `__main__` and dies on it (NameError: __args), so
    every file of a later ingest "failed". Each test gets back the `__main__` it started with."""
    import sys

    main = sys.modules.get("__main__")
    yield
    if main is not None:
        sys.modules["__main__"] = main

