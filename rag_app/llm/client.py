"""Chat completions from any OpenAI-compatible endpoint, streamed, with time limits that hold.

One code path for OpenAI, Ollama, vLLM, llama.cpp and the bundled local server. This module
retries 408/409/429/5xx and connection failures (honouring Retry-After) a bounded number of
times and never retries 401; the `openai` client's own retries are off, because it would
retry a request the caller has already given up on (a stalled server then gets the same
request again and again). The limits: a time to the first token, an idle gap between pieces
and an overall deadline per request (`llm_total_timeout_s`, else the first-token limit plus
`max_tokens` at `MIN_TOKENS_PER_S`): a stalled or endless server never hangs the caller.
Errors name the endpoint and what to check; the API key never appears in them, nor does a
password or key in the endpoint's URL (`redact_url`, also for what answers and reports store).
"""

from __future__ import annotations

import email.utils
import math
import queue
import random
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from rag_app.errors import ConfigError, RagError

if TYPE_CHECKING:
    from rag_app.settings import Settings


class LLMError(RagError):
    """The LLM endpoint failed; the message says which endpoint and what to check."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    base_url: str
    model: str
    api_key: str  # "not-needed" for local servers; never printed
    # Requests this process sends at once; the others wait in `rag_app.llm.queue`, told their
    # place. None: no queue here (a remote endpoint queues its own, unless RAG_LLM_SLOTS is set).
    slots: int | None = None

    def __repr__(self) -> str:
        return (f"Endpoint(base_url={redact_url(self.base_url)!r}, model={self.model!r}, "
                f"api_key=***, slots={self.slots})")


@dataclass(frozen=True)
class TokenProb:
    """One token of a reply as the server sampled it: its text, its log-probability and the
    most likely tokens the model weighed in its place (text, log-probability)."""
    text: str
    logprob: float
    alternatives: tuple[tuple[str, float], ...] = ()


class Chat(Protocol):
    """What the answer path needs of a chat model: `ChatClient`, or a fake in tests."""

    endpoint: Endpoint

    def stream(self, messages: Sequence[dict[str, str]], *, max_tokens: int | None = None,
               response_format: dict[str, Any] | None = None,
               temperature: float | None = None,
               stats: dict[str, float] | None = None,
               tokens: list[TokenProb] | None = None,
               cancel: threading.Event | None = None) -> Iterator[str]: ...

    def complete(self, messages: Sequence[dict[str, str]], **kwargs: Any) -> str: ...


def resolve(settings: Settings) -> tuple[Endpoint | None, str]:
    """The configured endpoint, else the bundled local server (started on first use);
    `(None, notice)` when there is no model at all, the notice saying what to install or set.
    A model that is there but broken is an error, not a silent fallback."""
    if settings.openai_base_url:
        if not settings.llm_model:
            raise ConfigError("OPENAI_BASE_URL is set but RAG_LLM_MODEL is not: name the model "
                              "to use at that endpoint (e.g. gpt-4o-mini, llama3.1)")
        key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else ""
        return Endpoint(settings.openai_base_url.rstrip("/"), settings.llm_model,
                        key or "not-needed", slots=settings.llm_slots), ""
    from rag_app.llm.local import NoLocalModel, ensure_server

    try:
        server = ensure_server(settings)
    except NoLocalModel as exc:
        return None, (f"No LLM is available, so no answer is written. {exc}\nOr point "
                      "OPENAI_BASE_URL (and RAG_LLM_MODEL) at an OpenAI-compatible server.")
    return Endpoint(server.base_url, server.model_name, server.api_key,
                    slots=server.slots), ""


def connect(settings: Settings) -> tuple[ChatClient | None, str]:
    """The chat client for the configured endpoint, else for the bundled local server;
    `(None, notice)` when no model exists at all (see `resolve`)."""
    endpoint, notice = resolve(settings)
    return (ChatClient(endpoint, settings) if endpoint is not None else None), notice


_DONE = object()
_CANCELLED = object()
CANCEL_POLL_S = 0.1  # how often a stream waiting for the server looks at its cancel event
RETRY_MARGIN_S = 0.25  # no retry is sent this close to the moment its caller gives up
# The overall deadline, when RAG_LLM_TOTAL_TIMEOUT_S is not set, allows this slow a generation.
MIN_TOKENS_PER_S = 2.0
_RETRY_AFTER_MAX_S = 60.0  # a server asking for a longer wait is not retried
_RETRY_STATUS = frozenset({408, 409, 429})  # and every 5xx



def _next(pieces: queue.Queue[Any], wait: float, cancel: threading.Event | None) -> Any:
    """The next item of a stream within `wait` seconds (queue.Empty if none), or _CANCELLED
    as soon as `cancel` is set."""
    if cancel is None:
        return pieces.get(timeout=wait)
    end = time.monotonic() + wait
    while not cancel.is_set():
        left = end - time.monotonic()
        if left <= 0:
            raise queue.Empty
        try:
            return pieces.get(timeout=min(left, CANCEL_POLL_S))
        except queue.Empty:
            continue
    return _CANCELLED


def _read_stats(event: Any, stats: dict[str, float]) -> None:
    """Prompt figures from a stream event: llama.cpp's `timings` (read and cached tokens, time)
    or a standard `usage` block; whatever the server does not send stays absent."""
    usage = getattr(event, "usage", None)
    if usage is not None and getattr(usage, "prompt_tokens", None) is not None:
        stats["prompt_tokens"] = float(usage.prompt_tokens)
    timings = (getattr(event, "model_extra", None) or {}).get("timings")
    if isinstance(timings, dict):
        read, cached = timings.get("prompt_n"), timings.get("cache_n")
        if isinstance(read, int | float):
            stats["prompt_tokens"] = float(read) + float(cached or 0)
            stats["cached_tokens"] = float(cached or 0)
        if isinstance(timings.get("prompt_ms"), int | float):
            stats["prompt_ms"] = float(timings["prompt_ms"])

TOP_LOGPROBS = 3  # the alternatives asked for each token, when log-probabilities are asked


def _token_probs(choice: Any) -> list[TokenProb]:
    """The tokens of a stream event's choice with their log-probabilities, if it has any."""
    content = getattr(getattr(choice, "logprobs", None), "content", None) or []
    out = []
    for item in content:
        if not isinstance(getattr(item, "logprob", None), int | float):
            continue
        top = tuple((alt.token, float(alt.logprob)) for alt in (item.top_logprobs or [])
                    if isinstance(getattr(alt, "logprob", None), int | float))
        out.append(TokenProb(item.token, float(item.logprob), top))
    return out


