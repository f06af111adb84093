"""TensorRT: a deployment bundle for the device everywhere; engines built and timed where
TensorRT and a CUDA GPU are importable.

Without TensorRT the row reads "unavailable: TensorRT not installed" (neither ok nor an error),
the bundle is still written, after its ONNX passed the target TensorRT's parser rules and
agreed with the source model on ONNX Runtime (a stand-in that checks the file, not the speed).
"""

from __future__ import annotations

from pathlib import Path

from .base import Artifact, Backend, ExportContext, register_backend

__all__ = ["TensorRtBackend"]


@register_backend
class TensorRtBackend(Backend):
    name = "tensorrt"
    precisions = ("fp32", "fp16", "int8", "mixed")
    suffixes = (".engine", ".plan")
    description = "NVIDIA TensorRT: a bundle to build on the device; engines run where tensorrt and a GPU are"
    offline_export = True

    def unavailable(self) -> str | None:
        try:
            import tensorrt  # noqa: F401
        except Exception:  # noqa: BLE001 - PyPI's stub raises on import without the real wheel
            return "unavailable: TensorRT not installed"
        try:
            import torch

            if not torch.cuda.is_available():
                return "unavailable: no CUDA GPU"
        except Exception:  # noqa: BLE001
            return "unavailable: no CUDA GPU (PyTorch with CUDA is needed for buffers)"
        return None

    def unsupported(self, precision: str, quant_model=None) -> str | None:
        from ..exporters.qdq import UNSIGNED_FOR_TENSORRT
        from ..quant import int4_convolutions, unsigned_tensors

        int4 = int4_convolutions(quant_model)
        if precision == "w4a8" or int4:
            here = f"; {len(int4)} convolutions here have 4-bit weights" if int4 else ""
            return ("TensorRT runs INT4 only as weight-only MatMul/Gemm quantization, not in convolutions"
                    f"{here}: quantize with --bits 8 for TensorRT")
        if unsigned_tensors(quant_model):
            return UNSIGNED_FOR_TENSORRT
        return super().unsupported(precision, quant_model)

    def export(self, ctx: ExportContext, precision: str) -> Artifact:
        from ..tensorrt.bundle import BundleTarget, write_bundle

        target = BundleTarget.of(ctx.profile)
        folder = ctx.out_dir / f"{ctx.stem}_tensorrt_{precision}"
        onnx_path, files = write_bundle(ctx, precision, target, folder)
        size = onnx_path.stat().st_size / 1e6
        return Artifact(self.name, precision, onnx_path, [folder / f for f in files], ctx.card,
                        {"bundle": f"{folder.name}/", "tensorrt_rules": f"TensorRT {target.rules.version}: ok",
                         "opset": target.rules.export_opset}, size)

    def load(self, artifact: Artifact, *, threads: int):
        from ..tensorrt.runner import TrtRunner

        return TrtRunner.from_bundle(Path(artifact.path).parent)

    def standin(self, artifact: Artifact, *, threads: int):
        import json

        from .onnxruntime import OrtRunner

        runner = OrtRunner(artifact.path, precision=artifact.precision, threads=threads)
        batch = json.loads((Path(artifact.path).parent / "bundle.json").read_text())["batch"]
        return runner if batch["min"] != batch["max"] else _FixedBatch(runner, batch["max"])


class _FixedBatch:
    """Feeds a static-shape graph (a DLA profile's) the one batch size it takes."""

    def __init__(self, runner, batch: int) -> None:
        self.runner, self.batch = runner, batch
        self.backend, self.precision, self.threads, self.executed = (
            runner.backend, runner.precision, runner.threads, runner.executed)

    def __call__(self, x):
        import numpy as np

        n, b = len(x), self.batch
        pad = np.concatenate([x, np.zeros((-n % b, *x.shape[1:]), x.dtype)]) if n % b else x
        return np.concatenate([self.runner(pad[i:i + b]) for i in range(0, len(pad), b)])[:n]
