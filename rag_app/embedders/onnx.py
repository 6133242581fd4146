"""A faster CPU embedder: the sentence-transformers model exported to ONNX, int8-quantised.

The export happens once per model and library versions and is cached under
`state_dir/models/<name>-<hash>/`; every later start only loads the cached files. Before an
export is used it is checked against the torch model on a fixed set of varied texts (short,
truncated at the model's limit, non-English, code): if any vector is less than 0.99
cosine-similar to torch's, the export is refused (and the refusal remembered). Its fingerprint
equals the torch embedder's, so the two can be swapped on one collection.

The recipe, measured on all-MiniLM-L6-v2 (2-core Xeon with AVX-512 VNNI, docs passages):
- legacy TorchScript exporter (`dynamo=False`) with eager attention: the new exporter needs
  onnxscript, is 6x slower and gives a graph that ONNX Runtime's BERT fusions do not recognise;
- ONNX Runtime's transformer optimiser (fused attention, embedding/skip layer norms, BiasGelu);
- `quantize_dynamic` with signed int8 weights, per channel. Per-tensor weights: min cosine 0.83;
  unsigned weights: 2-3x slower. Still, per channel gave min 0.984 on 128-token passages, so the
  second FFN matmul of the first half of the layers (its input, after GELU, has outliers) stays
  fp32: min 0.992-0.994, mean 0.996. 8-bit `MatMulNBits` was exact (0.9997) but, like 4-bit,
  runs at fp32 speed on this CPU; int8 `MatMulInteger` runs 3x faster than fp32 per matmul.
- Dynamic int8 quantises activations per tensor, and its error does not average out over a few
  tokens: "Hi" and "" reached only 0.975-0.988, sentences under 64 tokens 0.988. So inputs
  shorter than `INT8_MIN_TOKENS` run through the fused fp32 graph (exact, and cheap at that
  length); chunks, which are longer, get the int8 speed.
Pooling follows the model's own `modules.json` / pooling config; only Transformer → Pooling
(→ Normalize) models are supported, anything else stays on torch.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rag_app.embedders.base import Embedder, Side, TokenCounter, default_prompts, unit_rows
from rag_app.embedders.sentence_transformers import resolve_model
from rag_app.errors import EmbeddingError
from rag_app.hardware import detect
from rag_app.hashing import sha256_file

if TYPE_CHECKING:
    from rag_app.settings import Settings

log = logging.getLogger(__name__)

MIN_COSINE = 0.99
INT8_MIN_TOKENS = 64  # shorter inputs (special tokens included) use the fp32 graph
MODEL_FILE = "model.int8.onnx"
FP32_FILE = "model.fp32.onnx"
META_FILE = "export.json"
TOKENIZER_DIR = "tokenizer"
# Bump when the export or quantisation recipe changes: old caches are then ignored.
RECIPE = "ts-export/ort-fuse/dyn-s8-perchannel/ffn2-first-half-fp32/short-fp32/v1"
_LOCK_TIMEOUT_S = 1800.0
_POOLING_MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")
_LEGACY_POOLING_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
_FUSABLE_TYPES = {"bert"}  # ONNX Runtime's BERT fusions, checked on this model family

# Fixed check set: half under INT8_MIN_TOKENS (fp32 path), half over it (int8 path), from one
# token to past the model's limit, several scripts, code, numbers, tables.
VERIFY_TEXTS: tuple[str, ...] = (
    "Hi",
    "",
    "What is the capital of France?",
    "How do I reset my password if I no longer have access to the recovery e-mail address?",
    "Der schnelle braune Fuchs springt über den faulen Hund, während es draußen regnet.",
    "La réunion annuelle des actionnaires aura lieu le 14 mars à Lyon, salle Émile-Zola.",
    "東京は日本の首都であり、世界で最も人口の多い都市圏の一つです。",
    "SELECT name, COUNT(*) FROM orders o JOIN users u ON o.user_id = u.id GROUP BY name;",
    "🙂 emojis, #hashtags and @mentions: great product!!! 10/10 would buy again 👍",
    "The mitochondrion is the powerhouse of the cell: it produces most of the cell's ATP through "
    "oxidative phosphorylation, which depends on a proton gradient across the inner membrane. "
    "Mitochondria also take part in signalling, cell differentiation and cell death, and they "
    "keep control of the cell cycle and cell growth; their number varies widely by tissue.",
    "Москва — столица России, крупнейший по численности населения город страны и её "
    "важнейший экономический, политический и культурный центр. Город расположен на реке "
    "Москве в центре Восточно-Европейской равнины, в междуречье Оки и Волги.",
    "def moving_average(xs: list[float], window: int = 3) -> list[float]:\n"
    '    if window <= 0:\n        raise ValueError(f"window must be positive, got {window}")\n'
    "    out = []\n    for i in range(len(xs) - window + 1):\n"
    "        out.append(sum(xs[i : i + window]) / window)\n    return out\n",
    "2024-05-14T09:31:00Z ERROR worker-3 job=7f3a2c retry=2/5 Error 0x80070005: access denied "
    "while opening C:\\ProgramData\\agent\\cache\\index.db (see KB-44213, build 22631.3447); "
    "falling back to read-only mode, 1,284 items skipped, next attempt in 30 s",
    "北京是中华人民共和国的首都，是全国的政治中心、文化中心、国际交往中心和科技创新中心。"
    "北京历史悠久，文化灿烂，是首批国家历史文化名城和世界上拥有世界文化遗产数最多的城市。",
    " ".join(
        f"Section {i}: the committee reviewed the budget, the schedule and the open risks, "
        "and agreed to revisit the decision after the next quarterly report."
        for i in range(30)
    ),
    "lorem " * 400,
    "\n".join(f"| row {i} | {i * 2.5:.2f} | status=ok | owner=team-{i % 7} |" for i in range(60)),
)


# --- the embedder ---------------------------------------------------------------------------
class OnnxEmbedder(Embedder):
    """The sentence-transformers model run by ONNX Runtime with int8 weights, on the CPU.

    `int8_min_tokens` is for measurements: 0 sends everything through the int8 graph, a huge
    value everything through the fp32 one. The accuracy check is done with the default.
    """

    def __init__(self, settings: Settings, *, int8_min_tokens: int = INT8_MIN_TOKENS) -> None:
        self._settings = settings
        self.name, self._load_from = resolve_model(settings.embedding_model)
        self.int8_min_tokens = int8_min_tokens
        self._runtime: _Runtime | None = None
        self._lock = threading.Lock()
        self.backend = "onnxruntime int8 (not loaded yet)"
        self.cache_dir: Path | None = None
        self.min_cosine = 0.0
        self.export_seconds: float | None = None  # set only when this instance exported
        self._dimension = 0
        self._max_seq_length = 0

    @property
    def model_path(self) -> Path | None:
        return self.cache_dir / MODEL_FILE if self.cache_dir else None

    def warm_up(self) -> None:
        with self._lock:
            if self._runtime is None:
                self._load()

    def _load(self) -> None:
        device = self._settings.embedding_device
        if device not in ("auto", "cpu"):
            raise EmbeddingError(
                f"the onnx-int8 embedding backend runs on the CPU, but embedding_device is "
                f"{device!r}: set RAG_EMBEDDING_BACKEND=torch to use {device}"
            )
        model_dir = _local_model_dir(self._load_from, self.name)
        cache_dir = self._settings.cache_dir / "onnx" / _cache_name(self.name, model_dir)
        cache_dir.parent.mkdir(parents=True, exist_ok=True)
        from filelock import FileLock, Timeout

        lock = FileLock(str(cache_dir) + ".lock", timeout=_LOCK_TIMEOUT_S)
        try:
            with lock:
                meta = _read_cache(cache_dir)
                if meta is None:
                    started = time.perf_counter()
                    meta = _export(self._load_from, self.name, model_dir, cache_dir)
                    self.export_seconds = time.perf_counter() - started
                runtime = _Runtime.open(cache_dir, meta)
        except Timeout as exc:
            raise EmbeddingError(
                f"another process has been exporting {self.name} to {cache_dir} for over "
                f"{_LOCK_TIMEOUT_S:.0f} s; if none is running, delete {lock.lock_file}"
            ) from exc
        self._runtime, self.cache_dir = runtime, cache_dir
        self.min_cosine = float(meta["min_cosine"])
        self._dimension = int(meta["dimension"])
        self._max_seq_length = int(meta["max_seq_length"])
        query, document = default_prompts(self.name, dict(meta["prompts"]))
        s = self._settings
        self.query_prompt = s.query_prompt if s.query_prompt is not None else query
        self.document_prompt = s.document_prompt if s.document_prompt is not None else document
        self.backend = (
            f"onnxruntime int8 (exported from torch, min cos {self.min_cosine:.4f} vs fp32; "
            f"inputs under {INT8_MIN_TOKENS} tokens in fp32)"
        )
        log.info("embedding model %s loaded: %s", self.name, self.backend)

    def _rt(self) -> _Runtime:
        self.warm_up()
        if self._runtime is None:  # pragma: no cover - warm_up raises instead
            raise EmbeddingError(f"embedding model {self.name} is not loaded")
        return self._runtime

    def _embed(self, texts: Sequence[str], side: Side, batch_size: int) -> np.ndarray:
        # overridden so that the whole call is sorted by length before batches are formed
        prompt = self.query_prompt if side == "query" else self.document_prompt
        runtime = self._rt()
        return unit_rows(runtime.encode([prompt + t for t in texts], batch_size,
                                        self.int8_min_tokens))

    def _embed_batch(self, texts: list[str]) -> np.ndarray:
        return self._rt().encode(texts, max(len(texts), 1), self.int8_min_tokens)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        if not texts:
            return []
        return self._rt().counter.count(texts)

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        """Character span of every token in `text` (for cutting a text at a token boundary)."""
        return self._rt().counter.offsets(text)


# --- runtime --------------------------------------------------------------------------------
@dataclass
class _Runtime:
    """ONNX sessions plus the tokenizer and pooling that turn texts into sentence vectors."""

    int8: Any
    fp32: Any
    tokenizer: Any
    counter: TokenCounter
    input_names: tuple[str, ...]
    pooling: tuple[str, ...]
    max_seq_length: int
    dimension: int
    tokenizer_lock: threading.Lock

    @classmethod
    def open(cls, folder: Path, meta: dict[str, Any]) -> _Runtime:
        import onnxruntime as ort
        from transformers import AutoTokenizer

        options = ort.SessionOptions()
        options.intra_op_num_threads = detect().cores
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only
        try:
            int8, fp32 = (
                ort.InferenceSession(str(folder / f), options, providers=["CPUExecutionProvider"])
                for f in (MODEL_FILE, FP32_FILE)
            )
            tokenizer = AutoTokenizer.from_pretrained(str(folder / TOKENIZER_DIR))
        except Exception as exc:
            raise EmbeddingError(
                f"the cached ONNX model in {folder} cannot be loaded ({type(exc).__name__}: "
                f"{exc}); delete that folder to export it again"
            ) from exc
        return cls(
            int8=int8,
            fp32=fp32,
            tokenizer=tokenizer,
            counter=TokenCounter(tokenizer),
            input_names=tuple(meta["input_names"]),
            pooling=tuple(meta["pooling"]),
            max_seq_length=int(meta["max_seq_length"]),
            dimension=int(meta["dimension"]),
            tokenizer_lock=threading.Lock(),
        )

    def encode(
        self, texts: Sequence[str], batch_size: int, int8_min_tokens: int = INT8_MIN_TOKENS
    ) -> np.ndarray:
        """Pooled, not yet normalised vectors in input order.

        The texts are tokenized once, sorted by length (so a batch pads little) and cut into
        batches; a batch goes to the int8 graph only if all its inputs are long enough.
        """
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        if not texts:
            return out
        # a fast tokenizer is not safe to call from two threads at once ("Already borrowed")
        with self.tokenizer_lock:
            enc = self.tokenizer(list(texts), truncation=True, max_length=self.max_seq_length)
        columns = [name for name in self.input_names if name in enc]
        lengths = np.array([len(ids) for ids in enc["input_ids"]])
        order = np.argsort(lengths, kind="stable")
        short = order[lengths[order] < int8_min_tokens]
        long = order[lengths[order] >= int8_min_tokens]
        for group, session in ((short, self.fp32), (long, self.int8)):
            for start in range(0, len(group), batch_size):
                rows = group[start : start + batch_size]
                features = {name: [enc[name][i] for i in rows] for name in columns}
                with self.tokenizer_lock:
                    padded = self.tokenizer.pad(features, padding=True, return_tensors="np")
                feed = {n: np.asarray(padded[n], dtype=np.int64) for n in self.input_names}
                hidden = session.run(None, feed)[0]
                out[rows] = pool(hidden, feed["attention_mask"], self.pooling)
        return out


def pool(hidden: np.ndarray, mask: np.ndarray, modes: Sequence[str]) -> np.ndarray:
    """sentence-transformers' Pooling on (batch, tokens, dim) outputs, modes concatenated."""
    h = np.asarray(hidden, dtype=np.float32)
    m = np.asarray(mask, dtype=np.float32)[..., None]
    rows = np.arange(h.shape[0])
    first = np.asarray(mask).argmax(axis=1)  # first real token (left padding aware)
    parts: list[np.ndarray] = []
    for mode in modes:
        if mode == "cls":
            parts.append(h[rows, first])
        elif mode == "max":
            parts.append(np.where(m > 0, h, -np.inf).max(axis=1))
        elif mode in ("mean", "mean_sqrt_len_tokens"):
            count = np.maximum(m.sum(axis=1), 1e-9)
            total = (h * m).sum(axis=1)
            parts.append(total / (count if mode == "mean" else np.sqrt(count)))
        elif mode == "weightedmean":
            weights = np.arange(1, h.shape[1] + 1, dtype=np.float32)[None, :, None]
            weighted = m * (weights - first[:, None, None])
            parts.append((h * weighted).sum(axis=1) / np.maximum(weighted.sum(axis=1), 1e-9))
        elif mode == "lasttoken":
            flipped = np.asarray(mask)[:, ::-1]
            last = h.shape[1] - 1 - flipped.argmax(axis=1)
            last = np.where(flipped.max(axis=1) == 0, h.shape[1] - 1, last)
            parts.append((h * m)[rows, last])
        else:
            raise EmbeddingError(f"pooling mode {mode!r} is not supported by the ONNX backend")
    return np.concatenate(parts, axis=1)


