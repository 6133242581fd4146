"""`rag eval beir|qa …` (also `python -m rag_app.eval`): evaluate, then write results.json,
report.md and plots."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rag_app.errors import EXIT_CODES_HELP, EXIT_OK, ConfigError, report_error
from rag_app.eval.configs import DEFAULT_CONFIGS, EvalConfig, check_unique, parse_config
from rag_app.eval.metrics import require
from rag_app.helptext import examples, wrap

PROG = "python -m rag_app.eval"
# The shared test bed beside the repository (../shared), used when no path is given.
SHARED = Path(__file__).resolve().parents[3] / "shared"
DEV_BEIR = SHARED / "datasets" / "msmarco"
DEV_QUESTIONS = SHARED / "qa" / "python-faq.jsonl"
DEV_DOCS = SHARED / "docs" / "html" / "python-faq"

CONFIG_HELP = (
    "a configuration to evaluate; repeat to compare several. NAME (a preset: dense, bm25, "
    "hybrid), NAME:key=value,… or key=value,… with keys mode (dense|bm25|hybrid), k, "
    "mmr (true|false), names (true|false), chunk_tokens, chunk_overlap. Default: dense, bm25 "
    "and hybrid, k=5"
)
EXAMPLES = (
    ("beir ../shared/datasets/msmarco", ""),
    ("beir DATA --config dense --config hybrid:k=10 --limit-queries 20", ""),
    ("qa questions.jsonl --docs ./docs --no-llm", ""),
    ("qa questions.jsonl --docs ./docs --config hybrid --judge --limit 20", ""),
    ("qa ../shared/qa/python-faq.jsonl --docs \\\n      ../shared/docs/html/python-faq "
     "--no-llm --strip-question-headings", ""),
    ("qa q.jsonl --docs ./docs --config small:chunk_tokens=128 \\\n      --config "
     "default:mode=hybrid --index-dir data/eval-index   # keep indexes for next time", ""),
)


def epilog(prog: str = PROG) -> str:
    return f"""\
{examples(prog, EXAMPLES)}

