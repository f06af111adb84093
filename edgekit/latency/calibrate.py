"""Fit the host profile's efficiency factors from measurements on the host.

Micro-benchmarks (one op type each: dense conv, 1x1 conv, depthwise, GEMM, elementwise, pool,
a chain of tiny layers for the per-layer overhead) and a few reference models are exported
through the deployed paths (ONNX Runtime, OpenVINO; FP32 and their INT8 quantizers), timed
here, and the factors are fitted per runtime/precision by least squares on log(predicted /
measured). Memory bandwidth is measured with a large array copy.
"""

from __future__ import annotations

import datetime as _dt
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .._io import atomic_write_text
from .graph import LayerWork, graph_work
from .predict import predict

__all__ = ["Measured", "micro_models", "reference_models", "measure", "fit", "calibrate", "memory_bandwidth_gbs"]

#: the calibration reference models (kept apart from the models benchmarks/latency_model.py scores)
REFERENCE = (("cifar_resnet20", 32), ("mobilenet_v3_small", 160), ("regnet_x_400mf", 128), ("mnasnet0_5", 160),
             ("squeezenet1_1", 128))
#: whole models weigh more in the fit than single-op micro-benchmarks (which exaggerate a
#: runtime's per-call work and miss its cross-layer fusions)
REFERENCE_WEIGHT = 3.0
_MICRO = ("conv3x3", "conv1x1", "depthwise", "gemm", "elementwise", "pool", "tiny_chain")
_PARAMS = ("conv", "depthwise", "grouped", "gemm", "memory", "layer_overhead_us", "call_overhead_us")


@dataclass
class Measured:
    name: str
    runtime: str
    precision: str
    threads: int
    layers: list[LayerWork]
    ms: float       # measured batch-1 p50
    ms_p90: float


def micro_models():
    """(name, module, input CHW) single-op-type graphs."""
    import torch
    from torch import nn

    class Elementwise(nn.Module):
        def forward(self, x):
            return (x + 1.0) * x

    def chain(n=30, c=8):
        return nn.Sequential(*[nn.Sequential(nn.Conv2d(c, c, 1), nn.ReLU()) for _ in range(n)])

    torch.manual_seed(0)
    return [
        ("conv3x3", nn.Sequential(nn.Conv2d(64, 64, 3, padding=1), nn.ReLU()), (64, 56, 56)),
        ("conv1x1", nn.Sequential(nn.Conv2d(256, 256, 1), nn.ReLU()), (256, 28, 28)),
        ("depthwise", nn.Sequential(nn.Conv2d(192, 192, 3, padding=1, groups=192), nn.ReLU()), (192, 56, 56)),
        ("gemm", nn.Sequential(nn.Flatten(), nn.Linear(2048, 1000)), (2048, 1, 1)),
        ("elementwise", Elementwise(), (64, 112, 112)),
        ("pool", nn.MaxPool2d(3, 2, 1), (64, 112, 112)),
        ("tiny_chain", chain(), (8, 4, 4)),
    ]


def reference_models(spec: Sequence[tuple[str, int]] = REFERENCE):
    from ..models import get_model

    out = []
    for arch, size in spec:
        m, card = get_model(arch, num_classes=10 if arch.startswith("cifar") else 1000)
        out.append((f"{arch}@{size}", m.eval(), (3, size, size)))
    return out


def _card(shape):
    from ..models import ModelCard
    return ModelCard(num_classes=1, input_size=tuple(shape), mean=(0.0,) * shape[0], std=(1.0,) * shape[0])


def _runners(name: str, module, shape, work: Path, keys, threads: int) -> list:
    """`module` through the deployed paths (ONNX; ORT QDQ INT8; OpenVINO IR; NNCF INT8), as runners."""
    from ..backends import get_backend
    from ..exporters.onnx import export_onnx

    folder = work / name
    folder.mkdir(parents=True, exist_ok=True)
    fp32 = folder / "fp32.onnx"
    if not fp32.exists():
        export_onnx(module.eval(), _card(shape), fp32)
    rng = np.random.default_rng(0)
    batches = [rng.standard_normal((1, *shape)).astype(np.float32) for _ in range(4)]
    return [get_backend(rt).onnx_runner(fp32, threads=threads, precision=p, calibration=batches) for rt, p in keys]


def measure(models, work: Path, *, runtimes=("onnxruntime", "openvino"), precisions=("fp32", "int8"),
            threads: int = 1, iters: int = 40, rounds: int = 1,
            progress: Callable[[str], None] | None = None) -> list[Measured]:
    """Time every (model, runtime, precision) at batch 1; the variants of one model interleaved.
    With `rounds` > 1 the whole list is timed again that many times, minutes apart, and each row
    keeps its fastest round: on a shared machine a neighbour's burst slows one round of one
    model by up to 2x (seen here), and interference only ever adds time.
    The layers priced for a row are those of the ONNX graph it came from (FP32 graph + precision)."""
    from ..bench import TimingConfig, time_runners

    models = list(models)
    best: dict[tuple[str, str, str], tuple[float, float]] = {}
    layers: dict[str, list[LayerWork]] = {}
    for r in range(rounds):
        for name, module, shape in models:
            if progress:
                progress(name if rounds == 1 else f"{name} (round {r + 1}/{rounds})")
            keys = [(rt, p) for rt in runtimes for p in precisions]
            runners = _runners(name, module, shape, work, keys, threads)
            layers.setdefault(name, graph_work(work / name / "fp32.onnx"))
            sample = np.random.default_rng(1).standard_normal((1, *shape)).astype(np.float32)
            cfg = TimingConfig(warmup=5, iters=iters, passes=4, throughput_batch=1, throughput_iters=1)
            for (rt, p), tm in zip(keys, time_runners(runners, sample, cfg)):
                key = (name, rt, p)
                if key not in best or tm.latency_ms_p50 < best[key][0]:
                    best[key] = (tm.latency_ms_p50, tm.latency_ms_p90)
            del runners
    return [Measured(name, rt, p, threads, layers[name], ms, p90) for (name, rt, p), (ms, p90) in best.items()]


