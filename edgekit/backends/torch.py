"""PyTorch eager on the CPU: the reference every other runtime is compared with."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import Artifact, Backend, ExportContext, register_backend

__all__ = ["TorchBackend", "TorchRunner"]


class TorchRunner:
    backend = "torch"

    def __init__(self, module, *, precision: str, threads: int, quantized: str | None = None) -> None:
        self.module = module.eval()
        self.precision = precision
        self.threads = threads
        self.executed = f"f32 ({quantized} fake-quant simulation)" if quantized else "f32"

    def __call__(self, x: np.ndarray) -> np.ndarray:
        import torch

        # torch's thread count is process-wide: set it for this call only, or a 1-thread benchmark
        # would leave later training in the same process on 1 thread (setting it costs ~0.1 us)
        before = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            with torch.inference_mode():
                return self.module(torch.from_numpy(x)).numpy()
        finally:
            torch.set_num_threads(before)


@register_backend
class TorchBackend(Backend):
    name = "torch"
    precisions = ("fp32", "int8", "w4a8", "mixed")
    suffixes = (".pt2",)
    description = "PyTorch eager (CPU); artifact is a torch.export program (.pt2)"

    def unsupported(self, precision: str, quant_model=None) -> str | None:
        if quant_model is not None:  # the fake-quant model itself: the simulation every artifact is checked against
            return None
        if precision == "fp16":
            return "torch eager has no fast FP16 path on CPUs; use openvino or onnxruntime"
        if precision == "int8":
            return "torch eager does not execute INT8 on CPUs; use openvino or onnxruntime"
        return super().unsupported(precision, quant_model)

    def export(self, ctx: ExportContext, precision: str) -> Artifact:
        from ..errors import ExportError
        from ..models import save_model

        path = ctx.path(f"{precision}{'_fakequant' if ctx.quant else ''}.pt2")
        try:
            save_model(ctx.module, ctx.card, path)
        except Exception as e:  # noqa: BLE001
            raise ExportError(f"torch.export failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}") from e
        return ctx.finish(path, precision, self.name)

    def load(self, artifact: Artifact, *, threads: int) -> TorchRunner:
        from ..models import load_model

        loaded = load_model(Path(artifact.path))
        return TorchRunner(loaded.module, precision=artifact.precision, threads=threads,
                           quantized=loaded.card.notes.get("quantization"))
