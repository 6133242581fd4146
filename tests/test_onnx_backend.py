"""The ONNX int8 embedder against the real torch model: a real export into a temporary state dir.

Exports twice (once more for the corrupted-cache test), about 20-40 s each on 2 cores.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from rag_app.embedders.auto import choose_embedder
from rag_app.embedders.onnx import (
    INT8_MIN_TOKENS,
    META_FILE,
    MODEL_FILE,
    RECIPE,
    VERIFY_TEXTS,
    OnnxEmbedder,
    pool,
)
from rag_app.embedders.sentence_transformers import SentenceTransformerEmbedder
from rag_app.errors import EmbeddingError
from rag_app.hardware import detect
from rag_app.settings import Settings
from tests.conftest import make_settings

pytestmark = pytest.mark.slow

_WORDS = (
    "index query vector store chunk page manual install server client request response cache "
    "token model report budget schedule risk review owner team release version upgrade backup "
    "restore network latency storage memory thread process lock file folder path error retry"
).split()


def _passage(rng: random.Random, words: int) -> str:
    sentences, left = [], words
    while left > 0:
        n = min(left, rng.randint(6, 16))
        sentences.append(" ".join(rng.choice(_WORDS) for _ in range(n)).capitalize() + ".")
        left -= n
    return " ".join(sentences)


def _with_backend(settings: Settings, backend: str) -> Any:
    """Settings asking for `backend`, before and after Settings grows that field."""
    if "embedding_backend" in type(settings).model_fields:
        return settings.model_copy(update={"embedding_backend": backend})
    values = {name: getattr(settings, name) for name in type(settings).model_fields}
    return SimpleNamespace(**values, embedding_backend=backend)


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx-state")


@pytest.fixture(scope="module")
def onnx_embedder(state_dir: Path) -> OnnxEmbedder:
    emb = OnnxEmbedder(make_settings(state_dir, cache_dir=state_dir / "cache"))
    emb.warm_up()
    return emb


@pytest.fixture(scope="module")
def torch_embedder() -> SentenceTransformerEmbedder:
    emb = SentenceTransformerEmbedder(
        make_settings(Path("/nonexistent"), embedding_precision="fp32")
    )
    emb.warm_up()
    return emb


def test_export_is_recorded(onnx_embedder: OnnxEmbedder) -> None:
    assert onnx_embedder.export_seconds is not None  # this instance exported
    assert onnx_embedder.cache_dir is not None and onnx_embedder.model_path is not None
    meta = json.loads((onnx_embedder.cache_dir / META_FILE).read_text())
    assert meta["status"] == "ok" and meta["recipe"] == RECIPE
    assert meta["min_cosine"] >= 0.99
    assert meta["pooling"] == ["mean"]  # from the model's 1_Pooling/config.json
    assert f"{meta['min_cosine']:.4f}" in onnx_embedder.backend
    assert onnx_embedder.backend.startswith("onnxruntime int8")
    assert onnx_embedder.model_path.stat().st_size < 60e6  # int8 weights, not the fp32 graph


def test_vectors_match_torch(
    onnx_embedder: OnnxEmbedder, torch_embedder: SentenceTransformerEmbedder
) -> None:
    rng = random.Random(7)
    texts = [
        *VERIFY_TEXTS,
        *(_passage(rng, 90) for _ in range(6)),  # ~128 tokens
        *(_passage(rng, 190) for _ in range(6)),  # ~256 tokens, some truncated
        "Wie spät ist es in Tokio?",
        "for i in range(10): print(i ** 2)",
    ]
    ours = onnx_embedder.embed_documents(texts, batch_size=8)
    theirs = torch_embedder.embed_documents(texts, batch_size=8)
    assert ours.shape == theirs.shape == (len(texts), 384)
    assert ours.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    cosines = (ours * theirs).sum(axis=1)
    worst = int(cosines.argmin())
    assert cosines.min() >= 0.99, f"text #{worst} {texts[worst][:60]!r}: {cosines.min():.4f}"
    assert cosines.mean() >= 0.995
    # long inputs really went through the int8 graph: close, but not identical
    long_rows = [i for i, n in enumerate(onnx_embedder.count_tokens(texts)) if n + 2 >= 100]
    assert long_rows and cosines[long_rows].max() < 0.99999

    query = "how do I restore a backup?"
    assert float(onnx_embedder.embed_query(query) @ torch_embedder.embed_query(query)) >= 0.999


def test_same_fingerprint_and_tokens(
    onnx_embedder: OnnxEmbedder, torch_embedder: SentenceTransformerEmbedder
) -> None:
    assert onnx_embedder.fingerprint() == torch_embedder.fingerprint()
    assert onnx_embedder.name == torch_embedder.name == "sentence-transformers/all-MiniLM-L6-v2"
    assert onnx_embedder.dimension == 384 and onnx_embedder.max_seq_length == 256
    assert onnx_embedder.document_token_limit == torch_embedder.document_token_limit
    assert (onnx_embedder.query_prompt, onnx_embedder.document_prompt) == ("", "")
    texts = [*VERIFY_TEXTS, "naïve café — ünïcödé"]
    assert onnx_embedder.count_tokens(texts) == torch_embedder.count_tokens(texts)
    assert onnx_embedder.count_tokens([]) == []
    for text in texts[:12]:
        assert onnx_embedder.token_offsets(text) == torch_embedder.token_offsets(text)


def test_order_is_restored_after_length_sort(
    onnx_embedder: OnnxEmbedder, torch_embedder: SentenceTransformerEmbedder
) -> None:
    rng = random.Random(11)
    # distinct lengths on both sides of INT8_MIN_TOKENS, shuffled so sorting reorders them
    texts = [_passage(rng, n) for n in (3, 150, 8, 60, 25, 190, 45, 110, 12, 80, 35, 5)]
    lengths = onnx_embedder.count_tokens(texts)
    assert len(set(lengths)) == len(texts) and lengths != sorted(lengths)
    assert min(lengths) + 2 < INT8_MIN_TOKENS <= max(lengths) + 2
    ours = onnx_embedder.embed_documents(texts, batch_size=3)
    theirs = torch_embedder.embed_documents(texts, batch_size=3)
    similarity = ours @ theirs.T
    assert list(similarity.argmax(axis=1)) == list(range(len(texts)))
    assert np.diag(similarity).min() >= 0.99
    # the same texts in another order form the same batches, so give the same vectors
    reversed_ = onnx_embedder.embed_documents(texts[::-1], batch_size=3)[::-1]
    np.testing.assert_allclose(reversed_, ours, atol=1e-5)
    assert onnx_embedder.embed_documents([]).shape == (0, 384)


def test_cache_is_reused(onnx_embedder: OnnxEmbedder, state_dir: Path) -> None:
    assert onnx_embedder.model_path is not None
    before = onnx_embedder.model_path.stat().st_mtime_ns
    again = OnnxEmbedder(make_settings(state_dir, cache_dir=state_dir / "cache"))
    again.warm_up()
    assert again.export_seconds is None  # loaded, not exported
    assert again.model_path == onnx_embedder.model_path
    assert again.model_path.stat().st_mtime_ns == before
    texts = list(VERIFY_TEXTS[:6])
    np.testing.assert_array_equal(
        again.embed_documents(texts), onnx_embedder.embed_documents(texts)
    )


def test_corrupted_cache_is_exported_again(onnx_embedder: OnnxEmbedder, tmp_path: Path) -> None:
    assert onnx_embedder.cache_dir is not None
    copy = tmp_path / "cache" / "onnx" / onnx_embedder.cache_dir.name
    shutil.copytree(onnx_embedder.cache_dir, copy)
    model = copy / MODEL_FILE
    data = bytearray(model.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(64)  # same size, different bytes: only a checksum sees it
    model.write_bytes(bytes(data))

    emb = OnnxEmbedder(make_settings(tmp_path, cache_dir=tmp_path / "cache"))
    emb.warm_up()
    assert emb.export_seconds is not None  # detected and exported again
    assert emb.model_path == model and model.read_bytes() != bytes(data)
    meta = json.loads((copy / META_FILE).read_text())
    assert meta["status"] == "ok"
    vectors = emb.embed_documents(list(VERIFY_TEXTS))
    reference = onnx_embedder.embed_documents(list(VERIFY_TEXTS))
    assert (vectors * reference).sum(axis=1).min() >= 0.999


def test_rejected_export_falls_back_to_torch(
    onnx_embedder: OnnxEmbedder, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert onnx_embedder.cache_dir is not None
    folder = tmp_path / "cache" / "onnx" / onnx_embedder.cache_dir.name
    folder.mkdir(parents=True)
    record = {"recipe": RECIPE, "status": "rejected", "reason": "min cosine 0.8000 < 0.99"}
    (folder / META_FILE).write_text(json.dumps(record))
    settings = make_settings(tmp_path, cache_dir=tmp_path / "cache")

    with pytest.raises(EmbeddingError, match=r"min cosine 0\.8000"):
        choose_embedder(_with_backend(settings, "onnx-int8"))
    if detect().native_bf16 or detect().cuda:
        pytest.skip("auto picks torch on this machine anyway")
    with caplog.at_level(logging.WARNING, logger="rag_app.embedders.auto"):
        chosen = choose_embedder(_with_backend(settings, "auto"))
    assert isinstance(chosen, SentenceTransformerEmbedder)
    assert "using torch instead" in caplog.text


def test_choose_embedder(state_dir: Path, onnx_embedder: OnnxEmbedder) -> None:
    settings = make_settings(state_dir)
    assert isinstance(
        choose_embedder(_with_backend(settings, "torch")), SentenceTransformerEmbedder
    )
    chosen = choose_embedder(_with_backend(settings, "auto"))
    hw = detect()
    if hw.native_bf16 or hw.cuda:
        assert isinstance(chosen, SentenceTransformerEmbedder)
    else:  # this machine: AVX-512 VNNI, no bf16
        assert isinstance(chosen, OnnxEmbedder) and chosen.export_seconds is None
    fp32 = choose_embedder(
        _with_backend(make_settings(state_dir, embedding_precision="fp32"), "auto")
    )
    assert isinstance(fp32, SentenceTransformerEmbedder)  # an explicit precision means torch


@pytest.mark.parametrize(
    "mode", ["cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken"]
)
def test_pooling_matches_sentence_transformers(mode: str) -> None:
    import torch
    from sentence_transformers.models import Pooling

    rng = np.random.default_rng(3)
    hidden = rng.normal(size=(4, 7, 8)).astype(np.float32)
    mask = np.array([[1] * 7, [1] * 4 + [0] * 3, [1] * 2 + [0] * 5, [1] + [0] * 6])
    expected = Pooling(8, pooling_mode=mode)(
        {"token_embeddings": torch.from_numpy(hidden), "attention_mask": torch.from_numpy(mask)}
    )["sentence_embedding"].numpy()
    np.testing.assert_allclose(pool(hidden, mask, [mode]), expected, rtol=1e-5, atol=1e-6)
