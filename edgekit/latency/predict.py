"""A roofline latency model: per-layer work against a profile's peak throughput and bandwidth.

For each layer: time = max(ops / (peak x efficiency[kind]), bytes / (bandwidth x efficiency
[memory])) + a fixed per-layer overhead; in integer, an activation the runtime's integer kernels do
not apply (backend.int8_fused_activations) adds float passes. The efficiency factors come from the profile
(calibrated on the host, assumed elsewhere). Every number it returns is a prediction and is
labelled so.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

from ..errors import InputError
from .graph import LayerWork, graph_work

__all__ = ["LayerPrediction", "Prediction", "predict", "predict_model", "BYTES"]

#: (activation bytes, weight bytes) per element
BYTES = {"fp32": (4, 4), "fp16": (2, 2), "int8": (1, 1), "w4a8": (1, 0.5), "mixed": (1, 1)}
#: which peak throughput a precision runs at
_PEAK = {"fp32": "fp32", "fp16": "fp16", "int8": "int8", "w4a8": "int8", "mixed": "int8"}


@dataclass
class LayerPrediction:
    name: str
    op: str
    kind: str
    precision: str
    macs: int
    bytes: float
    compute_ms: float
    memory_ms: float
    overhead_ms: float
    ms: float
    bound: str  # compute | memory | overhead


@dataclass
class Prediction:
    """Predicted latency of one model on one profile (batch 1), per layer, and at a batch."""

    profile: str
    unit: str
    runtime: str | None
    precision: str
    threads: int
    efficiency_source: str
    layers: list[LayerPrediction]
    latency_ms: float
    batch: int
    batch_ms: float
    label: str = field(default="predicted", init=False)

    @property
    def throughput_ips(self) -> float:
        return 1000.0 * self.batch / self.batch_ms

    def to_dict(self, layers: bool = True) -> dict:
        d = asdict(self)
        d["throughput_ips"] = round(self.throughput_ips, 1)
        if not layers:
            d.pop("layers")
        return d

    def markdown(self, top: int | None = 15) -> str:
        rows = sorted(self.layers, key=lambda r: -r.ms)[:top] if top else self.layers
        out = [f"Predicted on {self.profile} ({self.unit}, {self.runtime or 'any runtime'}, {self.precision}, "
               f"{self.threads} thread(s)); efficiency factors {self.efficiency_source}.", "",
               "| layer | op | kind | precision | MMACs | KB moved | predicted ms | bound |", "|---|---|---|---|---|---|---|---|"]
        out += [f"| {r.name} | {r.op} | {r.kind} | {r.precision} | {r.macs / 1e6:.2f} | {r.bytes / 1e3:.1f} | "
                f"{r.ms:.4f} | {r.bound} |" for r in rows]
        out += ["", f"Predicted total: {self.latency_ms:.3f} ms at batch 1 ({len(self.layers)} layers); "
                f"{self.throughput_ips:.0f} img/s at batch {self.batch}."]
        return "\n".join(out)


def _layer_precision(layer: LayerWork, precision: str) -> str:
    if layer.quantized is None:
        return precision
    if layer.quantized:
        return precision if precision in ("int8", "w4a8") else "int8"
    return "fp32"


#: passes over a layer's output for an activation its integer kernel does not apply:
#: DequantizeLinear, the activation in float, QuantizeLinear
_UNFUSED_PASSES = 3


def _int8_fused(runtime: str | None) -> frozenset[str] | None:
    from ..backends import get_backend

    try:
        return get_backend(runtime).int8_fused_activations if runtime else None
    except InputError:  # a runtime edgekit has no backend for: assume it fuses like the others
        return None


def _blocked(macs: int, lw: LayerWork, multiple: int) -> float:
    """MACs a vector kernel really computes: channels run in blocks of the profile's
    `channel_multiple` (16 FP32 lanes on AVX-512), so 24 channels cost 32
    (benchmarks/results/conv_widths.md). A stem's few input channels are not blocked."""
    if multiple <= 1 or not lw.cout:
        return macs

    def up(c: int) -> int:
        return -(-c // multiple) * multiple

    f = up(lw.cout) / lw.cout
    if lw.kind in ("conv", "grouped") and lw.cin >= multiple // 2:
        f *= up(lw.cin) / lw.cin
    return macs * f


def _price(layers: Sequence[LayerWork], profile, runtime: str | None, precision: str, threads: int,
           batch: int) -> list[LayerPrediction]:
    unit = profile.unit()
    fuses = _int8_fused(runtime)
    share = min(threads, unit.units) / unit.units if unit.kind == "cpu" else 1.0
    bw = profile.memory.bandwidth_gbs * 1e9
    rows = []
    for lw in layers:
        prec = _layer_precision(lw, precision)
        peak_key = _PEAK.get(prec, "fp32")
        peak = unit.peak_gops.get(peak_key) or unit.peak_gops.get("fp32")
        eff = profile.efficiency_for(runtime, prec)
        abytes, wbytes = BYTES.get(prec, (4, 4))
        if lw.kind == "memory" and abytes < 4 and prec != "fp16":
            # outside conv/gemm an integer graph mostly runs float ops between dequantize and
            # quantize (SE blocks, SiLU, shuffles): the activations move at float width
            abytes = 4
        nbytes = lw.act_elems * batch * abytes + lw.weight_elems * wbytes
        ops = 2.0 * _blocked(lw.macs, lw, profile.channel_multiple) * batch
        kind_eff = {"conv": eff.conv, "depthwise": eff.depthwise, "grouped": eff.grouped, "gemm": eff.gemm}.get(lw.kind)
        compute = ops / (peak * 1e9 * share * kind_eff) * 1e3 if kind_eff else 0.0
        memory = nbytes / (bw * eff.memory) * 1e3
        over = eff.layer_overhead_us / 1e3
        ms = max(compute, memory) + over
        bound = "overhead" if over > max(compute, memory) else ("compute" if compute >= memory else "memory")
        rows.append(LayerPrediction(lw.name, lw.op, lw.kind, prec, lw.macs * batch, nbytes, compute, memory,
                                    over, ms, bound))
        if fuses is not None and prec in ("int8", "w4a8", "mixed") and lw.kind != "memory":
            for act in (a for a in lw.fused if a not in fuses):
                abytes = _UNFUSED_PASSES * 2 * 4 * lw.out_elems * batch
                amem, aover = abytes / (bw * eff.memory) * 1e3, _UNFUSED_PASSES * over
                rows.append(LayerPrediction(f"{lw.name} {act} (float, between DQ/Q)", act, "memory", "fp32", 0,
                                            abytes, 0.0, amem, aover, amem + aover,
                                            "overhead" if aover > amem else "memory"))
    return rows


def predict(model: str | Path | Sequence[LayerWork], profile, *, precision: str | None = None,
            runtime: str | None = None, threads: int | None = None, batch: int | None = None) -> Prediction:
    """Predict batch-1 latency (and batch-`batch` throughput) of an ONNX model on `profile`.

    `model` is an ONNX path/ModelProto (a QDQ file marks its integer layers itself) or the
    output of `graph_work`. `precision` defaults to the profile's preferred one, `runtime` to
    its first, `threads` to its first thread count, `batch` to its throughput batch."""
    from ..profiles import get_profile

    prof = get_profile(profile)
    precision = precision or prof.preferred_precision
    unit = prof.unit()
    if _PEAK.get(precision) not in unit.peak_gops:
        have = ", ".join(unit.peak_gops)
        raise InputError(f"profile {prof.name} has no {_PEAK.get(precision, precision)} throughput on its "
                         f"{unit.name} (it has {have}): predict at one of those precisions")
    runtime = runtime or prof.runtimes[0]
    threads = threads or prof.threads[0]
    batch = batch or prof.throughput_batch
    layers = model if isinstance(model, (list, tuple)) else graph_work(model)
    one = _price(layers, prof, runtime, precision, threads, 1)
    many = _price(layers, prof, runtime, precision, threads, batch)
    # per call: a fixed cost, plus reading/converting the float input and writing the output
    eff = prof.efficiency_for(runtime, precision)
    io_bytes = 2 * 4 * getattr(layers, "io_elems", 0)
    io_ms = io_bytes / (prof.memory.bandwidth_gbs * 1e9 * eff.memory) * 1e3
    call = eff.call_overhead_us / 1e3 + io_ms
    one.append(LayerPrediction("(call: input/output, dispatch)", "-", "call", precision, 0, io_bytes, 0.0, io_ms,
                               eff.call_overhead_us / 1e3, call, "overhead"))
    return Prediction(prof.name, unit.name, runtime, precision, threads, prof.efficiency_source, one,
                      sum(r.ms for r in one), batch, sum(r.ms for r in many) + eff.call_overhead_us / 1e3
                      + io_ms * batch)


def predict_model(model: str | Path, profile, *, arch: str | None = None, num_classes: int | None = None,
                  trust_pickle: bool = False, **kw) -> Prediction:
    """`predict` for an ONNX file, a model file or a zoo name (exported to ONNX first, as deployed)."""
    import tempfile

    if str(model).endswith(".onnx"):
        if not Path(model).is_file():
            raise InputError(f"ONNX file not found: {model}")
        return predict(model, profile, **kw)
    from ..exporters.onnx import export_onnx
    from ..models import load_model

    loaded = load_model(model, arch=arch, num_classes=num_classes, trust_pickle=trust_pickle)
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(loaded.module.eval(), loaded.card, Path(tmp) / "model.onnx")
        layers = graph_work(path)
    return predict(layers, profile, **kw)
