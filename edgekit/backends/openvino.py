"""OpenVINO (CPU plugin).

On CPUs with AVX-512 BF16/AMX, OpenVINO silently runs float models in bf16. FP32 rows are
therefore compiled with INFERENCE_PRECISION_HINT=f32. So are INT8 rows: their convolutions run
in u8 either way, and bf16 in the float parts between them (requantization, bias, pooling) adds
rounding the fake-quant model does not have, which flips low-margin predictions. FP16, W4A8 and
mixed rows run with the device default (W4A8's decompressed convolutions are much faster in
bf16: benchmarks/results/agreement.md), and every runner reports what actually executed.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from ..errors import EdgekitError, ExportError
from .base import Artifact, Backend, ExportContext, quiet, register_backend

__all__ = ["OpenVinoBackend", "OvRunner"]


def _core():
    import openvino as ov

    return ov.Core()


class OvRunner:
    backend = "openvino"

    def __init__(self, path: Path, *, precision: str, threads: int, hint: str | None = None) -> None:
        """`hint`: an INFERENCE_PRECISION_HINT to use instead of edgekit's choice: f32 for every
        precision but FP16 (the device default there). On a CPU with bf16 the default runs the
        float parts of a W4A8 or mixed model (its 4-bit layers are decompressed to float) in
        bf16: faster, but no longer the model that was trained and verified (on a MobileNetV2,
        W4A8: 98.4% top-1 agreement with the fake-quant model in bf16, 99.8% in f32)."""
        core = _core()
        config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY",
                  "NUM_STREAMS": 1}
        hint = hint or ("f32" if precision != "fp16" else None)
        if hint:
            config["INFERENCE_PRECISION_HINT"] = hint
        self.compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.precision = precision
        self.threads = threads
        self.executed = executed_precision(self.compiled)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.request.infer({0: x})
        return self.request.get_output_tensor(0).data.copy()


def executed_precision(compiled) -> str:
    """Runtime precision of the convolutions/matmuls in the compiled graph, e.g. 'u8 x20, f32 x1'."""
    counts: Counter[str] = Counter()
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        if "layerType" not in info:
            continue
        layer_type = info["layerType"].astype(str)
        if layer_type in ("Convolution", "FullyConnected", "MatMul", "GroupConvolution", "Deconvolution"):
            counts[info["runtimePrecision"].astype(str).lower()] += 1
    hint = _type_name(compiled.get_property("INFERENCE_PRECISION_HINT"))
    detail = ", ".join(f"{p} x{n}" for p, n in counts.most_common())
    return f"{hint} hint; conv/matmul run in {detail}"


def _type_name(t) -> str:
    return t.get_type_name() if hasattr(t, "get_type_name") else str(t)


def default_inference_precision() -> str:
    """What this machine's CPU plugin runs float models in when nobody says otherwise."""
    return _type_name(_core().get_property("CPU", "INFERENCE_PRECISION_HINT"))


def nncf_int8(model, batches: list[np.ndarray]):
    """NNCF post-training INT8 with its defaults (symmetric preset) on an OpenVINO model."""
    import logging

    import nncf

    logging.getLogger("nncf").setLevel(logging.ERROR)
    with quiet():
        return nncf.quantize(model, nncf.Dataset(batches), subset_size=len(batches))


@register_backend
class OpenVinoBackend(Backend):
    name = "openvino"
    precisions = ("fp32", "fp16", "int8", "w4a8", "mixed")
    suffixes = (".xml",)
    description = "OpenVINO CPU plugin; IR (.xml + .bin); INT8 via NNCF post-training quantization"

    def unavailable(self) -> str | None:
        try:
            import openvino  # noqa: F401
        except ImportError:
            return "unavailable: openvino not installed"
        return None

    def export(self, ctx: ExportContext, precision: str) -> Artifact:
        import openvino as ov

        xml = ctx.path(f"{precision}_openvino.xml")
        try:
            if ctx.quant:  # edgekit's learned grid, as QDQ ONNX that OpenVINO turns into FakeQuantize
                from ..exporters.qdq import export_qdq
                from ..quant import unsigned_tensors

                # the form that holds the torch model's grid exactly: signed (TensorRT's rules) or,
                # for a model trained with unsigned activations, ONNX Runtime's
                target = "onnxruntime" if unsigned_tensors(ctx.module) else "tensorrt"
                src = export_qdq(ctx.module, ctx.card, ctx.work_path("qdq_openvino.onnx"), target=target)
                ov.save_model(ov.convert_model(str(src)), str(xml), compress_to_fp16=False)
                return ctx.finish(xml, precision, self.name, extra_files=(xml.with_suffix(".bin"),),
                                  quantization="edgekit QAT/PTQ grid via QDQ ONNX")
            model = ov.convert_model(str(ctx.onnx_fp32()))
            notes = {}
            if precision == "int8":
                model = nncf_int8(model, ctx.calibration_batches(1))
                notes["quantization"] = "NNCF PTQ, default preset (symmetric), OpenVINO backend"
            ov.save_model(model, str(xml), compress_to_fp16=(precision == "fp16"))
        except EdgekitError:
            raise
        except Exception as e:  # noqa: BLE001
            raise ExportError(f"openvino {precision}: {type(e).__name__}: {str(e).splitlines()[0][:200]}") from e
        return ctx.finish(xml, precision, self.name, extra_files=(xml.with_suffix(".bin"),), **notes)

    def load(self, artifact: Artifact, *, threads: int) -> OvRunner:
        return OvRunner(artifact.path, precision=artifact.precision, threads=threads)

    def onnx_runner(self, onnx: Path, *, threads: int, precision: str = "fp32",
                    calibration: list[np.ndarray] | None = None) -> OvRunner:
        import openvino as ov

        xml = Path(onnx).with_name(f"{Path(onnx).stem}_{precision}.xml")
        if not xml.exists():
            model = ov.convert_model(str(onnx))
            if precision == "int8":
                model = nncf_int8(model, calibration)
            ov.save_model(model, str(xml), compress_to_fp16=False)
        return OvRunner(xml, precision=precision, threads=threads)

    def artifact_from_path(self, path: Path, card, precision: str) -> Artifact:
        path = Path(path)
        return Artifact(self.name, precision, path, [path, path.with_suffix(".bin")], card)
