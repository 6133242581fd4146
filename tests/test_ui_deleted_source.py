"""Saved chats name no paths, and a deleted document's citation says so (REVIEW L10).

Through Streamlit's AppTest on the real app, with its own ingested copy of data/samples, the
bundled embedding model and the OpenAI-compatible stub (fixtures shared with tests/test_ui.py).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.conftest import SAMPLES
from tests.test_ui import app, ask, env, index_dir, ok, stub, unescape  # noqa: F401 - fixtures

pytestmark = pytest.mark.slow


def test_saved_chats_hold_no_paths_and_a_deleted_source_says_so(env: dict[str, str]  # noqa: F811
                                                                ) -> None:
    from rag_app.index.store import Store
    from rag_app.service import remove_documents
    from rag_app.settings import Settings

    at = ask(ok(app()), "How long is the standard warranty?")
    chat_id = at.query_params["chat"][0] if isinstance(at.query_params["chat"], list) \
        else at.query_params["chat"]
    saved = (Path(env["RAG_CHATS_DIR"]) / f"{chat_id}.json").read_text()
    assert str(SAMPLES) not in saved and '"root":' not in saved  # before: the absolute folder
    assert '"root_id":' in saved

    chip = next(b for b in at.button if re.match(r"\[\d+\] ", b.label))
    source = "warranty-and-returns.md"
    assert source in unescape(chip.label)
    at = ok(chip.click().run())
    assert any("<mark>" in h.value for h in at.html)  # indexed: the section opens
    assert any(b.label == "Download the original file" for b in at.get("download_button"))

    settings = Settings()
    store = Store.open(settings)
    assert store is not None
    keys = [k for k, r in store.file_records().items() if r.source == source]
    assert remove_documents(settings, keys) > 0  # the file stays on disk, out of the index

    at = ok(app(chat=chat_id))
    chip = next(b for b in at.button if re.match(r"\[\d+\] ", b.label))
    at = ok(chip.click().run())
    warning = " ".join(str(w.value) for w in at.warning)
    assert "deleted from the index" in warning  # before: the file opened as if live
    assert not any("<mark>" in h.value for h in at.html)
    assert not any(b.label == "Download the original file" for b in at.get("download_button"))
    number = int(re.match(r"\[(\d+)\]", chip.label).group(1))  # type: ignore[union-attr]
    result = json.loads(saved)["messages"][-1]["result"]
    passage = next(c["passage"] for c in result["citations"] if c["number"] == number)
    shown = [" ".join(unescape(str(m.value)).split()) for m in at.markdown]
    assert " ".join(passage.split()) in shown  # the passage, as it was indexed
