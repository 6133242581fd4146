"""What the API reads and writes: OpenAI's chat-completion shapes with the answer's sources
added, and the search and document records. Request models ignore fields they do not know
(OpenAI clients send many: `temperature`, `top_p`, `user` …); the answer path's own settings
decide how the model is asked."""

from __future__ import annotations

import hashlib
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Mode = Literal["hybrid", "dense", "lexical"]


class ErrorBody(BaseModel):
    message: str
    type: str
    code: str | None = None
    param: str | None = None


class ErrorResponse(BaseModel):
    """Every error, as OpenAI sends it: `{"error": {"message", "type", "code", "param"}}`."""

    error: ErrorBody


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: str = "text"
    text: str = ""


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[TextPart] | None = None

    def text(self) -> str:
        """The message's text (a list of parts joined; images and other parts have none)."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(p.text for p in self.content if p.type == "text" and p.text)


class RetrievalFields(BaseModel):
    """The answer settings a request may set (extra fields to OpenAI's request)."""

    k: int | None = Field(default=None, ge=1, le=50,
                          description="passages given to the model (default RAG_RETRIEVAL_K)")
    mode: Mode = Field(default="hybrid",
                       description="retrieval: dense + BM25 fused, or one of them")
    source: str | None = Field(default=None, max_length=1000,
                               description="only files whose path starts with this")
    mmr: bool = Field(default=False, description="diversify the retrieved passages")
    rerank: bool = Field(default=True, description="use RAG_RERANKER_MODEL, if set")


class ChatRequest(RetrievalFields):
    model_config = ConfigDict(extra="ignore")
    model: str = Field(description="a collection, as GET /v1/models lists them")
    messages: list[ChatMessage] = Field(min_length=1, max_length=200,
                                        description="the conversation; the last is the "
                                        "question (role user)")
    stream: bool = False
    stream_options: dict[str, Any] | None = None


class SearchRequest(RetrievalFields):
    model_config = ConfigDict(extra="forbid")
    query: str = Field(min_length=1, max_length=4000)
    model: str | None = Field(default=None, description="a collection (default: the one set)")


class SearchHit(BaseModel):
    rank: int
    id: str = Field(description="the passage's chunk id")
    file: str = Field(description="path of the file, relative to the folder it came from")
    page_start: int | None
    page_end: int | None
    headings: list[str]
    location: str
    text: str = Field(description="the passage: document text, untrusted")
    score: float = Field(description="the fused ranking score")
    similarity: float = Field(description="cosine similarity to the query")
    rerank_score: float | None
    dense_rank: int | None
    lexical_rank: int | None
    instruction_like: bool = Field(description="the text reads like instructions to a model "
                                   "(the answer path keeps such sentences from it)")


class SearchResponse(BaseModel):
    object: Literal["search.result"] = "search.result"
    model: str
    query: str
    hits: list[SearchHit]


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "rag_app"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class Document(BaseModel):
    id: str = Field(description="use it to delete the document")
    file: str = Field(description="path relative to the folder it was ingested from")
    name: str = Field(description="the name it was uploaded under, else the file's name")
    uploaded: bool
    kind: str
    pages: int
    chunks: int
    status: Literal["indexed", "pending", "failed"]
    error: str = ""


class DocumentList(BaseModel):
    object: Literal["list"] = "list"
    collection: str
    data: list[Document]


class JobInfo(BaseModel):
    id: int
    object: Literal["job"] = "job"
    kind: str
    label: str
    state: Literal["queued", "running", "done", "failed"]
    progress: float
    error: str
    outcomes: list[dict[str, Any]]


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    collection: str
    indexed: bool
    llm: str = Field(description="'ready', 'starting', or why there is no model")


def document_id(key: str) -> str:
    """A record key's public id: it holds the absolute folder path, which is not shown."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:20]
