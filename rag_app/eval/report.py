"""Write an evaluation's results: results.json, report.md (tables) and PNG plots.

Everything here works on the results' dictionaries (`EvalResult.to_dict()`), so a saved
results.json can be loaded (`load_results`) and plotted or tabulated again, e.g. in a
notebook. Plots are drawn on `matplotlib.figure.Figure` objects without pyplot, so writing a
report never changes the plotting backend of the process (a notebook keeps its own).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rag_app.eval.metrics import require

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from rag_app.eval.configs import EvalResult

METRIC_LABELS = {
    "ndcg@10": "nDCG@10",
    "ndcg_linear@10": "nDCG@10 (linear gain)",
    "recall@k": "Recall@k",
    "recall@10": "Recall@10",
    "recall@100": "Recall@100",
    "mrr@10": "MRR@10",
    "mrr@10_grade2": "MRR@10 (grade ≥ 2)",
    "questions": "questions",
    "source_hit@1": "source hit@1",
    "source_hit@k": "source hit@k",
    "source_mrr@k": "source MRR@k",
    "passage_hit@k": "passage hit@k",
    "page_hit@1": "page hit@1",
    "page_hit@k": "page hit@k",
    "page_mrr@k": "page MRR@k",
    "token_f1": "answer token F1",
    "contains_answer": "contains gold answer",
    "correct": "correct (every key fact)",
    "misleading": "misleading: wrong and nothing flagged (all questions)",
    "useful": "useful: right and nothing flagged (answerable)",
    "refused": "refused (all questions)",
    "wrong_flagged": "wrong answers flagged",
    "right_flagged": "right answers flagged (false flags)",
    "wrong_flagged_unsure": "wrong answers flagged as unsure (confidence check)",
    "right_flagged_unsure": "right answers flagged as unsure (confidence check)",
    "wrong_flagged_off_subject": "wrong answers flagged as off the subject (subject, rival)",
    "right_flagged_off_subject": "right answers flagged as off the subject (subject, rival)",
    "wrong_flagged_opposite": "wrong answers flagged as the opposite of the question",
    "right_flagged_opposite": "right answers flagged as the opposite of the question",
    "wrong_flagged_partial": "wrong answers flagged as answering part of the question",
    "right_flagged_partial": "right answers flagged as answering part of the question",
    "wrong_flagged_warned": "wrong answers flagged as code the sources warn against",
    "right_flagged_warned": "right answers flagged as code the sources warn against",
    "evidence_holds_answer": "the documents' words shown hold every key fact (answerable)",
    "correct_multi_fact": "correct, multi-fact questions",
    "correct_unchecked": "correct, before the checks",
    "cited_gold_page": "answers citing a gold page",
    "quote_validity": "claims supported by their quote",
    "claims_removed": "answer claims no source supports",
    "refusal_accuracy": "refusal accuracy (unanswerable)",
    "false_refusal_rate": "false refusals (answerable)",
    "refusal_accuracy_unchecked": "refusal accuracy, before the checks",
    "false_refusal_rate_unchecked": "false refusals, before the checks",
    "refused_by_similarity": "unanswerable refused: nothing similar retrieved",
    "false_refused_by_similarity": "answerable refused: nothing similar retrieved",
    "refused_by_quotes": "unanswerable refused: no quote in its source",
    "false_refused_by_quotes": "answerable refused: no quote in its source",
    "refused_by_check": "unanswerable refused by the answer check",
    "false_refused_by_check": "answerable refused by the answer check",
    "refused_by_names": "unanswerable refused by the names check",
    "false_refused_by_names": "answerable refused by the names check",
    "refused_by_model": "unanswerable refused by the model",
    "false_refused_by_model": "answerable refused by the model",
    "refused_by_kind": "unanswerable refused: no value of the kind asked",
    "false_refused_by_kind": "answerable refused: no value of the kind asked",
    "refused_by_unsourced": "unanswerable refused when asked again about unsourced names",
    "false_refused_by_unsourced": "answerable refused when asked again about unsourced names",
    "asked_again": "answers asked again: they named what no source mentions",
    "check_rejected": "answers the checks turned into not-found",
    "check_p50_s": "answer check p50 (s)",
    "citation_validity": "valid citations",
    "cited_answers": "answers with a citation",
    "faithfulness": "faithfulness (embedding)",
    "judge_faithfulness": "faithfulness (LLM judge)",
    "judge_failures": "judge failures",
    "llm_errors": "LLM errors",
    "retrieval_p50_s": "retrieval p50 (s)",
    "retrieval_p95_s": "retrieval p95 (s)",
    "first_token_p50_s": "first token p50 (s)",
    "first_token_p95_s": "first token p95 (s)",
    "total_p50_s": "total p50 (s)",
    "prompt_tokens_p50": "prompt tokens p50",
    "cached_tokens_p50": "of which cached, p50",
    "total_p95_s": "total p95 (s)",
}
COUNTS = frozenset({"questions", "judge_failures", "llm_errors", "check_rejected", "asked_again",
                    "wrong_flagged", "right_flagged", "wrong_flagged_unsure",
                    "right_flagged_unsure", "wrong_flagged_off_subject",
                    "right_flagged_off_subject", "wrong_flagged_opposite",
                    "right_flagged_opposite", "wrong_flagged_partial", "right_flagged_partial",
                    "wrong_flagged_warned", "right_flagged_warned", "claims_removed",
                    "prompt_tokens_p50", "cached_tokens_p50"})
LOWER_IS_BETTER = frozenset({"false_refusal_rate", "false_refusal_rate_unchecked",
                             "misleading", "right_flagged", "right_flagged_unsure",
                             "right_flagged_off_subject", "right_flagged_opposite",
                             "right_flagged_partial", "right_flagged_warned",
                             "false_refused_by_similarity",
                             "false_refused_by_quotes", "false_refused_by_check",
                             "false_refused_by_names", "false_refused_by_model",
                             "false_refused_by_kind", "false_refused_by_unsourced",
                             "claims_removed",
                             "judge_failures", "llm_errors"})
KIND_TITLES = {"beir": "Retrieval (BEIR)", "qa": "Question answering, end to end"}


def as_dict(result: EvalResult | Mapping[str, Any]) -> dict[str, Any]:
    return dict(result) if isinstance(result, Mapping) else result.to_dict()


def load_results(path: str | Path) -> list[dict[str, Any]]:
    """The results saved in a results.json (or the folder holding one)."""
    file = Path(path)
    if file.is_dir():
        file = file / "results.json"
    data = json.loads(file.read_text(encoding="utf-8"))
    return list(data["results"])


def label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric)


def is_latency(metric: str) -> bool:
    return metric.endswith("_s")


def fmt(metric: str, value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if metric in COUNTS:
        return f"{value:.0f}"
    if is_latency(metric):
        return f"{value:.3f}" if value < 10 else f"{value:.1f}"
    return f"{value:.3f}"


# -- tables ------------------------------------------------------------------------------------
def markdown_table(result: EvalResult | Mapping[str, Any], *, bold_best: bool = True) -> str:
    """Metrics as rows, configurations as columns. Metrics nobody measured are left out."""
    data = as_dict(result)
    runs = data["runs"]
    header = ["metric", *(r["label"] for r in runs)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
             "| configuration | " + " | ".join(r["description"] for r in runs) + " |"]
    for metric in data["metric_names"]:
        values = [r["metrics"].get(metric) for r in runs]
        if all(v is None for v in values):
            continue
        cells = [fmt(metric, v) for v in values]
        best = _best(metric, values) if bold_best and len(runs) > 1 else None
        if best is not None and len(set(cells)) > 1:  # bold what is best as shown
            cells = [f"**{c}**" if c == fmt(metric, best) else c for c in cells]
        lines.append(f"| {label(metric)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _best(metric: str, values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    if metric == "questions" or len(set(present)) < 2:
        return None
    lower = metric in LOWER_IS_BETTER or is_latency(metric)
    return min(present) if lower else max(present)


def not_measured(result: EvalResult | Mapping[str, Any]) -> list[str]:
    data = as_dict(result)
    return [label(m) for m in data["metric_names"]
            if all(r["metrics"].get(m) is None for r in data["runs"])]


def render_markdown(results: Sequence[EvalResult | Mapping[str, Any]],
                    images: Mapping[int, Sequence[str]] | None = None) -> str:
    """The whole report: per result its setting, notes, table and plots."""
    out = ["# Evaluation report", "", f"Written {time.strftime('%Y-%m-%d %H:%M:%S')}.", ""]
    for i, result in enumerate(results):
        data = as_dict(result)
        meta = data.get("meta", {})
        out += [f"## {KIND_TITLES.get(data['kind'], data['kind'])}", ""]
        out += [f"- {line}" for line in _summary(data)]
        out += [f"- {note}" for note in data.get("notes", [])]
        missing = not_measured(data)
        if missing:
            out.append(f"- Not measured in this run: {', '.join(missing)}.")
        out += ["", markdown_table(data), ""]
        if meta.get("comparisons"):
            out += _comparisons(meta), ""
        for image in (images or {}).get(i, []):
            out += [f"![{image}]({image})", ""]
        if data["kind"] == "qa":
            out += _qa_details(data)
    return "\n".join(out).rstrip() + "\n"


def _summary(data: Mapping[str, Any]) -> list[str]:
    meta = data.get("meta", {})
    lines = []
    if data["kind"] == "beir":
        lines.append(f"Dataset {meta.get('dataset')} ({meta.get('split')}): "
                     f"{meta.get('queries')} judged queries, {meta.get('corpus')} passages.")
    else:
        lines.append(f"{meta.get('questions')} questions ({meta.get('answerable')} answerable) "
                     f"over {meta.get('docs')}; LLM: {meta.get('endpoint') or 'none'}"
                     f"{'; LLM judge on' if meta.get('judge') else ''}.")
    for index in meta.get("indexes", []):
        lines.append(f"Index {index.get('collection')}"
                     f"{' (' + index['variant'] + ')' if index.get('variant') else ''}: "
                     f"{index.get('chunks')} chunks, ingest {index.get('ingest_s')} s"
                     + (f"; {len(index['failed'])} files failed" if index.get("failed") else "")
                     + ".")
    if meta.get("settings"):
        s = meta["settings"]
        lines.append(f"Embedding model {s.get('embedding_model')} ({s.get('backend')}); "
                     f"chunks of {s.get('chunk_tokens')} tokens, overlap "
                     f"{s.get('chunk_overlap')}.")
    lines.append(f"Took {data.get('seconds', 0):.1f} s.")
    return lines


def _comparisons(meta: Mapping[str, Any]) -> str:
    rows = [f"Paired randomisation test against {meta.get('baseline')!r} (ranx, Fisher):", "",
            "| configuration | metric | score | baseline | better | worse | same | p |",
            "|---|---|---|---|---|---|---|---|"]
    for name, by_metric in meta["comparisons"].items():
        for metric, c in by_metric.items():
            rows.append(f"| {name} | {label(metric)} | {c['run']:.3f} | {c['baseline']:.3f} | "
                        f"{c['wins']:.0f} | {c['losses']:.0f} | {c['ties']:.0f} | "
                        f"{c['p']:.3f} |")
    return "\n".join(rows)


def _qa_details(data: Mapping[str, Any], limit: int = 15) -> list[str]:
    runs = data["runs"]
    out: list[str] = []
    missed: dict[str, str] = {}
    for run in runs:
        for row in run["rows"]:
            if row.get("answerable") and row.get("gold_source") and row.get("source_rank") is None:
                missed.setdefault(row["id"], row["question"])
    hit_somewhere = {row["id"] for run in runs for row in run["rows"]
                     if row.get("source_rank") is not None}
    never = {k: v for k, v in missed.items() if k not in hit_somewhere}
    if never:
        out += [f"Gold source retrieved by no configuration ({len(never)}):", ""]
        out += [f"- {k}: {v}" for k, v in list(never.items())[:limit]]
        if len(never) > limit:
            out.append(f"- … and {len(never) - limit} more (results.json has every row)")
        out.append("")
    errors = [(run["label"], row["id"], row.get("llm_error") or row.get("judge_error"))
              for run in runs for row in run["rows"]
              if row.get("llm_error") or row.get("judge_error")]
    if errors:
        out += [f"Errors ({len(errors)}):", ""]
        out += [f"- {lab} / {rid}: {err}" for lab, rid, err in errors[:limit]]
        out.append("")
    return out


# -- plots -------------------------------------------------------------------------------------
def _figure(width: float, height: float) -> Figure:
    require("matplotlib", "Plotting the report")
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def plot_metrics(result: EvalResult | Mapping[str, Any]) -> Figure | None:
    """One bar chart per measured score (0-1 metrics), a bar per configuration."""
    data = as_dict(result)
    metrics = [m for m in data["metric_names"] if m not in COUNTS and not is_latency(m)
               and any(r["metrics"].get(m) is not None for r in data["runs"])]
    if not metrics:
        return None
    cols = min(3, len(metrics))
    rows = math.ceil(len(metrics) / cols)
    labels = [r["label"] for r in data["runs"]]
    fig = _figure(4.2 * cols, 2.9 * rows)
    colors = [f"C{i % 10}" for i in range(len(labels))]
    for n, metric in enumerate(metrics):
        ax = fig.add_subplot(rows, cols, n + 1)
        values = [r["metrics"].get(metric) for r in data["runs"]]
        heights = [v if v is not None else 0.0 for v in values]
        bars = ax.bar(range(len(labels)), heights, color=colors)
        for bar, v in zip(bars, values, strict=True):
            ax.annotate(fmt(metric, v), (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize=8)
        ax.set_title(label(metric), fontsize=10)
        ax.set_ylim(0, 1.12)
        ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right", fontsize=8)
    fig.suptitle(KIND_TITLES.get(data["kind"], data["kind"]))
    return fig


def plot_latency(result: EvalResult | Mapping[str, Any]) -> Figure | None:
    """Box plots of retrieval, first-token and total seconds per configuration (QA)."""
    data = as_dict(result)
    if data["kind"] != "qa":
        return None
    series = [(key, title) for key, title in (("retrieve_s", "retrieval"),
                                              ("first_token_s", "time to first token"),
                                              ("total_s", "total"))
              if any(row.get(key) is not None for r in data["runs"] for row in r["rows"])]
    if not series:
        return None
    labels = [r["label"] for r in data["runs"]]
    fig = _figure(4.2 * len(series), 3.2)
    for n, (key, title) in enumerate(series):
        ax = fig.add_subplot(1, len(series), n + 1)
        values = [[row[key] for row in r["rows"] if row.get(key) is not None] or [math.nan]
                  for r in data["runs"]]
        ax.boxplot(values, showfliers=True)
        ax.set_xticks(range(1, len(labels) + 1), labels, rotation=20, ha="right", fontsize=8)
        ax.set_title(f"{title} (s)", fontsize=10)
    fig.suptitle("Latency per question")
    return fig


def plot_per_query(result: EvalResult | Mapping[str, Any], metric: str = "ndcg@10"
                   ) -> Figure | None:
    """Per-query distribution of `metric` for each configuration (BEIR)."""
    data = as_dict(result)
    if data["kind"] != "beir":
        return None
    labels = [r["label"] for r in data["runs"]]
    values = [[row[metric] for row in r["rows"] if row.get(metric) is not None] or [math.nan]
              for r in data["runs"]]
    fig = _figure(max(4.0, 1.6 * len(labels) + 2), 3.4)
    ax = fig.add_subplot(1, 1, 1)
    ax.boxplot(values, showmeans=True)
    ax.set_xticks(range(1, len(labels) + 1), labels, rotation=20, ha="right", fontsize=8)
    ax.set_ylim(-0.05, 1.05)
    ax.set_title(f"{label(metric)} per query", fontsize=10)
    return fig


# -- the report -----------------------------------------------------------------------------------
def write_report(results: EvalResult | Mapping[str, Any]
                 | Sequence[EvalResult | Mapping[str, Any]], out_dir: str | Path
                 ) -> list[Path]:
    """Write results.json, report.md and the plots (PNG) into `out_dir`; return the paths."""
    items = _as_list(results)
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    dicts = [as_dict(r) for r in items]
    written: list[Path] = []
    json_path = out / "results.json"
    json_path.write_text(json.dumps({"created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                     "results": dicts}, indent=2, ensure_ascii=False,
                                    default=_jsonable), encoding="utf-8")
    written.append(json_path)
    images: dict[int, list[str]] = {}
    kinds_seen: dict[str, int] = {}
    for i, data in enumerate(dicts):
        kinds_seen[data["kind"]] = kinds_seen.get(data["kind"], 0) + 1
        prefix = data["kind"] + (f"-{kinds_seen[data['kind']]}"
                                 if kinds_seen[data["kind"]] > 1 else "")
        for name, make in (("metrics", plot_metrics), ("latency", plot_latency),
                           ("per-query", plot_per_query)):
            fig = make(data)
            if fig is None:
                continue
            path = out / f"{prefix}-{name}.png"
            fig.savefig(path, dpi=110)
            images.setdefault(i, []).append(path.name)
            written.append(path)
    md_path = out / "report.md"
    md_path.write_text(render_markdown(dicts, images), encoding="utf-8")
    written.insert(1, md_path)
    return written


def _as_list(results: Any) -> list[Any]:
    if isinstance(results, Mapping) or hasattr(results, "to_dict"):
        return [results]
    return list(results)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def summary_lines(results: Iterable[EvalResult | Mapping[str, Any]]) -> list[str]:
    """The tables only, for a terminal."""
    lines: list[str] = []
    for result in results:
        data = as_dict(result)
        lines += [f"## {KIND_TITLES.get(data['kind'], data['kind'])}", "", markdown_table(data), ""]
    return lines
