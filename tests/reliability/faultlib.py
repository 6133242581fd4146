"""Helpers for killing a real `python -m ingest` and checking what the next run leaves behind.

- `IngestRunner` starts `sys.executable -m ingest FOLDER --quiet` for one store (embedded, or a
  `chroma run` server) with its settings in RAG_*/CHROMA_* variables, each run in its own
  process group, and kills it with SIGKILL after a delay or when the BM25 save begins.
- Where a kill landed: a `sitecustomize.py` (on the subprocess's PYTHONPATH only) starts a
  daemon thread in each Python process of the run (the ingest and its parse worker) that
  writes the main thread's stack to a file every ~4 ms (when it changed). The runner reads
  the latest sample at the kill (no signal is sent: a faulthandler dump on SIGUSR1 crashed a
  run now and then), and `where_from_stack` names the step the main thread was in.
- `inspect_store` reopens the store in a fresh process and reads back everything the
  comparison needs: chunk ids and content hashes, file records, the BM25 index, and which
  chunks a dense query by their own stored vector does not find first.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from tests.conftest import REPO

SAMPLE_BYTES = 16384
SITECUSTOMIZE = '''\
import os
_dir = os.environ.get("KILLTEST_STACK_DIR")
if _dir:
    import sys, threading, time

    def _sample_main_thread(path=os.path.join(_dir, f"{os.getpid()}.txt"),
                            main=threading.main_thread().ident):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        last, n = None, 0
        while True:
            frame = sys._current_frames().get(main)
            lines = []
            while frame is not None and len(lines) < 80:  # the innermost 80 frames
                lines.append(f"{frame.f_code.co_filename}\\t{frame.f_code.co_name}")
                frame = frame.f_back
            text = "\\n".join(lines)[:15000] or "<no frame>"
            if text != last:
                n += 1
                data = f"{n}\\n{text}\\n<end {n}>\\n".encode()
                os.pwrite(fd, data + b"\\0" * (16384 - len(data)), 0)  # SAMPLE_BYTES
                last = text
            time.sleep(0.004)

    threading.Thread(target=_sample_main_thread, name="killtest-sampler", daemon=True).start()
'''


def _base_env() -> dict[str, str]:
    """The caller's environment without the developer's RAG_*/CHROMA_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAG_", "CHROMA_"))}
    env.pop("PYTHONPATH", None)
    env["HF_HUB_OFFLINE"] = "1"
    env["TRANSFORMERS_OFFLINE"] = "1"
    env["ANONYMIZED_TELEMETRY"] = "False"
    return env


@dataclass
class StoreTarget:
    """One logical collection: its state dir, name and (for a server) host and port."""

    state_dir: Path
    collection: str
    host: str | None = None
    port: int | None = None

    def env(self) -> dict[str, str]:
        env = {"RAG_STATE_DIR": str(self.state_dir), "RAG_COLLECTION": self.collection}
        if self.host:
            env.update(CHROMA_HOST=self.host, CHROMA_PORT=str(self.port))
        return env

    @property
    def lexical_root(self) -> Path:
        where = f"{self.host}_{self.port}" if self.host else "local"
        return self.state_dir / "lexical" / where


@dataclass
class RunResult:
    pid: int
    returncode: int | None
    seconds: float  # from start to exit, or to the kill
    alive_at_kill: bool = False
    where: str = ""  # the step the main thread was in (from its stack), or what the files say
    leftovers: list[str] = field(default_factory=list)  # its processes alive 10 s after it
    stderr: str = ""
    anchor: float | None = None  # anchored kills: when the run was first seen at work
    dirty_on: float | None = None  # measured runs: when the DIRTY marker appeared
    dirty_off: float | None = None  # … and when it was removed (BM25 index saved)


