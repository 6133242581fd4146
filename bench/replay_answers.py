"""Re-score recorded model answers with today's checks, without the model.

    python bench/replay_answers.py RUN_DIR QUESTIONS --docs DIR [--index-dir DIR]

RUN_DIR is a `python -m rag_app.eval qa` output folder (its results.json). Every question is
asked again through the whole answer path — retrieval, evidence selection, the names and kind
checks, quote attribution, citations — but the model's reply is the one the run recorded (its
answer, or the draft a check turned into "not found", with the sources it listed), so a change
to what happens after the model is measured in a minute instead of a model run. Printed: the
run's own figures beside the replayed ones, and the questions whose outcome changed.

What it cannot show: anything that changes what the model is asked (a prompt, the evidence, k):
the reply would have been different. A question the recorded run never sent to the model (the
names check refused it) but today's code would send gets the model's "not found".
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rag_app.answer import NOT_FOUND  # noqa: E402
from rag_app.eval.configs import EvalConfig  # noqa: E402
from rag_app.eval.qa import evaluate_qa, load_questions  # noqa: E402
from rag_app.hardware import detect  # noqa: E402
from rag_app.llm import Endpoint  # noqa: E402
from rag_app.settings import Settings  # noqa: E402

SHOWN = ("correct", "correct_multi_fact", "cited_gold_page", "quote_validity",
         "refusal_accuracy", "false_refusal_rate", "refused_by_names", "refused_by_kind",
         "false_refused_by_kind", "refused_by_model")


class ReplayChat:
    """Answers each question with the reply a recorded run got for it (found by the question
    text at the end of the prompt)."""

    def __init__(self, replies: dict[str, str]) -> None:
        self.replies = replies
        self.endpoint = Endpoint("http://127.0.0.1:1/v1", "replay", "")
        self.missing = 0

    def stream(self, messages: Any, **kwargs: Any) -> Iterator[str]:
        question = messages[-1]["content"].rsplit("Question:", 1)[-1].strip()
        reply = self.replies.get(question)
        if reply is None:
            self.missing += 1
            reply = json.dumps({"answer": NOT_FOUND, "sources": []})
        yield reply

    def complete(self, messages: Any, **kwargs: Any) -> str:
        return "".join(self.stream(messages))


def recorded(run: dict[str, Any]) -> dict[str, str]:
    """question -> the model's reply as JSON, from a run's rows."""
    out = {}
    for row in run["rows"]:
        if row.get("mode") != "llm":
            continue
        text = row.get("draft") or (row.get("answer") if row.get("found") else NOT_FOUND)
        numbers = [c["number"] for c in row.get("citations") or []]
        out[row["question"].strip()] = json.dumps({"answer": text or NOT_FOUND,
                                                   "sources": numbers})
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("questions", type=Path)
    ap.add_argument("--docs", type=Path, required=True)
    ap.add_argument("--index-dir", default=None)
    args = ap.parse_args()
    print(f"CPU: {detect().summary()}")
    saved = json.loads((args.run_dir / "results.json").read_text())["results"][0]["runs"][0]
    config = EvalConfig(**{k: v for k, v in saved["config"].items()
                           if k in EvalConfig.__dataclass_fields__})
    chat = ReplayChat(recorded(saved))
    result = evaluate_qa(load_questions(args.questions), args.docs, [config], Settings(),
                         chat=chat, index_dir=args.index_dir)  # type: ignore[arg-type]
    now = result.runs[0]
    print(f"\n{'measure':28} {'recorded':>10} {'replayed':>10}")
    for key in SHOWN:
        before, after = saved["metrics"].get(key), now.metrics.get(key)
        print(f"{key:28} {_fmt(before):>10} {_fmt(after):>10}")
    old = {r["id"]: r for r in saved["rows"]}
    print("\nchanged outcomes:")
    for row in now.rows:
        was = old.get(row["id"], {})
        keys = ("found", "contains", "refused_by", "cites_gold_page")
        if any(was.get(k) != row.get(k) for k in keys):
            print(f"  {row['id']}: " + ", ".join(f"{k} {was.get(k)} -> {row.get(k)}"
                                               for k in keys if was.get(k) != row.get(k)))
    if chat.missing:
        print(f"\n{chat.missing} question(s) reached the model that the run did not send to it "
              "(answered 'not found' here)")
    return 0


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


if __name__ == "__main__":
    raise SystemExit(main())
