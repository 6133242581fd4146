"""The answer path as a short loop: retrieve → the checks before the model → generate → the
checks after it, in order (rag_app.answering.checks). No check logic lives here: a check's
verdict says whether to refuse, what to show, whether to ask again and how the draft changes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Generator, Iterator, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from rag_app.answering import context as ctx
from rag_app.answering.checks import POST, PRE, Check, Draft, Inputs, Verdict, confidence
from rag_app.answering.prompts import (
    ANSWER_SCHEMA,
    NO_LLM_LABEL,
    NOT_FOUND,
    QUOTED_SCHEMA,
    build_messages,
)
from rag_app.answering.records import Answer, Citation, Claim, Evidence, Refusal, Timings
from rag_app.answering.replies import (
    StringFields,
    parse_claims,
    parse_reply,
    without_dangling_colon,
)
from rag_app.compress import best_sentences
from rag_app.errors import ConfigError
from rag_app.guard import LinkFilter, looks_like_instructions, neutralise
from rag_app.llm.client import Chat, LLMError, RequestRejected, TokenProb
from rag_app.retrieve import Hit, RetrievalOptions, Retriever, describe_location
from rag_app.text.quotes import find_quote

if TYPE_CHECKING:
    from rag_app.settings import Settings

log = logging.getLogger(__name__)

EVIDENCE_LINES = 3  # sentences of the passages shown as the documents' own words


class AnswerStream:
    """Iterate for the answer text; `hits` is known at once, `result` after the last piece."""

    def __init__(self, question: str, history: Sequence[dict[str, str]], settings: Settings,
                 retriever: Retriever, chat: Chat | None,
                 options: RetrievalOptions, notice: str = "") -> None:
        self.question = question
        self.notice = notice
        self.timings = Timings()
        self._settings = settings
        self._retriever = retriever
        self._chat = chat
        self._started = time.perf_counter()
        self.query = question
        if chat is not None and settings.condense_questions and ctx.needs_condensing(
                question, history):
            t = time.perf_counter()
            self.query = ctx.condense(chat, question, history) or question
            self.timings.condense_s = time.perf_counter() - t
        t = time.perf_counter()
        self.hits = retriever.search(self.query, options)
        self.timings.retrieve_s = time.perf_counter() - t
        # Sources whose instruction-like sentences are kept from the model (see rag_app.guard).
        self.flagged = [n for n, h in enumerate(self.hits, start=1)
                        if looks_like_instructions(h.text)
                        or looks_like_instructions(h.location)]
        self._result: Answer | None = None
        self._prompt_hits: list[Hit] = list(self.hits)
        # the hits as the model reads them, whole: widened with neighbouring chunks, if asked
        self._context: list[Hit] = list(self.hits)
        self._checked: bool | None = None
        self._names: dict[str, list[str]] = {}  # the names a check's verdict was about
        self._first_answer = ""
        self._tokens: list[TokenProb] | None = None  # the first reply's, when asked for
        self._again_tokens: list[TokenProb] | None = None  # the second reply's, if asked again
        self._notes: list[str] = []  # what checks before the model said about the question

    @property
    def finished(self) -> bool:
        return self._result is not None

    @property
    def reply_tokens(self) -> tuple[list[TokenProb], list[TokenProb]]:
        """The tokens of the model's first reply and of its second (asked again), with their
        probabilities; empty when they were not asked for (the evaluation records them, so
        that bench/replay_answers.py replays the confidence check too)."""
        return list(self._tokens or ()), list(self._again_tokens or ())

    @property
    def result(self) -> Answer:
        if self._result is None:
            raise RuntimeError("iterate over the stream first: the answer is not complete")
        return self._result

    def __iter__(self) -> Iterator[str]:
        s = self._settings
        inputs = self._inputs(sources=())
        empty = Draft("", [])
        for check in PRE:
            if check.enabled(s):
                verdict = self._run(check, inputs, empty)
                if verdict.refuse is not None:
                    yield verdict.say
                    self._refuse(verdict, empty)
                    return
                if verdict.say:  # a note about the question: kept for the result, not streamed
                    self._notes.append(verdict.say)
        if self._chat is None:
            yield NO_LLM_LABEL
            self._finish(NO_LLM_LABEL, list(range(1, len(self.hits) + 1)), found=True,
                         mode="no-llm")
            return
        self._context, flagged = ctx.widen(self._retriever, self.hits, s.answer_neighbours)
        self.flagged = sorted(set(self.flagged) | set(flagged)) if flagged else self.flagged
        t = time.perf_counter()
        self._prompt_hits = ctx.evidence(self.query, self._context, self._retriever,
                                         s.answer_context_tokens)
        if s.answer_context_tokens > 0:
            self.timings.select_s = time.perf_counter() - t
        sources = [neutralise(h.text).text for h in self._prompt_hits]  # what the model saw
        inputs = self._inputs(sources=sources)
        draft = yield from self._generate_draft(sources)
        final = yield from self._post(inputs, draft, sources)
        if final is None:
            return
        yield from final.notes
        self._finish(final.text.strip(), final.cited, found=True, draft=final)

    def _post(self, inputs: Inputs, draft: Draft, sources: list[str]
              ) -> Generator[str, None, Draft | None]:
        """Run the POST checks over the draft in order; the draft that stands, or None when a
        check refused it (the answer is then finished). A check that asks again gets the
        model's second answer once, which goes through the checks before it (links cut, the
        model's own "not found": a refusal by the check that asked, the first answer kept)."""
        checks = [c for c in POST if c.enabled(self._settings)]
        for i, check in enumerate(checks):
            verdict = self._run(check, inputs, draft)
            if verdict.say:
                yield verdict.say
            if verdict.draft is not None:
                draft = verdict.draft
            if verdict.refuse is not None:
                self._refuse(verdict, draft)
                return None
            if verdict.ask_again is None:
                continue
            again = yield from self._ask_again(draft, verdict.ask_again, sources)
            if again is None:  # the second reply failed or was empty: the first stands
                continue
            self._first_answer = draft.text.strip()
            self._names[str(check.name)] = list(verdict.names)
            draft = again
            for earlier in checks[:i]:
                second = self._run(earlier, inputs, draft)
                if second.draft is not None:
                    draft = second.draft
                if second.refuse is not None:
                    self._refuse(replace(second, refuse=Refusal(check.name),
                                         kept=self._first_answer), draft)
                    return None
        return draft

    def _inputs(self, *, sources: Sequence[str]) -> Inputs:
        return Inputs(query=self.query, settings=self._settings, hits=self.hits,
                      context=self._context, sources=sources, chat=self._chat,
                      embedder=self._retriever.embedder)

    def _run(self, check: Check, inputs: Inputs, draft: Draft) -> Verdict:
        t = time.perf_counter()
        verdict = check(inputs, draft)
        if check.timing:
            setattr(self.timings, check.timing, time.perf_counter() - t)
        if verdict.passed is not None:
            self._checked = verdict.passed
        if verdict.names and verdict.refuse is not None:
            self._names[str(check.name)] = list(verdict.names)
        return verdict

    def _generate_draft(self, sources: list[str]) -> Generator[str, None, Draft]:
        """Stream the model's answer (its text fields only, unsourced links cut as they come)
        and read the whole reply into a Draft."""
        raw: list[str] = []
        extractor = StringFields("statement", "answer")
        links = LinkFilter(sources)
        json_reply = True
        try:
            for piece in self._generate(json_reply=True):
                raw.append(piece)
                out = links.feed(extractor.feed(piece))
                if out:
                    yield out
        except RequestRejected:
            if raw:
                raise
            # This server takes no JSON schema (some Ollama/vLLM setups): ask in prose instead.
            json_reply = False
            for piece in self._generate(json_reply=False):
                raw.append(piece)
                out = links.feed(piece)
                if out:
                    yield out
        rest = links.flush()
        if rest:
            yield rest
        reply = "".join(raw)
        claims = parse_claims(reply) if json_reply else None
        if claims is not None:
            return Draft("", [], reply=reply, json_reply=True, raw_claims=claims)
        text, numbers = parse_reply(reply)
        return Draft(without_dangling_colon(text), numbers, reply=reply, json_reply=json_reply,
                     shown=not json_reply or extractor.seen, tokens=self._tokens)

    def _ask_again(self, draft: Draft, turn: str, sources: list[str]
                   ) -> Generator[str, None, Draft | None]:
        """Ask once more, after the first reply, in the same conversation; streams the new
        answer. Its Draft (links cut), or None when the second reply fails or is empty."""
        messages = [*self._messages(json_reply=True),
                    {"role": "assistant", "content": draft.reply},
                    {"role": "user", "content": turn}]
        extractor, links, raw = StringFields("answer"), LinkFilter(sources), []
        tokens = self._again_tokens = self._wanted_tokens()
        t = time.perf_counter()
        try:
            for piece in self._chat.stream(messages, response_format=ANSWER_SCHEMA,
                                           tokens=tokens) \
                    if self._chat is not None else ():
                raw.append(piece)
                out = links.feed(extractor.feed(piece))
                if out:
                    yield out
        except LLMError as exc:
            log.warning("the second answer failed: %s", exc)
            return None
        finally:
            self.timings.retry_s = time.perf_counter() - t
        rest = links.flush()
        if rest:
            yield rest
        reply = "".join(raw)
        text, numbers = parse_reply(reply)
        if not text.strip():
            return None
        return Draft(without_dangling_colon(text), numbers, reply=reply, tokens=tokens)

    def _generate(self, *, json_reply: bool) -> Iterator[str]:
        if self._chat is None:
            return
        quoted = self._settings.answer_quotes == "model"
        messages = self._messages(json_reply=json_reply)
        schema = (QUOTED_SCHEMA if quoted else ANSWER_SCHEMA) if json_reply else None
        stats: dict[str, float] = {}
        self._tokens = self._wanted_tokens()
        try:
            for piece in self._chat.stream(messages, stats=stats, response_format=schema,
                                           tokens=self._tokens):
                if self.timings.first_token_s is None:
                    self.timings.first_token_s = time.perf_counter() - self._started
                yield piece
        finally:
            if "prompt_tokens" in stats:
                self.timings.prompt_tokens = int(stats["prompt_tokens"])
                self.timings.cached_tokens = int(stats.get("cached_tokens", 0))

    def _wanted_tokens(self) -> list[TokenProb] | None:
        """A list for the reply's tokens and their probabilities when the confidence check
        will read them, else None (the server is not asked for them)."""
        return [] if confidence.wanted(self._settings) else None

    def _messages(self, *, json_reply: bool) -> list[dict[str, str]]:
        return build_messages(self.query, self._prompt_hits, json_reply=json_reply,
                              max_chars=self._settings.llm_context_size * 3,
                              quoted=self._settings.answer_quotes == "model")

    def _refuse(self, verdict: Verdict, draft: Draft) -> None:
        """Finish as "not found", by the verdict's check, its draft kept visible."""
        text = NOT_FOUND if verdict.text is None else verdict.text
        self._finish(text, [], found=False, draft=draft, refused_by=verdict.refuse,
                     kept=verdict.kept)

    def _citation(self, n: int, quotes: tuple[str, ...]) -> Citation:
        """Source n as cited: the passage the model read, whole; its pages those of the chunks
        the quotes are in (a widened passage spans several)."""
        hit = self._context[n - 1]
        spans = [span for q in quotes if (span := find_quote(q, hit.text)) is not None]
        first, last = hit.pages_of(spans)
        location = describe_location(hit.source, first, last, hit.headings)
        return Citation(n, hit.chunk_id, hit.source, first, last, hit.text, location, quotes)

    def _finish(self, text: str, numbers: list[int], *, found: bool, mode: str = "llm",
                draft: Draft | None = None, refused_by: Refusal | None = None,
                kept: str = "") -> None:
        claims: list[Claim] = draft.claims if draft is not None else []
        valid = sorted({n for n in numbers if 1 <= n <= len(self.hits)})
        invalid = len([n for n in numbers if not 1 <= n <= len(self.hits)])
        quotes: dict[int, list[str]] = {}
        for claim in claims:
            if claim.supported:
                quotes.setdefault(claim.source, []).append(claim.quote)
        citations = [self._citation(n, tuple(dict.fromkeys(quotes.get(n, [])))) for n in valid]
        support = None
        if citations and mode == "llm":
            emb = self._retriever.embedder
            vec = emb.embed_query(text)
            passages = emb.embed_documents([c.passage for c in citations])
            support = float((passages @ vec).max())
        self.timings.total_s = time.perf_counter() - self._started
        from rag_app.llm.client import redact_url  # stored and shown: no password or key in the URL

        endpoint = redact_url(self._chat.endpoint.base_url) if self._chat is not None else ""
        self._result = Answer(
            question=self.question, query=self.query, text=text, citations=citations,
            hits=list(self.hits), found=found, grounded=bool(citations),
            invalid_citations=invalid, support=support, mode=mode, endpoint=endpoint,
            flagged_sources=self.flagged,
            removed_links=draft.removed_links if draft is not None else 0,
            notice="\n\n".join(n for n in (self.notice, *self._notes) if n),
            checked=self._checked, draft=kept,
            missing_names=self._names.get(Refusal.NAMES, []),
            refused_by="" if found else str(refused_by or Refusal.MODEL),
            claims=list(claims), first_answer=self._first_answer,
            unsourced_names=self._names.get(Refusal.UNSOURCED, []) if self._first_answer
            else [],
            quotes_checked=draft.quotes_checked if draft is not None else False,
            evidence=self._evidence(claims) if mode == "llm" and refused_by not in (
                Refusal.SIMILARITY, Refusal.NAMES) else [],
            timings=self.timings,
        )

    def _evidence(self, claims: Sequence[Claim]) -> list[Evidence]:
        """The documents' own words for this answer: its supported quotes, in order; when none
        is supported (or it was refused), the sentences of the passages that best answer the
        question."""
        quotes: dict[str, Evidence] = {}
        for c in claims:
            if c.supported and c.quote and c.quote not in quotes:
                quotes[c.quote] = Evidence(c.source, c.quote, c.score or 0.0)
        if quotes:
            return list(quotes.values())
        try:
            ranked = best_sentences(self.query, [h.text for h in self._context],
                                    self._retriever.embedder, top=EVIDENCE_LINES)
        except Exception:  # the documents' words are an aid: the answer stands without them
            log.warning("could not rank the evidence sentences", exc_info=True)
            return []
        return [Evidence(i + 1, text, score) for i, text, score in ranked]


def answer(question: str, history: Sequence[dict[str, str]] = (), *, settings: Settings,
           retriever: Retriever | None = None, chat: Chat | None = None,
           options: RetrievalOptions | None = None, use_llm: bool = True,
           notice: str = "") -> AnswerStream:
    """Retrieve now (sources are known on return); generate while the caller iterates.

    `chat` is the model to answer with (`rag_app.llm.client.connect(settings)` makes one); None
    with `use_llm` connects here, for callers that have none (`notice` then says why there
    is no model, if there is none)."""
    if not question.strip():
        raise ConfigError("The question is empty.")
    retriever = retriever or Retriever(settings)
    if chat is None and use_llm:
        from rag_app.llm.client import connect

        chat, notice = connect(settings)
    opts = options or RetrievalOptions(k=settings.retrieval_k)
    return AnswerStream(question, history, settings, retriever, chat, opts, notice)