class IngestRunner:
    """Runs `python -m ingest FOLDER --quiet` against one store target."""

    def __init__(self, folder: Path, work: Path) -> None:
        self.folder = folder
        self.work = work
        self.stack_dir = work / "stacks"
        self.stack_dir.mkdir(parents=True, exist_ok=True)
        site = work / "site"
        site.mkdir(exist_ok=True)
        (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
        self.site = site
        self._runs = 0
        self.lingering: list[psutil.Process] = []  # processes of a run alive after it (kill)

    def _start(self, target: StoreTarget) -> tuple[subprocess.Popen[bytes], float, Path]:
        self._runs += 1
        env = {**_base_env(), **target.env(), "PYTHONPATH": str(self.site),
               "KILLTEST_STACK_DIR": str(self.stack_dir)}
        err = self.work / f"run-{self._runs}.stderr"
        with err.open("wb") as fh:
            proc = subprocess.Popen([sys.executable, "-m", "ingest", str(self.folder), "--quiet"],
                                    cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=fh,
                                    start_new_session=True)
        return proc, time.monotonic(), err

    def run_to_end(self, target: StoreTarget, *, measure: bool = False,
                   timeout: float = 300) -> RunResult:
        """A run left alone until it exits. With `measure`: when its stack samples first found
        it at work (`anchor`, see WORK), and when the BM25 DIRTY marker appeared (its first
        change to the store) and disappeared (the BM25 index saved)."""
        proc, t0, err = self._start(target)
        on = off = anchor = None
        while proc.poll() is None:
            now = time.monotonic() - t0
            if now > timeout:
                proc.kill()
                proc.wait()
                self._leftovers(proc.pid, wait=0)
                raise AssertionError(f"ingest did not finish in {timeout} s")
            if measure:
                dirty = any((d / "DIRTY").exists() for d in _subdirs(target.lexical_root))
                if dirty and on is None:
                    on = now
                if not dirty and on is not None and off is None:
                    off = now
                if anchor is None and self._where(proc.pid) in WORK:
                    anchor = now
            time.sleep(0.005 if measure else 0.05)
        seconds = time.monotonic() - t0
        return RunResult(proc.pid, proc.returncode, seconds, stderr=_tail(err),
                         leftovers=self._leftovers(proc.pid), anchor=anchor, dirty_on=on,
                         dirty_off=off)

    def kill_after(self, target: StoreTarget, delay: float, *, anchored: bool = False
                   ) -> RunResult:
        """SIGKILL the run `delay` s after it started, or with `anchored` `delay` s after it
        reached its work (the first stack sample in its file loop: see WORK), so that a
        machine busier than during the measured run does not push the kill past the end."""
        proc, t0, err = self._start(target)
        anchor = t0
        if anchored:
            while proc.poll() is None:
                if self._where(proc.pid) in WORK:
                    anchor = time.monotonic()
                    break
                time.sleep(0.005)
        try:
            proc.wait(timeout=max(0.0, anchor + delay - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        where = self._where(proc.pid) if proc.poll() is None else ""
        result = self._kill(proc, t0, err, where)
        result.anchor = anchor - t0 if anchored else None
        return result

    def kill_in_step(self, target: StoreTarget, steps: set[str], nth: int, *,
                     parser: bool = False, start_after: float = 0.0, timeout: float = 300
                     ) -> RunResult:
        """SIGKILL the run as soon as its stack samples (read every ~2 ms) find it entering
        one of `steps` for the `nth` time (from `start_after` s on): a random instant inside a
        step too short for a random delay to hit reliably. With `parser`, the samples are of
        the parse worker process (see `where_in_parser`), and the run (not the worker) is
        killed."""
        proc, t0, err = self._start(target)
        try:
            proc.wait(timeout=start_after)
        except subprocess.TimeoutExpired:
            pass
        where, previous, entered, child = "", "", 0, None
        while proc.poll() is None and time.monotonic() - t0 < timeout:
            if parser:
                if child is None or not psutil.pid_exists(child):
                    child = _parser_of(proc.pid)
                where = self._where(child, parser=True) if child else "parser: not started"
            else:
                where = self._where(proc.pid)
            if where in steps and where != previous:
                entered += 1
                if entered >= nth:
                    break
            previous = where
            time.sleep(0.002)
        return self._kill(proc, t0, err, where)

    def kill_at_bm25_save(self, target: StoreTarget, timeout: float = 300) -> RunResult:
        """SIGKILL the run as soon as its BM25 save begins (a new `.tmp-` version folder or
        a new CURRENT pointer appears; polled every ms). Where it landed is read from the
        files it left."""
        before = _lexical_files(target.lexical_root)
        proc, t0, err = self._start(target)
        while proc.poll() is None and time.monotonic() - t0 < timeout:
            if bm25_state(target.lexical_root, before) != BM25_NOT_STARTED:
                break
            time.sleep(0.001)
        result = self._kill(proc, t0, err, "")
        if result.alive_at_kill:
            result.where = bm25_state(target.lexical_root, before)
        return result

    def _where(self, pid: int, *, parser: bool = False) -> str:
        """The step the process's main thread is in, from its latest stack sample."""
        frames = read_sample(self.stack_dir / f"{pid}.txt")
        if frames is None:
            return "interpreter start"  # no sample yet
        return where_in_parser(frames) if parser else where_from_stack(frames)

    def _kill(self, proc: subprocess.Popen[bytes], t0: float, err: Path, where: str
              ) -> RunResult:
        alive = proc.poll() is None
        if alive:
            proc.send_signal(signal.SIGKILL)
        seconds = time.monotonic() - t0
        proc.wait()
        return RunResult(proc.pid, proc.returncode, seconds, alive_at_kill=alive,
                         where=where if alive else "", stderr=_tail(err),
                         leftovers=self._leftovers(proc.pid))

    def _mine(self, procs: list[psutil.Process]) -> list[psutil.Process]:
        """Those started by this runner (their environment names its stack folder)."""
        out = []
        for p in procs:
            try:
                if p.environ().get("KILLTEST_STACK_DIR") == str(self.stack_dir):
                    out.append(p)
            except psutil.Error:
                continue
        return out

    def _leftovers(self, pgid: int, wait: float = 10.0) -> list[str]:
        """Processes of the run's group (its parse worker, a resource tracker) still alive
        `wait` s after the run itself ended; kept for `clean_up`."""
        deadline = time.monotonic() + wait
        while (alive := self._mine(_group(pgid))) and time.monotonic() < deadline:
            time.sleep(0.1)
        self.lingering.extend(alive)
        out = []
        for p in alive:
            try:
                out.append(f"{p.pid}: {' '.join(p.cmdline())[:120]}")
            except psutil.Error:
                continue
        return out

    def clean_up(self) -> None:
        """SIGKILL the processes of its runs that outlived them (psutil checks that each is
        still the same process, not a new one under a reused pid)."""
        for p in self.lingering:
            try:
                if p.is_running():
                    p.kill()
            except psutil.Error:
                pass


def _tail(path: Path, n: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


def _subdirs(path: Path) -> list[Path]:
    try:
        return [p for p in path.iterdir() if p.is_dir()]
    except OSError:
        return []


def _lexical_files(root: Path) -> dict[str, tuple[str, set[str]]]:
    """Each collection's BM25 folder: its CURRENT pointer and its `.tmp-` entries."""
    out = {}
    for d in _subdirs(root):
        try:
            names = set(os.listdir(d))
            current = (d / "CURRENT").read_text() if "CURRENT" in names else ""
        except OSError:
            continue
        out[d.name] = (current, {n for n in names if n.startswith(".tmp-")})
    return out


BM25_NOT_STARTED = "BM25 save: not started yet"


def bm25_state(root: Path, before: dict[str, tuple[str, set[str]]]) -> str:
    """How far the BM25 save has got since `before` (see `_lexical_files`)."""
    for name, (current, temps) in _lexical_files(root).items():
        old_current, old_temps = before.get(name, ("", set()))
        if temps - old_temps:
            return "BM25 save: version half-written (.tmp- folder)"
        if current != old_current:
            if (root / name / "DIRTY").exists():
                return "BM25 save: new version in place, DIRTY not yet removed"
            return "BM25 save: done, DIRTY removed (before exit)"
    return BM25_NOT_STARTED


def _parser_of(pid: int) -> int | None:
    """The parse worker process of run `pid` (a multiprocessing spawn child), if started."""
    try:
        for child in psutil.Process(pid).children():
            if "spawn_main" in " ".join(child.cmdline()):
                return int(child.pid)
    except psutil.Error:
        pass
    return None


def _group(pgid: int) -> list[psutil.Process]:
    """The live (not zombie) processes of process group `pgid`: a run started with
    `start_new_session`, so its pid is its group; while a member lives, no new process gets
    that pid or group."""
    out = []
    for p in psutil.process_iter(["status"]):
        try:
            if os.getpgid(p.pid) == pgid and p.info["status"] != psutil.STATUS_ZOMBIE:
                out.append(p)
        except (ProcessLookupError, psutil.Error, OSError):
            continue
    return out


# -- where the main thread was -------------------------------------------------------------------
# (function, file part) -> step; the innermost matching frame of the main thread decides
_STEPS: list[tuple[str, str, str]] = [
    ("rebuild_lexical", "rag_app/index/store.py", "BM25 rebuild"),
    ("_remove_deleted", "ingest/sync.py", "removing deleted files"),
    ("publish_as_current", "rag_app/index/store.py", "creating the collection"),
    ("create", "rag_app/index/store.py", "creating the collection"),
    ("upsert_chunks", "rag_app/index/store.py", "writing chunks"),
    ("embed_documents", "rag_app/embedders/base.py", "embedding"),
    ("embed_documents", "rag_app/embedders/auto.py", "embedding"),
    ("_embed_and_upsert", "ingest/sync.py", "embedding"),
    ("delete_chunks", "rag_app/index/store.py", "deleting old chunks"),
    ("_undo_write", "ingest/sync.py", "deleting old chunks"),
    ("put_file_records", "rag_app/index/store.py", "writing a file record"),
    ("mark_lexical_dirty", "rag_app/index/store.py", "marking BM25 dirty"),
    ("chunk_ids_for", "rag_app/index/store.py", "reading chunk ids"),
    ("split", "ingest/split.py", "splitting"),
    ("result", "ingest/worker.py", "waiting for the parser"),
    ("_submit", "ingest/sync.py", "starting the parser"),
    ("close", "ingest/worker.py", "closing the parser"),
    ("_splitter_for", "ingest/sync.py", "loading the model"),
    ("fingerprint", "ingest/sync.py", "loading the model"),
    ("make_embedder", "rag_app/embedders/auto.py", "loading the model"),
    ("warm_up", "rag_app/embedders/auto.py", "loading the model"),
    ("warm_up", "rag_app/embedders/sentence_transformers.py", "loading the model"),
    ("inner", "rag_app/embedders/auto.py", "loading the model"),
    ("choose_embedder", "rag_app/embedders/auto.py", "loading the model"),
    ("sha256_file", "rag_app/hashing.py", "hashing files"),
    ("discover", "ingest/discover.py", "walking the folder"),
    ("writer_lock", "rag_app/index/store.py", "taking/releasing the writer lock"),
    ("_server_lease", "rag_app/index/store.py", "taking/releasing the writer lock"),
    ("file_records", "rag_app/index/store.py", "reading the index"),
    ("open", "rag_app/index/store.py", "reading the index"),
    ("lexical_is_dirty", "rag_app/index/store.py", "reading the index"),
    ("count", "rag_app/index/store.py", "reading the index"),
    ("print_summary", "ingest/report.py", "printing the summary"),
    ("_process", "ingest/sync.py", "hashing files"),
    ("run", "ingest/sync.py", "sync (other)"),
    ("sync_paths", "ingest/entry.py", "sync (other)"),
    ("main", "ingest/cli.py", "starting up (cli)"),
]

# the main thread's steps from the first file after the model load on: a run is "at work"
WORK = {"waiting for the parser", "splitting", "embedding", "writing chunks", "reading chunk ids",
        "deleting old chunks", "removing deleted files", "BM25 rebuild"}
COARSE = {
    "parser: parsing a file": "parsing",
    "interpreter start": "startup", "importing modules": "startup",
    "starting up (cli)": "startup",
    "taking/releasing the writer lock": "startup", "reading the index": "startup",
    "walking the folder": "startup", "hashing files": "startup",
    "loading the model": "startup (model load, 1st parse)",
    "creating the collection": "writing", "starting the parser": "parsing",
    "waiting for the parser": "parsing", "splitting": "parsing",
    "embedding": "embedding",
    "writing chunks": "writing", "deleting old chunks": "writing",
    "writing a file record": "writing", "marking BM25 dirty": "writing",
    "reading chunk ids": "writing", "removing deleted files": "writing",
    "BM25 rebuild": "BM25 rebuild",
    "closing the parser": "finishing", "printing the summary": "finishing",
    "interpreter exit": "finishing", "sync (other)": "other",
}


def coarse(where: str) -> str:
    if where.startswith("BM25 save"):
        return "BM25 rebuild" if "done" not in where else "finishing"
    return COARSE.get(where, "other")


def read_sample(path: Path) -> list[tuple[str, str]] | None:
    """The latest stack sample of a process's main thread: (file, function), innermost first;
    None before the first one; [] once the main thread has no Python frame left."""
    for _ in range(5):  # a sample being rewritten while read: read it again
        try:
            with path.open("rb") as fh:
                raw = fh.read(SAMPLE_BYTES).split(b"\0", 1)[0].decode(errors="replace")
        except FileNotFoundError:
            return None
        lines = raw.splitlines()
        if len(lines) >= 2 and lines[-1] == f"<end {lines[0]}>":
            body = lines[1:-1]
            if body == ["<no frame>"]:
                return []
            return [tuple(line.split("\t", 1)) for line in body if "\t" in line]  # type: ignore[misc]
        time.sleep(0.001)
    return None


def where_from_stack(frames: list[tuple[str, str]]) -> str:
    """The step the main thread was in (see _STEPS), from its frames, innermost first."""
    if not frames:
        return "interpreter exit"  # no Python frame left on the main thread
    project = [(f, fn) for f, fn in frames if "/rag_app/" in f or "/ingest/" in f]
    if not project:
        if any("importlib" in f for f, _ in frames):
            return "importing modules"
        if any(f.endswith("threading.py") and fn == "_shutdown" for f, fn in frames) or \
                not any(fn == "_run_module_as_main" for _, fn in frames):
            return "interpreter exit" if not any(f.endswith("site.py") for f, _ in frames) \
                else "interpreter start"
        return f"other: {frames[0][1]}"
    if any(fn == "rebuild_lexical" for _, fn in project):
        return "BM25 rebuild"  # all of it: reading the chunks, importing bm25s, the save
    for file, func in project:
        for step_func, step_file, step in _STEPS:
            if func == step_func and file.endswith(step_file):
                inner = frames[: frames.index((file, func))]
                if step in ("sync (other)", "starting up (cli)") and \
                        any("importlib" in f for f, _ in inner):
                    return "importing modules"
                return step
    if project[0][0].endswith(("rag_app/embedders/base.py", "rag_app/embedders/auto.py",
                               "rag_app/embedders/sentence_transformers.py",
                               "rag_app/embedders/onnx.py", "rag_app/hardware.py")):
        return "loading the model"
    return f"other: {project[0][1]}"


def where_in_parser(frames: list[tuple[str, str]]) -> str:
    """The parse worker's state: parsing a file, idle (waiting for one), or starting."""
    if any("/ingest/loaders/" in f for f, _ in frames):
        return "parser: parsing a file"
    if any(fn == "recv" for _, fn in frames):
        return "parser: idle"
    return "parser: starting"


# -- reading a store back in a fresh process ------------------------------------------------------
_INSPECT = r'''
import hashlib, json, sys
from pathlib import Path
from rag_app.settings import Settings
from rag_app.index.store import Store, _catalog, _read_lease

s = Settings(_env_file=None)
store = Store.open(s)
if store is None:
    print(json.dumps({"exists": False}))
    sys.exit()
chunks = {}
for ids, metas in store.all_chunks(("metadatas",)):
    for cid, meta in zip(ids, metas, strict=True):
        chunks[cid] = str((meta or {}).get("content_hash", ""))
records = {k: {"source": r.source, "sha256": r.sha256, "chunks": r.chunks, "state": r.state,
               "error": r.error, "size": r.size, "kind": r.kind, "pages": r.pages}
           for k, r in store.file_records().items()}
count = store.count()
lex_dir = store.lexical_dir
dirty_marker = (lex_dir / "DIRTY").exists()
lexical_is_dirty = store.lexical_is_dirty()
index = store.load_lexical()
digest = hashlib.sha256("".join(f"{c}:{h}\n" for c, h in sorted(chunks.items())).encode())

# dense: each chunk found first (or tied first) by its own stored vector, after this reopen
threshold = store.chunks.configuration["hnsw"]["sync_threshold"]
vectors = store.get_chunks(sorted(chunks), vectors=True)
misses = {}
for cid in sorted(chunks):
    if cid not in vectors or vectors[cid].vector is None:
        misses[cid] = "not stored"
        continue
    hits = store.query(vectors[cid].vector, k=5)
    ranked = [i for i, _, _, _ in hits]
    sims = [x for _, x, _, _ in hits]
    if cid not in ranked or sims[0] - sims[ranked.index(cid)] > 1e-5:
        misses[cid] = [(i, round(x, 4)) for i, x, _, _ in hits[:3]]

client = store.client
mine = []
for col in client.list_collections():
    name = col if isinstance(col, str) else col.name
    if name in (store.chunks.name, store.files.name) or not name.startswith(s.collection + "-"):
        continue
    meta = client.get_collection(name).metadata or {}
    if meta.get("rag_logical_name") == s.collection:
        mine.append(name)
other_lexical = sorted(p.name for p in lex_dir.parent.iterdir() if p.name != store.chunks.name) \
    if lex_dir.parent.exists() else []
lexical_temps = sorted(p.name for p in lex_dir.iterdir() if p.name.startswith(".tmp-")) \
    if lex_dir.exists() else []
lease = _read_lease(_catalog(client), f"lease:{s.collection}")
print(json.dumps({
    "exists": True, "chunks": chunks, "records": records, "count": count,
    "collection": store.chunks.name,
    "lexical": {"dirty_marker": dirty_marker, "is_dirty": lexical_is_dirty, "len": len(index),
                "ids_match": sorted(index.ids) == sorted(chunks),
                "stamp_match": index.stamp == digest.hexdigest(),
                "saved_in_use": index.saved_in is not None and Path(index.saved_in) == lex_dir,
                "origin_match": index.origin == store.lexical_origin()},
    "threshold": threshold, "vectors": len(vectors), "misses": misses,
    "leftover_collections": sorted(mine), "leftover_lexical_dirs": other_lexical,
    "lexical_temps": lexical_temps,
    "lease": lease,
}))
'''


def inspect_store(target: StoreTarget, timeout: float = 300) -> dict[str, Any]:
    env = {**_base_env(), **target.env()}
    proc = subprocess.run([sys.executable, "-c", _INSPECT], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"reading the store back failed: {proc.stderr[-3000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def problems_of(snap: dict[str, Any]) -> list[str]:
    """What is wrong with a store after a run that exited 0, on its own (no reference)."""
    if not snap.get("exists"):
        return ["the collection does not exist"]
    out = []
    bad = {k: (r["state"], r["error"]) for k, r in snap["records"].items()
           if r["state"] != "done" or r["error"]}
    if bad:
        out.append(f"records not settled: {bad}")
    lex = snap["lexical"]
    if lex["dirty_marker"] or lex["is_dirty"]:
        out.append(f"BM25 index still dirty: {lex}")
    if lex["len"] != snap["count"] or not lex["ids_match"] or not lex["stamp_match"]:
        out.append(f"BM25 index differs from the store: len {lex['len']} vs count "
                   f"{snap['count']}, {lex}")
    if not lex["saved_in_use"] or not lex["origin_match"]:
        out.append(f"the saved BM25 index is not the one readers use: {lex}")
    if snap["count"] != len(snap["chunks"]):
        out.append(f"count() {snap['count']} but {len(snap['chunks'])} chunks listed")
    if snap["vectors"] != len(snap["chunks"]):
        out.append(f"{len(snap['chunks']) - snap['vectors']} chunks without a stored vector")
    if snap["misses"]:
        out.append(f"dense query by own vector misses {len(snap['misses'])} chunk(s) after a "
                   f"reopen: {dict(list(snap['misses'].items())[:3])}")
    if snap["lease"] is not None:
        out.append(f"the writer lease was not released: {snap['lease']}")
    return out


def differences(snap: dict[str, Any], ref: dict[str, Any]) -> list[str]:
    """How a repaired store differs from the clean reference (chunks, records)."""
    out = []
    if snap["chunks"] != ref["chunks"]:
        extra = sorted(set(snap["chunks"]) - set(ref["chunks"]))
        missing = sorted(set(ref["chunks"]) - set(snap["chunks"]))
        changed = sorted(c for c in set(snap["chunks"]) & set(ref["chunks"])
                         if snap["chunks"][c] != ref["chunks"][c])
        out.append(f"chunks differ: {len(extra)} extra {extra[:3]}, {len(missing)} missing "
                   f"{missing[:3]}, {len(changed)} with another content hash")
    if snap["records"] != ref["records"]:
        keys = set(snap["records"]) | set(ref["records"])
        diff = {k: (snap["records"].get(k), ref["records"].get(k)) for k in sorted(keys)
                if snap["records"].get(k) != ref["records"].get(k)}
        out.append(f"file records differ (repaired, clean): {dict(list(diff.items())[:3])}")
    return out


def _lease_api(target: StoreTarget) -> tuple[Any, Any, str]:
    from rag_app.index import store as store_module
    from tests.conftest import make_settings

    settings = make_settings(target.state_dir, collection=target.collection,
                             chroma_host=target.host, chroma_port=target.port)
    catalog = store_module._catalog(store_module.make_client(settings))
    return store_module, catalog, f"lease:{target.collection}"


def lease_of(target: StoreTarget) -> dict[str, Any] | None:
    """The writer lease row of a server-mode collection, if any."""
    store_module, catalog, lease_id = _lease_api(target)
    row = store_module._read_lease(catalog, lease_id)
    return dict(row) if row is not None else None


def expire_lease(target: StoreTarget, row: dict[str, Any]) -> None:
    """A killed server-mode writer leaves its lease row, which blocks writers for up to
    LEASE_TTL_S (60 s). Move its expiry into the past, as if that time had passed, so that
    the next run takes it over (store.writer_lock's takeover path)."""
    store_module, catalog, lease_id = _lease_api(target)
    holder = {k: v for k, v in row.items() if k != "expires"}
    store_module._write_lease(catalog, lease_id, holder, -1.0)
