"""The one schema every hardware profile is validated by (shipped YAML, user YAML, `host`).

Every hardware figure carries a `source` (datasheet or documentation it comes from). The
`efficiency` factors are what the latency model multiplies peak figures by: calibrated on the
host (`edgekit profiles calibrate`), assumed elsewhere, and labelled as such.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..pipeline.recipe import Recipe

__all__ = ["Profile", "ComputeUnit", "Memory", "Quantization", "Budgets", "Efficiency"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ComputeUnit(_Strict):
    """One engine that can run the model (CPU cluster, GPU, DLA)."""

    name: str
    kind: Literal["cpu", "gpu", "dla", "npu"]
    description: str = ""
    #: cores (CPU), CUDA cores (GPU) or engines (DLA)
    units: int = Field(gt=0)
    clock_ghz: float = Field(gt=0)
    #: dense peak throughput in GOPS (1 MAC = 2 ops) per precision the unit runs fast
    peak_gops: dict[str, float] = Field(min_length=1)
    source: str = Field(min_length=3)

    @field_validator("peak_gops")
    @classmethod
    def _precisions(cls, v: dict[str, float]) -> dict[str, float]:
        bad = [k for k in v if k not in ("fp32", "fp16", "int8", "int4")]
        if bad:
            raise ValueError(f"unknown precision(s) {bad}; valid: fp32, fp16, int8, int4")
        if any(x <= 0 for x in v.values()):
            raise ValueError("peak throughput must be > 0")
        return v


class Memory(_Strict):
    size_gb: float = Field(gt=0)
    bandwidth_gbs: float = Field(gt=0)
    source: str = Field(min_length=3)


class Quantization(_Strict):
    """The INT8 scheme the deployment runtime executes fast (what edgekit should produce)."""

    weights: str
    activations: str
    #: the QDQ layout edgekit writes for this runtime (see edgekit.exporters.qdq)
    qdq_target: Literal["tensorrt", "onnxruntime"] = "tensorrt"
    note: str = ""


class Budgets(_Strict):
    """Defaults for `edgekit compress` when the user gives none."""

    latency_ms: float | None = Field(None, gt=0)
    memory_mb: float | None = Field(None, gt=0)
    accuracy_drop: float = Field(1.0, ge=0)


class Efficiency(_Strict):
    """Fractions of peak the runtime reaches, per op type, plus a fixed cost per layer."""

    conv: float = Field(0.5, gt=0, le=4)        # dense and grouped convolutions
    depthwise: float = Field(0.1, gt=0, le=4)   # one input channel per group
    grouped: float = Field(0.2, gt=0, le=4)     # several channels per group (ResNeXt, RegNet)
    gemm: float = Field(0.5, gt=0, le=4)        # Gemm / MatMul
    memory: float = Field(0.5, gt=0, le=4)      # of memory bandwidth, for memory-bound layers
    layer_overhead_us: float = Field(5.0, ge=0)
    #: per inference call: input/output conversion, dispatch
    call_overhead_us: float = Field(10.0, ge=0)


class Profile(_Strict):
    """Where a model goes: device figures, runtime, precision, scheme and defaults."""

    name: str
    aliases: list[str] = Field(default_factory=list)
    description: str = ""
    compute: list[ComputeUnit] = Field(min_length=1)
    #: the compute unit the deployed model runs on (default: the first)
    target: str | None = None
    memory: Memory
    runtimes: list[str] = Field(min_length=1)
    #: versions the device ships (e.g. JetPack's TensorRT): exports must suit these, not ours
    runtime_versions: dict[str, str] = Field(default_factory=dict)
    precisions: list[str] = Field(min_length=1)
    preferred_precision: str
    #: the deployed engine takes one fixed input shape (a DLA has no dynamic dimensions):
    #: exports then use batch 1 and the static checker rejects dynamic axes
    static_shapes: bool = False
    quantization: Quantization
    #: pruning keeps channel counts at multiples of this (the kernels' vector/tile width)
    channel_multiple: int = Field(8, ge=1)
    #: default thread counts to measure/predict at (CPU targets)
    threads: list[int] = Field(default_factory=lambda: [1], min_length=1)
    throughput_batch: int = Field(8, ge=1)
    calibration_images: int = Field(300, gt=0)
    eval_images: int | None = Field(1000, gt=0)
    budgets: Budgets = Field(default_factory=Budgets)
    #: latency-model factors by "runtime/precision", "runtime", "precision" or "default"
    efficiency: dict[str, Efficiency] = Field(default_factory=lambda: {"default": Efficiency()})
    #: "assumed" (written by hand), or where/when `edgekit profiles calibrate` measured them
    efficiency_source: str = "assumed"
    #: the default `edgekit compress` recipe for this device (None: PTQ INT8 + benchmark)
    recipe: Recipe | None = None

    @field_validator("runtimes")
    @classmethod
    def _known_runtimes(cls, v: list[str]) -> list[str]:
        from ..backends import all_backends
        bad = [r for r in v if r not in all_backends()]
        if bad:
            raise ValueError(f"unknown runtime(s) {bad}; valid: {all_backends()}")
        return v

    @field_validator("precisions")
    @classmethod
    def _known_precisions(cls, v: list[str]) -> list[str]:
        from ..backends import PRECISIONS
        bad = [p for p in v if p not in PRECISIONS]
        if bad:
            raise ValueError(f"unknown precision(s) {bad}; valid: {list(PRECISIONS)}")
        return v

    @field_validator("threads")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if any(t < 1 for t in v):
            raise ValueError("thread counts must be >= 1")
        return v

    @field_validator("efficiency")
    @classmethod
    def _has_default(cls, v: dict[str, Efficiency]) -> dict[str, Efficiency]:
        if "default" not in v:
            raise ValueError("needs a 'default' entry (others are keyed runtime/precision, runtime or precision)")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "Profile":
        if self.preferred_precision not in self.precisions:
            raise ValueError(f"preferred_precision {self.preferred_precision!r} is not in precisions {self.precisions}")
        names = [c.name for c in self.compute]
        if self.target is not None and self.target not in names:
            raise ValueError(f"target {self.target!r} is not a compute unit; valid: {names}")
        unit = self.unit()
        missing = [p for p in self.precisions if p in ("fp32", "fp16", "int8") and p not in unit.peak_gops]
        if missing:
            raise ValueError(f"precisions {missing} have no peak_gops on compute unit {unit.name!r}")
        return self

    def has(self, kind: str) -> bool:
        """Whether a compute unit of this kind ("dla", "gpu", ...) is on the device."""
        return any(c.kind == kind for c in self.compute)

    def unit(self) -> ComputeUnit:
        """The compute unit the model runs on."""
        return next((c for c in self.compute if c.name == self.target), self.compute[0])

    def efficiency_for(self, runtime: str | None, precision: str) -> Efficiency:
        for key in (f"{runtime}/{precision}", runtime, precision, "default"):
            if key and key in self.efficiency:
                return self.efficiency[key]
        return self.efficiency["default"]  # unreachable: validated
