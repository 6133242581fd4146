"""The HTTP API: `create_app(settings)` builds it (nothing runs at import).

    POST /v1/chat/completions  OpenAI-compatible; streamed (SSE) or not; sources as [n] in the
                               text and structured in `citations` and `rag`
    GET  /v1/models            the collection, as a model
    POST /v1/search            retrieval only
    GET  /v1/documents         the indexed files; POST uploads (multipart `files`), DELETE
                               /v1/documents/{id} removes one; both queue a job:
    GET  /v1/jobs/{id}         an upload's or delete's progress and outcome
    GET  /health, /openapi.json

Everything goes through what the chat uses: `rag_app.ui.services.Services` (the models loaded
once, a retriever that follows the index, one background writer for ingest and delete) and
`rag_app.answering.answer`.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import threading
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, FastAPI, File, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from rag_app.api import answers as ans
from rag_app.api.guard import Guard, RateLimiter, error_payload
from rag_app.api.schemas import (
    ChatRequest,
    Document,
    DocumentList,
    ErrorResponse,
    Health,
    JobInfo,
    ModelCard,
    ModelList,
    SearchHit,
    SearchRequest,
    SearchResponse,
    document_id,
)
from rag_app.errors import ConfigError, RagError, StoreError, StoreLocked

if TYPE_CHECKING:
    from rag_app.settings import Settings
    from rag_app.ui.services import Job, Services

log = logging.getLogger(__name__)

KEEPALIVE_S = 5.0  # an SSE comment while the model reads the sources (proxies keep the line)
_BEARER = HTTPBearer(auto_error=False, description="RAG_API_KEY, when set")
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 409, 413, 429, 502)}


def create_app(settings: Settings, *, services: Services | None = None,
               allowed_hosts: Sequence[str] = ("localhost", "127.0.0.1", "::1")) -> FastAPI:
    """The API app. `services` is made at start-up when not given (tests pass their own);
    `allowed_hosts` are the Host names it answers (`rag_app.ui.server.allowed_hosts`)."""
    state: dict[str, Any] = {"services": services}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if state["services"] is None:
            from rag_app.ui.services import Services

            state["services"] = await run_in_threadpool(Services, settings)
            threading.Thread(target=_warm_embedder, args=(state["services"],), daemon=True,
                             name="api-embedder-start").start()
        yield

    app = FastAPI(title="rag_app API", version="1", lifespan=lifespan, docs_url=None,
                  redoc_url=None,
                  description="Chat with your documents: OpenAI-compatible chat completions "
                  "with checked citations, search, and document upload.")
    app.state.answer_slots = threading.BoundedSemaphore(settings.api_max_answers)

    def svc() -> Services:
        if state["services"] is None:
            raise HTTPException(503, "The server is still starting: retry in a moment.")
        return state["services"]  # type: ignore[no-any-return]

    def require_key(credentials: Annotated[HTTPAuthorizationCredentials | None,
                                           Depends(_BEARER)]) -> None:
        if settings.api_key is None:
            return
        expected = settings.api_key.get_secret_value().encode("utf-8")
        given = credentials.credentials.encode("utf-8") if credentials is not None else b""
        if not hmac.compare_digest(given, expected):
            raise HTTPException(401, "A valid API key is required: send the header "
                                "'Authorization: Bearer <RAG_API_KEY>'.",
                                headers={"WWW-Authenticate": "Bearer"})

    keyed = [Depends(require_key)]
    _install_errors(app)

    def check_model(model: str | None) -> None:
        if model is not None and model != settings.collection:
            raise HTTPException(404, f"The model {model!r} is not served here: use "
                                f"{settings.collection!r} (GET /v1/models lists them).")

    @app.get("/health", response_model=Health, tags=["server"])
    async def health() -> Health:
        services_ = state["services"]
        if services_ is None:
            return Health(collection=settings.collection, indexed=False, llm="starting")
        store = await run_in_threadpool(services_.store)
        chat = services_._chat  # read only: never waits for the model to start
        llm = "starting" if chat is None else ("ready" if chat[0] is not None else chat[1])
        return Health(collection=settings.collection, indexed=store is not None, llm=llm)

    @app.get("/v1/models", response_model=ModelList, dependencies=keyed, tags=["chat"],
             responses=_ERRORS)
    async def models() -> ModelList:
        return ModelList(data=[ModelCard(id=settings.collection)])

    @app.post("/v1/chat/completions", dependencies=keyed, tags=["chat"], responses={
        **_ERRORS, 200: {"description": "a chat.completion, or with stream=true an SSE stream "
                         "of chat.completion.chunk; the last chunk (and the completion) carries "
                         "`citations` and `rag`"}})
    async def chat_completions(body: ChatRequest, request: Request) -> Response:
        check_model(body.model)
        question, history = ans.split_conversation(body.messages)
        services_ = svc()
        retriever = await run_in_threadpool(services_.retriever)
        if retriever is None:
            raise HTTPException(409, "No documents are indexed yet: upload some with POST "
                                "/v1/documents (or run python -m ingest FOLDER), then ask "
                                "again.")
        chat, notice = await run_in_threadpool(services_.chat)
        options = _options(body, settings.retrieval_k)
        slots: threading.BoundedSemaphore = app.state.answer_slots
        if not slots.acquire(blocking=False):
            raise HTTPException(429, f"{settings.api_max_answers} answers are already being "
                                "worked on (RAG_API_MAX_ANSWERS): retry in a moment.",
                                headers={"Retry-After": "5"})
        run = ans.AnswerRun(question, history, settings=settings, retriever=retriever,
                            chat=chat, notice=notice, options=options,
                            loop=asyncio.get_running_loop(), on_exit=slots.release)
        run.start()
        cid, created = ans.completion_id(), ans.now()
        streaming = False
        try:
            # wait for retrieval, so that its errors get their own status (the stream's is 200)
            kind, value = await _next(run, request, until=("ready",))
            if kind == "ready" and body.stream:
                usage = bool((body.stream_options or {}).get("include_usage"))
                streaming = True  # from here on, the stream's generator owns the run
                return StreamingResponse(_sse(run, cid, body.model, created, usage),
                                         media_type="text/event-stream",
                                         headers={"Cache-Control": "no-cache",
                                                  "X-Accel-Buffering": "no"})
            if kind == "ready":
                kind, value = await _next(run, request, until=("done",))
            if kind == "error":
                raise value
            if kind == "done":
                return JSONResponse(ans.completion(value, body.model, cid, created))
            return Response(status_code=499)  # the client left: nobody reads this
        finally:
            if not streaming:
                run.cancel.set()  # a no-op once done; stops the work if this is cancelled

    @app.post("/v1/search", response_model=SearchResponse, dependencies=keyed,
              tags=["search"], responses=_ERRORS)
    async def search(body: SearchRequest) -> SearchResponse:
        from rag_app.guard import looks_like_instructions

        check_model(body.model)
        retriever = await run_in_threadpool(svc().retriever)
        if retriever is None:
            return SearchResponse(model=settings.collection, query=body.query, hits=[])
        hits = await run_in_threadpool(retriever.search, body.query,
                                       _options(body, settings.retrieval_k))
        return SearchResponse(model=settings.collection, query=body.query, hits=[
            SearchHit(rank=n, id=h.chunk_id, file=h.source, page_start=h.page_start,
                      page_end=h.page_end, headings=list(h.headings), location=h.location,
                      text=h.text, score=h.score, similarity=h.similarity,
                      rerank_score=h.rerank_score, dense_rank=h.dense_rank,
                      lexical_rank=h.lexical_rank,
                      instruction_like=looks_like_instructions(h.text))
            for n, h in enumerate(hits, start=1)])

    @app.get("/v1/documents", response_model=DocumentList, dependencies=keyed,
             tags=["documents"], responses=_ERRORS)
    async def documents() -> DocumentList:
        return await run_in_threadpool(_documents, settings)

    @app.post("/v1/documents", response_model=JobInfo, status_code=202, dependencies=keyed,
              tags=["documents"], responses=_ERRORS)
    async def upload(files: Annotated[list[UploadFile], File(
            description="PDF, Markdown, text or HTML files")]) -> JSONResponse:
        from rag_app.ui.services import check_upload_batch, save_upload

        check_upload_batch(settings, [(f.filename or "", f.size or 0) for f in files])
        saved: list[Path] = []
        refused: list[dict[str, str]] = []
        for f in files:
            name = f.filename or "upload"
            try:
                saved.append(await run_in_threadpool(save_upload, settings, name, f.file))
            except RagError as exc:
                refused.append({"file": name, "reason": str(exc)})
        if not saved:
            raise HTTPException(400, "No file was added: " + "; ".join(
                r["reason"] for r in refused))
        job = svc().submit_ingest(saved, label="upload " + ", ".join(p.name for p in saved))
        info = _job_info(job).model_dump()
        info["refused"] = refused
        return JSONResponse(info, status_code=202, headers={"Location": f"/v1/jobs/{job.id}"})

    @app.delete("/v1/documents/{doc_id}", response_model=JobInfo, status_code=202,
                dependencies=keyed, tags=["documents"], responses=_ERRORS)
    async def delete(doc_id: str) -> JSONResponse:
        from rag_app.service import index_overview
        from rag_app.ui.services import uploads_dir

        info = await run_in_threadpool(index_overview, settings)
        record = next((r for r in info.files if document_id(r.key) == doc_id), None)
        if record is None:
            raise HTTPException(404, f"No indexed document has the id {doc_id!r}: GET "
                                "/v1/documents lists them.")
        path = Path(record.root) / record.source
        upload = _inside(path, uploads_dir(settings))
        job = svc().submit_delete([record.key], label=f"delete {record.source}",
                                  delete_files=[path] if upload else [])
        return JSONResponse(_job_info(job).model_dump(), status_code=202,
                            headers={"Location": f"/v1/jobs/{job.id}"})

    @app.get("/v1/jobs/{job_id}", response_model=JobInfo, dependencies=keyed,
             tags=["documents"], responses=_ERRORS)
    async def job(job_id: int) -> JobInfo:
        found = next((j for j in list(svc().jobs) if j.id == job_id), None)
        if found is None:
            raise HTTPException(404, f"No job {job_id} (the last 50 are kept).")
        return _job_info(found)

    def body_limit(method: str, path: str) -> int:
        if path == "/v1/documents":
            mb = min(settings.upload_batch_max_mb,
                     settings.upload_max_mb * settings.upload_max_files)
            return int((mb + 1) * 1024 * 1024)  # + multipart headers
        return settings.api_max_request_kb * 1024

    app.add_middleware(Guard, allowed_hosts=list(allowed_hosts),  # type: ignore[arg-type]
                       limiter=RateLimiter(settings.api_requests_per_minute),
                       body_limit=body_limit)
    return app


async def _next(run: ans.AnswerRun, request: Request, until: tuple[str, ...]
                ) -> tuple[str, Any]:
    """The next event of `until`, an error, or ("cancelled", None) when the answer stopped or
    the client hung up (then the answer is stopped). Pieces on the way are skipped."""
    loop = asyncio.get_running_loop()
    checked = loop.time()
    while True:
        try:
            kind, value = await asyncio.wait_for(run.events.get(), timeout=0.5)
        except TimeoutError:
            kind, value = "", None
        if kind in until or kind in ("error", "cancelled"):
            return kind, value
        if loop.time() - checked >= 0.5:  # pieces may keep coming: check by the clock
            checked = loop.time()
            if await request.is_disconnected():
                run.cancel.set()
                return "cancelled", None


async def _sse(run: ans.AnswerRun, cid: str, model: str, created: int, usage: bool
               ) -> AsyncIterator[str]:
    """The answer as server-sent events; the client hanging up cancels this generator, which
    stops the answer (`run.cancel`)."""
    try:
        yield _event(ans.chunk(cid, model, created, {"role": "assistant", "content": ""}))
        if run.queue_status is not None and run.queue_status.ahead > 0:  # while condensing
            yield _event(ans.queue_chunk(run.queue_status, cid, model, created))
        streamed: list[str] = []
        while True:
            try:
                kind, value = await asyncio.wait_for(run.events.get(), timeout=KEEPALIVE_S)
            except TimeoutError:
                yield ": the model is reading the sources\n\n"
                continue
            if kind == "piece":
                streamed.append(value)
                yield _event(ans.chunk(cid, model, created, {"content": value}))
            elif kind == "queued":  # waiting for the model: where (rag_app.llm.queue)
                yield _event(ans.queue_chunk(value, cid, model, created))
            elif kind == "done":
                yield _event(ans.final_chunk(value, "".join(streamed), cid, model, created))
                if usage:  # OpenAI's usage chunk: the answer path does not count tokens
                    yield _event({"id": cid, "object": "chat.completion.chunk",
                                  "created": created, "model": model, "choices": [],
                                  "usage": None})
                yield "data: [DONE]\n\n"
                return
            elif kind == "error":
                _, payload = _error_of(value)
                yield _event(payload)
                return
            else:
                return
    finally:
        run.cancel.set()


def _event(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


def _options(body: Any, default_k: int) -> Any:
    from rag_app.retrieve import RetrievalOptions

    return RetrievalOptions(k=body.k or default_k, mode=body.mode, source=body.source or None,
                            mmr=body.mmr, rerank=body.rerank)


def _warm_embedder(services: Services) -> None:
    try:
        services.embedder.warm_up()
    except Exception as exc:  # noqa: BLE001 - the first request reports it properly
        log.warning("the embedding model could not be loaded: %s", exc)


def _inside(path: Path, folder: Path) -> bool:
    try:
        return path.resolve().is_relative_to(folder)
    except OSError:
        return False


def _documents(settings: Settings) -> DocumentList:
    from rag_app.service import index_overview
    from rag_app.ui.services import read_manifest, uploads_dir

    info = index_overview(settings)
    uploads = uploads_dir(settings)
    manifest = read_manifest(uploads)
    data = []
    for r in info.files:
        uploaded = Path(r.root).resolve() == uploads
        rec = manifest.get(r.source) if uploaded else None
        data.append(Document(
            id=document_id(r.key), file=r.source, name=rec.name if rec else Path(r.source).name,
            uploaded=uploaded, kind=r.kind, pages=int(r.pages or 0), chunks=int(r.chunks or 0),
            status="failed" if r.error else ("pending" if r.state != "done" else "indexed"),
            error=r.error or ""))
    return DocumentList(collection=settings.collection, data=data)


def _job_info(job: Job) -> JobInfo:
    return JobInfo(id=job.id, kind=job.kind, label=job.label, state=job.state,
                   progress=round(job.progress, 3), error=job.error,
                   outcomes=list(job.outcomes))


def _error_of(exc: BaseException) -> tuple[int, dict[str, Any]]:
    """The status and JSON body for an error (never a traceback or a key: messages of the
    project's errors say what to do; anything else is logged and summarised)."""
    from rag_app.llm.client import LLMError

    if isinstance(exc, HTTPException):
        return exc.status_code, error_payload(exc.status_code, str(exc.detail))
    if isinstance(exc, ConfigError):
        return 400, error_payload(400, str(exc))
    if isinstance(exc, StoreLocked):
        return 409, error_payload(409, str(exc), "store_locked")
    if isinstance(exc, StoreError):
        return 503, error_payload(503, str(exc), "store_unavailable")
    if isinstance(exc, LLMError):
        return 502, error_payload(502, f"The model failed: {exc}", "llm_error")
    if isinstance(exc, RagError):
        return 500, error_payload(500, str(exc))
    log.error("API request failed", exc_info=exc)
    return 500, error_payload(500, f"Something went wrong ({type(exc).__name__}); the details "
                              "are in the server's log.", "internal_error")


def _install_errors(app: FastAPI) -> None:
    async def http_error(request: Request, exc: Exception) -> Response:
        status, payload = _error_of(exc)
        headers = getattr(exc, "headers", None)
        return JSONResponse(payload, status_code=status, headers=headers)

    async def invalid(request: Request, exc: Exception) -> Response:
        errors = exc.errors() if isinstance(exc, RequestValidationError) else []
        parts = [f"{'.'.join(str(p) for p in e.get('loc', ()) if p != 'body')}: "
                 f"{e.get('msg', 'invalid')}" for e in errors[:5]]
        param = ".".join(str(p) for p in errors[0].get("loc", ()) if p != "body") \
            if errors else None
        return JSONResponse(error_payload(400, "Invalid request: " + "; ".join(parts), None,
                                          param or None), status_code=400)

    async def failed(request: Request, exc: Exception) -> Response:
        status, payload = _error_of(exc)
        return JSONResponse(payload, status_code=status)

    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(RagError, failed)
    app.add_exception_handler(Exception, failed)
