"""BM25 index (build, search, filter, persistence) and the fusion of dense and lexical lists."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from rag_app.errors import ConfigError
from rag_app.fusion import (
    FusionConfig,
    convex,
    dense_weight,
    fuse,
    normalise,
    relative_spread,
    rescue,
    rrf,
)
from rag_app.index.lexical import LexicalIndex, LexicalIndexError, LexicalOptions, Tokenizer

MSMARCO = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "msmarco"

DOCS = {
    "install": "To install the package, run pip install rag-app in a virtual environment.",
    "error": "Error E4021 means the index file is locked by another process.",
    "cats": "Cats sleep for most of the day and hunt at dusk.",
    "dogs": "Dogs were running in the park; a dog runs faster than a cat.",
    "empty": "",
}


def build(stamp: str = "v1", **options: Any) -> LexicalIndex:
    return LexicalIndex.build(list(DOCS), list(DOCS.values()), stamp=stamp,
                              options=LexicalOptions(**options))


# -- tokenisation -------------------------------------------------------------------------------
def test_tokenizer_lowercases_unicode_words_drops_stopwords_and_stems() -> None:
    tokens = Tokenizer(LexicalOptions())("The Café's RUNNING dogs: naïve E4021 read_csv")
    assert tokens == ["café", "s", "run", "dog", "naïv", "e4021", "read_csv"]
    plain = Tokenizer(LexicalOptions(stopwords=False, stem=False))("The RUNNING dogs")
    assert plain == ["the", "running", "dogs"]


# -- search -------------------------------------------------------------------------------------
def test_exact_rare_term_ranks_first() -> None:
    hits = build().search("what does e4021 mean", 3)
    assert hits[0][0] == "error"
    assert all(score > 0 for _, score in hits)
    assert [s for _, s in hits] == sorted((s for _, s in hits), reverse=True)


def test_stemming_matches_inflected_forms() -> None:
    assert build().search("dog running", 1)[0][0] == "dogs"
    assert build().search("cat", 5)[0][0] == "cats"  # "cats" and "cat" share a stem


def test_only_documents_sharing_a_term_are_returned_and_k_is_respected() -> None:
    index = build()
    assert {d for d, _ in index.search("cat", 10)} == {"cats", "dogs"}
    assert len(index.search("cat", 1)) == 1
    assert index.search("cat", 0) == []


def test_queries_without_known_terms_return_nothing() -> None:
    index = build()
    assert index.search("zyzzyva quux", 5) == []
    assert index.search("the of and", 5) == []  # stop words only
    assert index.search("", 5) == []
    assert index.search("!!! ???", 5) == []


def test_empty_corpus() -> None:
    for ids, texts in (([], []), (["a", "b"], ["", "the of"])):
        index = LexicalIndex.build(ids, texts, stamp="none")
        assert index.search("anything", 5) == []
        assert len(index) == len(ids)


def test_filter_is_applied_before_taking_k() -> None:
    index = build()
    hits = index.search("cat", 1, allowed=lambda doc_id: doc_id != "cats")
    assert [d for d, _ in hits] == ["dogs"]
    assert index.search("cat", 5, allowed=lambda doc_id: False) == []
    allowed = {"install", "error"}
    assert [d for d, _ in index.search("index package", 5, allowed=allowed.__contains__)] \
        in (["install", "error"], ["error", "install"])


def test_build_refuses_bad_input() -> None:
    with pytest.raises(LexicalIndexError, match="2 ids but 1 texts"):
        LexicalIndex.build(["a", "b"], ["x"])
    with pytest.raises(LexicalIndexError, match="unique"):
        LexicalIndex.build(["a", "a"], ["x", "y"])


# -- persistence --------------------------------------------------------------------------------
def test_save_load_round_trip_keeps_stamp_options_and_results(tmp_path: Path) -> None:
    index = build(stamp="chunks:abc123", stem=False)
    index.save(tmp_path / "bm25")
    loaded = LexicalIndex.load(tmp_path / "bm25")
    assert loaded is not None
    assert loaded.stamp == "chunks:abc123"
    assert loaded.options == LexicalOptions(stem=False)
    for query in ("e4021", "dog running", "cat", "install package"):
        assert loaded.search(query, 5) == index.search(query, 5)


def test_save_replaces_the_previous_version_and_leaves_no_debris(tmp_path: Path) -> None:
    folder = tmp_path / "bm25"
    build(stamp="one").save(folder)
    LexicalIndex.build(["x"], ["zebra crossing"], stamp="two").save(folder)
    loaded = LexicalIndex.load(folder)
    assert loaded is not None and loaded.stamp == "two"
    assert [d for d, _ in loaded.search("zebra", 3)] == ["x"]
    assert loaded.search("cat", 3) == []
    names = sorted(p.name for p in folder.iterdir())
    assert len(names) == 2 and names[0] == "CURRENT" and names[1].startswith("v-")


def test_empty_index_round_trip(tmp_path: Path) -> None:
    LexicalIndex.build([], [], stamp="empty").save(tmp_path / "bm25")
    loaded = LexicalIndex.load(tmp_path / "bm25")
    assert loaded is not None and loaded.stamp == "empty" and len(loaded) == 0
    assert loaded.search("anything", 3) == []


def test_load_missing_damaged_or_old_index_returns_none(tmp_path: Path) -> None:
    assert LexicalIndex.load(tmp_path / "nothing") is None
    folder = tmp_path / "bm25"
    build().save(folder)
    version = folder / (folder / "CURRENT").read_text().strip()
    meta = json.loads((version / "meta.json").read_text())
    (version / "meta.json").write_text(json.dumps({**meta, "format": 0}))
    assert LexicalIndex.load(folder) is None  # older format: rebuild
    (version / "meta.json").write_text("{not json")
    assert LexicalIndex.load(folder) is None
    (folder / "CURRENT").write_text("v-gone")
    assert LexicalIndex.load(folder) is None


def test_a_crashed_save_leaves_the_previous_index_loadable(tmp_path: Path) -> None:
    folder = tmp_path / "bm25"
    build(stamp="good").save(folder)
    (folder / ".tmp-v-half-written").mkdir()  # what a kill -9 mid-save leaves behind
    (folder / ".tmp-v-half-written" / "data.csc.index.npy").write_bytes(b"\x93NUMPY")
    loaded = LexicalIndex.load(folder)
    assert loaded is not None and loaded.stamp == "good"


# -- fusion maths -------------------------------------------------------------------------------
DENSE = [("a", 0.9), ("b", 0.8), ("c", 0.5)]
LEXICAL = [("c", 12.0), ("d", 6.0), ("a", 3.0)]


def test_plain_rrf_sums_reciprocal_ranks() -> None:
    fused = dict(rrf(DENSE, LEXICAL, k=60))
    assert fused["a"] == pytest.approx(1 / 61 + 1 / 63)
    assert fused["b"] == pytest.approx(1 / 62)
    assert fused["c"] == pytest.approx(1 / 63 + 1 / 61)
    assert fused["d"] == pytest.approx(1 / 62)
    # a and c tie: the dense rank decides; b and d tie: b is in the dense list
    assert [d for d, _ in rrf(DENSE, LEXICAL, k=60)] == ["a", "c", "b", "d"]


def test_weighted_rrf_scales_the_lexical_vote() -> None:
    fused = dict(rrf(DENSE, LEXICAL, k=10, lexical_weight=0.5))
    assert fused["c"] == pytest.approx(1 / 13 + 0.5 / 11)
    assert fused["d"] == pytest.approx(0.5 / 12)


def test_normalisations() -> None:
    assert normalise([3.0, 2.0, 1.0], "minmax").tolist() == [1.0, 0.5, 0.0]
    assert normalise([4.0, 2.0, 0.0], "max").tolist() == [1.0, 0.5, 0.0]
    z = normalise([3.0, 2.0, 1.0], "zscore")
    assert z.mean() == pytest.approx(0.0) and z.std() == pytest.approx(1.0)
    assert normalise([5.0, 5.0], "minmax").tolist() == [1.0, 1.0]
    assert normalise([5.0, 5.0], "zscore").tolist() == [0.0, 0.0]
    assert normalise([], "minmax").size == 0


def test_convex_minmax_by_hand() -> None:
    fused = dict(convex(DENSE, LEXICAL, alpha=0.8, norm="minmax"))
    # dense minmax: a 1, b 0.75, c 0;  lexical minmax: c 1, d 1/3, a 0;  missing -> 0
    assert fused["a"] == pytest.approx(0.8 * 1.0 + 0.2 * 0.0)
    assert fused["b"] == pytest.approx(0.8 * 0.75)
    assert fused["c"] == pytest.approx(0.8 * 0.0 + 0.2 * 1.0)
    assert fused["d"] == pytest.approx(0.2 / 3)
    assert [d for d, _ in convex(DENSE, LEXICAL, alpha=0.8)] == ["a", "b", "c", "d"]


def test_convex_extremes_reproduce_each_ranking() -> None:
    assert [d for d, _ in convex(DENSE, LEXICAL, alpha=1.0)][:3] == ["a", "b", "c"]
    assert [d for d, _ in convex(DENSE, LEXICAL, alpha=0.0)][:3] == ["c", "d", "a"]


def test_convex_zscore_missing_gets_the_lists_lowest_value() -> None:
    fused = dict(convex(DENSE, LEXICAL, alpha=0.5, norm="zscore"))
    dz, lz = normalise([0.9, 0.8, 0.5], "zscore"), normalise([12.0, 6.0, 3.0], "zscore")
    assert fused["b"] == pytest.approx(0.5 * dz[1] + 0.5 * lz.min())
    assert fused["d"] == pytest.approx(0.5 * dz.min() + 0.5 * lz[1])


def test_rescue_lifts_lexical_top_hit() -> None:
    dense = [(x, 1 - i / 10) for i, x in enumerate("abcdef")]
    assert [d for d, _ in rescue(dense, [("e", 9.0)], top=1, position=2)] == list("aebcdf")
    assert [d for d, _ in rescue(dense, [("a", 9.0)], top=1, position=2)] == list("abcdef")
    # missed by dense: inserted; the rest of lexical follows the dense list
    got = [d for d, _ in rescue(dense, [("z", 9.0), ("y", 1.0)], top=1, position=1)]
    assert got == ["z", *"abcdef", "y"]
    scores = [s for _, s in rescue(dense, [("e", 9.0)], top=1, position=2)]
    assert scores == sorted(scores, reverse=True)


def test_fuse_modes_and_empty_lists() -> None:
    assert fuse(DENSE, LEXICAL, FusionConfig(mode="dense")) == DENSE
    assert fuse(DENSE, LEXICAL, FusionConfig(mode="lexical")) == LEXICAL
    assert [d for d, _ in fuse(DENSE, [])] == ["a", "b", "c"]
    assert [d for d, _ in fuse([], LEXICAL)] == ["c", "d", "a"]
    assert fuse([], []) == []
    for method in ("rrf", "rescue"):
        assert fuse([], [], FusionConfig(method=method)) == []  # type: ignore[arg-type]


def _flat(ids: str, top: float, spread: float) -> list[tuple[str, float]]:
    """A dense list over `ids`, best `top`, whose relative spread is `spread`."""
    n = len(ids)
    return [(d, top * (1 - spread * i / (n - 1))) for i, d in enumerate(ids)]


def test_adaptive_is_convex_when_the_lists_agree_or_dense_tells_passages_apart() -> None:
    lexical = [(d, 10.0 - i) for i, d in enumerate("vwxyz")]
    agreeing = _flat("vwxab", 0.8, 0.05)  # flat, but 3 of the top shared with lexical
    config = FusionConfig()
    assert config.method == "adaptive"
    assert dense_weight(agreeing, lexical, config) == config.alpha
    assert fuse(agreeing, lexical) == convex(agreeing, lexical, alpha=config.alpha)
    sharp = _flat("abcde", 0.8, 0.7)  # no overlap, but a wide spread: a model that reads
    assert relative_spread(sharp) == pytest.approx(0.7)
    assert dense_weight(sharp, lexical, config) == config.alpha
    assert fuse(DENSE, []) == fuse(DENSE, [], FusionConfig(method="convex"))


def test_adaptive_drops_a_flat_dense_list_that_disagrees_with_bm25() -> None:
    """An English model on text it cannot read finds every passage about as similar: with
    no overlap with BM25, its weight goes to 0 and BM25's order is kept."""
    lexical = [(d, 10.0 - i) for i, d in enumerate("vwxyz")]
    flat = _flat("abcde", 0.82, 0.15)
    config = FusionConfig()
    assert dense_weight(flat, lexical, config) == 0.0
    # BM25's order (its last hit ties, at min-max 0, with the passages dense alone found)
    assert [d for d, _ in fuse(flat, lexical)][:4] == list("vwxy")
    # between spread_low and spread_high the weight is in between, below alpha
    middle = _flat("abcde", 0.82, (config.spread_low + config.spread_high) / 2)
    assert 0.0 < dense_weight(middle, lexical, config) < config.alpha
    # a best score that is not positive: nothing similar at all
    assert relative_spread([("a", 0.0), ("b", -0.1)]) == 0.0


