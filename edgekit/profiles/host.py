"""The `host` profile: built from the machine edgekit runs on, plus calibrated factors.

Peak figures come from /proc/cpuinfo (cores, clock, ISA flags) and the vector width those flags
imply; `edgekit profiles calibrate` measures memory bandwidth and fits the efficiency factors,
and writes them to the calibration file (`EDGEKIT_HOST_PROFILE`, default
~/.cache/edgekit/host.yaml). A calibration file from another CPU is ignored.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from ..env import cpu_info, usable_cores
from .schema import Profile

__all__ = ["host_profile", "host_id", "calibration_path"]

_SRC = "/proc/cpuinfo and os.sched_getaffinity on this machine"


def calibration_path() -> Path:
    env = os.environ.get("EDGEKIT_HOST_PROFILE")
    return Path(env) if env else Path.home() / ".cache" / "edgekit" / "host.yaml"


def host_id() -> str:
    """What a calibration is valid for: CPU model and usable cores."""
    return f"{cpu_info()['model']} x{usable_cores()}"


def _clock_ghz() -> float:
    """Nominal clock: the max frequency if the kernel exposes it, else cpuinfo's MHz."""
    try:
        return int(Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq").read_text()) / 1e6
    except (OSError, ValueError):
        pass
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("cpu MHz"):
                return float(line.split(":")[1]) / 1e3
    except (OSError, ValueError):
        pass
    return 2.0


def _memory_gb() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                return int(line.split()[1]) / 1e6
    except (OSError, ValueError):
        pass
    return 8.0


def _flops_per_cycle(isa: set[str]) -> tuple[float, float, int]:
    """(FP32 FLOP/cycle/core, INT8 op/cycle/core, vector lanes of FP32) from the ISA flags.

    Two FMA pipes are assumed (most server and desktop cores); calibration absorbs the rest.
    INT8: VNNI does 4 MACs per 32-bit lane per instruction; AVX2's VPMADDUBSW path about 2x FP32;
    Arm's SDOT 4x, plain NEON about 2x."""
    if "avx512f" in isa:
        fp32, lanes = 64.0, 16
        return fp32, fp32 * (4 if "avx512_vnni" in isa else 2), lanes
    if "avx2" in isa:
        fp32, lanes = 32.0, 8
        return fp32, fp32 * (4 if "avx_vnni" in isa else 2), lanes
    if "asimd" in isa:
        fp32, lanes = 16.0, 4
        return fp32, fp32 * (4 if "asimddp" in isa else 2), lanes
    return 8.0, 16.0, 4


_DEFAULT = object()


def host_profile(calibration: Path | None | object = _DEFAULT) -> Profile:
    """This machine as a profile; `calibration` is the calibration file to apply (default:
    `calibration_path()`; None: none, the uncalibrated figures)."""
    c = cpu_info()
    isa = set(c["isa"])
    cores = usable_cores()
    ghz = _clock_ghz()
    fp32, int8, lanes = _flops_per_cycle(isa)
    data = {
        "name": "host",
        "description": f"this machine: {c['model']}, {cores} core(s), {', '.join(c['isa']) or 'no SIMD flags'}",
        "compute": [{"name": "cpu", "kind": "cpu", "description": c["model"], "units": cores,
                     "clock_ghz": round(ghz, 3),
                     "peak_gops": {"fp32": round(cores * ghz * fp32, 1), "int8": round(cores * ghz * int8, 1)},
                     "source": f"{_SRC}: {cores} cores x {ghz:.2f} GHz x {fp32:g} FP32 FLOP/cycle, "
                               f"{int8:g} INT8 op/cycle (from the ISA flags)"}],
        "memory": {"size_gb": round(_memory_gb(), 1), "bandwidth_gbs": 20.0,
                   "source": "assumed 20 GB/s until `edgekit profiles calibrate` measures it"},
        "runtimes": ["onnxruntime", "openvino"],
        "precisions": ["fp32", "int8"],
        "preferred_precision": "int8",
        "quantization": {"weights": "s8 symmetric per-channel", "activations": "u8 asymmetric per-tensor",
                         "qdq_target": "onnxruntime",
                         "note": "ONNX Runtime's fast x86 INT8 path (U8 activations, S8 weights); OpenVINO "
                                 "takes the symmetric TensorRT-rules file"},
        "channel_multiple": lanes,
        "threads": [1],
        "efficiency": {"default": {"conv": 0.5, "depthwise": 0.1, "gemm": 0.3, "memory": 0.5,
                                   "layer_overhead_us": 5.0}},
    }
    path = calibration_path() if calibration is _DEFAULT else calibration
    if path is not None and Path(path).is_file():
        try:
            cal = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError):
            cal = {}
        if cal.get("host_id") == host_id():
            data["efficiency"] = cal.get("efficiency", data["efficiency"])
            if cal.get("bandwidth_gbs"):
                data["memory"]["bandwidth_gbs"] = cal["bandwidth_gbs"]
                data["memory"]["source"] = f"measured by edgekit profiles calibrate ({cal.get('date', '?')})"
            data["efficiency_source"] = f"calibrated on this host ({path}, {cal.get('date', '?')})"
    return Profile.model_validate(data)
