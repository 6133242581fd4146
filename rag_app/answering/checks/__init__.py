"""The checks an answer goes through, each one file and one line in a list.

A check reads the question, the passages and the model's draft, and returns a `Verdict`: pass,
refuse ("not found", and by which check), say something now, ask the model again, or amend the
draft (claims removed, links cut, quotes attached). It never writes to the stream or the result
itself: the pipeline (rag_app.answering.pipeline) runs `PRE` before the model is called and
`POST` after, in order, and the first refusal finishes the answer.

To add a check: a class with `name`, `enabled(settings)` and `__call__(inputs, draft)` in a file
of this folder, with a docstring naming the measured reason it exists, and one line below.
"""

from __future__ import annotations

from rag_app.answering.checks import (
    confidence,
    contradiction,
    judge,
    kinds,
    language,
    links,
    model,
    names,
    opposite,
    parts,
    quotes,
    rival,
    similarity,
    subject,
    support,
    unsourced,
    warned,
    whole,
)
from rag_app.answering.checks.base import PASS, Check, Draft, Inputs, Verdict

# Before the model is called: a refusal here means the model is never asked.
PRE: list[Check] = [
    language.QuestionLanguage(),  # a question not in English, an English-only model: a note
    similarity.Similarity(),  # nothing retrieved is similar enough to the question
    names.QuestionNames(),  # the question names what no retrieved passage mentions
]
# After the model answered, in order; the first refusal finishes the answer.
POST: list[Check] = [
    quotes.Quotes(),  # RAG_ANSWER_QUOTES=model: claims whose quote is not in their source
    links.Links(),  # URLs that no source contains are cut
    model.ModelRefusal(),  # the model said "not found" itself
    unsourced.Unsourced(),  # names no source mentions: the model is asked again, once
    kinds.Kinds(),  # a price asked, none given
    judge.Judge(),  # RAG_ANSWER_CHECK: the model, asked apart, says the passages do not state it
    support.Support(),  # each sentence's quote; a sentence nothing supports is flagged
    contradiction.Contradiction(),  # a sentence its quote contradicts ("a fee" / "at no cost")
    subject.Subject(),  # names or figures the sources give only about something else
    rival.Rival(),  # a figure where the sources give another beside the question's own word
    opposite.Opposite(),  # an item whose name or quoted line says the opposite of the question
    warned.Warned(),  # code the passages only warn against ("do not call as.numeric()")
    parts.Parts(),  # a question of two parts (or a plural "which") answered in part
    confidence.Confidence(),  # names or figures the model was unsure of (token probabilities)
    whole.Whole(),  # an answer that stops inside an open bracket, quote or code span
]

__all__ = ["PASS", "POST", "PRE", "Check", "Draft", "Inputs", "Verdict"]