def test_config_is_validated() -> None:
    with pytest.raises(ConfigError, match="alpha"):
        FusionConfig(alpha=1.5)
    with pytest.raises(ConfigError, match="mode"):
        FusionConfig(mode="sparse")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="spread_low"):
        FusionConfig(spread_low=0.6, spread_high=0.5)
    with pytest.raises(ConfigError, match="agree_k"):
        FusionConfig(agree_k=0)


# -- the chosen default on real data ------------------------------------------------------------
@pytest.mark.slow
def test_default_fusion_is_at_least_as_good_as_dense_on_msmarco(embedder: Any) -> None:
    if not (MSMARCO / "corpus.jsonl").exists():
        pytest.skip(f"{MSMARCO} not present (the msmarco sample lives in "
                    "../shared/datasets/msmarco beside the repository)")
    from bench.fusion_study import (
        CACHE,
        PRIMARY,
        dense_run,
        embed,
        evaluate,
        fused_run,
        lexical_run,
        load_beir,
    )

    beir = load_beir(MSMARCO)
    docs, queries = embed(embedder, beir, CACHE)
    dense = dense_run(beir, docs, queries)
    lexical = lexical_run(beir)
    dense_ndcg = evaluate(dense, beir.qrels)[PRIMARY]
    fused = evaluate(fused_run(dense, lexical, FusionConfig()), beir.qrels)
    assert dense_ndcg == pytest.approx(0.704, abs=0.01)  # the reference score
    # never below its better half by more than noise: the vectors differ with the CPU's
    # backend (a fresh AMD EPYC AVX2 run: dense 0.7050, fused 0.7046; the machine the default
    # was chosen on: 0.701 and 0.705), so a tie within 0.005 nDCG@10 passes
    assert fused[PRIMARY] >= dense_ndcg - 0.005, (fused, dense_ndcg)


