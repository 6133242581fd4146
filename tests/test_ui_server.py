"""The chat server is safe however it is started (REVIEW-ui-security M1, M6, L1): a Host that is
not this machine's is refused (403) on HTTP and on the WebSocket, responses carry a CSP and no
framing, and a non-loopback address needs --allow-network. Checked on the pieces, then on a real
`python -m rag_app serve` and a bare `streamlit run rag_app/ui/app.py` on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rag_app.ui.server import (
    CONTENT_SECURITY_POLICY,
    SecurityHeaders,
    allowed_hosts,
    host_allowed,
    is_loopback,
    streamlit_flags,
)
from tests.conftest import REPO, _free_port

APP = REPO / "rag_app" / "ui" / "app.py"


# -- the pieces ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("localhost", True), ("127.0.0.2", True), ("::1", True),
    ("[::1]", True), ("0.0.0.0", False), ("::", False), ("", False), ("192.168.1.5", False),
    ("example.org", False), ("localhost.evil.test", False),
])
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_allowed_hosts_are_the_loopback_names_and_the_address_given() -> None:
    assert allowed_hosts("127.0.0.1") == ["localhost", "127.0.0.1", "::1"]
    assert allowed_hosts("192.168.1.5", ["chat.example.org"]) == [
        "localhost", "127.0.0.1", "::1", "192.168.1.5", "chat.example.org"]
    assert allowed_hosts("0.0.0.0")[-1] == socket.gethostname().lower()  # no "0.0.0.0"


@pytest.mark.parametrize(("header", "ok"), [
    ("127.0.0.1:8501", True), ("localhost:8501", True), ("LOCALHOST.", True), ("[::1]:8501", True),
    ("rebind.attacker.test:8501", False), ("127.0.0.1.attacker.test", False), ("", False),
    (None, False), ("127.0.0.1:notaport", False), ("user@127.0.0.1", False),
    ("127.0.0.1/x", False),
])
def test_host_allowed(header: str | None, ok: bool) -> None:
    assert host_allowed(header, ["localhost", "127.0.0.1", "::1"]) is ok


def _call(middleware: SecurityHeaders, scope_type: str, host: str, origin: str | None = None
          ) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"app"})

    async def receive() -> dict[str, Any]:
        return {"type": "http.request"}

    async def send(message: Any) -> None:
        sent.append(dict(message))

    middleware.app = inner
    headers = [(b"host", host.encode())]
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    scope = {"type": scope_type, "headers": headers, "path": "/"}
    # In a thread of its own: Playwright's sync API (the browser tests' session-wide fixture)
    # leaves an event loop running in the main thread, and asyncio.run refuses to start there.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, middleware(scope, receive, send)).result()
    return sent


def test_the_middleware_refuses_foreign_hosts_and_adds_the_headers() -> None:
    mw = SecurityHeaders(lambda *a: None, allowed=lambda: ["localhost", "127.0.0.1"])  # type: ignore[arg-type,return-value]
    ok = _call(mw, "http", "127.0.0.1:8501")
    headers = dict(ok[0]["headers"])
    assert ok[0]["status"] == 200 and ok[1]["body"] == b"app"
    assert headers[b"content-security-policy"].decode() == CONTENT_SECURITY_POLICY
    assert b"img-src 'self' data: blob:" in headers[b"content-security-policy"]
    assert b"frame-ancestors 'none'" in headers[b"content-security-policy"]
    assert headers[b"x-frame-options"] == b"DENY"
    refused = _call(mw, "http", "rebind.attacker.test:8501")
    assert refused[0]["status"] == 403 and b"app" not in refused[-1].get("body", b"")
    assert _call(mw, "websocket", "rebind.attacker.test") == [
        {"type": "websocket.close", "code": 1008}]
    # a page of another local port may not open the WebSocket (REVIEW L1)
    assert _call(mw, "websocket", "127.0.0.1:8501", "http://localhost:3000") == [
        {"type": "websocket.close", "code": 1008}]
    assert _call(mw, "websocket", "127.0.0.1:8501", "http://127.0.0.1:8501")[0]["status"] == 200


def test_serve_flags_carry_the_allow_list_and_the_limits() -> None:
    flags = streamlit_flags("127.0.0.1", 8600, 2.5, allowed_hosts("127.0.0.1"))
    pairs = list(zip(flags[::2], flags[1::2], strict=True))
    assert ("--server.address", "127.0.0.1") in pairs
    assert ("--server.maxUploadSize", "3") in pairs  # never below RAG_UPLOAD_MAX_MB
    assert ("--client.showErrorDetails", "none") in pairs
    assert [v for k, v in pairs if k == "--server.allowedHosts"] == [
        "localhost", "127.0.0.1", "::1"]


def test_the_shipped_config_has_the_same_protections() -> None:
    import tomllib

    config = tomllib.loads((APP.parent / ".streamlit" / "config.toml").read_text())
    assert config["server"]["address"] == "127.0.0.1"
    assert config["server"]["allowedHosts"] == ["localhost", "127.0.0.1", "::1"]
    assert config["server"]["enableXsrfProtection"] is True
    assert config["server"]["maxUploadSize"] == 50  # RAG_UPLOAD_MAX_MB's default
    assert config["client"]["showErrorDetails"] == "none"
    assert config["browser"]["gatherUsageStats"] is False


def test_a_network_address_needs_allow_network(tmp_path: Path) -> None:
    env = {**os.environ, "RAG_STATE_DIR": str(tmp_path / "state")}
    run = subprocess.run([sys.executable, "-m", "rag_app", "serve", "--host", "0.0.0.0",
                          "--port", str(_free_port())], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert "--allow-network" in run.stderr and "no login" in run.stderr


# -- a real server ------------------------------------------------------------------------------
def _start(command: list[str], cwd: Path, port: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAG_", "STREAMLIT_"))}
    env.update(RAG_STATE_DIR=str(cwd / "state"), RAG_CHATS_DIR=str(cwd / "chats"),
               RAG_DOCUMENTS_DIR=str(cwd / "uploads"), HF_HUB_OFFLINE="1")
    proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=(cwd / "server.log").open("wb"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health",
                                        timeout=2) as r:
                if r.read() == b"ok":
                    return proc
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            _stop(proc)
            pytest.fail(f"the server did not start: {(cwd / 'server.log').read_text()}")
        time.sleep(0.3)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def _request(port: int, host: str, path: str = "/", *, websocket: bool = False,
             origin: str | None = None) -> tuple[int, dict[str, str]]:
    """The status and headers of one raw request with this Host and Origin (by default the
    Host's own) header."""
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}", f"Origin: {origin or f'http://{host}'}"]
    if websocket:
        key = base64.b64encode(os.urandom(16)).decode()
        lines += ["Upgrade: websocket", "Connection: Upgrade", f"Sec-WebSocket-Key: {key}",
                  "Sec-WebSocket-Version: 13", "Sec-WebSocket-Protocol: streamlit"]
    else:
        lines.append("Connection: close")
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in head[1:])}
    return int(head[0].split()[1]), headers


