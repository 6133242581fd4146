"""Settings: every one documented in .env.example with its real default; secrets stay hidden."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from rag_app.settings import Settings
from tests.conftest import REPO, make_settings


def _env_name(name: str) -> str:
    alias = Settings.model_fields[name].validation_alias
    choices = getattr(alias, "choices", None)
    return str(choices[0]) if choices else f"RAG_{name.upper()}"


def test_env_example_lists_every_setting_with_its_default() -> None:
    text = (REPO / ".env.example").read_text()
    documented = dict(re.findall(r"^#?\s*([A-Z_]+)=(.*)$", text, re.M))
    defaults = Settings(_env_file=None)  # type: ignore[call-arg]
    for name in Settings.model_fields:
        env = _env_name(name)
        assert env in documented, f"{env} missing from .env.example"
        value = getattr(defaults, name)
        if value is None:
            assert documented[env] == "", env
        else:
            shown = str(value).lower() if isinstance(value, bool) else str(value)
            if isinstance(value, float):
                shown = f"{value:g}"
            assert documented[env] == shown, f"{env}: .env.example says {documented[env]!r}"
    assert set(documented) == {_env_name(n) for n in Settings.model_fields}


def test_env_and_dotenv_are_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("RAG_COLLECTION=from-dotenv\nCHROMA_HOST=10.0.0.5\n")
    monkeypatch.setenv("RAG_CHUNK_TOKENS", "128")
    s = Settings()
    assert s.collection == "from-dotenv" and s.chunk_tokens == 128
    assert s.uses_server and "10.0.0.5:8000" in s.describe_store()


def test_password_is_never_shown(tmp_path: Path) -> None:
    s = make_settings(tmp_path, pdf_password="hunter2")
    assert "hunter2" not in repr(s) and "hunter2" not in str(s.model_dump())


@pytest.mark.parametrize("bad", [{"collection": "a b"}, {"chunk_tokens": 64, "chunk_overlap": 64},
                                 {"chroma_port": 0}])
def test_bad_values_are_refused(tmp_path: Path, bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        make_settings(tmp_path, **bad)


def test_one_overlap_rule_at_most_half_a_chunk(tmp_path: Path) -> None:
    """Issue 27 point 4: the settings, the evaluation's configurations and the splitter share
    one rule (rag_app.settings.usable_overlap): an overlap over half the chunk size is refused
    where it is asked for, not cut silently by the splitter."""
    from ingest.split import effective_config
    from rag_app.errors import ConfigError
    from rag_app.eval.configs import EvalConfig
    from rag_app.settings import usable_overlap

    assert make_settings(tmp_path, chunk_tokens=256, chunk_overlap=128).chunk_overlap == 128
    with pytest.raises(ValueError, match="at most half of it: 128"):
        make_settings(tmp_path, chunk_tokens=256, chunk_overlap=129)
    with pytest.raises(ConfigError, match="at most half of it: 64"):
        EvalConfig("x", chunk_tokens=128, chunk_overlap=100)
    # a size the model's limit made smaller: the splitter applies the same rule
    assert effective_config(512, 200, 256).chunk_overlap == usable_overlap(256, 200) == 128
