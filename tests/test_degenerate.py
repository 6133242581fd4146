"""A run's time follows its content (issue 26, point 3): files that are not prose are refused
with the reason, a huge file is bounded by RAG_MAX_CHUNKS_PER_FILE, and small files are never
queued behind a big one. Real files, real Chroma, the bundled model.

Measured before this: a 5 MiB text with no word separators became about 20,000 chunks; the run
was still embedding it after 300 s, and the PDF and Markdown files behind it were not indexed.
"""

from __future__ import annotations

import base64
import json
import random
import string
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ingest.outcomes import FileOutcome, SyncReport
from ingest.prose import MIN_CHARS, check_prose
from ingest.report import print_summary
from ingest.sync import Ingestor
from rag_app.index.store import Store
from tests.conftest import REPO, make_settings
from tests.pdfgen import make_pdf

MIB = 1024 * 1024


class Recorder:
    """A reporter that keeps the order files were started in, and counts embedded texts."""

    def __init__(self) -> None:
        self.started: list[str] = []

    def start(self, files: int, total_bytes: int) -> None: ...

    def file_started(self, source: str, size: int) -> None:
        self.started.append(source)

    def file_progress(self, done_fraction: float) -> None: ...

    def file_done(self, outcome: FileOutcome) -> None: ...