class ChatClient:
    """Streams chat completions; `stream()` yields text pieces as they arrive."""

    def __init__(self, endpoint: Endpoint, settings: Settings) -> None:
        from openai import OpenAI

        self.endpoint = endpoint
        self._settings = settings
        self._client = OpenAI(
            base_url=endpoint.base_url,
            api_key=endpoint.api_key,
            max_retries=0,  # retried in `_pump`, where a caller that gave up is seen
            timeout=_timeout(settings),
        )

    def stream(self, messages: Sequence[dict[str, str]], *, max_tokens: int | None = None,
               response_format: dict[str, Any] | None = None,
               temperature: float | None = None,
               stats: dict[str, float] | None = None,
               tokens: list[TokenProb] | None = None,
               cancel: threading.Event | None = None) -> Iterator[str]:
        """Yield the answer's text as it streams. Raises LLMError on any endpoint failure,
        including no first token within `llm_first_token_timeout_s`, a gap longer than
        `llm_idle_timeout_s` between pieces and no end within the overall deadline.

        `stats`, when given, receives what the server reports of the request: prompt_tokens
        (read), cached_tokens (reused from the server's cache, llama.cpp), prompt_ms.
        `tokens`, when given, asks the server for log-probabilities and receives every token
        with them, as it streams (a server that sends none leaves it empty).
        `cancel`, when set, ends the stream at once, even before the first token: the request
        is closed as soon as the server has answered it (llama.cpp answers when it starts to
        read the prompt), so a caller that left does not keep the model busy.

        With `endpoint.slots` set, the request first waits for a slot in this process's queue
        (`rag_app.llm.queue`; the listener of `llm_queue.listening` hears its place), and the
        time limits above start once it has one; the wait has its own, RAG_LLM_QUEUE_TIMEOUT_S.
        """
        from rag_app.llm import queue as llm_queue

        if cancel is not None and cancel.is_set():
            return  # the caller gave up already: nothing is sent
        if not self.endpoint.slots:
            yield from self._stream(messages, max_tokens, response_format, temperature, stats,
                                    tokens, cancel)
            return
        gate = llm_queue.queue_for(self.endpoint.base_url, self.endpoint.model,
                                   self.endpoint.slots, self._settings.llm_queue_timeout_s)
        try:
            with gate.enter(cancel=cancel) as waited:
                if stats is not None:
                    stats["queue_wait_s"] = waited
                yield from self._stream(messages, max_tokens, response_format, temperature,
                                        stats, tokens, cancel)
        except llm_queue.QueueCancelled:
            return
        except llm_queue.QueueTimeout as exc:
            raise LLMError(f"{redact_url(self.endpoint.base_url)} (model "
                           f"{self.endpoint.model!r}): {exc}") from None

    def _stream(self, messages: Sequence[dict[str, str]], max_tokens: int | None,
                response_format: dict[str, Any] | None, temperature: float | None,
                stats: dict[str, float] | None, tokens: list[TokenProb] | None,
                cancel: threading.Event | None) -> Iterator[str]:
        s = self._settings
        kwargs: dict[str, Any] = {
            "model": self.endpoint.model,
            "messages": list(messages),
            "stream": True,
            "max_tokens": max_tokens or s.llm_max_tokens,
            "temperature": s.llm_temperature if temperature is None else temperature,
        }
        if response_format is not None:
            kwargs["response_format"] = response_format
        if tokens is not None:
            kwargs["logprobs"] = True
            kwargs["top_logprobs"] = TOP_LOGPROBS
        pieces: queue.Queue[Any] = queue.Queue()
        stop = threading.Event()
        holder: list[Any] = []  # the HTTP response, once the server answered
        total = self._total_timeout(kwargs["max_tokens"])
        started = time.monotonic()
        deadline = started + total
        # Retries happen before any token: the caller gives up at the first-token limit, so a
        # retry is only worth sending well before that (never as the caller leaves).
        retry_until = min(deadline, started + s.llm_first_token_timeout_s) - RETRY_MARGIN_S
        worker = threading.Thread(target=self._pump,
                                  args=(kwargs, pieces, stop, holder, retry_until, stats,
                                        tokens),
                                  daemon=True, name="llm-stream")
        worker.start()
        first = True
        try:
            while True:
                limit = s.llm_first_token_timeout_s if first else s.llm_idle_timeout_s
                wait = min(limit, max(0.0, deadline - time.monotonic()))
                try:
                    item = _next(pieces, wait, cancel)
                except queue.Empty:
                    if wait < limit:
                        raise LLMError(
                            f"{redact_url(self.endpoint.base_url)} (model "
                            f"{self.endpoint.model!r}) did not finish the answer within "
                            f"{total:g} s; the server may be overloaded "
                            "or the model too slow for this machine: raise "
                            "RAG_LLM_TOTAL_TIMEOUT_S, lower RAG_LLM_MAX_TOKENS or use a smaller "
                            "model"
                        ) from None
                    what = "no first token" if first else "the stream stalled"
                    raise LLMError(
                        f"{what} from {redact_url(self.endpoint.base_url)} within {limit:g} s "
                        f"(model {self.endpoint.model!r}); the server may be overloaded or "
                        "the model too slow for this machine: raise "
                        f"{'RAG_LLM_FIRST_TOKEN_TIMEOUT_S' if first else 'RAG_LLM_IDLE_TIMEOUT_S'}"
                        " or use a smaller model"
                    ) from None
                if item is _DONE or item is _CANCELLED:
                    return
                if isinstance(item, BaseException):
                    raise self._explain(item) from None
                first = False
                yield item
        finally:
            # Stopped, failed or abandoned (the UI's stop button closes this generator): close
            # the stream from here, so the server stops generating for nobody.
            stop.set()
            for response in holder:
                try:
                    response.close()
                except Exception:  # noqa: BLE001 - closing a dead stream may fail; nothing to do
                    pass

    def complete(self, messages: Sequence[dict[str, str]], **kwargs: Any) -> str:
        return "".join(self.stream(messages, **kwargs))

    def _total_timeout(self, max_tokens: int) -> float:
        """Seconds one request may take in all: RAG_LLM_TOTAL_TIMEOUT_S, else the first-token
        limit plus `max_tokens` at `MIN_TOKENS_PER_S`."""
        s = self._settings
        configured = s.llm_total_timeout_s
        if configured:
            return float(configured)
        return float(s.llm_first_token_timeout_s) + max_tokens / MIN_TOKENS_PER_S

    def _create(self, kwargs: dict[str, Any], stop: threading.Event, retry_until: float
                ) -> Any:
        """The streaming response, retrying what is worth retrying; None if the caller gave up
        meanwhile. Never retries once `stop` is set: the caller is no longer waiting."""
        attempt = 0
        while True:
            if stop.is_set():
                return None
            try:
                return self._client.chat.completions.create(**kwargs)
            except Exception as exc:
                delay = _retry_delay(exc, attempt)
                if (delay is None or attempt >= self._settings.llm_max_retries
                        or stop.is_set() or time.monotonic() + delay >= retry_until):
                    raise
            attempt += 1
            if stop.wait(delay):
                return None

    def _pump(self, kwargs: dict[str, Any], out: queue.Queue[Any], stop: threading.Event,
              holder: list[Any], retry_until: float,
              stats: dict[str, float] | None = None,
              tokens: list[TokenProb] | None = None) -> None:
        try:
            response = self._create(kwargs, stop, retry_until)
            if response is None:
                return
            holder.append(response)
            try:
                if stop.is_set():  # the caller gave up while the request was being made
                    return
                for event in response:
                    if stop.is_set():
                        break
                    if stats is not None:
                        _read_stats(event, stats)
                    if not event.choices:
                        continue
                    if tokens is not None:
                        tokens.extend(_token_probs(event.choices[0]))
                    text = event.choices[0].delta.content
                    if text:
                        out.put(text)
            finally:
                response.close()
            out.put(_DONE)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            if not stop.is_set():
                out.put(exc)

    def _explain(self, exc: BaseException) -> LLMError:
        import openai

        where = f"{redact_url(self.endpoint.base_url)} (model {self.endpoint.model!r})"
        if isinstance(exc, openai.AuthenticationError):
            return LLMError(f"{where} refused the API key (401): check OPENAI_API_KEY")
        if isinstance(exc, openai.PermissionDeniedError):
            return LLMError(f"{where} denied access (403): check the key's permissions")
        if isinstance(exc, openai.NotFoundError):
            return LLMError(f"{where} answered 404: check OPENAI_BASE_URL (usually ends in /v1) "
                            "and the model name RAG_LLM_MODEL")
        if isinstance(exc, openai.BadRequestError | openai.UnprocessableEntityError):
            return RequestRejected(f"{where} rejected the request (HTTP {exc.status_code}): "
                                   f"{_redact(str(exc), self)[:300]}")
        if isinstance(exc, openai.RateLimitError):
            return LLMError(f"{where} is rate-limiting (429) and still was after "
                            f"{self._settings.llm_max_retries} retries: wait, or check quota")
        if isinstance(exc, openai.APITimeoutError):
            return LLMError(f"{where} did not answer in time: check the server is up and not "
                            "overloaded")
        if isinstance(exc, openai.APIConnectionError):
            return LLMError(f"cannot connect to {where}: check OPENAI_BASE_URL and that the "
                            "server is running")
        if isinstance(exc, openai.APIStatusError):
            return LLMError(f"{where} failed with HTTP {exc.status_code} after "
                            f"{self._settings.llm_max_retries} retries: check the server's log")
        return LLMError(f"{where} failed: {type(exc).__name__}: {_redact(str(exc), self)}")


