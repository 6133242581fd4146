"""Issue 14's proof: SIGKILL a real `python -m ingest` at random points; every re-run must
leave exactly what a clean run gives.

For each store (the embedded one and a `chroma run` server), seeded by KILL_TEST_SEED (printed;
a new one each run unless set):
- a folder of 12 small generated files (Markdown, text, two PDFs): state A; and state B, with
  three files edited, one written again with the same bytes, two added and two deleted;
- clean runs first, measured: a first ingest of A (the reference for A, and the timeline the
  kill points are drawn from), a first ingest of B (the reference for B) and a sync A -> B
  (the timeline of a sync; it must equal the first ingest of B);
- (a) first ingest: 4 fresh stores, each killed once or twice (the second kill hits the repair
  run), then run to the end; (b) sync: one store synced A -> B -> A -> B, each sync killed once
  or twice, then run to the end. Six kills per phase, in random order:
  - three random delays, one from each third of the measured run: the start-up (imports, lock,
    model load, the first parse), the first and the second half of its work (parsing,
    embedding, writing, removals, up to the BM25 save and a quarter of the exit after it).
    The two later ones count from when the run is first seen at work (its first stack sample
    in the file loop), so a machine busier than during the measured run does not push them
    past its end;
  - one at a random instant inside a write to the store (the k-th write its stack samples
    see, k random), one while the parse worker is parsing a file (the first it is seen
    parsing after a random delay), and
    one as the BM25 index is being saved (a new `.tmp-` version folder or CURRENT pointer;
    the save takes ~10 ms, polled every ms): these steps are too short for a random delay to
    hit reliably.
- after each completed re-run (exit 0) a fresh process reopens the store, which must equal the
  clean reference: chunk ids and content hashes; file records (key, source, sha256, chunks,
  size, kind, pages; state "done", no error); the BM25 index (no DIRTY left, `len ==
  count()`, the same ids and stamp, the saved index is the one readers use); and a dense
  query by each chunk's own stored vector finds that chunk first (chroma#6975).

In server mode a killed run leaves its writer lease row, which blocks the next writer for
LEASE_TTL_S (60 s): the first time, the test checks that a run started at once is refused (exit
3, naming the dead holder); then, after each kill, it moves the row's expiry into the past, as
if the minute had passed, and the re-run takes the lease over (writer_lock's takeover path).

Where each kill landed comes from the latest sample of the run's main-thread stack (taken every
~4 ms by a thread a `sitecustomize.py` starts in the subprocess only; see
tests/reliability/faultlib.py). Orphan processes, collections and BM25 folders a kill leaves
are reported in the table, not asserted. Results go to the MEASUREMENTS table.
"""

from __future__ import annotations

