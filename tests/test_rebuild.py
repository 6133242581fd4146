"""Rebuilds keep every folder the index holds; damaged catalogs and empty or unreadable folders
never cost indexed files silently (review items 3, 9 and 10; section E tests 4, 5 and 10).

Each test runs against the embedded store and a real `chroma run` server, with the real model.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

import ingest.split
import ingest.sync
from ingest.outcomes import SyncReport
from ingest.sync import Ingestor
from rag_app.errors import ConfigError, StoreError
from rag_app.index.store import Store
from rag_app.settings import Settings

pytestmark = pytest.mark.slow

ALPHA = {
    "alpha.md": "# Alpaca\n\nThe alpaca herd grazes on the Andean plateau every spring.\n",
    "beta.txt": "Beekeepers harvest heather honey in late August on the moors.\n",
}
GAMMA = {
    "gamma.md": "# Lighthouse\n\nThe lighthouse keeper polishes the brass lens each night.\n",
    "extra.txt": "The ferry timetable changes on the first Sunday of October.\n",
}
CITRUS = {"citrus.md": "# Citrus\n\nLemon trees need frost protection below minus three.\n"}


def write(folder: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder.resolve()


def run(settings: Settings, embedder: Any, *paths: Path, **kw: Any) -> SyncReport:
    return Ingestor(settings, embedder).run(list(paths), **kw)


def opened(settings: Settings) -> Store:
    store = Store.open(settings)
    assert store is not None
    return store


def indexed(settings: Settings) -> set[tuple[str, str]]:
    """(root, source) of every file record; each one also has its chunks."""
    store = opened(settings)
    records = store.file_records().values()
    for r in records:
        assert r.state == "done" and store.chunk_ids_for(r.key), r
    return {(r.root, r.source) for r in records}


def files_of(folder: Path, files: dict[str, str]) -> set[tuple[str, str]]:
    return {(str(folder), name) for name in files}


def dense_top(settings: Settings, embedder: Any, question: str) -> tuple[str, str]:
    """(root, source) of the nearest chunk by the model's vectors."""
    store = opened(settings)
    _, _, _, meta = store.query(embedder.embed_query(question), 1)[0]
    return meta["root"], meta["source"]


def lexical_top(settings: Settings, question: str) -> str:
    store = opened(settings)
    index = store.load_lexical()
    assert len(index) == store.count()
    top = index.search(question, 1)[0][0]
    return str(store.chunks.get(ids=[top])["metadatas"][0]["source"])


def new_splitter(monkeypatch: pytest.MonkeyPatch) -> None:
    """As after upgrading to a release whose splitter chunks differently."""
    monkeypatch.setattr(ingest.sync, "SPLITTER_VERSION", "recursive-tokens-next")
    monkeypatch.setattr(ingest.split, "SPLITTER_VERSION", "recursive-tokens-next")


