"""Chat completions from any OpenAI-compatible endpoint, streamed, with time limits that hold.

One code path for OpenAI, Ollama, vLLM, llama.cpp and the bundled local server. The `openai`
client retries 429/5xx and connection failures (honouring Retry-After) a bounded number of
times and never retries 401. On top of it this module enforces a time-to-first-token limit and
an idle-stream limit: a stalled server never hangs the caller. Errors name the endpoint and what
to check; the API key never appears in them.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rag_app.errors import RagError

if TYPE_CHECKING:
    from rag_app.settings import Settings


class LLMError(RagError):
    """The LLM endpoint failed; the message says which endpoint and what to check."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    base_url: str
    model: str
    api_key: str  # "not-needed" for local servers; never printed

    def __repr__(self) -> str:
        return f"Endpoint(base_url={self.base_url!r}, model={self.model!r}, api_key=***)"


_DONE = object()


class ChatClient:
    """Streams chat completions; `stream()` yields text pieces as they arrive."""

    def __init__(self, endpoint: Endpoint, settings: Settings) -> None:
        from openai import OpenAI

        self.endpoint = endpoint
        self._settings = settings
        self._client = OpenAI(
            base_url=endpoint.base_url,
            api_key=endpoint.api_key,
            max_retries=settings.llm_max_retries,
            timeout=_timeout(settings),
        )

    def stream(self, messages: Sequence[dict[str, str]], *, max_tokens: int | None = None,
               response_format: dict[str, Any] | None = None,
               temperature: float | None = None) -> Iterator[str]:
        """Yield the answer's text as it streams. Raises LLMError on any endpoint failure,
        including no first token within `llm_first_token_timeout_s` and a gap longer than
        `llm_idle_timeout_s` between pieces."""
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
        pieces: queue.Queue[Any] = queue.Queue()
        stop = threading.Event()
        holder: list[Any] = []  # the HTTP response, once the server answered
        worker = threading.Thread(target=self._pump, args=(kwargs, pieces, stop, holder),
                                  daemon=True, name="llm-stream")
        worker.start()
        first = True
        try:
            while True:
                limit = s.llm_first_token_timeout_s if first else s.llm_idle_timeout_s
                try:
                    item = pieces.get(timeout=limit)
                except queue.Empty:
                    what = "no first token" if first else "the stream stalled"
                    raise LLMError(
                        f"{what} from {self.endpoint.base_url} within {limit:g} s "
                        f"(model {self.endpoint.model!r}); the server may be overloaded or "
                        "the model too slow for this machine: raise "
                        f"{'RAG_LLM_FIRST_TOKEN_TIMEOUT_S' if first else 'RAG_LLM_IDLE_TIMEOUT_S'}"
                        " or use a smaller model"
                    ) from None
                if item is _DONE:
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

    def _pump(self, kwargs: dict[str, Any], out: queue.Queue[Any], stop: threading.Event,
              holder: list[Any]) -> None:
        try:
            response = self._client.chat.completions.create(**kwargs)
            holder.append(response)
            try:
                if stop.is_set():  # the caller gave up while the request was being made
                    return
                for event in response:
                    if stop.is_set():
                        break
                    if not event.choices:
                        continue
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

        where = f"{self.endpoint.base_url} (model {self.endpoint.model!r})"
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


def _redact(text: str, client: ChatClient) -> str:
    key = client.endpoint.api_key
    return text.replace(key, "***") if key and len(key) > 3 else text


def _timeout(settings: Settings) -> Any:
    from openai import Timeout

    return Timeout(
        connect=settings.llm_connect_timeout_s,
        read=max(settings.llm_first_token_timeout_s, settings.llm_idle_timeout_s),
        write=settings.llm_connect_timeout_s,
        pool=settings.llm_connect_timeout_s,
    )