import os
import random
import secrets
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from rag_app.settings import Settings
from tests.conftest import MEASUREMENTS
from tests.pdfgen import make_pdf
from tests.reliability.faultlib import (
    IngestRunner,
    RunResult,
    StoreTarget,
    coarse,
    differences,
    expire_lease,
    inspect_store,
    lease_of,
    problems_of,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

SEED = int(os.environ.get("KILL_TEST_SEED") or secrets.randbelow(10**6))
TRIALS = (2, 2, 1, 1)  # kills per trial (a second kill hits the repair run), in each phase
DELAYS = ("delay: start-up", "delay: work, 1st half", "delay: work, 2nd half")
WRITES = {"writing chunks", "writing a file record", "deleting old chunks",
          "removing deleted files", "marking BM25 dirty", "creating the collection"}
TRIGGERS = (*DELAYS, "in a write", "in parsing", "BM25 save")
PHASES = ("a: first ingest", "b: sync")
TABLE = "kill -9 of `python -m ingest`, then a re-run (issue 14; measured and asserted)"
DETAILS = "kill -9 of `python -m ingest`: each kill"

WORDS = ("kettle filter warranty descale boil lid base cable switch light water litre minute "
         "month receipt store repair service manual safety steam handle limescale thermostat "
         "element spout gasket fuse plug socket timer display").split()


def _text(seed: int, paragraphs: int, words: int = 80) -> str:
    out = []
    for p in range(paragraphs):
        picked = [WORDS[(seed * 7 + p * 13 + i * i + i * seed) % len(WORDS)]
                  for i in range(words)]
        out.append(f"Section {seed}.{p}: " + " ".join(picked) + ".")
    return "\n\n".join(out)


def _pdf_bytes(tmp: Path, name: str, pages: list[str]) -> bytes:
    path = make_pdf(tmp / name, pages)
    data = path.read_bytes()
    path.unlink()
    return data


def folder_states(tmp: Path) -> dict[str, dict[str, bytes]]:
    """State A (12 files) and state B (3 edited, 2 added, 2 deleted), as bytes, so that a file
    written again is byte-identical (PDFs included)."""
    a: dict[str, bytes] = {}
    for i in range(7):
        a[f"note-{i}.md"] = f"# Note {i}\n\n{_text(i, 3 + i % 3)}\n".encode()
    for i in range(3):
        a[f"memo-{i}.txt"] = _text(20 + i, 3).encode()
    for i in range(2):  # named to come last: parsed while the run embeds the notes
        a[f"p-manual-{i}.pdf"] = _pdf_bytes(tmp, f"p-manual-{i}.pdf",
                                            [_text(40 + i * 10 + p, 2) for p in range(3)])
    b = dict(a)
    b["note-1.md"] = b"# Note 1\n\nRewritten entirely: the lid gasket is replaced.\n"
    b["note-4.md"] = a["note-4.md"] + b"\n\nOne more line about the descale timer.\n"
    b["p-manual-1.pdf"] = _pdf_bytes(tmp, "p-manual-1b.pdf",
                                   [_text(50, 2), _text(99, 2), _text(52, 2)])
    del b["note-5.md"], b["memo-2.txt"]
    b["extra-0.md"] = f"# Extra\n\n{_text(70, 4)}\n".encode()
    b["extra-1.txt"] = _text(71, 3).encode()
    return {"A": a, "B": b}


def apply_state(folder: Path, state: dict[str, bytes], touch: str = "memo-0.txt") -> None:
    """Make the folder hold exactly `state`; `touch` is written again with the same bytes (a
    new mtime, the same hash: a sync must take it as unchanged)."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in folder.iterdir():
        if path.name not in state:
            path.unlink()
    for name, data in state.items():
        path = folder / name
        if name == touch or not path.exists() or path.read_bytes() != data:
            path.write_bytes(data)


@dataclass(frozen=True)
class Timeline:
    """A measured clean run: its duration, when it was first seen at work, when the DIRTY
    marker appeared (first change) and disappeared (BM25 index saved); seconds from start."""

    total: float
    work: float
    dirty_on: float
    dirty_off: float

    @classmethod
    def of(cls, run: RunResult) -> Timeline:
        work = run.anchor if run.anchor is not None else 0.5 * run.seconds
        return cls(run.seconds, work, run.dirty_on or work, run.dirty_off or run.seconds)


@dataclass
class Kill:
    store: str
    phase: str
    trial: int
    nth: int  # 1: the trial's first kill; 2: the kill of its repair run
    trigger: str  # one of TRIGGERS
    planned: float  # delays: s (from the start, or from the work anchor); steps: k-th entry
    result: RunResult
    measured: Timeline

    @property
    def fraction(self) -> float:
        return self.result.seconds / self.measured.total


@dataclass
class Outcome:
    store: str
    seed: int
    measured: dict[str, Timeline] = field(default_factory=dict)
    kills: list[Kill] = field(default_factory=list)
    repairs: dict[str, list[bool]] = field(default_factory=dict)
    lease_takeovers: int = 0
    leftovers: list[str] = field(default_factory=list)  # what no re-run removed (reported)
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def landed(self) -> list[Kill]:
        return [k for k in self.kills if k.result.alive_at_kill]


OUTCOMES: dict[str, Outcome] = {}


def _fractions(kills: list[Kill]) -> str:
    return " ".join(f"{k.fraction:.2f}" for k in sorted(kills, key=lambda k: k.fraction)) or "-"


def ended(result: RunResult) -> str:
    return f"(the run had ended, exit {result.returncode})"


def publish_tables() -> None:
    rows = ["| store | phase | clean run s (at work, 1st write, BM25 saved) | kills landed "
            "(+ run ended first) | kill time / clean run time | landed in | repairs verified |",
            "|---|---|---|---|---|---|---|"]
    details = ["| store | phase | trial.kill | trigger | killed at s | / clean run | "
               "where (main thread, or parse worker, or BM25 files) |",
               "|---|---|---|---|---|---|---|"]
    for out in OUTCOMES.values():
        for phase in PHASES:
            kills = [k for k in out.kills if k.phase == phase]
            landed = [k for k in kills if k.result.alive_at_kill]
            where = Counter(coarse(k.result.where) for k in landed)
            m = out.measured.get(phase)
            clean = f"{m.total:.1f} ({m.work:.1f}, {m.dirty_on:.1f}, {m.dirty_off:.1f})" \
                if m else "-"
            checks = out.repairs.get(phase, [])
            rows.append(
                f"| {out.store} | {phase} | {clean} | {len(landed)} (+{len(kills) - len(landed)})"
                f" | {_fractions(landed)} | {', '.join(f'{w} {n}' for w, n in where.most_common())}"
                f" | {sum(checks)}/{len(checks)} |")
            details.extend(
                f"| {out.store} | {phase[0]} | {k.trial}.{k.nth} | {k.trigger} | "
                f"{k.result.seconds:.2f} | {k.fraction:.2f} | "
                f"{k.result.where if k.result.alive_at_kill else ended(k.result)} |"
                for k in kills)
    notes = []
    for out in OUTCOMES.values():
        notes.append(f"{out.store}: {len(out.landed)} kills landed, "
                     f"{sum(map(sum, out.repairs.values()))} repairs verified, "
                     f"{out.seconds:.0f} s; seed {out.seed} (KILL_TEST_SEED={out.seed} repeats "
                     f"the kill plan); {out.lease_takeovers} dead writer lease(s) expired for "
                     f"the re-run; {len(out.failures)} failure(s)")
        notes.extend(f"  {x}" for x in out.notes)
        notes.extend(f"  left behind (not asserted): {x}" for x in out.leftovers)
        notes.extend(f"  FAILURE: {x}" for x in out.failures)
    MEASUREMENTS[TABLE] = [*rows, "", *notes]
    MEASUREMENTS[DETAILS] = details


class Trial:
    """One store kind's whole run: the references, then the kills and repairs."""

    def __init__(self, settings: Settings, tmp: Path, rng: random.Random, out: Outcome) -> None:
        self.settings = settings
        self.tmp = tmp
        self.rng = rng
        self.out = out
        self.folder = tmp / "docs"
        self.states = folder_states(tmp)
        self.runner = IngestRunner(self.folder, tmp / "runs")
        self._stores = 0
        self.seen: set[str] = set()  # leftovers already reported

    def new_store(self, label: str) -> StoreTarget:
        self._stores += 1
        s = self.settings
        return StoreTarget(self.tmp / f"state-{self._stores}-{label}",
                           f"kill-{label}-{uuid.uuid4().hex[:8]}",
                           s.chroma_host, s.chroma_port if s.chroma_host else None)

    def fail(self, message: str) -> None:
        self.out.failures.append(message)

    # -- clean runs ---------------------------------------------------------------------------
    def clean_run(self, target: StoreTarget, what: str) -> tuple[Timeline, dict[str, Any]]:
        run = self.runner.run_to_end(target, measure=True)
        assert run.returncode == 0, f"{what}: exit {run.returncode}: {run.stderr}"
        snap = inspect_store(target)
        for problem in problems_of(snap):
            self.fail(f"{what}: {problem}")
        return Timeline.of(run), snap

    # -- kills --------------------------------------------------------------------------------
    def plan(self, m: Timeline) -> list[list[tuple[str, float]]]:
        """Per trial, its kills as (trigger, delay): the six TRIGGERS in random order, but the
        BM25 save never first in a trial of two kills (its repair run has almost nothing left
        to do, so a second kill would mostly come too late)."""
        while True:
            order = list(TRIGGERS)
            self.rng.shuffle(order)
            firsts_of_two = [sum(TRIALS[:t]) for t, n in enumerate(TRIALS) if n == 2]
            if all(order[i] != "BM25 save" for i in firsts_of_two):
                break
        # the work: from the anchor to the BM25 save and a quarter of the exit after it
        work = max(m.dirty_off + 0.25 * (m.total - m.dirty_off) - m.work, 0.5)
        delays = {DELAYS[0]: self.rng.uniform(0.1 * m.work, m.work),  # from the start
                  DELAYS[1]: self.rng.uniform(0.0, work / 2),  # from the work anchor
                  DELAYS[2]: self.rng.uniform(work / 2, 0.9 * work)}
        plan, i = [], 0
        for n in TRIALS:
            plan.append([(t, delays.get(t, 0.0)) for t in order[i : i + n]])
            i += n
        return plan

    def kill(self, target: StoreTarget, phase: str, trial: int, nth: int, trigger: str,
             delay: float) -> None:
        m = self.out.measured[phase]
        if trigger == "BM25 save":
            result = self.runner.kill_at_bm25_save(target)
        elif trigger == "in a write":  # the k-th write the samples see
            delay = self.rng.randint(1, 8) if nth == 1 else 1
            result = self.runner.kill_in_step(target, WRITES, int(delay))
        elif trigger == "in parsing":  # the first file the samples see being parsed (most
            # often a PDF: a small Markdown file parses faster than a sample is taken)
            delay = self.rng.uniform(0.0, m.work) if nth == 1 else 0.0  # look from then on
            result = self.runner.kill_in_step(target, {"parser: parsing a file"}, 1,
                                              parser=True, start_after=delay)
        else:
            anchored = not trigger.startswith(DELAYS[0])
            if anchored and nth > 1:  # a repair run has less left to do than a clean run
                delay *= 0.4
            result = self.runner.kill_after(target, delay, anchored=anchored)
        self.out.kills.append(Kill(self.out.store, phase, trial, nth, trigger, delay, result, m))
        what = f"{phase} trial {trial} kill {nth}"
        if result.leftovers:
            self.out.leftovers.append(f"{what}: processes alive 10 s after the kill: "
                                      f"{result.leftovers}")
        row = lease_of(target) if target.host and result.alive_at_kill else None
        if row is not None and row.get("pid") == result.pid:
            if not self.out.notes:  # once: what a user who runs it again at once is told
                self.check_refused(target, result.pid)
            expire_lease(target, row)
            self.out.lease_takeovers += 1

    def check_refused(self, target: StoreTarget, pid: int) -> None:
        refused = self.runner.run_to_end(target)
        said = " ".join(refused.stderr.split())
        if refused.returncode != 3 or f"process {pid}" not in said or "lease expires" not in said:
            self.fail(f"a run right after the kill of {pid} was not refused with exit 3 "
                      f"naming the dead holder: exit {refused.returncode}: {said[-500:]}")
        self.out.notes.append(f"a run at once after a kill exits {refused.returncode}: "
                              f"{said[:240]}")

    def adapt(self, trigger: str, delay: float, nth: int) -> tuple[str, float]:
        """A second kill after a first one that left nothing to do (it came after the BM25
        save, or the run had ended; or only the BM25 rebuild): that repair run only starts
        up, opens the store, hashes the files (rebuilds the BM25 index) and exits (~1-2 s), so
        kill it in its start-up instead."""
        if nth == 1:
            return trigger, delay
        first = self.out.kills[-1].result
        landed = coarse(first.where) if first.alive_at_kill else "finishing"
        if landed == "finishing" or (landed == "BM25 rebuild" and trigger != "BM25 save"):
            return f"{DELAYS[0]} (nothing left)", self.rng.uniform(0.2, 1.0)
        return trigger, delay

    def repair_and_check(self, target: StoreTarget, reference: dict[str, Any], phase: str,
                         trial: int) -> None:
        what = f"{phase} trial {trial}"
        run = self.runner.run_to_end(target)
        ok = run.returncode == 0
        if not ok:
            self.fail(f"{what}: the re-run exited {run.returncode}: {run.stderr}")
        else:
            snap = inspect_store(target)
            problems = problems_of(snap) + differences(snap, reference)
            for problem in problems:
                self.fail(f"{what} ({target.state_dir}, {target.collection}): {problem}")
            ok = not problems
            self.note_new(what, "orphan physical collections (no sync drops them; a "
                          "--rebuild does)", snap["leftover_collections"])
            self.note_new(what, "orphan BM25 folders", snap["leftover_lexical_dirs"])
            self.note_new(what, "a killed BM25 save's temporary folder (by design: a later "
                          "save removes it once an hour old)", snap["lexical_temps"])
        self.out.repairs.setdefault(phase, []).append(ok)

    def note_new(self, what: str, kind: str, names: list[str]) -> None:
        """Report what a killed run left that no later run removed (once each; not asserted)."""
        new = sorted(set(names) - self.seen)
        if new:
            self.seen.update(new)
            self.out.leftovers.append(f"{what}: {kind}: {new}")

    # -- the whole run ------------------------------------------------------------------------
    def run(self) -> None:
        a, b = PHASES
        apply_state(self.folder, self.states["A"])
        ref_a_store = self.new_store("ref-a")
        self.out.measured[a], ref_a = self.clean_run(ref_a_store, "clean first ingest of A")
        assert len(ref_a["records"]) == 12 and len(ref_a["chunks"]) > 20
        # below Chroma's HNSW sync_threshold: a reopened store rebuilds its vector index from
        # the log, the case of chroma#6975 that the dense check by own vector is about
        assert ref_a["count"] < ref_a["threshold"]

        # (a) first ingest, killed, then run to the end; each trial in a fresh store
        last = ref_a_store
        for t, kills in enumerate(self.plan(self.out.measured[a]), start=1):
            last = self.new_store(f"a{t}")
            for nth, (trigger, delay) in enumerate(kills, start=1):
                trigger, delay = self.adapt(trigger, delay, nth)
                self.kill(last, a, t, nth, trigger, delay)
            self.repair_and_check(last, ref_a, a, t)
        publish_tables()

        # references for B: a clean first ingest; a clean sync A -> B, measured
        apply_state(self.folder, self.states["B"])
        _, ref_b = self.clean_run(self.new_store("ref-b"), "clean first ingest of B")
        self.out.measured[b], synced = self.clean_run(ref_a_store, "clean sync A -> B")
        for diff in differences(synced, ref_b):
            self.fail(f"a clean sync A -> B differs from a clean first ingest of B: {diff}")
        assert set(ref_b["chunks"]) - set(ref_a["chunks"]), "B must add chunks"
        assert set(ref_a["chunks"]) - set(ref_b["chunks"]), "B must drop chunks"

        # (b) syncs of one store (holding A, verified), alternately A -> B and B -> A
        for t, kills in enumerate(self.plan(self.out.measured[b]), start=1):
            goal = "B" if t % 2 else "A"
            apply_state(self.folder, self.states[goal])
            for nth, (trigger, delay) in enumerate(kills, start=1):
                trigger, delay = self.adapt(trigger, delay, nth)
                self.kill(last, b, t, nth, trigger, delay)
            self.repair_and_check(last, ref_b if goal == "B" else ref_a, b, t)
        publish_tables()


def test_kill_9_at_random_points_then_rerun_equals_clean_run(settings: Settings,
                                                              tmp_path: Path) -> None:
    kind = "server" if settings.chroma_host else "embedded"
    rng = random.Random(f"{SEED}:{kind}")
    print(f"\nkill test seed: {SEED} (KILL_TEST_SEED={SEED} repeats this kill plan)")
    out = OUTCOMES[kind] = Outcome(kind, SEED)
    trial = Trial(settings, tmp_path, rng, out)
    t0 = time.monotonic()
    try:
        trial.run()
    finally:
        out.seconds = time.monotonic() - t0
        trial.runner.clean_up()
        publish_tables()
    assert not out.failures, "\n".join(out.failures)
    assert sum(map(len, out.repairs.values())) == 2 * len(TRIALS)
    assert len(out.landed) >= 10, f"only {len(out.landed)} of {len(out.kills)} kills landed " \
        "while the run was working"
