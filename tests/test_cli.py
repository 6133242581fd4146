"""`python -m ingest` and `python -m rag_app stats` as a user runs them: real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pypdf import PdfReader, PdfWriter

from rag_app.index.store import writer_lock
from tests.conftest import REPO, SAMPLES, make_settings
from tests.pdfgen import make_pdf, make_slow_pdf

pytestmark = pytest.mark.slow


def cli(*args: str | Path, env: dict[str, str] | None = None,
        module: str = "ingest") -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("RAG_", "CHROMA_"))}
    base.update(env or {})
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, env=base, timeout=600)


def encrypted_pdf(path: Path, password: str) -> Path:
    plain = make_pdf(path.with_suffix(".plain.pdf"), ["The vault code is 4711."])
    writer = PdfWriter(clone_from=PdfReader(plain))
    writer.encrypt(password, algorithm="AES-256")
    writer.write(path)
    plain.unlink()
    return path


def test_help_shows_examples_and_exit_codes() -> None:
    out = cli("--help")
    assert out.returncode == 0
    for text in ("examples:", "--dry-run", "--rebuild", "--password-for", "exit codes"):
        assert text in out.stdout


def test_samples_ingest_json_then_stats(tmp_path: Path) -> None:
    store = tmp_path / "store"
    out = cli(SAMPLES, "--store", store, "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    n_files = len([p for p in SAMPLES.iterdir() if not p.name.startswith(".")])
    assert report["counts"]["ingested"] == n_files and not report["counts"]["failed"]
    assert report["pages"] >= 8 and report["chunks_total"] == report["chunks_added"] > n_files
    # where the run's time went (make bench prints it beside the tutorial pipeline's)
    stages = report["stages"]
    assert {"parse", "model", "split", "embed", "write", "BM25"} <= set(stages)
    assert all(v >= 0 for v in stages.values()) and stages["embed"] > 0
    assert sum(stages.values()) <= report["seconds"]

    stats = cli("stats", "--json", env={"RAG_STATE_DIR": str(store)}, module="rag_app")
    assert stats.returncode == 0, stats.stderr
    info = json.loads(stats.stdout)
    assert info["files"] == n_files and info["chunks"] == report["chunks_total"]
    assert info["fingerprint"]["model"] == "sentence-transformers/all-MiniLM-L6-v2"

    again = cli(SAMPLES, "--store", store)  # not a TTY: plain output, summary table
    assert again.returncode == 0
    assert "files unchanged" in again.stdout and str(n_files) in again.stdout

    # ask, against a real (stub) OpenAI-compatible endpoint on 127.0.0.1
    from tests.openai_stub import openai_stub

    with openai_stub() as server:
        env = {"RAG_STATE_DIR": str(store), "OPENAI_BASE_URL": server.base_url,
               "RAG_LLM_MODEL": "json", "OPENAI_API_KEY": "sk-cli-SECRET-42"}
        out = cli("ask", "How long is the warranty?", env=env, module="rag_app")
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith("It lasts 2 years.\n")
        assert "Sources:\n  [1] " in out.stdout and "(similarity 0." in out.stdout
        as_json = cli("ask", "How long is the warranty?", "--json", "--k", "3", env=env,
                      module="rag_app")
        result = json.loads(as_json.stdout)
        assert result["text"] == "It lasts 2 years." and len(result["hits"]) == 3
        assert result["citations"][0]["number"] == 1 and result["found"]
        assert "sk-cli-SECRET-42" not in out.stdout + out.stderr + as_json.stdout


def test_bad_files_passwords_timeouts_and_exit_codes(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    (docs / "vault").mkdir(parents=True)
    (docs / "ok.md").write_text("# Fine\n\nThis file is fine.\n")
    (docs / "broken.pdf").write_bytes(b"%PDF-1.4\nnot really a pdf")
    encrypted_pdf(docs / "vault" / "codes.pdf", "open-sesame")
    store = tmp_path / "store"

    out = cli(docs, "--store", store, "--json")
    assert out.returncode == 1, out.stderr
    by_source = {o["source"]: o for o in json.loads(out.stdout)["outcomes"]}
    assert by_source["ok.md"]["status"] == "ingested"
    assert by_source["broken.pdf"]["status"] == "failed"
    assert by_source["vault/codes.pdf"]["status"] == "failed"
    assert "needs password" in by_source["vault/codes.pdf"]["reason"]

    out = cli(docs, "--store", store, "--json", "--password-for", "vault/*.pdf", "open-sesame")
    assert out.returncode == 1  # broken.pdf still fails
    by_source = {o["source"]: o for o in json.loads(out.stdout)["outcomes"]}
    assert by_source["vault/codes.pdf"]["status"] == "ingested"
    assert "open-sesame" not in out.stdout + out.stderr

    # a parse that runs over the time limit is stopped and reported; the run goes on
    (docs / "broken.pdf").unlink()
    make_slow_pdf(docs / "slow.pdf")  # takes seconds to parse
    (docs / "zz-late.md").write_text("# Late\n\nStill ingested after the timeout.\n")
    out = cli(docs, "--store", store, "--json", env={"RAG_PARSE_TIMEOUT_S": "1.5"})
    assert out.returncode == 1, out.stderr
    by_source = {o["source"]: o for o in json.loads(out.stdout)["outcomes"]}
    assert by_source["slow.pdf"]["status"] == "failed"
    assert "timed out" in by_source["slow.pdf"]["reason"]
    assert by_source["zz-late.md"]["status"] == "ingested"


def test_second_writer_exits_3_naming_the_holder(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "store")
    with writer_lock(settings, "python -m ingest ./elsewhere"):
        out = cli(SAMPLES, "--store", tmp_path / "store")
    assert out.returncode == 3
    assert f"process {os.getpid()}" in out.stderr and "./elsewhere" in out.stderr


def test_bad_options_exit_2_with_the_reason(tmp_path: Path) -> None:
    out = cli(SAMPLES, "--store", tmp_path / "s", "--chunk-tokens", "100", "--chunk-overlap",
              "200")
    assert out.returncode == 2 and "chunk_overlap" in out.stderr
    out = cli(tmp_path / "missing", "--store", tmp_path / "s")
    assert out.returncode == 2 and "No such file or folder" in out.stderr