class RequestRejected(LLMError):
    """The server refused the request itself (400/422), e.g. an option it does not support."""


def _retry_delay(exc: BaseException, attempt: int) -> float | None:
    """Seconds to wait before retrying after `exc`, or None if it is not worth retrying (401,
    403, 404, 400 and 422 never are)."""
    import openai

    if isinstance(exc, openai.APIStatusError):
        if exc.status_code not in _RETRY_STATUS and exc.status_code < 500:
            return None
        asked = _retry_after(exc.response.headers)
        if asked is not None:
            return asked if asked <= _RETRY_AFTER_MAX_S else None
    elif not isinstance(exc, openai.APIConnectionError):  # includes timeouts
        return None
    # exponential backoff with jitter, as the openai client does: 0.5 s, 1 s, 2 s ... 8 s
    return min(0.5 * 2.0 ** attempt, 8.0) * (1 - 0.25 * random.random())


def _retry_after(headers: Any) -> float | None:
    """The wait a 429/503 asks for: `retry-after-ms`, or `retry-after` in seconds or as a date."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) * scale
        except ValueError:
            continue
        if not math.isnan(seconds):
            return max(0.0, seconds)  # inf: too long, not retried
    try:
        when = email.utils.parsedate_to_datetime(headers.get("retry-after") or "")
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _redact(text: str, client: ChatClient) -> str:
    """`text` (an exception's message) without the API key or the secrets of the URL."""
    for secret in (client.endpoint.api_key, *_url_secrets(client.endpoint.base_url)):
        if secret and len(secret) > 3:
            text = text.replace(secret, "***")
    return text


# Query parameters whose values are credentials: matched in the lower-cased name with "-"
# and "_" removed (api-key, api_key, apikey, key, access_token, sig, X-Amz-Signature ...).
_SECRET_PARAMS = ("key", "token", "sig", "secret", "pass", "pwd", "auth", "credential",
                  "session", "cookie")


def redact_url(url: str) -> str:
    """`url` fit to show or store: a password in the userinfo becomes ***, as does a lone
    user name (often a token), and so do the values of query parameters that look like
    credentials (`?api-key=`, `?key=`, `?token=`, `?sig=` ...). Requests use the real URL."""
    from urllib.parse import unquote, urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
        netloc = parts.netloc
    except ValueError:  # not a URL at all (e.g. a bad IPv6 host): show only what is safe
        return _redact_unparsed(url)
    userinfo, at, host = netloc.rpartition("@")
    if at:
        user, colon, _ = userinfo.partition(":")
        netloc = f"{user}:***@{host}" if colon else f"***@{host}"
    query = "&".join(
        f"{name}=***" if eq and _is_secret(unquote(name)) else f"{name}{eq}{value}"
        for item in parts.query.split("&") if item
        for name, eq, value in [item.partition("=")]
    )
    fragment = "***" if parts.fragment else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, fragment))


