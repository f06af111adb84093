"""The one interface every runtime implements: export an artifact, load it as a Runner.

A backend is one file: a `Backend` subclass registered in `BACKENDS`. The benchmark, the
verifier and the CLI dispatch through this table only, never by name checks.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np

from .._registry import Registry

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from ..data import Split
    from ..models import ModelCard
    from ..profiles import Profile

__all__ = ["PRECISIONS", "DEFAULT_PRECISIONS", "QAT_ONLY", "Artifact", "Runner", "Backend", "ExportContext", "BACKENDS",
           "register_backend", "get_backend"]

#: Every precision edgekit knows; a backend declares the subset it can produce. w4a8 (4-bit
#: weights, 8-bit activations) and mixed come only from `edgekit quantize` checkpoints.
PRECISIONS = ("fp32", "fp16", "int8", "w4a8", "mixed")
#: What a float model is exported to when nobody says otherwise.
DEFAULT_PRECISIONS = ("fp32", "fp16", "int8")
#: Precisions that need a quantization-aware checkpoint (see edgekit.quant).
QAT_ONLY = ("w4a8", "mixed")


@dataclass
class Artifact:
    """A file (or files) a runtime can load, with the model card beside it."""

    backend: str
    precision: str
    path: Path
    files: list[Path]
    card: "ModelCard"
    notes: dict[str, Any] = field(default_factory=dict)
    #: Measured when the artifact is described (the files may be moved later).
    size_mb: float = 0.0

    def __post_init__(self) -> None:
        if not self.size_mb:
            self.size_mb = sum(Path(f).stat().st_size for f in self.files if Path(f).exists()) / 1e6

    def moved(self, root_from: Path, root_to: Path) -> "Artifact":
        """The same artifact after its folder was renamed (staging -> final output)."""
        def mv(p: Path) -> Path:
            try:
                return Path(root_to) / Path(p).relative_to(root_from)
            except ValueError:
                return Path(p)
        return Artifact(self.backend, self.precision, mv(self.path), [mv(f) for f in self.files],
                        self.card, dict(self.notes), self.size_mb)


class Runner(Protocol):
    """A loaded artifact: numpy NCHW float32 in, logits out. Threads are fixed at load."""

    backend: str
    precision: str
    threads: int
    #: What the runtime actually executes, e.g. "f32", "bf16", "int8 (24/24 conv in u8s8)".
    executed: str

    def __call__(self, x: np.ndarray) -> np.ndarray: ...


class ExportContext:
    """Everything an exporter may need, with the FP32 ONNX export shared between backends."""

    def __init__(self, module: "torch.nn.Module", card: "ModelCard", out_dir: Path, *,
                 calibration: "Split | None" = None, stem: str = "model",
                 opset: int | None = None, profile: "Profile | None" = None,
                 reference: dict | None = None) -> None:
        self.module = module
        self.card = card
        self.out_dir = Path(out_dir)
        self.calibration = calibration
        self.stem = stem
        self.opset = opset
        #: the hardware profile exports are for (a device's runtime version, static shapes)
        self.profile = profile
        #: the source model's top-1 per evaluation image ({"predictions": {relpath: class}}),
        #: shipped with bundles that are evaluated away from here
        self.reference = reference
        self._onnx_fp32: Path | None = None
        self._work = self.out_dir / ".work"
        from ..quant import spec_of
        #: set when `module` is a fake-quant model from edgekit quantize: backends then export
        #: its learned integer grid instead of quantizing it again
        self.quant = spec_of(module)

    def path(self, suffix: str) -> Path:
        """Where an artifact goes: <out>/<stem>_<suffix>."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        return self.out_dir / f"{self.stem}_{suffix}"

    def work_path(self, name: str) -> Path:
        """Scratch space for intermediates, removed by `cleanup()`."""
        self._work.mkdir(parents=True, exist_ok=True)
        return self._work / name

    def onnx_fp32(self) -> Path:
        """The FP32 ONNX export (done once, reused by every ONNX-based backend)."""
        if self._onnx_fp32 is None:
            from ..exporters.onnx import export_onnx
            self._onnx_fp32 = export_onnx(self.module, self.card, self.work_path("fp32.onnx"),
                                          opset=self.opset)
        return self._onnx_fp32

    def calibration_batches(self, batch_size: int = 1) -> list[np.ndarray]:
        """Normalized calibration inputs as numpy arrays (real images, never random)."""
        if self.calibration is None:
            from ..errors import InputError
            raise InputError("INT8 export needs calibration images: pass --data DIR")
        return [x.numpy() for x, _ in self.calibration.batches(
            batch_size, mean=self.card.mean, std=self.card.std)]

    def finish(self, artifact_path: Path, precision: str, backend: str,
               extra_files: tuple[Path, ...] = (), **notes: Any) -> Artifact:
        """Write the card sidecar and describe the artifact."""
        card = self.card.with_(notes={**self.card.notes, "backend": backend, "precision": precision})
        card_path = type(card).sidecar_path(artifact_path)
        card.write(card_path)
        # Size counts what a device needs (model files), not the card sidecar.
        files = [artifact_path, *extra_files]
        size = sum(Path(f).stat().st_size for f in files) / 1e6
        return Artifact(backend, precision, artifact_path, files + [card_path], card, notes, size)

    def cleanup(self) -> None:
        shutil.rmtree(self._work, ignore_errors=True)