# --- cache ----------------------------------------------------------------------------------
def _local_model_dir(load_from: str, name: str) -> Path:
    path = Path(load_from)
    if path.is_dir():
        return path
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(load_from, local_files_only=True))
    except Exception as exc:
        raise EmbeddingError(
            f"embedding model {name!r} is not on this machine, so it cannot be exported to "
            f"ONNX ({type(exc).__name__}: {exc}); give a local model folder"
        ) from exc


def _cache_name(name: str, model_dir: Path) -> str:
    """`<safe name>-<hash of the model files, library versions, recipe and CPU class>`."""
    digest = hashlib.sha256()
    digest.update(_model_digest(*_model_stat(model_dir)).encode())
    for package in ("torch", "transformers", "sentence-transformers", "onnx", "onnxruntime"):
        digest.update(f"|{package}={_version(package)}".encode())
    digest.update(f"|{RECIPE}|vnni={_has_vnni()}".encode())
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name.strip("/").split("/")[-1])[:60] or "model"
    return f"{safe}-{digest.hexdigest()[:16]}"


def _model_stat(model_dir: Path) -> tuple[str, tuple[tuple[str, int, int], ...]]:
    files = sorted(p for p in model_dir.rglob("*") if p.is_file() and not p.name.startswith("."))
    stats = tuple(
        (p.relative_to(model_dir).as_posix(), p.stat().st_size, p.stat().st_mtime_ns) for p in files
    )
    return str(model_dir), stats


