"""Faults while ingesting: one bad file, name or link never stops the run (review items 1, 2,
17 and 19). Runs against real Chroma (embedded and a `chroma run` server) with the real model."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pypdf import PdfWriter
from pypdf.generic import ContentStream, DictionaryObject, NameObject, StreamObject

from ingest.discover import discover
from ingest.loaders.common import normalise_text
from ingest.split import Splitter
from ingest.sync import Ingestor
from ingest.worker import ParseWorker
from rag_app.index.store import Store
from rag_app.records import Chunk, content_hash, valid_utf8
from rag_app.settings import Settings
from tests.conftest import REPO

pytestmark = pytest.mark.slow


def run(settings: Settings, embedder: Any, *paths: Path, **kw: Any):  # type: ignore[no-untyped-def]
    return Ingestor(settings, embedder).run(list(paths), **kw)


def by_source(report: Any) -> dict[str, Any]:
    return {o.source: o for o in report.outcomes}


def stored(settings: Settings) -> dict[str, list[str]]:
    """source → its chunk texts, as the store holds them."""
    store = Store.open(settings)
    assert store is not None
    out: dict[str, list[str]] = {}
    for _, pairs in store.all_chunks():
        for text, meta in pairs:
            out.setdefault(meta["source"], []).append(text)
    return out


def assert_consistent(settings: Settings) -> None:
    """The BM25 index was rebuilt and matches the store; every record is settled."""
    store = Store.open(settings)
    assert store is not None
    assert not store.lexical_is_dirty()
    assert len(store.load_lexical()) == store.count()
    assert all(r.state == "done" for r in store.file_records().values())


def text_file(path: Path, words: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"# {path.stem}\n\n{words} " * 3 + "\n")
    return path


def surrogate_pdf(path: Path) -> Path:
    """One page whose ToUnicode CMap maps the glyph 'B' to <D800>, a lone high surrogate:
    pypdf extracts 'AA\\ud800 warranty …', which cannot be encoded as UTF-8."""
    cmap = StreamObject()
    cmap.set_data(b"/CIDInit /ProcSet findresource begin\n12 dict begin\nbegincmap\n"
                  b"/CMapName /Bad def\n/CMapType 2 def\n1 begincodespacerange\n<00> <FF>\n"
                  b"endcodespacerange\n1 beginbfchar\n<42> <D800>\nendbfchar\nendcmap\n"
                  b"CMapName currentdict /CMap defineresource pop\nend\nend\n")
    writer = PdfWriter()
    page = writer.add_blank_page(width=612, height=792)
    font = DictionaryObject({
        NameObject("/Type"): NameObject("/Font"), NameObject("/Subtype"): NameObject("/Type1"),
        NameObject("/BaseFont"): NameObject("/Helvetica"),
        NameObject("/ToUnicode"): writer._add_object(cmap),
    })
    page[NameObject("/Resources")] = DictionaryObject(
        {NameObject("/Font"): DictionaryObject({NameObject("/F1"): font})})
    content = ContentStream(None, writer)
    content.set_data(b"BT /F1 11 Tf 72 700 Td (AAB warranty lasts 24 months) Tj ET")
    page.replace_contents(content)
    with path.open("wb") as handle:
        writer.write(handle)
    return path


# -- item 1: lone surrogates, non-UTF-8 names, any exception for one file -----------------------
def test_valid_utf8_repairs_pairs_and_replaces_lone_surrogates() -> None:
    assert valid_utf8("plain ünïcode") == "plain ünïcode"
    assert valid_utf8("\ud83d\ude00") == "😀"  # a pair split in two code points: joined
    assert valid_utf8("AA\ud800 x") == "AA\ufffd x"
    assert valid_utf8("\udc00a\ud800") == "\ufffda\ufffd"
    assert normalise_text("a\ud800b\r\n\ud83d\ude00") == "a\ufffdb\n😀"
    normalise_text("x\udcff\ud800\udfff").encode("utf-8")  # never raises
    # hashing and ids never raise, whatever the text
    assert len(content_hash("\ud800")) == 64 and len(Chunk.make_id("k\udcff", 0, "\ud800")) == 32


def test_surrogate_pdf_does_not_stop_the_run(settings: Settings, embedder: Any,
                                             tmp_path: Path) -> None:
    root = tmp_path / "docs"
    text_file(root / "a.md", "The kettle boils water quickly")
    surrogate_pdf(root / "m-bad.pdf")
    text_file(root / "z.md", "Descale the kettle every month")
    report = run(settings, embedder, root)
    outcomes = by_source(report)
    assert {s: o.status for s, o in outcomes.items()} == {
        "a.md": "ingested", "m-bad.pdf": "ingested", "z.md": "ingested"}, report.outcomes
    texts = stored(settings)
    assert texts["m-bad.pdf"] == ["AA\ufffd warranty lasts 24 months"]
    assert texts["z.md"]
    assert_consistent(settings)
    assert {o.status for o in run(settings, embedder, root).outcomes} == {"unchanged"}


def test_non_utf8_file_names_are_skipped(settings: Settings, embedder: Any, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "docs"
    text_file(root / "good.md", "The kettle boils water quickly")
    raw = os.fsencode(root)
    with open(raw + b"/bad\xff.md", "w") as fh:
        fh.write("# bad\n\nA file whose name is not UTF-8.\n")
    os.mkdir(raw + b"/dir\xfe")
    with open(raw + b"/dir\xfe/inside.md", "w") as fh:
        fh.write("# inside\n\nIn a folder whose name is not UTF-8.\n")
    with open(raw + b"/.hid\xfe.md", "w") as fh:
        fh.write("hidden\n")

    report = run(settings, embedder, root)
    outcomes = by_source(report)
    assert outcomes["good.md"].status == "ingested"
    assert outcomes["bad\\xff.md"].status == "skipped"
    assert "not valid UTF-8" in outcomes["bad\\xff.md"].reason
    assert "rename" in outcomes["bad\\xff.md"].reason
    assert outcomes["dir\\xfe/"].status == "skipped"
    assert outcomes[".hid\\xfe.md"].reason == "hidden"
    assert not report.failed
    for o in report.outcomes:  # every name can be printed and stored
        (o.source + o.reason).encode("utf-8")
    assert set(stored(settings)) == {"good.md"}
    assert_consistent(settings)

    from ingest.report import print_summary

    print_summary(report)
    assert "bad\\xff.md" in capsys.readouterr().out
    again = by_source(run(settings, embedder, root))
    assert again["good.md"].status == "unchanged" and again["bad\\xff.md"].status == "skipped"


class Boom(RuntimeError):
    pass


def _patch_fault(where: str, monkeypatch: pytest.MonkeyPatch, embedder: Any) -> Any:
    """Make handling of b.md (only) raise at `where`; returns the embedder to use."""
    if where == "parse":
        original_result = ParseWorker.result

        def result(self: ParseWorker, *a: Any, **kw: Any) -> Any:
            name = self._pending.path.name if self._pending else ""
            doc = original_result(self, *a, **kw)
            if name == "b.md":
                raise Boom("the parser pipe broke")
            return doc

        monkeypatch.setattr(ParseWorker, "result", result)
    elif where in ("split", "surrogate"):
        original_split = Splitter.split

        def split(self: Splitter, doc: Any, source: str, file_key: str,
                  limit: int | None = None) -> list[Chunk]:
            chunks = original_split(self, doc, source, file_key, limit)
            if source != "b.md":
                return chunks
            if where == "split":
                raise Boom("the splitter failed")
            # text that slipped past every cleaning step: the store (or model) rejects it
            return [dataclasses.replace(c, text=c.text + " \ud800") for c in chunks]

        monkeypatch.setattr(Splitter, "split", split)
    elif where == "embed":
        class Poisoned:
            def __getattr__(self, name: str) -> Any:
                return getattr(embedder, name)

            def embed_documents(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
                if any("POISON" in t for t in texts):
                    raise Boom("the model failed")
                return embedder.embed_documents(texts, batch_size=batch_size)

        return Poisoned()
    elif where == "write":
        original_upsert = Store.upsert_chunks

        def upsert(self: Store, chunks: Any, vectors: Any, record: Any) -> None:
            if record.source == "b.md":
                raise Boom("the store refused the write")
            original_upsert(self, chunks, vectors, record)

        monkeypatch.setattr(Store, "upsert_chunks", upsert)
    return embedder


@pytest.mark.parametrize("where", ["parse", "split", "surrogate", "embed", "write"])
def test_any_error_for_one_file_fails_that_file_only(
        settings: Settings, embedder: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        where: str) -> None:
    root = tmp_path / "docs"
    text_file(root / "a.md", "The kettle boils water quickly")
    text_file(root / "gone.md", "This file is deleted before the second run")
    run(settings, embedder, root)
    (root / "gone.md").unlink()
    text_file(root / "b.md", "POISON the filter is rinsed")
    text_file(root / "c.md", "Descale the kettle every month")

    faulty = _patch_fault(where, monkeypatch, embedder)
    report = run(settings, faulty, root)
    outcomes = by_source(report)
    assert outcomes["b.md"].status == "failed", report.outcomes
    assert where == "surrogate" or "Boom" in outcomes["b.md"].reason
    assert outcomes["b.md"].reason.isprintable() and len(outcomes["b.md"].reason) < 400
    assert outcomes["c.md"].status == "ingested"  # the files after it are ingested
    assert outcomes["a.md"].status == "unchanged"
    assert outcomes["gone.md"].status == "removed"  # deletions still run
    assert set(stored(settings)) == {"a.md", "c.md"}  # no partial chunks of b.md
    assert_consistent(settings)  # and the BM25 index was rebuilt

    monkeypatch.undo()
    healed = by_source(run(settings, embedder, root))
    assert healed["b.md"].status == "ingested" and healed["c.md"].status == "unchanged"
    assert set(stored(settings)) == {"a.md", "b.md", "c.md"}


def test_failed_update_keeps_the_previous_version_whole(
        settings: Settings, embedder: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        ) -> None:
    root = tmp_path / "docs"
    text_file(root / "b.md", "The first version of the filter notes")
    text_file(root / "c.md", "Descale the kettle every month")
    run(settings, embedder, root)
    before = stored(settings)["b.md"]
    (root / "b.md").write_text("# b\n\n" + "\n\n".join(
        f"Paragraph {i}: the second version, much longer. " * 20 for i in range(12)))
    calls = {"n": 0}
    original_upsert = Store.upsert_chunks

    def upsert(self: Store, chunks: Any, vectors: Any, record: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 2:  # the second group of new chunks: some are already written
            raise Boom("disk full")
        original_upsert(self, chunks, vectors, record)

    monkeypatch.setattr("ingest.sync.WRITE_GROUP", 2)
    monkeypatch.setattr(Store, "upsert_chunks", upsert)
    report = run(settings, embedder, root)
    failed = by_source(report)["b.md"]
    assert failed.status == "failed" and "Boom: disk full" in failed.reason
    assert "previous version kept" in failed.reason
    assert sorted(stored(settings)["b.md"]) == sorted(before)  # no half of the new version
    assert_consistent(settings)
    monkeypatch.undo()
    assert by_source(run(settings, embedder, root))["b.md"].status == "updated"
    assert len(stored(settings)["b.md"]) > len(before)


# -- item 18: a failed file's old chunks are kept (and said so) or removed, by policy -----------
@pytest.mark.parametrize("policy", ["keep", "remove"])
def test_a_file_that_now_fails_keeps_or_loses_its_old_version_by_policy(
        settings: Settings, embedder: Any, tmp_path: Path, policy: str) -> None:
    root = tmp_path / "docs"
    text_file(root / "c.md", "Descale the kettle every month")
    good = REPO / "data" / "samples" / "customer-policies-2024.pdf"
    (root / "policies.pdf").write_bytes(good.read_bytes())
    run(settings, embedder, root)
    assert "policies.pdf" in stored(settings)
    # replaced by a broken version (a truncated download)
    (root / "policies.pdf").write_bytes(good.read_bytes()[:300])
    chosen = settings.model_copy(update={"failed_files": policy})
    failed = by_source(run(chosen, embedder, root))["policies.pdf"]
    assert failed.status == "failed"
    store = Store.open(settings)
    assert store is not None
    records = {r.source: r for r in store.file_records().values()}
    if policy == "keep":
        assert "previous version kept" in failed.reason and "--failed-files" in failed.reason
        assert "policies.pdf" in stored(settings) and records["policies.pdf"].error
    else:
        assert "previous version was removed" in failed.reason and failed.chunks_removed > 0
        assert "policies.pdf" not in stored(settings) and "policies.pdf" not in records
        # still broken on the next run: reported again, nothing else changes
        again = by_source(run(chosen, embedder, root))
        assert again["policies.pdf"].status == "failed" and again["c.md"].status == "unchanged"
    assert_consistent(settings)


# -- item 19: a deletion killed between its steps is finished or undone by the next run --------
class Killed(BaseException):
    """Stands in for kill -9: nothing catches it."""


@pytest.mark.parametrize("file_back", [False, True])
def test_deletion_killed_between_chunks_and_record(
        settings: Settings, embedder: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        file_back: bool) -> None:
    root = tmp_path / "docs"
    note = text_file(root / "note.md", "The warranty lasts 24 months")
    text_file(root / "other.md", "Descale the kettle every month")
    run(settings, embedder, root)
    saved = tmp_path / "trash.md"
    os.replace(note, saved)  # to the trash

    original_delete = Store.delete_chunks

    def delete_then_die(self: Store, ids: Any) -> int:
        original_delete(self, ids)
        raise Killed

    monkeypatch.setattr(Store, "delete_chunks", delete_then_die)
    with pytest.raises(Killed):
        run(settings, embedder, root)
    monkeypatch.undo()
    assert "note.md" not in stored(settings)  # the chunks went, the record is still there

    if file_back:
        os.replace(saved, note)  # back from the trash: same bytes, size and mtime
    report = by_source(run(settings, embedder, root))
    store = Store.open(settings)
    assert store is not None
    if file_back:
        assert report["note.md"].status == "updated"
        assert stored(settings)["note.md"][0].startswith("note")
    else:
        assert report["note.md"].status == "removed"
        assert "note.md" not in {r.source for r in store.file_records().values()}
    assert report["other.md"].status == "unchanged"
    assert_consistent(settings)


# -- item 2: symbolic links ---------------------------------------------------------------------
def _tree(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "docs"
    text_file(root / "a.md", "alpha")
    text_file(root / "sub" / "b.md", "beta")
    text_file(root / "v2" / "c.md", "gamma")
    text_file(root / ".private" / "p.md", "private")
    outside = tmp_path / "outside"
    text_file(outside / "secret.md", "the secret outside the folder")
    return root, outside


def test_symlinks_stay_in_the_folder_and_each_file_is_found_once(tmp_path: Path) -> None:
    root, outside = _tree(tmp_path)
    (root / "sub" / "up").symlink_to("..")
    (root / "above").symlink_to("..")  # the root's own parent: a loop, and outside too
    (root / "out").symlink_to("../outside")
    (root / "leak.md").symlink_to(outside / "secret.md")
    (root / "latest").symlink_to("v2")
    (root / "again.md").symlink_to("sub/b.md")
    (root / "p.md").symlink_to(".private/p.md")  # in the folder, only reachable by the link
    (root / "dangling.md").symlink_to("nowhere.md")
    (root / "x1").symlink_to("x2")
    (root / "x2").symlink_to("x1")

    candidates, skipped, scopes = discover([root])
    sources = sorted(c.source for c in candidates)
    assert sources == ["a.md", "p.md", "sub/b.md", "v2/c.md"]
    assert len({c.path.resolve() for c in candidates}) == len(candidates)
    assert all(c.path.resolve().is_relative_to(root) for c in candidates)
    reasons = {o.source: (o.status, o.reason) for o in skipped}
    assert reasons["sub/up/"] == reasons["above/"] == ("skipped", "link loop")
    assert reasons["out/"] == ("skipped", "link leads outside the folder")
    assert reasons["leak.md"] == ("skipped", "link leads outside the folder")
    assert reasons["latest/"][0] == "skipped" and "v2" in reasons["latest/"][1]
    assert reasons["again.md"][0] == "skipped" and "sub/b.md" in reasons["again.md"][1]
    assert reasons["dangling.md"][0] == "skipped"
    assert reasons["x1"] == reasons["x2"] == ("skipped", "link loop")
    assert scopes[0].found == 4


def test_links_to_self_finish_fast(tmp_path: Path) -> None:
    """Before: two `ln -s . lN` links made about 2^40 paths; the walk never returned. (In a
    child process, so that the old behaviour fails the test instead of eating the memory.)"""
    root = tmp_path / "docs"
    text_file(root / "a.md", "alpha")
    text_file(root / "sub" / "b.md", "beta")
    for i in range(4):
        (root / f"l{i}").symlink_to(".")
    (root / "sub" / "up").symlink_to("..")
    code = ("import json, sys, time; from pathlib import Path\n"
            "from ingest.discover import discover\n"
            "t = time.monotonic(); c, s, _ = discover([Path(sys.argv[1])])\n"
            "print(json.dumps([time.monotonic() - t, sorted(x.source for x in c),\n"
            "                  sorted((o.source, o.reason) for o in s)]))\n")
    try:
        out = subprocess.run([sys.executable, "-c", code, str(root)], cwd=REPO,
                             capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("discover did not return within 30 s")
    assert out.returncode == 0, out.stderr[-2000:]
    seconds, sources, skipped = json.loads(out.stdout)
    assert seconds < 3
    assert sources == ["a.md", "sub/b.md"]
    assert skipped == [[f"l{i}/", "link loop"] for i in range(4)] + [["sub/up/", "link loop"]]


def test_ingest_with_links_never_reads_outside(settings: Settings, embedder: Any,
                                               tmp_path: Path) -> None:
    root, _ = _tree(tmp_path)
    (root / "out").symlink_to("../outside")
    (root / "sub" / "up").symlink_to("..")
    (root / "again.md").symlink_to("a.md")
    report = run(settings, embedder, root)
    assert sorted(o.source for o in report.outcomes if o.status == "ingested") == [
        "a.md", "sub/b.md", "v2/c.md"]
    texts = stored(settings)
    assert set(texts) == {"a.md", "sub/b.md", "v2/c.md"}
    assert not any("secret" in t for chunks in texts.values() for t in chunks)
    assert_consistent(settings)


# -- item 17: an unexpected exception is exit code 4, not 1 ---------------------------------------
def _crashing_cli(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    code = ("import sys, ingest.cli as cli\n"
            "def boom(*a, **k):\n"
            "    raise KeyError('catalog row has no chunks')\n"
            "cli.run = boom\n"
            "sys.exit(cli.main(sys.argv[1:]))\n")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("RAG_", "CHROMA_"))}
    base.update(env, RAG_STATE_DIR=str(tmp_path / "state"), PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=tmp_path,
                          capture_output=True, text=True, env=base, timeout=120)


def test_unexpected_exception_exits_4_with_one_line(tmp_path: Path) -> None:
    from ingest.cli import EPILOG, EXIT_BUG, EXIT_SOME_FAILED

    assert EXIT_BUG == 4 != EXIT_SOME_FAILED
    assert "4 " in EPILOG and "bug" in EPILOG
    out = _crashing_cli(tmp_path)
    assert out.returncode == 4, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "bug" in lines[0] and "KeyError" in lines[0] and "catalog row has no chunks" in lines[0]
    assert "Traceback" not in out.stderr

    debug = _crashing_cli(tmp_path, RAG_LOG_LEVEL="DEBUG")
    assert debug.returncode == 4
    assert "Traceback" in debug.stderr and "KeyError" in debug.stderr


def test_rag_errors_keep_their_exit_codes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    import ingest.cli as cli
    from rag_app.errors import ConfigError, StoreLocked

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RAG_STATE_DIR", str(tmp_path / "state"))
    for error, code in ((ConfigError("bad"), 2), (StoreLocked("locked"), 3)):
        def fail(*a: Any, _error: Exception = error, **k: Any) -> Any:
            raise _error

        monkeypatch.setattr(cli, "run", fail)
        assert cli.main([str(tmp_path)]) == code
        assert capsys.readouterr().err.strip().startswith("error: ")