@pytest.mark.slow
def test_default_fusion_keeps_bm25_when_the_model_cannot_read_the_script(embedder: Any) -> None:
    """msmarco with every letter mapped to an Arabic one (bench/fusion_robust.py): BM25 works
    as before, the English model cannot read it. The default must not fall below BM25 by
    more than 0.01 nDCG@10 (the old convex default fell from 0.57 to 0.06)."""
    if not (MSMARCO / "corpus.jsonl").exists():
        pytest.skip(f"{MSMARCO} not present (the msmarco sample lives in "
                    "../shared/datasets/msmarco beside the repository)")
    from bench.fusion_robust import unreadable, variant
    from bench.fusion_study import (
        CACHE,
        PRIMARY,
        dense_run,
        embed,
        evaluate,
        fused_run,
        lexical_run,
    )
    from rag_app.eval.beir import load_beir

    beir = variant(load_beir(MSMARCO).subset(max_corpus=1500), "unreadable", unreadable,
                   lambda text, i: unreadable(text))
    docs, queries = embed(embedder, beir, CACHE)
    dense, lexical = dense_run(beir, docs, queries), lexical_run(beir)
    scores = {name: evaluate(run, beir.qrels)[PRIMARY] for name, run in (
        ("dense", dense), ("bm25", lexical),
        ("default", fused_run(dense, lexical, FusionConfig())),
        ("convex", fused_run(dense, lexical, FusionConfig(method="convex"))))}
    assert scores["dense"] < scores["bm25"] - 0.3, scores  # the model really cannot read it
    assert scores["default"] >= scores["bm25"] - 0.01, scores
    assert scores["convex"] < scores["default"], scores