class Counting:
    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.embedded = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def embed_documents(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        self.embedded += len(texts)
        return self.inner.embed_documents(texts, batch_size=batch_size)


def prose(words: int, seed: int = 7) -> str:
    """Sentences of real-looking text: varied words, spaces, punctuation."""
    rnd = random.Random(seed)
    vocab = ["kettle", "water", "boils", "minutes", "descale", "filter", "warranty", "lid",
             "switch", "base", "light", "heater", "litre", "citric", "acid", "month", "cable",
             "the", "a", "of", "and", "with", "every", "when", "it", "is", "hard", "soft"]
    vocab += ["".join(rnd.choices(string.ascii_lowercase, k=rnd.randint(3, 9)))
              for _ in range(3000)]
    sentences = []
    for _ in range(words // 12):
        sentence = " ".join(rnd.choice(vocab) for _ in range(12))
        sentences.append(sentence.capitalize() + ".")
    return " ".join(sentences)


def hostile_folder(root: Path) -> Path:
    rnd = random.Random(3)
    root.mkdir(parents=True)
    # the measured case: 5 MiB without a single word separator
    (root / "no-separators.txt").write_text("".join(rnd.choices(string.ascii_letters, k=5 * MIB)))
    (root / "blob.txt").write_text(base64.encodebytes(rnd.randbytes(MIB)).decode())
    (root / "repeated.txt").write_text("lorem " * 200_000)
    (root / "data.md").write_text(json.dumps(
        [{"id": i, "name": f"item{i}", "v": rnd.random()} for i in range(20_000)],
        separators=(",", ":")))
    # what must not wait behind them
    make_pdf(root / "manual.pdf", ["The Aurora kettle boils one litre in three minutes.",
                                   "Error code E4 means the base is too hot."])
    for i, topic in enumerate(["descaling", "filters", "warranty"]):
        (root / f"guide-{i}.md").write_text(f"# {topic.title()}\n\nAll about {topic}: "
                                            f"see the manual, chapter {i + 2}.\n")
    return root


def test_prose_check_refuses_the_classes_and_passes_prose() -> None:
    rnd = random.Random(1)
    refused = {
        "no separators": "".join(rnd.choices(string.ascii_letters, k=200_000)),
        "base64": base64.encodebytes(rnd.randbytes(150_000)).decode(),
        "hex": rnd.randbytes(100_000).hex(),
        "one token": "lorem " * 20_000,
        "one sentence": "The kettle boils one litre of water in three minutes. " * 2_000,
        "digits": "".join(rnd.choices(string.digits, k=100_000)),
        "spaced figures": " ".join(str(rnd.randint(0, 99_999)) for _ in range(20_000)),
        "minified json": json.dumps([{"id": i, "v": rnd.random()} for i in range(5_000)],
                                    separators=(",", ":")),
    }
    for name, text in refused.items():
        check = check_prose(text)
        assert not check.is_prose, (name, check)
        assert check.reason.startswith("not prose: "), check
    passed = {
        "this README": (REPO / "README.md").read_text(),
        "generated prose": prose(40_000),
        "Chinese without spaces": "".join(rnd.choices(
            [chr(c) for c in range(0x4E00, 0x4E00 + 3000)] + ["，", "。"], k=100_000)),
    }
    for name, text in passed.items():
        assert len(text) >= MIN_CHARS, name
        assert check_prose(text).is_prose, (name, check_prose(text))
    assert check_prose("x" * (MIN_CHARS - 1)).is_prose  # small files are never refused


@pytest.mark.slow
def test_hostile_folder_refused_small_files_first(embedder: Any, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    root = hostile_folder(tmp_path / "docs")
    (root / "book.txt").write_text(prose(12_000))  # legitimate, over a budget of 20 chunks
    settings = make_settings(tmp_path / "state", max_chunks_per_file=20)
    recorder = Recorder()
    counting = Counting(embedder)
    report = Ingestor(settings, counting, reporter=recorder).run([root])
    by = {o.source: o for o in report.outcomes}

    small = ["manual.pdf", "guide-0.md", "guide-1.md", "guide-2.md"]
    for name in small:
        assert by[name].status == "ingested" and by[name].chunks_added >= 1, by[name]
    sizes = {name: (root / name).stat().st_size for name in recorder.started}
    assert recorder.started == sorted(recorder.started, key=lambda n: sizes[n])
    assert recorder.started.index("no-separators.txt") == len(recorder.started) - 1
    for name in ("no-separators.txt", "blob.txt", "repeated.txt", "data.md"):
        assert by[name].status == "skipped", by[name]
        assert by[name].reason.startswith("not prose: "), by[name]
        assert "RAG_REFUSE_NON_PROSE=false" in by[name].reason
        assert by[name].chunks_added == 0
    book = by["book.txt"]
    assert book.status == "ingested" and book.chunks_added == 20 and book.cut == "budget 20"
    assert any("only its first 20 chunks are indexed (about " in w
               and "RAG_MAX_CHUNKS_PER_FILE=20" in w for w in book.warnings), book.warnings
    assert counting.embedded == report.chunks_total == report.chunks_added

    store = Store.open(settings)
    assert store is not None
    sources = {m["source"] for _, metas in store.all_chunks(("metadatas",)) for m in metas}
    assert sources == {*small, "book.txt"}
    records = {r.source: r for r in store.file_records().values()}
    assert records["no-separators.txt"].cut == "not prose"
    assert records["no-separators.txt"].chunks == 0 and records["book.txt"].cut == "budget 20"

    print_summary(report)
    out = capsys.readouterr().out
    assert "Files indexed in part" in out and "book.txt" in out
    assert "no-separators.txt" in out and "not prose" in out

    # Nothing changed: nothing is parsed or embedded again, the cut files included.
    counting.embedded = 0
    again = Ingestor(settings, counting).run([root])
    assert again.counts()["unchanged"] == len(small) + 5 and counting.embedded == 0

    # The budget raised: the cut file is read again and only its new chunks are embedded.
    wider = make_settings(tmp_path / "state", max_chunks_per_file=0)
    third = Ingestor(wider, counting).run([root])
    book = {o.source: o for o in third.outcomes}["book.txt"]
    assert book.status == "updated" and not book.cut and book.chunks_removed == 0
    assert counting.embedded == book.chunks_added > 0
    assert third.counts()["unchanged"] == len(small) + 4  # the refused ones stay refused


@pytest.mark.slow
def test_indexed_file_replaced_by_nonsense_leaves_the_index(embedder: Any,
                                                            tmp_path: Path) -> None:
    root = tmp_path / "docs"
    root.mkdir()
    notes = root / "notes.txt"
    notes.write_text("Warranty lasts 24 months from the date of purchase.\n")
    settings = make_settings(tmp_path / "state")
    Ingestor(settings, embedder).run([root])

    notes.write_text("lorem " * 100_000)  # overwritten by a runaway script
    report: SyncReport = Ingestor(settings, embedder).run([root])
    outcome = report.outcomes[0]
    assert outcome.status == "skipped" and outcome.chunks_removed == 1, outcome
    store = Store.open(settings)
    assert store is not None and len(store.load_lexical()) == 0  # BM25 forgot it too
    assert "compresses" in outcome.reason
    assert report.chunks_total == 0

    # Refusal off: the same file is read again (not taken as unchanged) and bounded instead.
    allowed = make_settings(tmp_path / "state", refuse_non_prose=False, max_chunks_per_file=5)
    after = Ingestor(allowed, embedder).run([root]).outcomes[0]
    assert after.status == "updated" and after.chunks_added == 5 and after.cut == "budget 5"


@pytest.mark.slow
def test_split_with_a_limit_is_the_prefix_of_the_whole(embedder: Any, tmp_path: Path) -> None:
    """The budget keeps the file's first chunks, with the ids a full split gives them (so a
    raised budget embeds only the chunks after them), without splitting the rest."""
    from ingest.loaders import load_file

    settings = make_settings(tmp_path / "state")
    _, splitter = Ingestor(settings, embedder).fingerprint()
    for path in (REPO / "README.md", REPO / "data" / "samples" / "ak200-user-manual.pdf"):
        doc = load_file(path)
        whole = splitter.split(doc, path.name, "key")
        assert len(whole) > 8
        for limit in (1, 5, 8):
            assert splitter.split(doc, path.name, "key", limit=limit) == whole[:limit]
        assert splitter.split(doc, path.name, "key", limit=len(whole) + 1) == whole


@pytest.mark.slow
def test_a_table_of_figures_is_bounded_not_refused(embedder: Any, tmp_path: Path) -> None:
    """Prices under a header row are data a question can find (BM25 finds a figure): a CSV
    of figures is not refused for having few words, but the budget bounds it."""
    rnd = random.Random(4)
    root = tmp_path / "docs"
    root.mkdir()
    rows = [f"2020-01-{i % 28 + 1:02d},{rnd.random() * 100:.2f},{rnd.randint(1, 10**6)}"
            for i in range(4_000)]
    (root / "prices.csv").write_text("date,close,volume\n" + "\n".join(rows) + "\n")
    (root / "dump.txt").write_text(" ".join(str(rnd.randint(0, 99_999)) for _ in range(20_000)))
    settings = make_settings(tmp_path / "state", max_chunks_per_file=3)
    report = Ingestor(settings, embedder).run([root])
    by = {o.source: o for o in report.outcomes}
    assert by["prices.csv"].status == "ingested" and by["prices.csv"].cut == "budget 3"
    assert by["dump.txt"].status == "skipped" and "hold letters" in by["dump.txt"].reason

    # A new file refused in a later run changes no chunk: the BM25 index is not rebuilt.
    store = Store.open(settings)
    assert store is not None
    built = store.lexical_dir.stat().st_mtime_ns
    (root / "more.txt").write_text("lorem " * 20_000)
    later = Ingestor(settings, embedder).run([root])
    assert {o.source: o.status for o in later.outcomes}["more.txt"] == "skipped"
    assert not store.lexical_is_dirty() and store.lexical_dir.stat().st_mtime_ns == built
