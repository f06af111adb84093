"""`edgekit quantize`: PTQ or QAT (INT8, W4A8, mixed) with edgekit's fake-quant layers, then
export to every runtime and verify each artifact against the fake-quant model.

Flow: load -> plan bit widths (optionally a sensitivity scan under --max-drop) -> fold BN and
insert quantizers -> calibrate on real images (= PTQ) -> [QAT with the training engine,
optionally distilling from the float model] -> save the quantized checkpoint -> export, verify
and time each runtime's artifact (benchmark machinery) -> quantize.json + report.md.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence


from .._io import atomic_write_json, atomic_write_text, check_out_dir
from ..errors import InputError
from ..models.clone import clone_module
from ..train import Supervised, TrainConfig, TrainResult, train
from ..train.engine import evaluate_top1
from ._common import load_for_training, splits

__all__ = ["quantize", "QuantizeResult", "DEFAULT_QAT_CONFIG", "unsigned_activations", "ACTIVATIONS",
           "residual_form", "RESIDUAL"]

log = logging.getLogger(__name__)

#: QAT fine-tunes a trained model with batch norms folded away: without BN, ResNet-20 diverged
#: at lr 0.005 (SGD, momentum 0.9) and trained steadily at 0.001. ResNet-56 with KD still
#: collapsed at 0.001 (86.6% -> 9.8% in 16 steps) unless gradients are clipped (86.0%):
#: benchmarks/qat_clip.py.
QAT_GRAD_CLIP = 1.0
DEFAULT_QAT_CONFIG = TrainConfig(epochs=1, lr=0.001, weight_decay=0.0, grad_clip=QAT_GRAD_CLIP)


@dataclass
class QuantizeResult:
    out: Path
    model_path: Path
    label: str
    fp32_top1: float
    ptq_top1: float
    final_top1: float
    eval_images: int
    rows: list = field(default_factory=list)
    sensitivity: list = field(default_factory=list)
    raised: list = field(default_factory=list)
    #: measured PTQ top-1 drop of the mixed model on the calibration images (with --max-drop)
    mixed_drop: float | None = None
    training: TrainResult | None = None

    def to_dict(self) -> dict:
        return {"model": str(self.model_path), "precision": self.label, "eval_images": self.eval_images,
                "fp32_top1": self.fp32_top1, "ptq_top1": self.ptq_top1, "final_top1": self.final_top1,
                "raised_layers": self.raised, "mixed_drop": self.mixed_drop, "sensitivity": self.sensitivity,
                "rows": [r.to_dict() | {"details": r.details} for r in self.rows]}


def quantize(model: str | Path, *, data: str | Path, out: str | Path, mode: str = "qat", bits: int = 8,
             arch: str | None = None, num_classes: int | None = None, trust_pickle: bool = False,
             config: TrainConfig | None = None, kd: bool = False, temperature: float = 4.0,
             alpha: float = 0.5, keep_float: Sequence[str] = (), first_last_8bit: bool = True,
             max_drop: float | None = None, calibration_images: int = 512, limit: int | None = 1000,
             backends: Sequence[str] | str = ("torch", "onnxruntime", "openvino", "tensorrt"),
             threads: Sequence[int] | str | int = (1,), timing=None, tolerance=None, profile: str | None = None,
             resume: bool = False, progress: bool = True, seed: int = 0,
             tensorrt_rules_row: bool = True, activations: str = "auto", residual: str = "auto") -> QuantizeResult:
    """Quantize `model` on `data` and deploy it; see the module docstring. Writes into `out`:
    model.pt (the quantized checkpoint, loadable by every edgekit command), the runtime
    artifacts with their cards, results.* (the benchmark table), quantize.json, report.md and,
    for QAT, train/ (the training run; `resume=True` continues it). `tensorrt_rules_row`: also
    write the TensorRT-rules file and run it here when no TensorRT bundle is planned.
    `activations`: "signed" (TensorRT's INT8), "unsigned" (non-negative tensors on the UINT8 grid
    ONNX Runtime and OpenVINO execute; no TensorRT file) or "auto" (signed when TensorRT is
    among the backends). `residual`: "rounded" (ONNX Runtime, TensorRT), "fused" (OpenVINO: an
    INT8 conv output that only a residual add consumes is not quantized, since OpenVINO's CPU
    plugin fuses that quantizer into the add as a scale) or "auto" (fused when OpenVINO is the
    first runtime among the backends)."""
    from ..backends import get_backend
    from ..benchmark import Prepared, _Entry, _plan, run_entries
    from ..inputs import parse_backends, parse_threads
    from ..models import save_model
    from ..quant import calibrate, plan, prepare
    from ..quant.sensitivity import choose, scan

    if mode not in ("ptq", "qat"):
        raise InputError(f"--mode {mode!r} is not supported: use ptq (calibration only) or qat")
    if bits not in (4, 8):
        raise InputError(f"--bits {bits} is not supported: use 8 (INT8) or 4 (W4A8: 4-bit weights, "
                         "8-bit activations)")
    if max_drop is not None and max_drop < 0:
        raise InputError("--max-drop must be >= 0 (top-1 points)")
    if data is None:
        raise InputError("quantization needs real images to calibrate on: pass --data DIR")
    if mode == "qat" and config is not None and config.precision != "fp32":
        raise InputError(f"QAT trains in fp32, not {config.precision}: its fake-quant scales and rounding "
                         "are float32 (leave the precision at fp32 for the quantize stage)")
    if profile:
        from ..profiles import get_profile
        prof = get_profile(profile)
        backends, threads = prof.runtimes, prof.threads
    backends, threads = parse_backends(backends), parse_threads(threads)
    unsigned = unsigned_activations(activations, backends)
    form = dict(unsigned=unsigned, residual=residual_form(residual, backends))
    out = check_out_dir(Path(out))
    cfg = config or DEFAULT_QAT_CONFIG
    cfg = cfg.model_copy(update={"seed": seed}) if config is None else cfg

    module, card, ds, note = load_for_training(model, data=data, arch=arch, num_classes=num_classes,
                                               trust_pickle=trust_pickle, seed=cfg.seed)
    if note and mode == "ptq":
        raise InputError(f"the model's classes do not match {data} ({note}); PTQ cannot train a new "
                         "head: fine-tune first (edgekit finetune) or use --mode qat")
    module.eval()
    form["input_size"] = tuple(card.input_size)  # lets prepare() fold BatchNorm1d into a Linear
    float_model = clone_module(module).eval()
    eval_split = ds.evaluation(limit, seed=seed)
    calib_split = ds.calibration(calibration_images, seed=seed)

    def calib():
        return [x for x, _ in calib_split.batches(64, mean=card.mean, std=card.std)]

    weights = plan(module, bits, keep_float=keep_float, first_last_8bit=first_last_8bit)
    label = {8: "int8", 4: "w4a8"}[bits]
    sens, raised, drop = [], [], None
    if max_drop is not None:
        def score(m):
            return evaluate_top1(m, calib_split, card)[0]
        base, layer_sens = scan(module, weights, calib, score, **form)
        weights, drop, raised = choose(module, weights, layer_sens, base, max_drop, calib, score, **form)
        sens = [s.to_dict() for s in layer_sens]
        if raised:
            label = "mixed"
        if not weights:
            raise InputError(f"no layer can be quantized within --max-drop {max_drop}: every layer was "
                             "raised to float; allow a larger drop")
        log.info("mixed precision: %d layers raised, PTQ drop %.2f on the calibration images", len(raised), drop)

    q = prepare(clone_module(module), weights, label=label, **form)
    calibrate(q, calib())
    fp32_top1 = evaluate_top1(float_model, eval_split, card)[0]
    ptq_top1 = evaluate_top1(q, eval_split, card)[0]
    qcard = card.with_(source=f"{card.source}; edgekit {mode} {label} on {ds.name}",
                       notes={**card.notes, "quantization": label, "quant_mode": mode,
                              "activations": "unsigned" if unsigned else "signed", "residual": form["residual"]})
    training = None
    if mode == "qat":
        from .distill import DistillObjective
        train_split, _ = splits(ds, cfg)
        objective = (DistillObjective(q, float_model, temperature=temperature, alpha=alpha,
                                      input_size=tuple(card.input_size)) if kd
                     else Supervised(q, cfg.label_smoothing))
        training = train(objective, qcard, train_split, eval_split, cfg, out / "train", resume=resume,
                         progress=progress)
    q.eval()
    final_top1 = evaluate_top1(q, eval_split, card)[0] if mode == "qat" else ptq_top1
    model_path = save_model(q, qcard, out / "model.pt")

    prep = Prepared(q, qcard, str(data), eval_split, calib_split)
    entries = _plan(backends, [label], q)
    extra = []
    if tensorrt_rules_row and not any(e.backend == "tensorrt" for e in entries):
        # without a TensorRT bundle (whose stand-in row runs this same file), the TensorRT-rules
        # QDQ file is still written, checked and run here on ONNX Runtime as its own row
        trt = _Entry("onnxruntime", label, label="onnxruntime (tensorrt-rules file)")
        if (why := get_backend("tensorrt").unsupported(label, q)):
            trt.status, trt.reason = "unsupported", why
        extra = [(trt, lambda stage: _tensorrt_file(q, qcard, stage, label))]
    res = run_entries(prep, entries, out, threads=threads, timing=timing, tolerance=tolerance, progress=progress,
                      title=f"edgekit quantize ({mode} {label})", seed=seed,
                      env_extra={"model": str(model), "data": str(data), "mode": mode, "precision": label,
                                 "activations": "unsigned" if unsigned else "signed", "residual": form["residual"]},
                      extra=extra)
    result = QuantizeResult(out, model_path, label, fp32_top1, ptq_top1, final_top1, len(eval_split),
                            res.rows, sens, raised, drop, training)
    atomic_write_json(out / "quantize.json", result.to_dict())
    atomic_write_text(out / "report.md", _report(result, mode, res.markdown(f"Deployed artifacts ({label})")))
    return result


ACTIVATIONS = ("auto", "signed", "unsigned")
RESIDUAL = ("auto", "rounded", "fused")


def unsigned_activations(activations: str, runtimes: Sequence[str]) -> bool:
    """Whether to quantize non-negative activations unsigned: "auto" does unless TensorRT (signed
    INT8 only) is among the runtimes the model is for."""
    if activations not in ACTIVATIONS:
        raise InputError(f"--activations {activations!r} is not supported: use {', '.join(ACTIVATIONS)}")
    if activations == "auto":
        return "tensorrt" not in runtimes
    return activations == "unsigned"


def residual_form(residual: str, runtimes: Sequence[str]) -> str:
    """How a conv output feeding a residual add is quantized: "auto" takes the form of the first
    deployment runtime named (a profile lists its preferred one first): "fused" for OpenVINO,
    "rounded" for the others. One model cannot match both: the other runtime's file then shows
    its measured agreement (ONNX Runtime runs a fused model's conv-into-add layers in float)."""
    if residual not in RESIDUAL:
        raise InputError(f"--residual {residual!r} is not supported: use {', '.join(RESIDUAL)}")
    if residual == "auto":
        deployed = [r for r in runtimes if r != "torch"]
        return "fused" if deployed[:1] == ["openvino"] else "rounded"
    return residual


def _tensorrt_file(q, card, stage: Path, label: str):
    """The QDQ ONNX for TensorRT (signed INT8 activations, zero points 0), checked against
    TensorRT's explicit-quantization rules and run here on ONNX Runtime."""
    from ..backends import Artifact
    from ..exporters.qdq import check_tensorrt_rules, export_qdq
    from ..models import ModelCard

    path = export_qdq(q, card, stage / f"model_{label}_tensorrt.onnx", target="tensorrt")
    problems = check_tensorrt_rules(path)
    if problems:  # nothing failed is left where a later step could pick it up as an artifact
        from ..errors import ExportError
        path.unlink(missing_ok=True)
        raise ExportError("TensorRT rules not met: " + "; ".join(problems[:3]))
    card_path = ModelCard.sidecar_path(path)
    card.with_(notes={**card.notes, "backend": "tensorrt", "precision": label}).write(card_path)
    return Artifact("onnxruntime", label, path, [path, card_path], card,
                    {"quantization": "TensorRT explicit quantization: INT8 activations, symmetric "
                     "per-channel weights, zero points 0"}, path.stat().st_size / 1e6)


def _report(r: QuantizeResult, mode: str, table: str) -> str:
    lines = [f"# edgekit quantize: {mode} {r.label}", "",
             f"Accuracy on {r.eval_images} held-out images (torch; the quantized model is the fake-quant "
             "simulation every artifact below is checked against):", "",
             "| model | top-1 % |", "|---|---|",
             f"| float source | {r.fp32_top1:.2f} |", f"| after calibration (PTQ) | {r.ptq_top1:.2f} |"]
    if mode == "qat":
        lines.append(f"| after QAT | {r.final_top1:.2f} |")
    if r.mixed_drop is not None:
        lines += ["", f"Mixed precision raised {len(r.raised)} layer(s) to higher precision"
                  f"{': ' + ', '.join(r.raised) if r.raised else ''}; measured PTQ drop on the calibration "
                  f"images: {r.mixed_drop:.2f} points."]
    if r.sensitivity:
        lines += ["", "Per-layer sensitivity (top-1 drop with only that layer quantized):", "",
                  "| layer | bits | drop |", "|---|---|---|"]
        lines += [f"| {s['layer']} | {s['bits']} | {s['drop']:.2f} |" for s in r.sensitivity]
    return "\n".join(lines) + "\n\n" + table