Without a path, beir and qa use the shared dev sets when ../shared is beside the repository.
The report goes to --out (default results/<time>-<beir|qa>): results.json (every number and
every question's row), report.md (the tables, also printed at the end) and PNG plots.
The same command: rag eval, python -m rag_app.eval.

{EXIT_CODES_HELP}
"""


EPILOG = epilog()


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description=wrap("Measure retrieval and answer quality and compare configurations side "
                    "by side. Every run indexes the documents through the ingest path into "
                    "an index of its own (never your collection)."),
        epilog=epilog(prog), formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="{beir,qa}")

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", "-c", action="append", default=[], metavar="SPEC",
                        help=CONFIG_HELP)
    common.add_argument("--out", "-o", type=Path, metavar="DIR",
                        help="folder for the report (default: results/<time>-<kind>)")
    common.add_argument("--index-dir", type=Path, metavar="DIR",
                        help="keep the evaluation's indexes here and reuse them next time "
                             "(default: a temporary folder, removed afterwards)")
    common.add_argument("--quiet", "-q", action="store_true", help="no progress output")

    beir = sub.add_parser(
        "beir", parents=[common], formatter_class=argparse.RawDescriptionHelpFormatter,
        help="retrieval on a BEIR-format dataset: nDCG@10, Recall@k, MRR@10 (ranx)",
        description=wrap("Retrieval on a BEIR-format folder (corpus.jsonl, queries.jsonl, "
                    "qrels/<split>.tsv). nDCG@10 uses exponential gain (ranx ndcg_burges), "
                    "as the shared msmarco sample's reference scores; linear gain is shown "
                    "beside it."),
        epilog=examples(prog, [("beir ../shared/datasets/msmarco --config dense "
                                "--config bm25 --config hybrid", "")], "example:"))
    beir.add_argument("path", nargs="?", type=Path, metavar="PATH",
                      help=f"the BEIR folder (default: {DEV_BEIR}, when present)")
    beir.add_argument("--split", default="test", help="qrels file to use (default: test)")
    beir.add_argument("--limit-queries", type=int, metavar="N",
                      help="only the first N judged queries")
    beir.add_argument("--max-corpus", type=int, metavar="N",
                      help="index at most N passages (every judged one is kept; scores come "
                           "out higher than on the whole corpus)")

    qa = sub.add_parser(
        "qa", parents=[common], formatter_class=argparse.RawDescriptionHelpFormatter,
        help="end to end on a question set: retrieval hits, answers, refusals, citations, "
             "faithfulness, latency",
        description=wrap("Answer every question through the project's answer path and score it. "
                    "QUESTIONS is JSONL, one object a line: {\"id\", \"question\", "
                    "\"answer\", \"gold_source\", \"gold_pages\", \"answerable\"} (the "
                    "Python FAQ set's {id, question, gold_source, gold_passage, answerable} "
                    "works too)."),
        epilog=examples(prog, [("qa questions.jsonl --docs ./docs --config dense "
                                "--config hybrid --limit 20", "")], "example:"))
    qa.add_argument("questions", nargs="?", type=Path, metavar="QUESTIONS",
                    help=f"the question file (default: {DEV_QUESTIONS}, when present)")
    qa.add_argument("--docs", type=Path, metavar="DIR",
                    help="the folder the questions are about (default with the default "
                         f"questions: {DEV_DOCS})")
    qa.add_argument("--no-llm", action="store_true",
                    help="no LLM: retrieval and latency only (answer metrics are not measured)")
    qa.add_argument("--judge", action="store_true",
                    help="also ask the LLM whether the cited passages support each answer "
                         "sentence (slower; failures are reported, never scored)")
    qa.add_argument("--limit", type=int, metavar="N", help="only the first N questions")
    qa.add_argument("--strip-question-headings", action="store_true",
                    help="also index a copy of the documents without the headings that equal "
                         "a question (for sets whose questions are their sections' headings) "
                         "and report both side by side")
    qa.add_argument("--only-stripped", action="store_true",
                    help="like --strip-question-headings, but report the copy only")
    return p


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    """`rag eval ARGS` and `python -m rag_app.eval ARGS`: the exit code (the shared table in
    rag_app/errors.py: 2 bad input, a bad setting or a missing package; 3 store or model)."""
    args = build_parser(prog).parse_args(argv)
    try:
        return _run(args)
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - one line, the shared code
        return report_error(exc)


def _run(args: argparse.Namespace) -> int:
    from rag_app.eval.report import summary_lines, write_report
    from rag_app.settings import load_settings

    settings = load_settings()  # a bad setting is named before anything runs
    configs = _configs(args.config)
    require("matplotlib", "Plotting the report")  # fail before a long run, not after
    if args.command == "beir":
        require("ranx", "Retrieval metrics")
        path = _default(args.path, DEV_BEIR, "PATH (a BEIR folder)")
        if not path.is_dir():
            raise ConfigError(f"{path} is not a folder: give a BEIR folder with corpus.jsonl, "
                              "queries.jsonl and qrels/<split>.tsv")
    else:
        questions = _default(args.questions, DEV_QUESTIONS, "QUESTIONS (a JSONL file)")
        docs = args.docs
        if docs is None:
            if args.questions is not None:
                raise ConfigError("--docs DIR is required: the folder the questions are about")
            docs = DEV_DOCS
        if not docs.is_dir():
            raise ConfigError(f"documents folder {docs} not found: give it with --docs DIR")
    logging.basicConfig(level=settings.log_level, format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:  # bm25s sets its own logger to DEBUG
        handler.setLevel(settings.log_level)
    out = args.out or Path("results") / f"{time.strftime('%Y%m%d-%H%M%S')}-{args.command}"
    progress = None if args.quiet else _Progress()
    if not args.quiet:
        print(f"Evaluating {len(configs)} configuration(s): "
              f"{', '.join(c.name for c in configs)}. Indexing first"
              f"{' (reusing ' + str(args.index_dir) + ')' if args.index_dir else ''}…",
              file=sys.stderr)
    result: Any
    if args.command == "beir":
        from rag_app.eval.beir import evaluate_beir

        result = evaluate_beir(path, configs, settings, limit_queries=args.limit_queries,
                               max_corpus=args.max_corpus, index_dir=args.index_dir,
                               split=args.split, progress=progress)
    else:
        from rag_app.eval.qa import evaluate_qa, load_questions

        items = load_questions(questions)
        result = evaluate_qa(items, docs, configs, settings, use_llm=not args.no_llm,
                             judge=args.judge, limit=args.limit, progress=progress,
                             strip_question_headings=("only" if args.only_stripped else
                                                      args.strip_question_headings),
                             index_dir=args.index_dir)
    if progress is not None:
        progress.finish()
    paths = write_report(result, out)
    print("\n".join(summary_lines([result])))
    for note in result.notes:
        print(f"- {note}")
    print(f"\nReport: {paths[1]}  (every row: {paths[0]}; plots: "
          f"{', '.join(p.name for p in paths[2:]) or 'none'})")
    return EXIT_OK


def _configs(specs: Sequence[str]) -> list[EvalConfig]:
    if not specs:
        return list(DEFAULT_CONFIGS)
    return check_unique(parse_config(s) for s in specs)


def _default(given: Path | None, dev: Path, what: str) -> Path:
    if given is not None:
        if not given.exists():
            raise ConfigError(f"{given} not found: check the path")
        return given
    if dev.exists():
        return dev
    raise ConfigError(f"give {what}: the default dev set {dev} is not present")


class _Progress:
    """One updating line on a terminal; a line every 10% otherwise."""

    def __init__(self) -> None:
        self._tty = sys.stderr.isatty()
        self._last_decile = -1
        self._started = time.perf_counter()
        self._active = False

    def __call__(self, done: int, total: int, what: str) -> None:
        elapsed = time.perf_counter() - self._started
        line = f"{done}/{total} ({what}) {elapsed:.0f} s"
        if self._tty:
            print(f"\r{line:<70}", end="", file=sys.stderr, flush=True)
            self._active = True
            return
        decile = done * 10 // max(total, 1)
        if decile != self._last_decile:
            self._last_decile = decile
            print(line, file=sys.stderr, flush=True)

    def finish(self) -> None:
        if self._active:
            print(file=sys.stderr)
            self._active = False