def _url_secrets(url: str) -> list[str]:
    """What `redact_url` hides, as written in the URL and decoded, to hide it in any text."""
    from urllib.parse import unquote, urlsplit

    try:
        parts = urlsplit(url)
        netloc = parts.netloc
    except ValueError:
        return [url]  # only the whole string can be found again
    userinfo, at, _ = netloc.rpartition("@")
    user, colon, password = userinfo.partition(":")
    found = [password if colon else user] if at else []
    found += [value for item in parts.query.split("&")
              for name, eq, value in [item.partition("=")] if eq and _is_secret(unquote(name))]
    found += [parts.fragment]
    return sorted({s for raw in found for s in (raw, unquote(raw))}, key=len, reverse=True)


def _is_secret(name: str) -> bool:
    plain = name.lower().replace("-", "").replace("_", "")
    return any(word in plain for word in _SECRET_PARAMS)


def _redact_unparsed(url: str) -> str:
    """A string `urlsplit` refuses: userinfo and everything from ? or # on hidden."""
    import re

    head = re.split(r"[?#]", url, maxsplit=1)[0]
    return re.sub(r"(//)[^/]*@", r"\1***@", head) + ("?***" if head != url else "")


def _timeout(settings: Settings) -> Any:
    from openai import Timeout

    return Timeout(
        connect=settings.llm_connect_timeout_s,
        read=max(settings.llm_first_token_timeout_s, settings.llm_idle_timeout_s),
        write=settings.llm_connect_timeout_s,
        pool=settings.llm_connect_timeout_s,
    )
