"""TensorRT: a placeholder row until the TensorRT issue lands; reports "unavailable" honestly."""

from __future__ import annotations

from ..errors import UnavailableError
from .base import Artifact, Backend, ExportContext, register_backend

__all__ = ["TensorRtBackend"]


@register_backend
class TensorRtBackend(Backend):
    name = "tensorrt"
    precisions = ("fp32", "fp16", "int8")
    suffixes = (".engine", ".plan")
    description = "NVIDIA TensorRT (needs the tensorrt package and a GPU)"

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
            return "unavailable: no CUDA GPU"
        return "unavailable: TensorRT engine building is not implemented yet"

    def export(self, ctx: ExportContext, precision: str) -> Artifact:
        raise UnavailableError(self.unavailable() or "TensorRT unavailable")

    def load(self, artifact: Artifact, *, threads: int):
        raise UnavailableError(self.unavailable() or "TensorRT unavailable")