@cache
def _model_digest(model_dir: str, stats: tuple[tuple[str, int, int], ...]) -> str:
    """Hash of the model folder's contents (cached per process while sizes/mtimes hold)."""
    digest = hashlib.sha256()
    for rel, _, _ in stats:
        digest.update(rel.encode() + b"\0")
        with open(Path(model_dir) / rel, "rb") as fh:
            digest.update(hashlib.file_digest(fh, "sha256").digest())
    return digest.hexdigest()


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "none"


def _has_vnni() -> bool:
    return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & detect().flags)


def _cache_files(folder: Path) -> dict[str, str]:
    files = [folder / MODEL_FILE, folder / FP32_FILE, *sorted((folder / TOKENIZER_DIR).glob("*"))]
    return {p.relative_to(folder).as_posix(): sha256_file(p) for p in files if p.is_file()}


def _read_cache(folder: Path) -> dict[str, Any] | None:
    """The export record if the cached export is complete and intact, else None.

    A failed accuracy check is remembered and raised again, so that "auto" falls back to torch
    at once instead of exporting on every start.
    """
    try:
        meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or meta.get("recipe") != RECIPE:
        return None
    if meta.get("status") == "rejected":
        raise EmbeddingError(
            f"{meta.get('reason', 'the ONNX export was rejected')} (recorded in "
            f"{folder / META_FILE}; delete it to try again)"
        )
    expected = meta.get("files") or {}
    if MODEL_FILE not in expected or FP32_FILE not in expected:
        return None
    try:
        actual = _cache_files(folder)
    except OSError:
        actual = {}
    if actual != expected:
        log.warning("cached ONNX model in %s is incomplete or corrupt; exporting again", folder)
        return None
    return meta


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with tmp.open("wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _replace_file(src: Path, dst: Path) -> None:
    with src.open("rb") as fh:
        os.fsync(fh.fileno())
    os.replace(src, dst)


# --- export ---------------------------------------------------------------------------------
def _export(load_from: str, name: str, model_dir: Path, folder: Path) -> dict[str, Any]:
    """Export, quantise and check the model; write it to `folder` and return its record."""
    try:
        import torch
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise EmbeddingError(
            f"exporting to ONNX needs torch and sentence-transformers: {exc}"
        ) from exc
    for package in ("onnx", "onnxruntime"):
        if importlib.util.find_spec(package) is None:
            raise EmbeddingError(f"exporting to ONNX needs the {package!r} package")
    started = time.perf_counter()
    log.warning("exporting embedding model %s to ONNX int8 (once; ~1 min)", name)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        model = SentenceTransformer(load_from, device="cpu")
    except Exception as exc:
        raise EmbeddingError(f"could not load {name!r} to export it: {exc}") from exc
    model.eval()
    pooling = _pooling_modes(model_dir, model)
    transformer = model[0]
    auto_model = getattr(transformer, "auto_model", None)
    if auto_model is None:
        raise EmbeddingError(f"{name}: the first module has no Hugging Face model to export")
    with torch.inference_mode():
        reference = model.encode(
            list(VERIFY_TEXTS),
            batch_size=len(VERIFY_TEXTS),
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
    tokenizer = model.tokenizer  # what sentence-transformers tokenizes with
    dimension, max_seq_length = model.get_embedding_dimension(), model.max_seq_length
    if not dimension or not max_seq_length:
        raise EmbeddingError(f"{name}: unknown embedding dimension or input limit")
    prompts = dict(model.prompts or {})
    input_names = _input_names(auto_model, tokenizer)

    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=f".{folder.name}.") as tmp_name:
        tmp = Path(tmp_name)
        raw = tmp / "model.raw.onnx"
        exporter = _torch_export(auto_model, tokenizer, input_names, raw)
        fp32 = _fuse(raw, tmp / FP32_FILE, auto_model.config)
        if fp32 != tmp / FP32_FILE:
            os.replace(fp32, tmp / FP32_FILE)
        _quantise(tmp / FP32_FILE, tmp / MODEL_FILE, auto_model.config)
        tokenizer.save_pretrained(str(tmp / TOKENIZER_DIR))
        meta: dict[str, Any] = {
            "recipe": RECIPE,
            "model": name,
            "input_names": input_names,
            "pooling": list(pooling),
            "dimension": int(dimension),
            "max_seq_length": int(max_seq_length),
            "prompts": prompts,
        }
        cosines, int8_only = _verify(tmp, meta, reference)
        meta.update(
            min_cosine=float(cosines.min()),
            mean_cosine=float(cosines.mean()),
            # for information: every check text through the int8 graph, short ones included
            int8_only_min_cosine=float(int8_only.min()),
            int8_only_mean_cosine=float(int8_only.mean()),
            exporter=exporter,
            export_seconds=round(time.perf_counter() - started, 1),
            versions={p: _version(p) for p in ("torch", "transformers", "onnxruntime", "onnx")},
            created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        )
        if cosines.min() < MIN_COSINE:
            worst = int(cosines.argmin())
            reason = (
                f"the ONNX int8 export of {name} is not faithful enough: min cosine "
                f"{cosines.min():.4f} to the torch model (needed {MIN_COSINE}), worst on check "
                f"text #{worst} {VERIFY_TEXTS[worst][:40]!r}; use embedding_backend=torch"
            )
            meta.update(status="rejected", reason=reason)
            _write_atomic(folder / META_FILE, json.dumps(meta, indent=2).encode())
            raise EmbeddingError(reason)
        # commit: tokenizer and models first, the record last (it marks a complete cache)
        (folder / META_FILE).unlink(missing_ok=True)
        shutil.rmtree(folder / TOKENIZER_DIR, ignore_errors=True)
        os.replace(tmp / TOKENIZER_DIR, folder / TOKENIZER_DIR)
        for file in (FP32_FILE, MODEL_FILE):
            _replace_file(tmp / file, folder / file)
        meta.update(status="ok", files=_cache_files(folder))
        _write_atomic(folder / META_FILE, json.dumps(meta, indent=2).encode())
    log.warning(
        "exported %s to %s in %.0f s (min cosine %.4f vs torch)",
        name,
        folder / MODEL_FILE,
        meta["export_seconds"],
        meta["min_cosine"],
    )
    return meta


def _pooling_modes(model_dir: Path, model: Any) -> tuple[str, ...]:
    """Pooling modes from the model's own modules.json and pooling config."""
    try:
        modules = json.loads((model_dir / "modules.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EmbeddingError(f"{model_dir} has no readable modules.json ({exc})") from exc
    kinds = [str(m.get("type", "")).rsplit(".", 1)[-1] for m in modules]
    if kinds not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
        raise EmbeddingError(
            f"the ONNX backend supports Transformer → Pooling (→ Normalize) models; "
            f"{model_dir.name} has {' → '.join(kinds)}"
        )
    pooling_path = model_dir / modules[1].get("path", "") / "config.json"
    try:
        config = json.loads(pooling_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EmbeddingError(f"cannot read the pooling config {pooling_path} ({exc})") from exc
    mode = config.get("pooling_mode")
    if mode is None:
        modes = tuple(v for k, v in _LEGACY_POOLING_KEYS.items() if config.get(k)) or ("mean",)
    else:
        modes = (mode,) if isinstance(mode, str) else tuple(mode)
    unknown = [m for m in modes if m not in _POOLING_MODES]
    if unknown:
        raise EmbeddingError(f"pooling mode(s) {unknown} in {pooling_path} are not supported")
    loaded = getattr(model[1], "pooling_mode", None)  # cross-check with what torch runs
    if loaded is not None:
        loaded_modes = (loaded,) if isinstance(loaded, str) else tuple(loaded)
        if loaded_modes != modes:
            raise EmbeddingError(
                f"pooling config {pooling_path} says {modes}, the loaded model uses {loaded_modes}"
            )
    return modes


def _input_names(auto_model: Any, tokenizer: Any) -> list[str]:
    import inspect

    accepted = set(inspect.signature(auto_model.forward).parameters)
    names: list[str] = [
        n
        for n in ("input_ids", "attention_mask", "token_type_ids")
        if n in accepted and (n != "token_type_ids" or n in tokenizer.model_input_names)
    ]
    if names[:2] != ["input_ids", "attention_mask"]:
        raise EmbeddingError(f"the model takes {sorted(accepted)}, not input_ids/attention_mask")
    return names


def _not_from_onnxruntime(record: logging.LogRecord) -> bool:
    """ONNX Runtime's quantiser logs advice and chatter on the root logger; keep only errors."""
    inside = f"{os.sep}onnxruntime{os.sep}" in record.pathname
    return record.levelno >= logging.ERROR or not inside


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence exporter warnings and ONNX Runtime's root-logger calls (which would otherwise
    also configure logging, through `logging.warning`, when nothing else has)."""
    root = logging.getLogger()
    guard = logging.NullHandler() if not root.handlers else None
    if guard is not None:
        root.addHandler(guard)
    root.addFilter(_not_from_onnxruntime)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.removeFilter(_not_from_onnxruntime)
        if guard is not None:
            root.removeHandler(guard)


def _torch_export(auto_model: Any, tokenizer: Any, input_names: list[str], path: Path) -> str:
    """Export the transformer (last hidden state) with dynamic batch and sequence axes."""
    import torch

    class Encoder(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(
            self,
            input_ids: torch.Tensor,
            attention_mask: torch.Tensor,
            token_type_ids: torch.Tensor | None = None,
        ) -> torch.Tensor:
            extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
            out = self.inner(input_ids=input_ids, attention_mask=attention_mask, **extra)
            return out.last_hidden_state

    # Eager attention exports to the plain pattern that ONNX Runtime fuses; the sample batch is
    # padded so the attention mask is traced as an input, never folded into a constant.
    _set_attention(auto_model, "eager")
    try:
        sample = tokenizer(
            ["a short one", "a longer sample sentence, so that the batch needs some padding"],
            padding=True,
            return_tensors="pt",
        )
        args = tuple(sample[n] for n in input_names)
        encoder = Encoder(auto_model).eval()
        axes = {n: {0: "batch", 1: "sequence"} for n in [*input_names, "last_hidden_state"]}
        errors: list[str] = []
        with _quiet(), torch.inference_mode():
            try:
                torch.onnx.export(
                    encoder,
                    args,
                    str(path),
                    input_names=input_names,
                    output_names=["last_hidden_state"],
                    dynamic_axes=axes,
                    opset_version=17,
                    do_constant_folding=True,
                    dynamo=False,
                )
                return "torchscript"
            except Exception as exc:  # noqa: BLE001 - try the other exporter, then report both
                errors.append(f"legacy exporter: {type(exc).__name__}: {exc}")
            try:
                batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence", max=8192)
                torch.onnx.export(
                    encoder,
                    args,
                    str(path),
                    input_names=input_names,
                    output_names=["last_hidden_state"],
                    opset_version=18,  # its own default: no version conversion
                    dynamo=True,
                    dynamic_shapes={n: {0: batch, 1: seq} for n in input_names},
                    external_data=False,
                    verbose=False,
                )
                return "dynamo"
            except Exception as exc:  # noqa: BLE001
                errors.append(f"dynamo exporter: {type(exc).__name__}: {exc}")
        raise EmbeddingError("torch.onnx.export failed: " + "; ".join(errors))
    finally:
        _set_attention(auto_model, "sdpa")


def _set_attention(auto_model: Any, implementation: str) -> None:
    try:
        auto_model.set_attn_implementation(implementation)
    except Exception:  # older transformers, or a model without the choice
        log.debug("could not set attention to %s", implementation, exc_info=True)


def _fuse(src: Path, dst: Path, config: Any) -> Path:
    """ONNX Runtime's transformer fusions for BERT-like models; the plain graph otherwise."""
    if getattr(config, "model_type", None) not in _FUSABLE_TYPES:
        return src
    try:
        from onnxruntime.transformers.optimizer import optimize_model

        with _quiet():
            optimized = optimize_model(
                str(src),
                model_type="bert",
                num_heads=int(config.num_attention_heads),
                hidden_size=int(config.hidden_size),
                opt_level=1,
            )
            optimized.save_model_to_file(str(dst))
    except Exception:  # unfused still works, just slower
        log.warning(
            "ONNX Runtime's transformer fusion failed; using the plain graph", exc_info=True
        )
        return src
    return dst


def _quantise(src: Path, dst: Path, config: Any) -> None:
    """Dynamic int8: signed per-channel weights; the first half of FFN output matmuls in fp32."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graph = onnx.load(str(src))
    shapes = {init.name: tuple(init.dims) for init in graph.graph.initializer}
    ffn_out = (int(getattr(config, "intermediate_size", 0)), int(config.hidden_size))
    down = [
        node.name
        for node in graph.graph.node
        if node.op_type == "MatMul" and any(shapes.get(i) == ffn_out for i in node.input)
    ]
    keep_fp32 = down[: (len(down) + 1) // 2]
    del graph
    with _quiet():
        quantize_dynamic(
            str(src),
            str(dst),
            weight_type=QuantType.QInt8,
            per_channel=True,
            reduce_range=not _has_vnni(),  # u8s8 saturates without VNNI
            nodes_to_exclude=keep_fp32,
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )


def _verify(
    folder: Path, meta: dict[str, Any], reference: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per-text cosine to torch, worst of one padded batch and of small batches: as used
    (short inputs in fp32), and with every input through the int8 graph."""
    runtime = _Runtime.open(folder, meta)
    results = []
    for int8_min_tokens in (INT8_MIN_TOKENS, 0):
        worst = np.ones(len(VERIFY_TEXTS), dtype=np.float32)
        for batch_size in (len(VERIFY_TEXTS), 3):
            vectors = runtime.encode(list(VERIFY_TEXTS), batch_size, int8_min_tokens)
            if vectors.shape != reference.shape:
                raise EmbeddingError(
                    f"ONNX export gives vectors of shape {vectors.shape}, torch {reference.shape}"
                )
            vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
            worst = np.minimum(worst, (vectors * reference).sum(axis=1))
        results.append(worst)
    return results[0], results[1]
