"""What the model reads: the question made to stand alone (condensed with the history), the
hits widened with their neighbouring chunks, and the passages cut to the evidence sentences.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from rag_app.answering.prompts import CONDENSE_PROMPT
from rag_app.compress import select_evidence
from rag_app.guard import looks_like_instructions
from rag_app.llm.client import Chat, LLMError
from rag_app.text.words import stem, terms

if TYPE_CHECKING:
    from rag_app.retrieve import Hit, Retriever

log = logging.getLogger(__name__)


# Words that point back into the conversation: a question holding one cannot stand alone.
_REFERS_BACK = re.compile(
    r"\b(it|its|this|that|these|those|they|them|their|theirs|there|he|she|him|his|her|one|ones|"
    r"same|also|too|else|other|another|former|latter|above|previous|earlier|again|more)\b", re.I)
_FOLLOW_UP_START = re.compile(r"^\s*(and|or|but|so|then|what about|how about|why|and if)\b",
                              re.I)


def needs_condensing(question: str, history: Sequence[dict[str, str]]) -> bool:
    """True when a question may lean on the conversation (a pronoun, "what about …", a very
    short question), so rewriting it with the history is worth a model call; a question that
    stands alone is searched as it is, and its sources show without waiting for the model."""
    if not history:
        return False
    words = re.findall(r"\w+", question)
    return (len(words) <= 3 or bool(_REFERS_BACK.search(question))
            or bool(_FOLLOW_UP_START.search(question)))


def condense(chat: Chat, question: str, history: Sequence[dict[str, str]]) -> str:
    """The question made to stand alone, rewritten by the model with the history; the plain
    combination (`combined`) when the rewrite brings words from nowhere in the conversation: the
    small model answers instead of rewriting ("…does not cover any damages caused by misuse,
    accidental spills…"), and searching for its invented answer finds the wrong passages."""
    turns = "\n".join(f"{m['role']}: {m['content']}" for m in history[-6:])
    messages = [{"role": "system", "content": CONDENSE_PROMPT},
                {"role": "user", "content": f"Conversation:\n{turns}\n\nLast question: "
                                            f"{question}"}]
    try:
        text = chat.complete(messages, max_tokens=96, temperature=0.0).strip()
    except LLMError:
        return combined(question, history)
    rewrite = text.splitlines()[0].strip() if text else ""
    if not rewrite or invented(rewrite, question, history):
        return combined(question, history)
    return rewrite


def invented(rewrite: str, question: str, history: Sequence[dict[str, str]]) -> list[str]:
    """The terms of a rewritten question that neither the question nor any turn of the
    conversation has (compared by stem: "covers" is "cover")."""
    known = {stem(t) for text in (question, *(m["content"] for m in history))
             for t in terms(text)}
    return sorted(t for t in terms(rewrite) if stem(t) not in known)


def combined(question: str, history: Sequence[dict[str, str]]) -> str:
    """A follow-up with the user's previous question before it: "How long is the warranty?
    and what does it not cover?" — words of the conversation only, nothing made up."""
    before = next((m["content"].strip() for m in reversed(history) if m["role"] == "user"), "")
    return f"{before} {question.strip()}".strip()


def widen(retriever: Retriever, hits: Sequence[Hit], wanted: int
          ) -> tuple[list[Hit], list[int]]:
    """The hits with `wanted` neighbouring chunks each (RAG_ANSWER_NEIGHBOURS), and the numbers
    of the widened sources whose text looks like instructions; the hits alone (and no numbers)
    when `wanted` is 0 or reading the neighbours fails."""
    if wanted <= 0:
        return list(hits), []
    try:
        context = retriever.with_context(list(hits), wanted)
    except Exception:  # more context is an aid: the chunks themselves still answer
        log.warning("could not read the neighbouring chunks", exc_info=True)
        return list(hits), []
    return context, [n for n, h in enumerate(context, start=1) if looks_like_instructions(h.text)]


def evidence(query: str, context: Sequence[Hit], retriever: Retriever, budget: int
             ) -> list[Hit]:
    """The hits as the model reads them: cut to the sentences that bear on the question
    (RAG_ANSWER_CONTEXT_TOKENS, rag_app.compress); the whole hits if `budget` is 0 or that
    fails."""
    if budget <= 0:
        return list(context)
    try:
        texts = select_evidence(query, [h.text for h in context], retriever.embedder, budget)
    except Exception:  # a shorter prompt is an aid: the whole passages still answer
        log.warning("could not select the evidence sentences", exc_info=True)
        return list(context)
    return [replace(h, text=text) for h, text in zip(context, texts, strict=True)]
