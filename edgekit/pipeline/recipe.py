"""A compress recipe: the stages of one run, validated by one schema.

Model stages (finetune, prune, distill, quantize) each turn a model into a model; the deploy
stages (export, verify, benchmark) act on the final model for the profile's runtimes and always
come last (export implies verify: nothing unverified is reported).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .._io import read_yaml_model
from ..errors import ConfigError

__all__ = ["Recipe", "TrainSettings", "FinetuneStage", "PruneStage", "DistillStage", "QuantizeStage",
           "DeployStage", "MODEL_STAGES", "load_recipe", "default_recipe"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TrainSettings(_Strict):
    """Shared by every training stage unless the stage overrides epochs/lr."""

    batch_size: int = Field(128, ge=1)
    train_limit: int | None = Field(None, ge=1, description="seeded subset of train/ (quick runs)")
    hflip: bool = True
    seed: int = 0
    precision: Literal["fp32", "bf16"] = Field("fp32", description="finetune/prune/distill forward "
                                               "passes in bf16 autocast (edgekit finetune --precision); "
                                               "QAT always trains in fp32")


class FinetuneStage(_Strict):
    stage: Literal["finetune"]
    epochs: int = Field(1, ge=1)
    lr: float = Field(0.01, gt=0)


class PruneStage(_Strict):
    stage: Literal["prune"]
    #: fraction of MACs kept (0.5 = 2x fewer), counted from the stage's input model; null with
    #: drop_blocks alone or with target_latency_ms
    target_macs: float | None = Field(0.5, gt=0, lt=1)
    #: prune channels until batch-1 latency is at most this (ms) in the profile's preferred
    #: precision: predicted by the profile's latency model for a device that is not this host,
    #: timed here on its first runtime with measure_here (or for the host profile)
    target_latency_ms: float | None = Field(None, gt=0)
    measure_here: bool = False
    #: remove this many residual blocks first (`edgekit prune --drop-blocks`)
    drop_blocks: int | None = Field(None, ge=1)
    recovery_epochs: int = Field(1, ge=0)
    lr: float = Field(0.01, gt=0)
    kd: bool = True
    importance: Literal["l1", "l2", "taylor"] = "l2"
    #: widths from per-layer latencies measured on the profile's first runtime, in its
    #: preferred precision (`edgekit prune --latency-aware`), instead of the magnitude ranking;
    #: with drop_blocks, blocks chosen by added divergence per ms their removal saves (predicted
    #: for a device that is not this host, timed here with measure_here)
    latency_aware: bool = False

    @model_validator(mode="after")
    def _something_to_prune(self) -> "PruneStage":
        if self.target_latency_ms is not None:
            if "target_macs" in self.model_fields_set and self.target_macs is not None:
                raise ValueError("give target_macs or target_latency_ms, not both")
            self.target_macs = None  # the default MAC goal gives way to the latency goal
        elif self.measure_here and not self.latency_aware:
            raise ValueError("measure_here says where target_latency_ms (or latency_aware's block prices) is "
                             "timed: give target_latency_ms or latency_aware too")
        if self.target_macs is None and self.drop_blocks is None and self.target_latency_ms is None:
            raise ValueError("a prune stage needs target_macs, target_latency_ms or drop_blocks")
        return self


class DistillStage(_Strict):
    stage: Literal["distill"]
    #: zoo name, e.g. cifar_mobilenet_v2:width=0.5 (`--student` overrides)
    student: str = "cifar_mobilenet_v2"
    #: start the student from these weights (a checkpoint of that same student) instead of a fresh init
    student_weights: str | None = None
    epochs: int = Field(5, ge=1)
    lr: float = Field(0.05, gt=0)
    temperature: float = Field(4.0, gt=0)
    #: kd: Hinton KD; dkd: decoupled KD (CE + alpha TCKD + beta NCKD), see `edgekit distill --help`
    loss: Literal["kd", "dkd"] = "kd"
    #: kd: weight of the KD loss (at most 1); dkd: weight of TCKD (1.0 unless given)
    alpha: float = Field(0.9, ge=0)
    beta: float = Field(8.0, ge=0)
    kd_warmup: float = Field(0.0, ge=0)
    teacher_bf16: bool = False

    @model_validator(mode="after")
    def _alpha_fits_loss(self):
        if self.loss == "dkd" and "alpha" not in self.model_fields_set:
            self.alpha = 1.0  # DKD's own default; kd's 0.9 stays the field default (saved recipes compare equal)
        if self.loss == "kd" and self.alpha > 1:
            raise ValueError(f"alpha {self.alpha}: Hinton KD's alpha mixes KD and label loss, 0 to 1")
        return self


class QuantizeStage(_Strict):
    stage: Literal["quantize"]
    mode: Literal["ptq", "qat"] = "ptq"
    bits: Literal[4, 8] = 8
    epochs: int = Field(1, ge=1)
    lr: float = Field(0.001, gt=0)
    kd: bool = False
    #: auto: signed INT8 activations when the profile runs TensorRT, else ReLU outputs unsigned
    activations: Literal["auto", "signed", "unsigned"] = "auto"
    #: auto: "fused" (conv outputs entering a residual add not quantized, as OpenVINO's CPU
    #: plugin runs them) when OpenVINO is the profile's first runtime, else "rounded"
    residual: Literal["auto", "rounded", "fused"] = "auto"


class DeployStage(_Strict):
    stage: Literal["export", "verify", "benchmark"]


Stage = Annotated[Union[FinetuneStage, PruneStage, DistillStage, QuantizeStage, DeployStage],
                  Field(discriminator="stage")]
MODEL_STAGES = ("finetune", "prune", "distill", "quantize")


class Recipe(_Strict):
    name: str = "custom"
    #: top-1 points the final deployed model may lose against the input model (None: the profile's)
    max_drop: float | None = Field(None, ge=0)
    train: TrainSettings = Field(default_factory=TrainSettings)
    stages: list[Stage] = Field(min_length=1)

    @model_validator(mode="after")
    def _order(self) -> "Recipe":
        seen_deploy = False
        for i, s in enumerate(self.stages):
            if s.stage in MODEL_STAGES and seen_deploy:
                raise ValueError(f"stages.{i}: {s.stage} comes after a deploy stage; export/verify/benchmark go last")
            seen_deploy |= s.stage not in MODEL_STAGES
        quant = [i for i, s in enumerate(self.stages) if s.stage == "quantize"]
        if quant and any(s.stage in MODEL_STAGES for s in self.stages[quant[-1] + 1:]):
            raise ValueError(f"stages.{quant[-1]}: quantize must be the last model stage (a quantized model "
                             "is not pruned, distilled or fine-tuned further)")
        return self

    @property
    def timed(self) -> bool:
        """Whether the deploy step times the artifacts (a benchmark stage) or only verifies them."""
        return any(s.stage == "benchmark" for s in self.stages) or not any(
            s.stage in ("export", "verify") for s in self.stages)


_TAGS = ("finetune", "prune", "distill", "quantize", "export", "verify", "benchmark")


def load_recipe(path: str | Path) -> Recipe:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"recipe file not found: {path}")
    return read_yaml_model(path, Recipe, "recipe", tags=_TAGS)


def default_recipe(profile) -> Recipe:
    """The profile's own recipe, else PTQ at the profile's preferred integer precision + benchmark."""
    if profile.recipe is not None:
        return profile.recipe
    stages: list[dict] = []
    if "int8" in profile.precisions:
        stages.append({"stage": "quantize", "mode": "ptq", "bits": 8})
    stages.append({"stage": "benchmark"})
    return Recipe.model_validate({"name": f"{profile.name} default", "stages": stages})
