"""TensorRT behind edgekit's Runner protocol: build (or load) the engine of a bundle, run it.

Execution and CUDA-event timing are the bundle's own `run_engine.py` (the code the device runs),
so a row measured here and a row measured on a Jetson come from the same runner.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np

from ..errors import ExportError, UnavailableError
from .bundle import RUNNER_SOURCE

__all__ = ["TrtRunner", "build_engine"]


def _device_module():
    spec = importlib.util.spec_from_file_location("edgekit_trt_run_engine", RUNNER_SOURCE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def build_engine(onnx_path: Path, engine_path: Path, precision: str, batch: dict[str, int]) -> Path:
    """What build_engine.sh asks trtexec for, through the Python API: same flags, same shapes."""
    try:
        import tensorrt as trt
    except Exception:  # noqa: BLE001
        raise UnavailableError("unavailable: TensorRT not installed") from None
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    # explicit batch is the only mode from TensorRT 10 on, and a flag before it
    flags = 0 if int(trt.__version__.split(".")[0]) >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(min(parser.num_errors, 3)))
        raise ExportError(f"TensorRT {trt.__version__} could not parse {onnx_path.name}: {errors}")
    config = builder.create_builder_config()
    if precision == "fp32":
        config.clear_flag(trt.BuilderFlag.TF32)  # fp32 means fp32 (--noTF32), as in the bundle
    else:
        config.set_flag(trt.BuilderFlag.FP16)
        if precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)  # explicit quantization: scales come from Q/DQ
    inp = network.get_input(0)
    if any(d < 0 for d in inp.shape):
        chw = tuple(inp.shape)[1:]
        prof = builder.create_optimization_profile()
        prof.set_shape(inp.name, (batch["min"], *chw), (batch["opt"], *chw), (batch["max"], *chw))
        config.add_optimization_profile(prof)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise ExportError(f"TensorRT {trt.__version__} could not build an engine from {onnx_path.name}")
    tmp = engine_path.with_name(f".{engine_path.name}.tmp")
    tmp.write_bytes(bytes(plan))
    os.replace(tmp, engine_path)
    return engine_path


class TrtRunner:
    """A bundle's engine: numpy NCHW float32 in, logits out, any batch (split to the engine's max)."""

    backend = "tensorrt"
    threads = 1

    def __init__(self, inner, precision: str) -> None:
        self.inner, self.precision = inner, precision
        self.executed = f"TensorRT {inner.version} {precision} on {inner.device}"

    @classmethod
    def from_bundle(cls, folder: Path) -> "TrtRunner":
        folder = Path(folder)
        meta = json.loads((folder / "bundle.json").read_text())
        engine = folder / meta["engine"]
        if not engine.exists():
            build_engine(folder / meta["onnx"], engine, meta["precision"], meta["batch"])
        mod = _device_module()
        try:
            return cls(mod.TrtRunner(engine), meta["precision"])
        except mod.BundleError as e:
            raise UnavailableError(str(e)) from None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        top = self.inner.max_batch
        if len(x) <= top:
            return self.inner.run(np.ascontiguousarray(x, dtype=np.float32))
        return np.concatenate([self.inner.run(np.ascontiguousarray(x[i:i + top], dtype=np.float32))
                               for i in range(0, len(x), top)])

    @property
    def last_split_ms(self) -> dict[str, float] | None:
        """The last call's host->device, compute and device->host times (CUDA events)."""
        ms = self.inner.last_ms
        return None if ms is None else dict(zip(("h2d", "compute", "d2h"), ms))