def memory_bandwidth_gbs(mb: int = 256, repeats: int = 5) -> float:
    """Single-thread copy bandwidth (read + write) of an array far larger than the caches."""
    a = np.ones(mb * 2**20 // 8)
    b = np.empty_like(a)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        np.copyto(b, a)
        best = min(best, time.perf_counter() - t)
    return round(2 * a.nbytes / best / 1e9, 2)


def fit(samples: Sequence[Measured], profile) -> dict[str, dict]:
    """Efficiency factors per "runtime/precision" that best explain `samples` (log error),
    pulled weakly towards the profile's current factors so unobserved kinds stay sensible."""
    from scipy.optimize import least_squares

    from ..profiles import Efficiency

    out = {}
    groups: dict[str, list[Measured]] = {}
    for s in samples:
        groups.setdefault(f"{s.runtime}/{s.precision}", []).append(s)
    for key, group in groups.items():
        rt, prec = key.split("/")
        start = profile.efficiency_for(rt, prec)
        x0 = np.log([max(getattr(start, k), 1e-3) for k in _PARAMS])

        def residuals(x, group=group, rt=rt, prec=prec):
            eff = Efficiency(**dict(zip(_PARAMS, np.exp(x))))
            prof = profile.model_copy(update={"efficiency": {"default": eff}})
            r = [np.log(predict(s.layers, prof, precision=prec, runtime=rt, threads=s.threads, batch=1).latency_ms
                        / s.ms) * (1.0 if s.name in _MICRO else REFERENCE_WEIGHT) for s in group]
            return np.concatenate([r, 0.05 * (x - x0)])

        lo = np.log([1e-3, 1e-4, 1e-4, 1e-4, 1e-3, 0.05, 0.1])
        hi = np.log([4, 4, 4, 4, 4, 500, 5000])
        res = least_squares(residuals, np.clip(x0, lo + 1e-6, hi - 1e-6), bounds=(lo, hi))
        vals = dict(zip(_PARAMS, (float(v) for v in np.exp(res.x))))
        out[key] = {k: round(v, 4) for k, v in vals.items()}
    return out


def calibrate(out: Path | None = None, *, runtimes: Sequence[str] = ("onnxruntime", "openvino"),
              precisions: Sequence[str] = ("fp32", "int8"), threads: int = 1, references=REFERENCE,
              micro: Sequence[str] | None = None, work: Path | None = None, iters: int = 40, rounds: int = 1,
              progress: Callable[[str], None] | None = None, samples: Sequence[Measured] | None = None,
              bandwidth_gbs: float | None = None) -> dict:
    """Measure, fit and write the host calibration file; returns what was written. `samples` and
    `bandwidth_gbs` (earlier measurements, e.g. from a previous file's "fit") skip the measuring."""
    import tempfile

    import yaml

    from ..profiles import calibration_path, host_id, host_profile

    out = Path(out) if out else calibration_path()
    if samples is None:
        models = [m for m in micro_models() if micro is None or m[0] in micro] + reference_models(references)
        bw = memory_bandwidth_gbs()
        with tempfile.TemporaryDirectory() as tmp:
            samples = measure(models, Path(work or tmp), runtimes=runtimes, precisions=precisions, threads=threads,
                              iters=iters, rounds=rounds, progress=progress)
        names = [m[0] for m in models]
    else:
        bw, names = bandwidth_gbs or memory_bandwidth_gbs(), list(dict.fromkeys(s.name for s in samples))
    plain = host_profile(calibration=None)
    base = plain.model_copy(update={"memory": plain.memory.model_copy(update={"bandwidth_gbs": bw})})
    factors = fit(samples, base)
    fitted = base.model_copy(update={"efficiency": {"default": base.efficiency["default"], **{
        k: base.efficiency["default"].model_copy(update=v) for k, v in factors.items()}}})
    errors = [{"model": s.name, "runtime": s.runtime, "precision": s.precision, "threads": s.threads,
               "measured_ms": round(s.ms, 4), "measured_p90_ms": round(s.ms_p90, 4),
               "predicted_ms": round(predict(s.layers, fitted, precision=s.precision, runtime=s.runtime,
                                             threads=s.threads, batch=1).latency_ms, 4)} for s in samples]
    record = {"host_id": host_id(), "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
              "threads": threads, "bandwidth_gbs": bw,
              "efficiency": {"default": base.efficiency["default"].model_dump(), **factors},
              "models": names, "fit": errors}
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, "# edgekit profiles calibrate: efficiency factors fitted on this host\n"
                      + yaml.safe_dump(record, sort_keys=False))
    return record
