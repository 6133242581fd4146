"""kill -9 a real `python -m ingest` at several points; the next run must give a clean run's state.

Kill points are taken from the run's own progress lines (after the k-th file is written, plus a
delay), so they land in parsing, embedding, upserting and deleting across the runs.

After each clean rerun, a new process reopens the embedded store (fewer chunks than Chroma's HNSW
`sync_threshold`, so the vector index was never synced to disk and is rebuilt from the log) and a
dense `Store.query()` by each new chunk's own stored vector must return that chunk first
(chroma#6975: vectors lost or stale after a reopen below the threshold).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rag_app.index.store import Store
from tests.conftest import REPO, make_settings
from tests.pdfgen import make_pdf

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

WORDS = ("kettle filter warranty descale boil lid base cable switch light water litre "
         "minute month receipt store repair service manual safety steam handle").split()


def _text(seed: int, paragraphs: int) -> str:
    out = []
    for p in range(paragraphs):
        words = [WORDS[(seed * 7 + p * 13 + i * i) % len(WORDS)] for i in range(90)]
        out.append(f"Section {seed}.{p}: " + " ".join(words) + ".")
    return "\n\n".join(out)


def make_folder(root: Path) -> None:
    root.mkdir(parents=True)
    for i in range(8):
        (root / f"note-{i}.md").write_text(f"# Note {i}\n\n{_text(i, 6)}\n")
    for i in range(3):
        make_pdf(root / f"manual-{i}.pdf", [_text(100 + i * 10 + p, 3) for p in range(4)])


def modify_folder(root: Path) -> None:
    (root / "note-1.md").write_text("# Note 1\n\nRewritten entirely.\n")
    (root / "note-5.md").unlink()
    (root / "manual-2.pdf").unlink()
    (root / "note-6.md").write_text((root / "note-6.md").read_text() + "\n\nOne more line.\n")
    (root / "extra.txt").write_text(_text(55, 5))


def ingest_cmd(store: Path, folder: Path) -> list[str]:
    return [sys.executable, "-m", "ingest", str(folder), "--store", str(store)]


def run_to_end(store: Path, folder: Path) -> None:
    proc = subprocess.run(ingest_cmd(store, folder), cwd=REPO, capture_output=True, text=True,
                          env=_env(), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAG_", "CHROMA_"))}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def kill_after(store: Path, folder: Path, files_done: int, delay: float) -> bool:
    """Start an ingest, SIGKILL it `delay` s after its `files_done`-th progress line.
    Returns whether it was still running when killed."""
    proc = subprocess.Popen(ingest_cmd(store, folder), cwd=REPO, stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True, env=_env())
    assert proc.stderr is not None
    seen = 0
    for line in proc.stderr:
        seen += line.startswith("[")
        if seen >= files_done and (files_done or line.startswith("processing")):
            break
    time.sleep(delay)
    alive = proc.poll() is None
    if alive:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    return alive


def snapshot(store: Path) -> tuple[set[tuple[str, str]], dict[str, str], int, str]:
    settings = make_settings(store, collection="documents")
    opened = Store.open(settings)
    assert opened is not None
    chunks = {(i, m["content_hash"]) for ids, metas in opened.all_chunks(("metadatas",))
              for i, m in zip(ids, metas, strict=True)}
    files = {r.source: r.sha256 for r in opened.file_records().values() if r.state == "done"}
    pending = [r.source for r in opened.file_records().values() if r.state != "done"]
    assert not pending, pending
    assert not opened.lexical_is_dirty()
    lexical = opened.load_lexical()
    assert len(lexical) == opened.count()
    return chunks, files, opened.count(), lexical.stamp


# Run in a fresh process, so that the store is really reopened (Chroma caches clients by path).
_OWN_VECTORS = """
import json, sys
from pathlib import Path
from rag_app.index.store import Store
from tests.conftest import make_settings

store = Store.open(make_settings(Path(sys.argv[1]), collection="documents"))
ids = json.load(sys.stdin)
threshold = store.chunks.configuration["hnsw"]["sync_threshold"]
vectors = store.get_chunks(ids, vectors=True)
misses = {}
for cid in ids:
    if cid not in vectors:
        misses[cid] = "not stored"
        continue
    hits = store.query(vectors[cid].vector, k=5)
    ranked = [i for i, _, _, _ in hits]
    sims = [s for _, s, _, _ in hits]
    # first, or tied with the first (an identical passage elsewhere has the same vector)
    if cid not in ranked or sims[0] - sims[ranked.index(cid)] > 1e-5:
        misses[cid] = [(i, round(s, 4)) for i, s, _, _ in hits[:3]]
print(json.dumps({"count": store.count(), "threshold": threshold, "found": len(vectors),
                  "misses": misses}))
"""


def assert_found_by_own_vectors(store: Path, ids: set[str]) -> None:
    """A reopened store finds each of these chunks first by its own stored vector."""
    proc = subprocess.run([sys.executable, "-c", _OWN_VECTORS, str(store)], cwd=REPO,
                          input=json.dumps(sorted(ids)), capture_output=True, text=True,
                          env=_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout)
    assert got["count"] < got["threshold"], "the store must stay below Chroma's sync_threshold"
    assert got["found"] == len(ids), "every chunk id must be stored, with its vector"
    assert not got["misses"], got["misses"]


def test_kill_9_at_many_points_then_rerun_equals_clean_run(tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    make_folder(folder)
    reference = tmp_path / "reference"
    run_to_end(reference, folder)
    clean_first = snapshot(reference)
    assert clean_first[2] == len(clean_first[0]) > 20

    # first ingest killed at several points, each time resumed from the killed state
    killed_alive = 0
    store = tmp_path / "store"
    for files_done, delay in ((0, 0.5), (2, 0.0), (4, 0.3), (7, 0.05), (9, 0.2)):
        killed_alive += kill_after(store, folder, files_done, delay)
    run_to_end(store, folder)
    assert snapshot(store) == clean_first
    assert killed_alive >= 3, "most kills must land while the run was still working"
    first_ids = {cid for cid, _ in clean_first[0]}
    assert_found_by_own_vectors(store, first_ids)  # every chunk is new here

    # a sync with updates and deletions, killed at several points
    modify_folder(folder)
    reference = tmp_path / "reference-after-changes"  # a new path: Chroma caches clients by path
    run_to_end(reference, folder)
    clean_second = snapshot(reference)
    for files_done, delay in ((0, 1.0), (1, 0.0), (2, 0.3)):
        kill_after(store, folder, files_done, delay)
    run_to_end(store, folder)
    assert snapshot(store) == clean_second
    new_ids = {cid for cid, _ in clean_second[0]} - first_ids
    assert new_ids, "the changes must add chunks"
    assert_found_by_own_vectors(store, new_ids)
