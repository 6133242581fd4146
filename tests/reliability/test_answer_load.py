"""The answer path under load against a misbehaving endpoint (issue 14).

8 askers for 20 s through `rag_app.answering.answer` (real embedding model, a small real store,
one shared `ChatClient`) against tests/openai_stub.py's "chaos" model on 127.0.0.1, which
answers each HTTP request at random (seeded): normally, never, stalling mid-stream, 500, 429
or a dropped connection. Every request ends within its deadline + a margin, none hangs, no
HTTP request is sent (client side) or received (stub side) after its caller gave up, every
failure is an LLMError with a message and every success is an Answer. The longer run, also
against the bundled local model: `python bench/load_answer.py`.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from bench.load_answer import (
    STUB_LIMITS,
    STUB_MARGIN_S,
    TRANSIT_S,
    describe_settings,
    load_questions,
    run_load,
)
from ingest.entry import sync_paths
from rag_app.answering import Answer
from rag_app.llm.client import Endpoint, LLMError
from rag_app.retrieve import Retriever
from tests.conftest import MEASUREMENTS, SAMPLES, make_settings
from tests.openai_stub import openai_stub

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

ASKERS = 8
SECONDS = 20.0
SEED = 14
FILES = ["warranty-and-returns.md", "care-and-cleaning.txt", "firmware-release-notes.md",
         "support-faq.html"]


def test_answer_path_under_load_against_a_chaos_endpoint(tmp_path: Any, embedder: Any) -> None:
    from rag_app.hardware import detect

    settings = make_settings(tmp_path / "state", **STUB_LIMITS)
    sync_paths(settings, [SAMPLES / name for name in FILES], embedder=embedder)
    retriever = Retriever(settings, embedder=embedder)
    retriever.search("warm up")
    with openai_stub(seed=SEED) as stub:
        report = run_load(settings, retriever, Endpoint(stub.base_url, "chaos", "sk-test"),
                          load_questions(), lambda: list(stub.arrivals), seconds=SECONDS,
                          askers=ASKERS, seed=SEED, margin_s=STUB_MARGIN_S,
                          target=f"chaos stub on 127.0.0.1 (seed {SEED})")
        fates = Counter(a.outcome for a in stub.arrivals).most_common()
    report.extra_rows += [("stub's draws per HTTP request", ", ".join(f"{k} {v}"
                                                                     for k, v in fates)),
                          ("CPU", detect().summary()), ("settings", describe_settings(settings))]
    MEASUREMENTS["the answer path under load: 8 askers x 20 s vs the chaos stub"] = \
        report.table()

    # the load really was mixed: answers and every kind of failure
    drawn = dict(fates)
    assert all(drawn.get(k, 0) > 0 for k in ("ok", "stall", "stall-mid", "500", "429", "drop"))
    assert len(report.traces) >= ASKERS * 3
    # none hangs; every request ends within its deadline + margin
    assert not report.hung, f"requests still running: {report.hung}\n" + "\n".join(report.notes)
    assert not report.notes, "\n".join(report.notes)
    assert all(t.t_end is not None for t in report.traces)
    assert not report.over_deadline, [(t.rid, t.llm_s) for t in report.over_deadline]
    # nothing sent, or received by the stub, after the caller gave up
    assert not report.sent_after_give_up(), "\n".join(
        f"+{late * 1000:.1f} ms: {report.describe(rid)}"
        for rid, late in report.sent_after_give_up())
    assert not [x for x in report.arrived_after_give_up() if x[1] > TRANSIT_S], "\n".join(
        f"+{late * 1000:.1f} ms: {report.describe(rid)}"
        for rid, late in report.arrived_after_give_up())
    # every request the client sent reached the stub, and only those
    arrived = Counter(a.rid for a in stub.arrivals)
    unmatched = [t.rid for t in report.traces if len(t.sends) != arrived.pop(t.rid, 0)]
    assert not unmatched and not arrived, "\n".join(
        [report.describe(rid) for rid in unmatched] + [f"arrived unsent: {rid}" for rid in arrived])
    # failures are LLMErrors with a message; successes are Answers
    errors = report.errors
    assert errors and not report.non_llm_errors, [
        (t.rid, t.kind, t.message[:200]) for t in report.non_llm_errors]
    assert all(isinstance(t.exc, LLMError) and str(t.exc).strip() for t in errors)
    answered = [t for t in report.done if t.outcome == "answer"]
    assert answered
    for t in answered:
        assert isinstance(t.answer, Answer) and t.answer.mode == "llm" and t.answer.text
    assert any(t.answer is not None and t.answer.found and t.answer.citations
               for t in answered)