@pytest.fixture(scope="module", params=["serve", "streamlit run"])
def running(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[tuple[int, Path]]:
    """`python -m rag_app serve`, and `streamlit run rag_app/ui/app.py` with no option but the
    port (started elsewhere than the repository: the shipped config travels with the app)."""
    base = tmp_path_factory.mktemp("server")
    port = _free_port()
    if request.param == "serve":
        command = [sys.executable, "-m", "rag_app", "serve", "--port", str(port)]
    else:
        command = [sys.executable, "-m", "streamlit", "run", str(APP), "--server.port", str(port)]
    proc = _start(command, base, port)
    yield port, base
    _stop(proc)


def test_a_foreign_host_is_refused_on_http_and_on_the_websocket(running: tuple[int, Path]
                                                                ) -> None:
    port, _ = running
    for host in (f"127.0.0.1:{port}", f"localhost:{port}"):
        status, headers = _request(port, host)
        assert status == 200, host
        assert headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert headers["x-frame-options"] == "DENY"
        assert _request(port, host, "/_stcore/stream", websocket=True)[0] == 101, host
    for host in (f"rebind.attacker.test:{port}", "127.0.0.1.nip.io", f"192.0.2.7:{port}"):
        assert _request(port, host)[0] == 403, host
        assert _request(port, host, "/_stcore/health")[0] == 403, host
        assert _request(port, host, "/_stcore/stream", websocket=True)[0] == 403, host
    for origin in ("http://localhost:3000", f"http://127.0.0.1:{port + 1}", "null"):
        assert _request(port, f"127.0.0.1:{port}", "/_stcore/stream", websocket=True,
                        origin=origin)[0] == 403, origin


def test_it_listens_on_loopback_only(running: tuple[int, Path]) -> None:
    port, base = running
    log = (base / "server.log").read_text()
    assert f"http://127.0.0.1:{port}" in log
    assert "Network URL" not in log and "External URL" not in log
    listening = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True,
                               text=True, check=False).stdout
    if listening:  # `ss` is there: every listening socket is on 127.0.0.1
        addresses = {line.split()[3].rsplit(":", 1)[0] for line in listening.splitlines()}
        assert addresses == {"127.0.0.1"}, listening


def test_streamlit_reads_the_shipped_config_wherever_it_is_started(tmp_path: Path) -> None:
    """What `streamlit run rag_app/ui/app.py` runs with, from another folder: the options come
    from rag_app/ui/.streamlit/config.toml (not from Streamlit's defaults: any Host, tracebacks
    in the page, 200 MB uploads, every interface)."""
    code = ("from streamlit import config\n"
            f"config._main_script_path = {str(APP)!r}\n"
            "config.get_config_options(force_reparse=True)\n"
            "for k in ('server.address', 'server.allowedHosts', 'client.showErrorDetails',\n"
            "          'server.maxUploadSize', 'browser.gatherUsageStats',\n"
            "          'server.enableXsrfProtection'):\n"
            "    print(k, config.get_option(k))\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMLIT_")}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, check=True,
                         capture_output=True, text=True, timeout=60).stdout.splitlines()
    assert out == ["server.address 127.0.0.1",
                   "server.allowedHosts ['localhost', '127.0.0.1', '::1']",
                   "client.showErrorDetails none", "server.maxUploadSize 50",
                   "browser.gatherUsageStats False", "server.enableXsrfProtection True"]


def test_the_middleware_check_runs_beside_a_running_event_loop() -> None:
    """After the browser tests (Playwright's sync API keeps an event loop running in the main
    thread for the session) the check above failed in the same pytest process: asyncio.run
    cannot start from a running loop. So `make test` ran this file in a process of its own."""
    mw = SecurityHeaders(lambda *a: None, allowed=lambda: ["127.0.0.1"])  # type: ignore[arg-type,return-value]

    async def inside_a_loop() -> list[dict[str, Any]]:
        return _call(mw, "http", "rebind.attacker.test:8501")

    # the running loop made in a thread of its own too: in the main thread one may run already
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        sent = pool.submit(asyncio.run, inside_a_loop()).result()
    assert sent[0]["status"] == 403