@pytest.mark.parametrize("how", ["chunking-code-changed", "--rebuild"])
def test_rebuild_of_one_folder_keeps_the_others(settings: Settings, embedder: Any,
                                                tmp_path: Path, how: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    a = write(tmp_path / "a", ALPHA)
    b = write(tmp_path / "b", GAMMA)
    run(settings, embedder, a)
    run(settings, embedder, b)
    before = indexed(settings)
    assert before == files_of(a, ALPHA) | files_of(b, GAMMA)
    old = opened(settings)
    old_chunks, chunks_before = old.chunks.name, old.count()

    if how == "--rebuild":
        plan = run(settings, embedder, b, rebuild=True, dry_run=True)
        assert {(o.root, o.source, o.status) for o in plan.outcomes} == {
            (root, source, "ingested") for root, source in before}
        report = run(settings, embedder, b, rebuild=True)
    else:
        new_splitter(monkeypatch)
        report = run(settings, embedder, b)
    assert report.rebuilt and not report.failed
    assert {(o.root, o.source, o.status) for o in report.outcomes} == {
        (root, source, "ingested") for root, source in before}
    if how != "--rebuild":
        assert any("chunking code" in n and "rebuilding it once" in n for n in report.notices)

    store = opened(settings)
    assert store.chunks.name != old_chunks  # a new collection, published when complete
    assert indexed(settings) == before
    assert store.count() == chunks_before == report.chunks_total
    assert dense_top(settings, embedder, "Where do alpacas graze?") == (str(a), "alpha.md")
    assert lexical_top(settings, "heather honey moors") == "beta.txt"
    names = {c if isinstance(c, str) else c.name for c in store.client.list_collections()}
    assert old_chunks not in names

    again = run(settings, embedder, b)  # and only once
    assert not again.rebuilt and again.counts()["unchanged"] == len(GAMMA)
    assert indexed(settings) == before


def test_rebuild_carries_single_files_without_their_siblings(
        settings: Settings, embedder: Any, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    c = write(tmp_path / "c", {"c1.md": CITRUS["citrus.md"],
                               "c2.md": "# Sibling\n\nNever ingested on purpose.\n"})
    a = write(tmp_path / "a", ALPHA)
    run(settings, embedder, c / "c1.md")  # as a chat UI ingests one upload
    run(settings, embedder, a)
    expected = {(str(c), "c1.md")} | files_of(a, ALPHA)
    assert indexed(settings) == expected

    new_splitter(monkeypatch)
    report = run(settings, embedder, a)
    assert report.rebuilt
    assert indexed(settings) == expected
    assert all(o.source != "c2.md" for o in report.outcomes)
    assert dense_top(settings, embedder, "How cold can lemon trees get?") == (str(c), "c1.md")

    report = run(settings, embedder, c / "c1.md", rebuild=True)
    assert report.rebuilt and not report.failed
    assert indexed(settings) == expected


def test_missing_folder_refuses_the_rebuild_until_dropped(
        settings: Settings, embedder: Any, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    a = write(tmp_path / "a", ALPHA)
    b = write(tmp_path / "b", GAMMA)
    c = write(tmp_path / "c", CITRUS)
    for folder in (a, b, c):
        run(settings, embedder, folder)
    before = indexed(settings)
    old = opened(settings)
    old_chunks, chunks_before = old.chunks.name, old.count()

    a.rename(tmp_path / "a-unmounted")
    (b / "extra.txt").unlink()  # a file gone under a folder that is still there
    for kw in ({"rebuild": True}, {"rebuild": True, "dry_run": True}):
        with pytest.raises(ConfigError) as err:
            run(settings, embedder, c, **kw)
        message = str(err.value)
        assert f"{a} (2 indexed file(s))" in message and str(b) not in message
        assert "--drop-missing" in message and "Nothing was changed" in message
    new_splitter(monkeypatch)  # the automatic rebuild refuses the same way
    with pytest.raises(ConfigError, match=r"chunking code changed.*--drop-missing"):
        run(settings, embedder, c)
    store = opened(settings)
    assert store.chunks.name == old_chunks and store.count() == chunks_before
    assert indexed(settings) == before

    report = run(settings, embedder, c, drop_missing_roots=True)
    assert report.rebuilt and not report.failed
    removed = {(o.root, o.source): o.reason for o in report.outcomes if o.status == "removed"}
    assert removed.keys() == files_of(a, ALPHA) | {(str(b), "extra.txt")}
    assert "--drop-missing" in removed[(str(a), "alpha.md")]
    assert removed[(str(b), "extra.txt")] == "file no longer exists"
    assert indexed(settings) == {(str(b), "gamma.md"), (str(c), "citrus.md")}
    assert lexical_top(settings, "lighthouse brass lens") == "gamma.md"


@pytest.mark.parametrize("lost", [("chunks",), ("chunks", "files")],
                         ids=["chunks-lost", "chunks-and-files-lost"])
def test_rebuild_repairs_a_damaged_catalog(settings: Settings, embedder: Any, tmp_path: Path,
                                           lost: tuple[str, ...]) -> None:
    a = write(tmp_path / "a", ALPHA)
    b = write(tmp_path / "b", GAMMA)
    run(settings, embedder, a)
    run(settings, embedder, b)
    store = opened(settings)
    for which in lost:  # behind the catalog's back
        store.client.delete_collection(getattr(store, which).name)
    with pytest.raises(StoreError, match="damaged"):
        Store.open(settings)
    with pytest.raises(StoreError, match="damaged"):
        run(settings, embedder, b)  # a plain sync still refuses

    report = run(settings, embedder, b, rebuild=True)
    assert report.rebuilt and not report.failed
    if lost == ("chunks",):  # the file list survived: every folder comes back
        assert any("surviving file list (4 files)" in n for n in report.notices)
        assert indexed(settings) == files_of(a, ALPHA) | files_of(b, GAMMA)
        assert dense_top(settings, embedder, "Where do alpacas graze?") == (str(a), "alpha.md")
    else:
        assert any("unreadable too" in n and "ingest the other folders again" in n
                   for n in report.notices)
        assert indexed(settings) == files_of(b, GAMMA)
    assert lexical_top(settings, "ferry timetable October") == "extra.txt"
    assert opened(settings).count() == report.chunks_total > 0

    after = run(settings, embedder, a, b)  # and the index works as usual again
    assert not after.failed and not after.rebuilt
    assert indexed(settings) == files_of(a, ALPHA) | files_of(b, GAMMA)


def test_empty_folder_keeps_its_indexed_files(settings: Settings, embedder: Any,
                                              tmp_path: Path) -> None:
    a = write(tmp_path / "a", ALPHA)
    run(settings, embedder, a)
    chunks_before = opened(settings).count()
    away = tmp_path / "away"
    away.mkdir()
    for f in list(a.iterdir()):  # an unmounted disk leaves an empty mount point
        shutil.move(f, away / f.name)

    for kw in ({"dry_run": True}, {}):
        report = run(settings, embedder, a, **kw)
        assert report.counts()["removed"] == 0
        [failed] = report.failed
        assert (failed.root, failed.source) == (str(a), "./")
        assert "empty or not mounted" in failed.reason and "2 indexed file(s)" in failed.reason
        assert "--drop-missing" in failed.reason
    assert indexed(settings) == files_of(a, ALPHA)
    assert opened(settings).count() == chunks_before

    report = run(settings, embedder, a, drop_missing_roots=True)  # emptied on purpose
    assert not report.failed
    assert {o.source for o in report.outcomes if o.status == "removed"} == set(ALPHA)
    assert indexed(settings) == set() and opened(settings).count() == 0


@pytest.mark.parametrize("how", ["chmod 000", "iterdir raises"])
def test_unreadable_subfolder_keeps_its_files_and_the_run_goes_on(
        settings: Settings, embedder: Any, tmp_path: Path, how: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    a = write(tmp_path / "a", {**ALPHA, "sub/inner.md": GAMMA["gamma.md"],
                               "sub/deeper/more.txt": GAMMA["extra.txt"]})
    run(settings, embedder, a)
    before = indexed(settings)
    sub = a / "sub"
    if how == "chmod 000":
        sub.chmod(0)
        try:
            os.listdir(sub)
        except PermissionError:
            pass
        else:
            sub.chmod(0o755)
            pytest.skip("this user lists a mode-000 folder anyway (root, CAP_DAC_OVERRIDE)")
    else:
        real_iterdir = Path.iterdir

        def iterdir(self: Path) -> Any:
            if self == sub:
                raise PermissionError(13, "Permission denied", str(self))
            return real_iterdir(self)

        monkeypatch.setattr(Path, "iterdir", iterdir)
    (a / "beta.txt").unlink()
    write(a, CITRUS)
    try:
        report = run(settings, embedder, a)
    finally:
        sub.chmod(0o755)
    [failed] = report.failed
    assert (failed.root, failed.source) == (str(a), "sub/")
    assert failed.reason.startswith("cannot list folder: Permission denied")
    by_source = {o.source: o.status for o in report.outcomes}
    assert by_source["citrus.md"] == "ingested" and by_source["beta.txt"] == "removed"
    assert by_source["alpha.md"] == "unchanged"
    assert indexed(settings) == (before - {(str(a), "beta.txt")}) | {(str(a), "citrus.md")}
    assert lexical_top(settings, "lighthouse brass lens") == "sub/inner.md"
