"""The BM25 index updated in place (issue 26 point 2): chunks added go into a delta segment
scored exactly as a full rebuild scores them, chunks removed are hidden, a saved update loads
back the same, and the store updates the saved index instead of building it again."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from ingest.sync import Ingestor
from rag_app.index import lexical
from rag_app.index.lexical import LexicalIndex
from rag_app.index.store import Store
from rag_app.settings import Settings

WORDS = ("kettle warranty descale filter lid seal base power boil water litre minute button "
         "light error code firmware update app phone refund delivery price spare part").split()


def corpus(n: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    return [(f"c{seed}-{i}", " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 40))))
            for i in range(n)]


def full(docs: list[tuple[str, str]]) -> LexicalIndex:
    return LexicalIndex.build([d[0] for d in docs], [d[1] for d in docs],
                              hashes=[f"h-{d[0]}" for d in docs])


def added(docs: list[tuple[str, str]]) -> list[tuple[str, str, str]]:
    return [(cid, text, f"h-{cid}") for cid, text in docs]


@pytest.mark.parametrize("query", ["kettle warranty", "descale filter filter", "refund price",
                                   "zzz unknown", "seal"])
def test_added_chunks_score_as_in_a_full_rebuild(query: str) -> None:
    main, new = corpus(200, 1), corpus(15, 2)
    updated = full(main).updated(added(new), [], stamp="s")
    rebuilt = full(main + new)
    got = dict(updated.search(query, 300))
    want = dict(rebuilt.search(query, 300))
    new_ids = {cid for cid, _ in new}
    # the delta's chunks get exactly the full rebuild's scores (the same statistics)
    for cid in new_ids:
        assert got.get(cid, 0.0) == pytest.approx(want.get(cid, 0.0), rel=1e-4, abs=1e-6)
    # the main segment keeps its own statistics: close, not equal
    for cid, score in want.items():
        if cid not in new_ids:
            assert got[cid] == pytest.approx(score, rel=0.1)
    assert len(updated) == 215


def test_removed_chunks_are_never_found_and_replaced_ones_are_found_once() -> None:
    main = corpus(100, 3)
    index = full(main)
    gone = [cid for cid, _ in main[:10]]
    replaced = main[10][0]
    updated = index.updated([(replaced, "a brand new firmware text", "h-new")],
                            [*gone, replaced], stamp="s")
    hits = [cid for cid, _ in updated.search(" ".join(WORDS), 1000)]
    assert not set(gone) & set(hits)
    assert hits.count(replaced) == 1
    assert len(updated) == 90
    assert sorted(updated.ids) == sorted({cid for cid, _ in main[10:]} | {replaced})
    contents = updated.contents()
    assert contents is not None and contents[replaced] == "h-new" and gone[0] not in contents
    # a chunk added, then removed by a later update, goes from the delta
    again = updated.updated([], [replaced], stamp="t")
    assert replaced not in {cid for cid, _ in again.search("brand new firmware", 10)}
    assert len(again) == 89


def test_an_updated_index_saves_and_loads_the_same(tmp_path: Path) -> None:
    main, new = corpus(120, 4), corpus(9, 5)
    updated = full(main).updated(added(new), [main[0][0]], stamp="s2", origin={"count": 128})
    updated.save(tmp_path)
    loaded = LexicalIndex.load(tmp_path)
    assert loaded is not None and loaded.stamp == "s2" and loaded.origin == {"count": 128}
    assert len(loaded) == len(updated) == 128
    for query in ("kettle", "power button light", "refund"):
        assert loaded.search(query, 50) == updated.search(query, 50)
    assert loaded.contents() == updated.contents()


def test_an_index_saved_without_hashes_cannot_be_updated() -> None:
    index = LexicalIndex.build(["a", "b"], ["kettle", "lid"])
    assert index.contents() is None


def test_past_the_merge_share_the_owner_builds_it_whole(monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    monkeypatch.setattr(lexical, "MERGE_MIN", 5)
    index = full(corpus(100, 6))
    assert not index.needs_merge(10)  # 10 of 100: at the share
    assert index.needs_merge(11)
    updated = index.updated(added(corpus(8, 7)), [], stamp="s")
    assert updated.needs_merge(3) and not updated.needs_merge(2)


def test_the_store_updates_the_saved_index(settings: Settings, embedder: Any, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Real Chroma (embedded and server) and the real ingest: a second file's chunks go into
    the delta without building the index again, and readers find both files; deleting the
    file hides its chunks; past the merge share the index is built whole."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# Kettle\n\nThe AK-200 kettle boils water in four minutes.\n")
    Ingestor(settings, embedder).run([docs])
    store = Store.open(settings)
    assert store is not None
    first = LexicalIndex.load(store.lexical_dir)
    assert first is not None and first.contents() is not None

    built: list[int] = []
    real_build = LexicalIndex.build

    def counting_build(*args: Any, **kwargs: Any) -> LexicalIndex:
        built.append(len(args[0]))
        return real_build(*args, **kwargs)

    monkeypatch.setattr(LexicalIndex, "build", counting_build)
    (docs / "b.md").write_text("# Descaling\n\nUse citric acid to descale the limescale.\n")
    Ingestor(settings, embedder).run([docs])
    assert built == []  # updated, not built again
    index = store.load_lexical()
    assert index.saved_in == store.lexical_dir and len(index) == store.count()
    assert index.search("citric acid limescale", 1)
    assert index.search("kettle boils", 1)

    (docs / "b.md").unlink()
    Ingestor(settings, embedder).run([docs])
    index = store.load_lexical()
    assert index.saved_in == store.lexical_dir and len(index) == store.count()
    assert not index.search("citric acid limescale", 5)
    assert built == []

    monkeypatch.setattr(lexical, "MERGE_MIN", 0)
    monkeypatch.setattr(lexical, "MERGE_SHARE", 0.0)
    (docs / "c.md").write_text("# Filter\n\nRinse the filter under the tap.\n")
    Ingestor(settings, embedder).run([docs])
    assert built  # past the share: built whole
    index = store.load_lexical()
    assert len(index) == store.count() and index.search("rinse filter", 1)


def test_a_writer_updates_the_index_from_what_it_wrote(settings: Settings, embedder: Any,
                                                       tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The ingest hands the index the chunks it wrote and deleted (the store's journal): the
    collection's ids are not listed, and the result is the index a whole build gives (same
    stamp, same hits). When the saved index was not current as the writer began (a run died:
    DIRTY left), the ids are listed instead, and the result is the same."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# Kettle\n\nThe AK-200 kettle boils water in four minutes.\n")
    (docs / "b.md").write_text("# Descaling\n\nUse citric acid to descale the limescale.\n")
    Ingestor(settings, embedder).run([docs])
    store = Store.open(settings)
    assert store is not None

    listed: list[int] = []
    real_list = Store._lexical_update

    def counting_list(self: Store, generation: str) -> Any:
        listed.append(1)
        return real_list(self, generation)

    monkeypatch.setattr(Store, "_lexical_update", counting_list)

    def same_as_whole() -> LexicalIndex:
        index = LexicalIndex.load(store.lexical_dir)
        assert index is not None
        whole = store.rebuild_lexical(save=False, whole=True)
        assert index.stamp == whole.stamp and sorted(index.ids) == sorted(whole.ids)
        assert len(index) == store.count()
        return index

    # a new file, a changed file and a deleted file in one run
    (docs / "c.md").write_text("# Filter\n\nRinse the mesh filter under the tap.\n")
    (docs / "a.md").write_text("# Kettle\n\nThe AK-300 kettle boils water in three minutes.\n")
    (docs / "b.md").unlink()
    report = Ingestor(settings, embedder).run([docs])
    assert report.counts()["ingested"] == 1 and report.counts()["updated"] == 1
    assert listed == []  # the journal updated it
    index = same_as_whole()
    assert index.search("mesh filter", 1) and index.search("AK-300 three minutes", 1)
    assert not index.search("citric acid limescale", 5)

    # documents removed through the store (the chat's delete) use the journal too
    records = store.file_records()
    key = next(k for k, r in records.items() if r.source == "c.md")
    store.remove_files([key])
    assert listed == []
    assert not same_as_whole().search("mesh filter", 5)

    # a run that died left DIRTY: the next writer cannot trust the saved index as it begins
    (store.lexical_dir / "DIRTY").touch()
    (docs / "d.md").write_text("# Lid\n\nPress the lid button to open the hinged lid.\n")
    Ingestor(settings, embedder).run([docs])
    assert listed == [1]
    assert same_as_whole().search("hinged lid", 1)
