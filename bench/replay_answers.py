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

from rag_app.answering import NOT_FOUND  # noqa: E402
from rag_app.eval.configs import EvalConfig  # noqa: E402
from rag_app.eval.qa import evaluate_qa, load_questions, outcome, summarise  # noqa: E402
from rag_app.hardware import detect  # noqa: E402
from rag_app.llm.client import Endpoint, TokenProb  # noqa: E402
from rag_app.settings import Settings  # noqa: E402

SHOWN = ("correct", "misleading", "useful", "refused", "wrong_flagged", "right_flagged",
         "wrong_flagged_unsure", "right_flagged_unsure", "wrong_flagged_off_subject",
         "right_flagged_off_subject", "wrong_flagged_opposite", "right_flagged_opposite",
         "wrong_flagged_partial", "right_flagged_partial", "wrong_flagged_warned",
         "right_flagged_warned",
         "evidence_holds_answer",
         "correct_multi_fact", "cited_gold_page", "quote_validity",
         "refusal_accuracy", "false_refusal_rate", "refused_by_names", "refused_by_kind",
         "false_refused_by_kind", "refused_by_model", "asked_again", "refused_by_unsourced",
         "false_refused_by_unsourced")


class ReplayChat:
    """Answers each question with the reply a recorded run got for it (found by the question
    text at the end of the prompt). Asked again (the second pass, a further user turn after the
    model's first reply), it gives the answer the run recorded after asking again."""

    def __init__(self, replies: dict[str, str], again: dict[str, str] | None = None,
                 tokens: dict[str, tuple[list[TokenProb], list[TokenProb]]] | None = None
                 ) -> None:
        self.replies = replies
        self.again = again or {}
        self.tokens = tokens or {}
        self.endpoint = Endpoint("http://127.0.0.1:1/v1", "replay", "")
        self.missing = 0

    def stream(self, messages: Any, tokens: list[TokenProb] | None = None,
               **kwargs: Any) -> Iterator[str]:
        asked = [m for m in messages if m["role"] == "user" and "Question:" in m["content"]]
        question = asked[-1]["content"].rsplit("Question:", 1)[-1].strip() if asked else ""
        first = messages[-1] is (asked[-1] if asked else None)
        book = self.replies if first else self.again
        if tokens is not None:  # the recorded token probabilities (the confidence check)
            tokens.extend(self.tokens.get(question, ([], []))[0 if first else 1])
        reply = book.get(question)
        if reply is None:
            self.missing += 1
            reply = json.dumps({"answer": NOT_FOUND, "sources": []})
        yield reply

    def complete(self, messages: Any, **kwargs: Any) -> str:
        return "".join(self.stream(messages))


def recorded(run: dict[str, Any]) -> tuple[dict[str, str], dict[str, str],
                                           dict[str, tuple[list[TokenProb], list[TokenProb]]]]:
    """(question -> the model's first reply, question -> its reply when asked again) as JSON,
    and question -> the two replies' tokens with their probabilities (runs that recorded them),
    from a run's rows."""
    first, again, tokens = {}, {}, {}
    for row in run["rows"]:
        if row.get("mode") != "llm":
            continue
        question = row["question"].strip()
        if row.get("reply_tokens") or row.get("again_tokens"):
            tokens[question] = ([_token(t) for t in row.get("reply_tokens") or ()],
                                [_token(t) for t in row.get("again_tokens") or ()])
        numbers = [c["number"] for c in row.get("citations") or []]
        final = row.get("answer") if row.get("found") else NOT_FOUND
        if row.get("first_answer"):
            # asked again: the first reply is the first answer; the second is the answer (or
            # "not found", the first answer then being the draft)
            first[question] = json.dumps({"answer": row["first_answer"], "sources": numbers})
            again[question] = json.dumps({"answer": final or NOT_FOUND, "sources": numbers})
            continue
        text = row.get("draft") or final
        first[question] = json.dumps({"answer": text or NOT_FOUND, "sources": numbers})
    return first, again, tokens


def _token(recorded: list[Any]) -> TokenProb:
    text, logprob, rivals = recorded
    return TokenProb(text, logprob, tuple((alt, lp) for alt, lp in rivals))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("questions", type=Path)
    ap.add_argument("--docs", type=Path, required=True)
    ap.add_argument("--index-dir", default=None)
    ap.add_argument("--rows-out", type=Path, default=None,
                    help="write the replayed rows (without timings) as JSON, to compare two "
                         "versions of the code answer for answer")
    args = ap.parse_args()
    print(f"CPU: {detect().summary()}")
    saved = json.loads((args.run_dir / "results.json").read_text())["results"][0]["runs"][0]
    config = EvalConfig(**{k: v for k, v in saved["config"].items()
                           if k in EvalConfig.__dataclass_fields__})
    chat = ReplayChat(*recorded(saved))
    result = evaluate_qa(load_questions(args.questions), args.docs, [config], Settings(),
                         chat=chat, index_dir=args.index_dir)  # type: ignore[arg-type]
    now = result.runs[0]
    if args.rows_out:
        timed = ("_s", "_tokens")
        rows = [{k: v for k, v in row.items() if not k.endswith(timed)} for row in now.rows]
        args.rows_out.write_text(json.dumps(rows, indent=1, sort_keys=True, default=str))
    print(f"\n{'measure':28} {'recorded':>10} {'replayed':>10}")
    then = summarise(saved["rows"], use_llm=True, judge=False)  # by today's measures
    for key in SHOWN:
        before, after = then.get(key), now.metrics.get(key)
        print(f"{key:28} {_fmt(before):>10} {_fmt(after):>10}")
    old = {r["id"]: {**r, "outcome": outcome(r) if r.get("mode") == "llm" else None}
           for r in saved["rows"]}
    print("\nchanged outcomes:")
    for row in now.rows:
        was = old.get(row["id"], {})
        keys = ("found", "contains", "refused_by", "cites_gold_page", "outcome")
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