class Backend(ABC):
    """A runtime: which precisions it produces, how to export them, how to run them."""

    name: ClassVar[str]
    precisions: ClassVar[tuple[str, ...]]
    description: ClassVar[str] = ""

    #: True for a backend whose artifact is built on the device (a TensorRT bundle): where its
    #: runtime is unavailable the artifact is still written, and checked on `standin()`.
    offline_export: ClassVar[bool] = False

    #: for the latency model: the activations this runtime's integer kernels apply themselves;
    #: any other (HardSwish, SiLU...) runs in float between a DequantizeLinear and a
    #: QuantizeLinear. None: it fuses every pointwise activation (OpenVINO, TensorRT).
    int8_fused_activations: ClassVar[frozenset[str] | None] = None

    def unavailable(self) -> str | None:
        """Why this runtime cannot run here (SDK missing, no GPU), or None."""
        return None

    def standin(self, artifact: Artifact, *, threads: int) -> Runner:
        """A runner for an offline artifact on a runtime that is here (its ONNX on ONNX Runtime):
        checks what was written, not the device's speed."""
        raise NotImplementedError(f"{self.name} has no stand-in runner")

    def unsupported(self, precision: str, quant_model: "torch.nn.Module | None" = None) -> str | None:
        """Why this backend does not offer `precision` (for `quant_model`, when exporting a
        fake-quant model from edgekit quantize), or None."""
        if precision not in self.precisions:
            return f"{self.name} has no {precision} path here (offers {', '.join(self.precisions)})"
        return None

    @abstractmethod
    def export(self, ctx: ExportContext, precision: str) -> Artifact: ...

    @abstractmethod
    def load(self, artifact: Artifact, *, threads: int) -> Runner: ...

    def onnx_runner(self, onnx: Path, *, threads: int, precision: str = "fp32",
                    calibration: list[np.ndarray] | None = None) -> Runner:
        """A runner of a plain FP32 ONNX file, converted beside it to this backend's format (INT8:
        quantized the backend's default way on `calibration`), for timing candidates: pruning
        variants, lone convolutions."""
        raise NotImplementedError(f"{self.name} does not run plain ONNX files here")

    def artifact_from_path(self, path: Path, card: "ModelCard", precision: str) -> Artifact:
        """An existing file of this backend's format (for `edgekit eval model.onnx`)."""
        return Artifact(self.name, precision, Path(path), [Path(path)], card)

    #: File suffixes this backend loads, used to route `edgekit eval FILE`.
    suffixes: ClassVar[tuple[str, ...]] = ()


BACKENDS: Registry[Backend] = Registry("backend")


def register_backend(cls: type[Backend], *, aliases: tuple[str, ...] = ()) -> type[Backend]:
    BACKENDS.register(cls.name, cls(), aliases=aliases)
    return cls


def get_backend(name: str) -> Backend:
    _load_builtin()
    return BACKENDS.get(name)


def _load_builtin() -> None:
    """Import every module of this package: each backend file registers itself, so adding a
    runtime is adding one file."""
    import importlib
    import pkgutil

    for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if info.name not in ("base", "__init__"):
            importlib.import_module(f"{__package__}.{info.name}")


def all_backends() -> list[str]:
    _load_builtin()
    return BACKENDS.names()


@contextlib.contextmanager
def quiet():
    """Silence C++ libraries that print to stdout/stderr directly (exporters, NNCF)."""
    if os.environ.get("EDGEKIT_DEBUG"):
        yield
        return
    saved = [os.dup(1), os.dup(2)]
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)

