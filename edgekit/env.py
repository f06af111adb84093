"""The environment record that travels with every number edgekit reports."""

from __future__ import annotations

import datetime as _dt
import importlib.metadata as md
import os
import platform
from functools import lru_cache
from typing import Any

__all__ = ["environment", "cpu_info", "usable_cores"]

_PACKAGES = ("edgekit", "torch", "torchvision", "onnx", "onnxruntime", "openvino", "nncf",
             "torch-pruning", "torchao", "numpy")


@lru_cache(maxsize=1)
def cpu_info() -> dict[str, Any]:
    """CPU model and the ISA flags that decide which kernels the runtimes pick."""
    model, flags = platform.processor() or "unknown", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and model in ("unknown", "", platform.processor()):
                    model = line.split(":", 1)[1].strip()
                elif line.startswith(("flags", "Features")):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8",
              "avx_vnni", "asimd", "asimddp", "fphp")
    return {
        "model": model,
        "machine": platform.machine(),
        "logical_cores": os.cpu_count(),
        "affinity_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "isa": [w for w in wanted if w in flags],
    }


def usable_cores() -> int:
    """The cores this process may run on (a container's or taskset's limit, not the machine's)."""
    c = cpu_info()
    return c["affinity_cores"] or c["logical_cores"] or 1


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in _PACKAGES:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def environment(**extra: Any) -> dict[str, Any]:
    """Versions, CPU, thread-related variables and the time; `extra` is merged in."""
    env_vars = {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                            "OPENBLAS_NUM_THREADS", "OPENBLAS_CORETYPE")
                if k in os.environ}
    rec = {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_info(),
        "versions": _versions(),
        "thread_env": env_vars,
    }
    rec.update(extra)
    return rec
