"""What one evaluation run compares (configurations) and the shape of what it measures.

A configuration is a named set of retrieval choices: the mode (dense, BM25 or hybrid), how
many chunks are retrieved (k), MMR, and the chunking of the index. Configurations that differ
only in retrieval share one index; a different chunk size needs an index of its own.

On the command line a configuration is written `NAME:key=value,key=value`:

    dense                       the preset of that name (dense, bm25, hybrid; k=5)
    wide:mode=hybrid,k=10       a name and its values
    small:chunk_tokens=128,chunk_overlap=16
    mode=dense,k=3              no name: one is made from the values ("dense-k3")
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, cast

from rag_app.errors import ConfigError
from rag_app.settings import overlap_problem

if TYPE_CHECKING:
    from rag_app.fusion import Mode
    from rag_app.retrieve import RetrievalOptions
    from rag_app.settings import Settings

MODES = ("dense", "lexical", "hybrid")
MODE_ALIASES = {"bm25": "lexical", "sparse": "lexical", "fused": "hybrid"}
KEYS = ("mode", "k", "mmr", "names", "chunk_tokens", "chunk_overlap")
MAX_K = 1000
_NAME = re.compile(r"^[A-Za-z0-9][\w.+-]{0,39}$")
_TRUE = {"1", "true", "yes", "on", "y"}
_FALSE = {"0", "false", "no", "off", "n"}


@dataclass(frozen=True)
class EvalConfig:
    """One configuration to evaluate. `mode` is rag_app.fusion's: dense, lexical (BM25; the
    alias "bm25" is accepted) or hybrid."""

    name: str
    mode: str = "hybrid"
    k: int = 5
    mmr: bool = False
    chunk_tokens: int | None = None  # None: the settings' value; others need their own index
    chunk_overlap: int | None = None
    names: bool = True  # add a passage for each name of the question the k best lack

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ConfigError(f"configuration name {self.name!r}: use 1-40 letters, digits, "
                              "'_', '-', '.' or '+', starting with a letter or digit")
        mode = MODE_ALIASES.get(self.mode, self.mode)
        if mode not in MODES:
            raise ConfigError(f"configuration {self.name!r}: mode must be dense, bm25 (or "
                              f"lexical) or hybrid, not {self.mode!r}")
        object.__setattr__(self, "mode", mode)
        if not 1 <= self.k <= MAX_K:
            raise ConfigError(f"configuration {self.name!r}: k must be between 1 and {MAX_K}, "
                              f"not {self.k}")
        if self.chunk_tokens is not None and self.chunk_tokens < 16:
            raise ConfigError(f"configuration {self.name!r}: chunk_tokens must be at least 16, "
                              f"not {self.chunk_tokens}")
        if self.chunk_overlap is not None and self.chunk_overlap < 0:
            raise ConfigError(f"configuration {self.name!r}: chunk_overlap must not be "
                              "negative")
        if self.chunk_tokens is not None and self.chunk_overlap is not None:
            problem = overlap_problem(self.chunk_tokens, self.chunk_overlap)
            if problem:
                raise ConfigError(f"configuration {self.name!r}: {problem}")

    def settings_for(self, base: Settings) -> Settings:
        """`base` with this configuration's chunking. An overlap left unset keeps the base
        overlap, or a quarter of a smaller chunk size when the base overlap would not fit it
        (`overlap_problem`, the one rule: at most half)."""
        changes: dict[str, Any] = {}
        if self.chunk_tokens is not None:
            changes["chunk_tokens"] = self.chunk_tokens
            overlap = self.chunk_overlap if self.chunk_overlap is not None else base.chunk_overlap
            changes["chunk_overlap"] = overlap if overlap_problem(self.chunk_tokens, overlap) \
                is None else self.chunk_tokens // 4
        elif self.chunk_overlap is not None:
            changes["chunk_overlap"] = self.chunk_overlap
        return with_settings(base, **changes) if changes else base

    def index_key(self, base: Settings) -> tuple[int, int]:
        """(chunk tokens, overlap): configurations with the same key share one index."""
        s = self.settings_for(base)
        return s.chunk_tokens, s.chunk_overlap

    def retrieval_options(self) -> RetrievalOptions:
        from rag_app.retrieve import RetrievalOptions

        return RetrievalOptions(k=self.k, mode=cast("Mode", self.mode), mmr=self.mmr,
                                names=self.names)

    def describe(self) -> str:
        """'hybrid k=5' / 'dense k=10 mmr chunks 128/16', for tables."""
        parts = [{"lexical": "bm25"}.get(self.mode, self.mode), f"k={self.k}"]
        if self.mmr:
            parts.append("mmr")
        if not self.names:
            parts.append("no names")
        if self.chunk_tokens is not None or self.chunk_overlap is not None:
            parts.append(f"chunks {self.chunk_tokens or 'default'}/"
                         f"{self.chunk_overlap if self.chunk_overlap is not None else 'default'}")
        return " ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


DEFAULT_CONFIGS: tuple[EvalConfig, ...] = (
    EvalConfig("dense", mode="dense", k=5),
    EvalConfig("bm25", mode="lexical", k=5),
    EvalConfig("hybrid", mode="hybrid", k=5),
)
_PRESETS = {c.name: c for c in DEFAULT_CONFIGS} | {"lexical": EvalConfig("lexical", "lexical")}


def parse_config(text: str) -> EvalConfig:
    """`NAME`, `NAME:key=value,…` or `key=value,…` (see the module text). Keys: mode, k, mmr,
    names, chunk_tokens, chunk_overlap. Raises ConfigError saying what is wrong."""
    raw = text.strip()
    if not raw:
        raise ConfigError("empty configuration: write NAME or NAME:key=value,… "
                          "(e.g. dense, or wide:mode=hybrid,k=10)")
    name, sep, body = raw.partition(":")
    if not sep:
        if "=" in raw:
            name, body = "", raw
        else:
            preset = _PRESETS.get(raw.lower())
            if preset is None:
                raise ConfigError(f"configuration {raw!r}: not a preset ({', '.join(_PRESETS)})"
                                  "; write NAME:key=value,… e.g. wide:mode=hybrid,k=10")
            return preset
    values: dict[str, Any] = {}
    for item in (p.strip() for p in body.split(",")):
        if not item:
            continue
        key, eq, value = (s.strip() for s in item.partition("="))
        key = key.lower().replace("-", "_")
        if not eq or not value:
            raise ConfigError(f"configuration {raw!r}: {item!r} is not key=value")
        if key not in KEYS:
            raise ConfigError(f"configuration {raw!r}: unknown key {key!r} "
                              f"(keys: {', '.join(KEYS)})")
        if key in values:
            raise ConfigError(f"configuration {raw!r}: {key!r} is given twice")
        values[key] = _value(raw, key, value)
    name = name.strip()
    if not name:
        if not values:
            raise ConfigError(f"configuration {raw!r}: give a name or some key=value pairs")
        name = _auto_name(values)
    elif name.lower() in _PRESETS:  # "dense:k=10" starts from the preset
        preset = _PRESETS[name.lower()]
        values = {"mode": preset.mode, **values}
    return EvalConfig(name, **values)


def _value(raw: str, key: str, value: str) -> Any:
    if key == "mode":
        return value.lower()
    if key in ("mmr", "names"):
        if value.lower() in _TRUE:
            return True
        if value.lower() in _FALSE:
            return False
        raise ConfigError(f"configuration {raw!r}: {key} must be true or false, "
                          f"not {value!r}")
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"configuration {raw!r}: {key} must be a whole number, "
                          f"not {value!r}") from None


def _auto_name(values: Mapping[str, Any]) -> str:
    mode = MODE_ALIASES.get(values.get("mode", "hybrid"), values.get("mode", "hybrid"))
    parts = [{"lexical": "bm25"}.get(mode, mode)]
    if "k" in values:
        parts.append(f"k{values['k']}")
    if values.get("mmr"):
        parts.append("mmr")
    if values.get("names") is False:
        parts.append("nonames")
    if "chunk_tokens" in values:
        parts.append(f"c{values['chunk_tokens']}")
    if "chunk_overlap" in values:
        parts.append(f"o{values['chunk_overlap']}")
    return "-".join(parts)[:40]


def check_unique(configs: Iterable[EvalConfig]) -> list[EvalConfig]:
    """The configurations as a list; ConfigError if two share a name or there are none."""
    out = list(configs)
    if not out:
        raise ConfigError("no configurations to evaluate")
    seen: set[str] = set()
    for c in out:
        if c.name in seen:
            raise ConfigError(f"two configurations are named {c.name!r}: names must differ")
        seen.add(c.name)
    return out


# -- settings for the evaluation's own index ---------------------------------------------------
def with_settings(base: Settings, **changes: Any) -> Settings:
    """A copy of `base` with `changes`, validated like any settings (no environment read)."""
    from pydantic import ValidationError

    data = base.model_dump()
    data.update(changes)
    try:
        return type(base)(_env_file=None, **data)  # type: ignore[call-arg]
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                             for e in exc.errors())
        raise ConfigError(f"invalid settings for the evaluation: {problems}") from None


def index_settings(base: Settings, state_dir: Path, collection: str) -> Settings:
    """`base` pointed at an embedded store of the evaluation's own (never the user's index,
    never a Chroma server)."""
    return with_settings(base, state_dir=Path(state_dir), collection=collection,
                         chroma_host=None)


def describe_settings(settings: Settings, embedder: Any = None) -> dict[str, Any]:
    """What the report says about the set-up (no secrets)."""
    return {
        "embedding_model": settings.embedding_model,
        "backend": getattr(embedder, "backend", None),
        "chunk_tokens": settings.chunk_tokens, "chunk_overlap": settings.chunk_overlap,
        "answer_min_similarity": settings.answer_min_similarity,
    }


# -- results ------------------------------------------------------------------------------------
@dataclass
class ConfigRun:
    """One configuration's outcome: flat metrics and one row per question or query."""

    label: str  # unique within a result; what tables and plots show
    config: EvalConfig
    metrics: dict[str, float | None]
    rows: list[dict[str, Any]] = field(default_factory=list)
    variant: str = ""  # e.g. "question headings removed"

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "config": self.config.to_dict(),
                "description": self.config.describe(), "variant": self.variant,
                "metrics": dict(self.metrics), "rows": self.rows}


@dataclass
class EvalResult:
    """What one evaluation measured, for every configuration side by side."""

    kind: ClassVar[str] = ""
    runs: list[ConfigRun]
    metric_names: list[str]  # the metrics in display order
    notes: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def metrics(self) -> dict[str, dict[str, float | None]]:
        """{label: {metric: value}} — None where a metric was not measured."""
        return {r.label: dict(r.metrics) for r in self.runs}

    def run(self, label: str) -> ConfigRun:
        for r in self.runs:
            if r.label == label:
                return r
        raise KeyError(f"no configuration labelled {label!r} (have: "
                       f"{', '.join(r.label for r in self.runs)})")

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "metric_names": list(self.metric_names),
                "notes": list(self.notes), "meta": self.meta, "seconds": self.seconds,
                "runs": [r.to_dict() for r in self.runs]}
