"""Measure retrieval and answer quality: `python -m rag_app.eval beir|qa …` or from Python.

    from rag_app.eval import DEFAULT_CONFIGS, evaluate_qa, load_questions, write_report
    result = evaluate_qa(load_questions("questions.jsonl"), "docs/", DEFAULT_CONFIGS, settings)
    write_report(result, "results/run1")

`beir` scores retrieval on a BEIR-format dataset with ranx; `qa` answers a question set over
a folder of documents through the project's answer path and scores retrieval, answers,
refusals, citations, faithfulness and latency. Both compare several configurations side by
side (`configs`), each on an index of the evaluation's own built through the ingest path.
"""

from rag_app.eval.beir import RetrievalResult, evaluate_beir, load_beir
from rag_app.eval.configs import (
    DEFAULT_CONFIGS,
    ConfigRun,
    EvalConfig,
    EvalResult,
    parse_config,
)
from rag_app.eval.qa import QAItem, QAResult, build_index, evaluate_qa, load_questions
from rag_app.eval.report import load_results, markdown_table, write_report

__all__ = [
    "DEFAULT_CONFIGS",
    "ConfigRun",
    "EvalConfig",
    "EvalResult",
    "QAItem",
    "QAResult",
    "RetrievalResult",
    "build_index",
    "evaluate_beir",
    "evaluate_qa",
    "load_beir",
    "load_questions",
    "load_results",
    "markdown_table",
    "parse_config",
    "write_report",
]
