"""ONNX Runtime (CPU execution provider).

INT8 uses `quantize_static` in QDQ format, per-channel, U8 activations + S8 weights: the
configuration ONNX Runtime fuses into integer kernels on x86 (its default, S8/S8, is slower).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from ..errors import ExportError
from .base import Artifact, Backend, ExportContext, quiet, register_backend

__all__ = ["OnnxRuntimeBackend", "OrtRunner", "quantize_ort_int8", "executed_ops"]


class OrtRunner:
    backend = "onnxruntime"

    def __init__(self, path: Path, *, precision: str, threads: int) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.precision = precision
        self.threads = threads
        self.executed = executed_ops(path, precision)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: x})[0]


def executed_ops(path: Path, precision: str) -> str:
    """What ONNX Runtime really runs: count convolutions left in float after graph fusion."""
    import onnx
    import onnxruntime as ort

    if precision == "fp32":
        return "f32"
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    opts.log_severity_level = 3
    with tempfile.TemporaryDirectory() as tmp:
        opts.optimized_model_filepath = str(Path(tmp) / "opt.onnx")
        try:
            ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
            ops = [n.op_type for n in onnx.load(opts.optimized_model_filepath).graph.node]
        except Exception:  # noqa: BLE001 - only a description
            return precision
    int_ops = sum(o in ("QLinearConv", "ConvInteger", "QLinearMatMul", "MatMulInteger", "QGemm",
                        "MatMulIntegerToFloat", "DynamicQuantizeMatMul") for o in ops)
    float_ops = sum(o in ("Conv", "FusedConv", "Gemm", "MatMul", "FusedGemm") for o in ops)
    if precision in ("int8", "w4a8", "mixed"):
        return f"{precision}: {int_ops}/{int_ops + float_ops} conv/matmul in integer kernels"
    if precision == "fp16":
        casts = sum(o == "Cast" for o in ops)
        return f"fp16 weights, {casts} Cast nodes (CPU EP runs most ops in f32)"
    return precision


class _Reader:
    """The CalibrationDataReader ONNX Runtime asks for, over real images."""

    def __init__(self, name: str, batches: list[np.ndarray]) -> None:
        self._it = iter([{name: b} for b in batches])

    def get_next(self):
        return next(self._it, None)


def quantize_ort_int8(src: Path, dst: Path, batches: list[np.ndarray], *, work: Path,
                      per_channel: bool = True, activation: str = "u8") -> Path:
    """Static QDQ INT8 with ONNX Runtime's own tools (pre-process, calibrate MinMax, quantize)."""
    import onnx
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = work / "ort_pre.onnx"
    name = onnx.load(str(src), load_external_data=False).graph.input[0].name
    with quiet():
        try:
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        except Exception:  # noqa: BLE001 - pre-processing is an optimisation, not required
            pre = src
        quantize_static(
            str(pre), str(dst), _Reader(name, batches),
            quant_format=QuantFormat.QDQ, per_channel=per_channel,
            activation_type=QuantType.QUInt8 if activation == "u8" else QuantType.QInt8,
            weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
        )
    return dst


def _toposort(graph) -> None:
    """Reorder graph nodes so every input is produced before it is used (ONNX requires it)."""
    ready = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        rest = [n for n in pending if not all(i in ready for i in n.input)]
        done = [n for n in pending if all(i in ready for i in n.input)]
        if not done:
            raise ExportError(f"graph has a cycle or a dangling input at node {rest[0].name!r}")
        for n in done:
            ordered.append(n)
            ready.update(n.output)
        pending = rest
    del graph.node[:]
    graph.node.extend(ordered)


@register_backend
class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    # QLinearConv takes Relu/Clip into its output range; nothing else (ORT profile of
    # MobileNetV3 INT8: each HardSwish became DequantizeLinear, HardSigmoid, QuantizeLinear, QLinearMul)
    int8_fused_activations = frozenset({"Relu", "Clip", "BatchNormalization"})
    precisions = ("fp32", "fp16", "int8", "w4a8", "mixed")
    suffixes = (".onnx",)
    description = "ONNX Runtime, CPU execution provider"

    def unavailable(self) -> str | None:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            return "unavailable: onnxruntime not installed"
        return None

    def export(self, ctx: ExportContext, precision: str) -> Artifact:
        import shutil

        import onnx

        from ..exporters.onnx import attach_card

        if ctx.quant:
            return self._export_quantized(ctx, precision)
        src = ctx.onnx_fp32()
        dst = ctx.path(f"{precision}.onnx")
        try:
            if precision == "fp32":
                shutil.copyfile(src, dst)
            elif precision == "fp16":
                from onnxruntime.transformers.float16 import convert_float_to_float16
                m = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
                _toposort(m.graph)  # the converter appends its input casts at the end
                onnx.save(m, str(dst))
            else:
                quantize_ort_int8(src, dst, ctx.calibration_batches(1)[:512], work=ctx.work_path(""))
            onnx.checker.check_model(str(dst))
            attach_card(dst, ctx.card)
        except ExportError:
            raise
        except Exception as e:  # noqa: BLE001
            from ..errors import EdgekitError
            if isinstance(e, EdgekitError):
                raise
            raise ExportError(f"onnxruntime {precision}: {type(e).__name__}: {str(e).splitlines()[0][:200]}") from e
        notes = {"quantization": "QDQ per-channel, U8 activations / S8 weights, MinMax"} if precision == "int8" else {}
        return ctx.finish(dst, precision, self.name, **notes)

    def _export_quantized(self, ctx: ExportContext, precision: str) -> Artifact:
        """The learned grid of a fake-quant model, written the way ONNX Runtime fuses it."""
        from ..exporters.qdq import export_qdq

        dst = ctx.path(f"{precision}.onnx")
        export_qdq(ctx.module, ctx.card, dst, target="onnxruntime", work=ctx.work_path(""))
        return ctx.finish(dst, precision, self.name,
                          quantization="edgekit QAT/PTQ grid: QDQ, U8 activations, S8/S4 per-channel weights")

    def load(self, artifact: Artifact, *, threads: int) -> OrtRunner:
        return OrtRunner(artifact.path, precision=artifact.precision, threads=threads)

    def onnx_runner(self, onnx: Path, *, threads: int, precision: str = "fp32",
                    calibration: list[np.ndarray] | None = None) -> OrtRunner:
        onnx = Path(onnx)
        if precision == "int8":
            dst = onnx.with_name(onnx.stem + "_int8.onnx")
            if not dst.exists():
                quantize_ort_int8(onnx, dst, calibration, work=onnx.parent)
            onnx = dst
        return OrtRunner(onnx, precision=precision, threads=threads)
