"""`rag`, the one command-line tool (issue 27, point 1): every command's help, ingest then
stats through it, a bad setting named with its environment variable and the shared exit code for
every command, and the installed console script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from rag_app.cli import main
from rag_app.errors import (
    EXIT_BUG,
    EXIT_INTERRUPTED,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    ConfigError,
    StoreLocked,
    exit_code,
)
from tests.conftest import REPO

COMMANDS = ("ingest", "ask", "stats", "serve", "api", "eval")


def rag(argv: Sequence[str | Path], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run `rag ARGV` in this process: (exit code, stdout, stderr); argparse's exits included."""
    try:
        code = main([str(a) for a in argv], prog="rag")
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No RAG_*, CHROMA_* or OPENAI_* variable of the developer's reaches the commands."""
    for name in list(os.environ):
        if name.startswith(("RAG_", "CHROMA_", "OPENAI_")):
            monkeypatch.delenv(name)
    return monkeypatch


def test_help_names_every_command_with_examples(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = rag(["--help"], capsys)
    assert code == 0
    assert out.startswith("usage: rag ")
    for command in COMMANDS:
        assert f"\n    {command} " in out  # listed, with what it does
    for words in ("ingest", "ask", "serve the chat", "serve the HTTP API", "evaluate",
                  "examples:", "rag ingest ./docs", "rag ask ", "exit codes", "python -m rag_app"):
        assert words in out, words
    assert "look at the index" not in out


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_examples_and_exit_codes(
        command: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = rag([command, "--help"], capsys)
    assert code == 0, err
    assert out.startswith(f"usage: rag {command} ")
    assert "examples:" in out and f"\n  rag {command} " in out
    assert "exit codes" in out and "2    bad options or configuration" in out
    if command in ("ask", "stats"):
        assert "passages" in out and "chunk" not in out


def test_defaults_are_shown(capsys: pytest.CaptureFixture[str]) -> None:
    _, serve, _ = rag(["serve", "--help"], capsys)
    assert "(default: 8501)" in serve and "default 127.0.0.1" in serve
    _, api, _ = rag(["api", "--help"], capsys)
    assert "(default: 8000)" in api


def test_ingest_and_eval_are_the_same_programs(capsys: pytest.CaptureFixture[str]) -> None:
    """`rag ingest` is ingest/cli.py's main and `rag eval` rag_app/eval/cli.py's: the same help,
    under the name it was called by."""
    from ingest.cli import build_parser as ingest_parser
    from rag_app.eval.cli import build_parser as eval_parser

    _, out, _ = rag(["ingest", "--help"], capsys)
    assert out == ingest_parser("rag ingest").format_help()
    _, out, _ = rag(["eval", "qa", "--help"], capsys)
    sub = eval_parser("rag eval")._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert out == sub["qa"].format_help()
    # the python -m forms keep their own names
    assert ingest_parser().format_help().startswith("usage: python -m ingest ")


def test_importing_the_cli_does_not_import_ingest() -> None:
    code = ("import sys, rag_app.cli\n"
            "print(sorted(m for m in sys.modules if m.startswith('ingest')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_unknown_or_missing_command_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = rag(["bogus"], capsys)
    assert code == 2 and "invalid choice: 'bogus'" in err
    code, _, err = rag([], capsys)
    assert code == 2 and "COMMAND" in err


def test_one_exit_code_table() -> None:
    from ingest.cli import EXIT_STORE
    from ingest.cli import EXIT_USAGE as INGEST_USAGE
    from rag_app.eval.metrics import MissingDependency

    assert exit_code(ConfigError("x")) == EXIT_USAGE == INGEST_USAGE == 2
    assert exit_code(MissingDependency("x")) == EXIT_USAGE
    assert exit_code(StoreLocked("x")) == EXIT_UNAVAILABLE == EXIT_STORE == 3
    assert exit_code(KeyError("x")) == EXIT_BUG == 4
    assert exit_code(KeyboardInterrupt()) == EXIT_INTERRUPTED == 130


@pytest.mark.parametrize("argv", [
    ["ingest", "{docs}"], ["ask", "How long is the warranty?"], ["stats"], ["stats", "--json"],
    ["serve"], ["api"], ["eval", "qa", "{questions}", "--docs", "{docs}", "--no-llm"],
], ids=lambda argv: " ".join(argv[:2]))
@pytest.mark.parametrize(("variable", "value", "field"), [
    ("RAG_RETRIEVAL_K", "abc", "retrieval_k"),
    ("CHROMA_PORT", "not-a-port", "chroma_port"),
    ("RAG_LOG_LEVEL", "LOUD", "log_level"),
])
def test_a_bad_setting_is_named_with_its_variable_and_exits_2(
        argv: list[str], variable: str, value: str, field: str, tmp_path: Path,
        clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# A\n\nText.\n")
    questions = tmp_path / "q.jsonl"
    questions.write_text('{"id": "1", "question": "q?", "answerable": true}\n')
    clean_env.chdir(tmp_path)  # no .env of the developer's
    clean_env.setenv("RAG_STATE_DIR", str(tmp_path / "store"))
    clean_env.setenv(variable, value)
    args = [a.format(docs=docs, questions=questions) for a in argv]
    code, out, err = rag(args, capsys)
    assert code == EXIT_USAGE, err
    assert err.startswith("error: invalid setting") and len(err.strip().splitlines()) == 1, err
    assert f"{field} (environment variable {variable} = {value!r})" in err
    assert "Traceback" not in err and "pydantic" not in err and out == ""


def test_a_bad_option_names_the_option(clean_env: pytest.MonkeyPatch, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    clean_env.chdir(tmp_path)
    code, _, err = rag(["stats", "--collection", "x"], capsys)
    assert code == EXIT_USAGE
    assert "collection (option --collection = 'x'; also RAG_COLLECTION)" in err


def test_the_python_m_alias_gives_no_traceback_either(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAG_", "CHROMA_"))}
    env["RAG_RETRIEVAL_K"] = "abc"
    out = subprocess.run([sys.executable, "-m", "rag_app", "stats"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == EXIT_USAGE
    assert "RAG_RETRIEVAL_K" in out.stderr and "Traceback" not in out.stderr


def test_the_installed_console_script() -> None:
    """`pip install -e .` (make install) puts `rag` beside the venv's python."""
    script = Path(sys.executable).with_name("rag")
    if not script.exists():
        pytest.fail(f"{script} is missing: run `make install` (or pip install -e .)")
    out = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: rag ") and "examples:" in out.stdout
    alias = subprocess.run([str(script.with_name("rag-ingest")), "--help"], capture_output=True,
                           text=True, timeout=120)
    assert alias.returncode == 0 and "examples:" in alias.stdout


@pytest.mark.slow
def test_ingest_two_markdown_files_then_stats(tmp_path: Path, clean_env: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "kettle.md").write_text("# Kettle\n\nThe Aurora kettle holds 1.7 litres.\n")
    (docs / "toaster.md").write_text("# Toaster\n\nThe Boreal toaster has four slots.\n")
    # the repository stays the working directory: its data/cache holds the exported model
    clean_env.setenv("RAG_STATE_DIR", str(tmp_path / "store"))
    clean_env.setenv("RAG_COLLECTION", "cli-test")

    code, out, err = rag(["ingest", docs, "--json"], capsys)
    assert code == 0, err
    report = json.loads(out)
    assert report["counts"]["ingested"] == 2 and not report["counts"]["failed"]

    code, out, err = rag(["stats", "--json"], capsys)
    assert code == 0, err
    info = json.loads(out)
    assert info["collection"] == "cli-test" and info["files"] == 2
    assert {f["source"] for f in info["file_list"]} == {"kettle.md", "toaster.md"}
    assert info["chunks"] == report["chunks_total"]
    sizes = info["sizes"]  # what the index costs
    assert sizes["vectors"] == 2 and sizes["dimension"] == 384
    assert sizes["vector_bytes"] == 2 * 384 * 4 and sizes["bm25_bytes"] > 0
    assert sizes["store_bytes"] > sizes["vector_bytes"]
    # the SQLite file (texts, metadata) and the vector files make up the folder
    assert sizes["metadata_bytes"] > 0 and sizes["vector_files_bytes"] > 0
    assert sizes["metadata_bytes"] + sizes["vector_files_bytes"] == sizes["store_bytes"]
    assert sizes["bytes_per_passage"] is None  # 2 passages: too few to extrapolate
    assert sizes["model"] == "sentence-transformers/all-MiniLM-L6-v2"

    code, out, err = rag(["stats"], capsys)
    assert code == 0, err
    assert "Size: 2 vectors × 384 dimensions = 3.1 kB of float32" in " ".join(out.split())
    assert "too few passages to extrapolate" in " ".join(out.split())
    assert "2 files, 0 pages, 2 passages" in " ".join(out.split())
    assert "chunks" not in out and "None" not in out  # no pages: left empty, as on Documents


def test_index_sizes_extrapolate_from_enough_passages(tmp_path: Path) -> None:
    from rag_app.service import EXTRAPOLATE_FROM, human_bytes, index_sizes
    from tests.conftest import make_settings

    settings = make_settings(tmp_path / "state")
    (settings.chroma_dir).mkdir(parents=True)
    (settings.chroma_dir / "chroma.sqlite3").write_bytes(b"x" * 3_000_000)
    lexical = tmp_path / "bm25"
    lexical.mkdir()
    (lexical / "v1").write_bytes(b"y" * 1_000_000)
    sizes = index_sizes(settings, lexical, EXTRAPOLATE_FROM * 2, {"dimension": 384})
    assert sizes["store_bytes"] == 3_000_000 and sizes["bm25_bytes"] == 1_000_000
    assert sizes["metadata_bytes"] == 3_000_000 and sizes["vector_files_bytes"] == 0
    assert sizes["bytes_per_passage"] == 2_000  # (3 MB + 1 MB) / 2,000 passages
    assert sizes["estimate_10x_bytes"] == 40_000_000
    assert sizes["estimate_100x_bytes"] == 400_000_000
    assert human_bytes(999) == "999 B" and human_bytes(40_000_000) == "40.0 MB"
