"""What this CPU (and GPU, if any) offers, detected at start-up instead of assumed.

bf16 helps only where the CPU has native bf16 matrix instructions (AMX or AVX512_BF16); on an
AVX2-only CPU it was measured 5x *slower* than fp32, so it is never a blanket default.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from functools import cache
from pathlib import Path

_INTERESTING = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


@dataclass(frozen=True, slots=True)
class Hardware:
    cpu_model: str
    cores: int
    flags: frozenset[str]
    cuda: bool

    @property
    def native_bf16(self) -> bool:
        return bool({"amx_bf16", "avx512_bf16"} & self.flags)

    def summary(self) -> str:
        shown = [f for f in _INTERESTING if f in self.flags] or ["no AVX2"]
        gpu = ", CUDA GPU" if self.cuda else ""
        return f"{self.cpu_model} ({self.cores} cores; {' '.join(shown)}{gpu})"


def _read_cpuinfo(path: Path = Path("/proc/cpuinfo")) -> tuple[str, frozenset[str]]:
    model, flags = platform.processor() or platform.machine(), frozenset[str]()
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return model, flags
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and value.strip():
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = frozenset(value.split())
    return model, flags


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


@cache
def detect() -> Hardware:
    model, flags = _read_cpuinfo()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return Hardware(cpu_model=model, cores=cores or 1, flags=flags, cuda=_cuda_available())
