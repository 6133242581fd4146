"""Retrieval over a real ingested collection (embedded Chroma and a `chroma run` server)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from ingest.sync import Ingestor
from rag_app.errors import FingerprintMismatch, StoreError
from rag_app.index.store import Store
from rag_app.retrieve import RetrievalOptions, Retriever, _joined
from rag_app.settings import Settings
from tests.conftest import SAMPLES
from tests.pdfgen import make_pdf

pytestmark = pytest.mark.slow


@pytest.fixture()
def retriever(settings: Settings, embedder: Any, tmp_path: Path) -> Retriever:
    docs = tmp_path / "docs"
    docs.mkdir()
    for f in SAMPLES.iterdir():
        (docs / f.name).write_bytes(f.read_bytes())
    (docs / "extra").mkdir()
    (docs / "extra" / "codes.md").write_text(
        "# Error codes\n\nCode ZX-4471 means the heating plate is disconnected.\n\n"
        "# Colours\n\nThe kettle comes in slate, ivory and sage.\n"
    )
    report = Ingestor(settings, embedder).run([docs])
    assert not report.failed
    return Retriever(settings, embedder=embedder)


def test_dense_lexical_and_hybrid_find_the_right_passage(retriever: Retriever) -> None:
    for mode in ("dense", "lexical", "hybrid"):
        hits = retriever.search("What does code ZX-4471 mean?", RetrievalOptions(k=3, mode=mode))
        assert hits, mode
        assert hits[0].source == "extra/codes.md", (mode, [h.location for h in hits])
        assert "ZX-4471" in hits[0].text
        assert hits[0].headings == ("Error codes",)
        assert hits[0].location == "extra/codes.md § Error codes"
    top = retriever.search("ZX-4471", RetrievalOptions(k=1, mode="hybrid"))[0]
    assert top.lexical_rank == 1 and 0 < top.similarity <= 1


def test_nearest_gives_query_s_ids_and_similarities(retriever: Retriever) -> None:
    """The dense search reads ids and distances only (Store.nearest); the same ranking and
    similarities as the full query that also reads texts and metadata."""
    qvec = retriever.embedder.embed_query("What does code ZX-4471 mean?")
    full = [(cid, sim) for cid, sim, _, _ in retriever.store.query(qvec, 5)]
    near = retriever.store.nearest(qvec, 5)
    assert [c for c, _ in near] == [c for c, _ in full]
    assert [s for _, s in near] == pytest.approx([s for _, s in full])


def test_pdf_hits_carry_pages_and_scores(retriever: Retriever) -> None:
    hits = retriever.search("How do I descale the kettle?", RetrievalOptions(k=5))
    assert len(hits) == 5
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert len({h.chunk_id for h in hits}) == 5
    pdf_hits = [h for h in hits if h.source.endswith(".pdf")]
    for h in pdf_hits:
        assert h.page_start is not None and h.location.startswith(h.source + " p")


def test_filter_threshold_and_mmr(retriever: Retriever) -> None:
    only = retriever.search("kettle colours", RetrievalOptions(k=5, source="extra"))
    assert only and all(h.source.startswith("extra/") for h in only)
    assert retriever.search("kettle", RetrievalOptions(source="no-such-folder")) == []
    strict = retriever.search("quantum chromodynamics of neutron stars",
                              RetrievalOptions(k=5, min_similarity=0.5))
    assert strict == []
    plain = retriever.search("warranty", RetrievalOptions(k=4))
    diverse = retriever.search("warranty", RetrievalOptions(k=4, mmr=True, mmr_lambda=0.3))
    assert len(diverse) == 4 and diverse[0].chunk_id == max(
        plain + diverse, key=lambda h: h.similarity).chunk_id
    assert retriever.search("   ") == []


def test_query_with_another_model_is_refused(retriever: Retriever, settings: Settings) -> None:
    class OtherModel:
        def __getattr__(self, name: str) -> Any:
            return getattr(retriever.embedder, name)

        def fingerprint(self) -> dict[str, Any]:
            return {**retriever.embedder.fingerprint(), "model": "intfloat/e5-small-v2"}

    other = Retriever(settings, embedder=OtherModel(), store=retriever.store)  # type: ignore[arg-type]
    with pytest.raises(FingerprintMismatch) as err:
        other.search("anything")
    assert "intfloat/e5-small-v2" in str(err.value) and "--rebuild" in str(err.value)


def test_empty_collection_says_what_to_do(tmp_path: Path) -> None:
    from tests.conftest import make_settings

    settings = make_settings(tmp_path / "nothing")
    assert Store.open(settings) is None
    with pytest.raises(StoreError) as err:
        Retriever(settings)
    assert "python -m ingest" in str(err.value)


def test_a_name_the_hits_lack_is_added_after_them(retriever: Retriever) -> None:
    question = "When was firmware 2.2.0 released, and what feature did it add?"
    plain = retriever.search(question, RetrievalOptions(k=2, names=False))
    named = retriever.search(question, RetrievalOptions(k=2))
    assert [h.chunk_id for h in named[:2]] == [h.chunk_id for h in plain]  # the k best stay
    assert any("2.2.0" in h.named_text for h in named), [h.location for h in named]
    if not any("2.2.0" in h.named_text for h in plain):
        assert len(named) == 3
    # a name that no document mentions adds nothing; dense-only retrieval adds nothing
    assert len(retriever.search("What does tidyr's pivot_wider() do to a kettle?",
                                RetrievalOptions(k=2))) == 2
    assert len(retriever.search(question, RetrievalOptions(k=2, mode="dense"))) == 2


def test_joined_neighbours_count_their_overlap_once() -> None:
    text, parts = _joined([("one two three four five six seven eight nine ten", 1, 1),
                           ("seven eight nine ten eleven twelve thirteen fourteen", 2, 2),
                           ("A fresh start with no shared words at all.", 2, 3)])
    assert text == ("one two three four five six seven eight nine ten eleven twelve thirteen "
                    "fourteen\nA fresh start with no shared words at all.")
    assert [(p.page_start, p.page_end) for p in parts] == [(1, 1), (2, 2), (2, 3)]
    assert text[parts[1].start:parts[1].end].startswith("seven eight nine ten eleven")
    assert text[parts[2].start:parts[2].end] == "A fresh start with no shared words at all."


def test_a_hit_widened_with_its_neighbouring_chunks(settings: Settings, tmp_path: Path,
                                                    embedder: Any) -> None:
    """The model may read the chunks around a hit (RAG_ANSWER_NEIGHBOURS): in file order, each
    chunk once, and a quote's pages are those of the chunk it is in."""
    docs = tmp_path / "docs"
    docs.mkdir()
    colours = ["amber", "basalt", "cobalt", "dune", "ember", "fjord", "garnet", "harbour"]
    make_pdf(docs / "manual.pdf", [" ".join(
        f"Sentence {p * 6 + i} says the {colours[(p * 6 + i) % 8]} valve number {100 * p + i} "
        "must be checked weekly." for i in range(6)) for p in range(3)])
    small = settings.model_copy(update={"chunk_tokens": 48, "chunk_overlap": 8})
    assert not Ingestor(small, embedder).run([docs]).failed
    retriever = Retriever(small, embedder=embedder)
    hit = retriever.search("Which valve is number 100?", RetrievalOptions(k=1))[0]
    assert "number 100 " in hit.text and hit.page_start == 2 and hit.chunk_index is not None
    assert retriever.with_context([hit], 0) == [hit]

    wide = retriever.with_context([hit], 1)[0]
    assert wide.chunk_id == hit.chunk_id and (wide.page_start, wide.page_end) == (2, 2)
    assert hit.text in wide.text and len(wide.parts) == 3
    assert wide.text.index("number 5 ") < wide.text.index("number 100 ")  # file order
    sentences = re.findall(r"Sentence \d+", wide.text)
    assert len(sentences) == len(set(sentences))  # nothing twice
    before = (wide.text.index("number 5 "), wide.text.index("number 5 ") + 9)
    assert wide.pages_of([before]) == (1, 1)  # a quote from the chunk before: its page
    assert wide.pages_of([before, (wide.text.index("number 100 "), len(wide.text))]) == (1, 2)
    assert wide.pages_of([]) == (2, 2)

    # a neighbour that is a hit itself is not repeated in another hit's text
    index = hit.chunk_index
    nxt = next(h for h in retriever.search("number 101 number 102", RetrievalOptions(k=3))
               if h.chunk_index == index + 1)
    first, second = retriever.with_context([hit, nxt], 1)
    assert nxt.text not in first.text and hit.text not in second.text
    assert hit.text in first.text and nxt.text in second.text


def test_query_vectors_are_cached_and_handed_out_as_copies(embedder: Any) -> None:
    """A repeated question (the chat asks again on a settings change; the answer path embeds
    the question twice) costs a lookup, not a model call; callers may change what they get."""
    import numpy as np

    text = "what does the query cache remember? 7c1e"
    before = embedder.query_cache_info()
    first = embedder.embed_query(text)
    first[:] = 0.0  # a caller's change must not reach the cache
    again = embedder.embed_query(text)
    after = embedder.query_cache_info()
    assert after.misses == before.misses + 1 and after.hits == before.hits + 1
    assert np.linalg.norm(again) == pytest.approx(1.0, abs=1e-5)
