"""The one answer path every front end uses: question → retrieve → prompt → stream → check.

    stream = answer("How do I descale it?", history, settings=settings, chat=chat)
    stream.hits            # the sources, known before generation starts (show them at once)
    for piece in stream:   # the answer text as it arrives
        ...
    result = stream.result # Answer: text, checked citations, hits, condensed query, timings

"Not found" is decided by checking, not by asking the model: when retrieval finds nothing
similar enough, or the question names something no passage mentions, the model is not called
at all. The model is asked for JSON through the server's `response_format`; its answer then goes
through the checks in `rag_app.answering.checks` (one file each, run in order from one list).

    records.py      Answer, Claim, Citation, Timings, Refusal
    prompts.py      the prompts, the reply schemas, build_messages
    replies.py      reading the model's replies (streamed JSON fields, claims, verdicts)
    context.py      condensing follow-ups, neighbouring chunks, evidence sentences
    attribution.py  the quote of each answer sentence, a model's own quotes checked
    pipeline.py     AnswerStream: retrieve → PRE checks → generate → POST checks
    checks/         similarity, names, quotes, links, model, unsourced, kinds, judge, support
"""

from __future__ import annotations

from rag_app.answering.pipeline import AnswerStream, answer
from rag_app.answering.prompts import NO_LLM_LABEL, NOT_FOUND, build_messages
from rag_app.answering.records import Answer, Citation, Claim, Evidence, Refusal, Timings

__all__ = ["NOT_FOUND", "NO_LLM_LABEL", "Answer", "AnswerStream", "Citation", "Claim",
           "Evidence", "Refusal", "Timings", "answer", "build_messages"]
