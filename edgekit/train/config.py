"""Training settings, validated once (pydantic); every training stage takes a TrainConfig."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["TrainConfig"]


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(5, ge=1)
    batch_size: int = Field(128, ge=1, description="per process; the global batch is this x world size")
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    warmup_epochs: float = Field(0.0, ge=0, description="linear warm-up, then cosine to zero")
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    grad_clip: float | None = Field(None, gt=0, description="max global gradient norm")
    augment: bool = True
    hflip: bool = True
    seed: int = 0
    train_limit: int | None = Field(None, ge=1, description="seeded class-balanced subset of train")
    eval_limit: int | None = Field(None, ge=1, description="held-out images evaluated each epoch")
    eval_batch_size: int = Field(256, ge=1)
    channels_last: bool = Field(True, description="NHWC memory layout while training: faster "
                                "convolutions on x86 CPUs (oneDNN; 2x on MobileNetV2), same values; "
                                "saved weights are in the default layout either way")
    precision: Literal["fp32", "bf16"] = Field(
        "fp32", description="bf16: forward passes in bfloat16 autocast; weights, gradients, optimizer "
        "state, losses and evaluation stay float32. Pays where the hardware has bf16 matrix units "
        "(AMX CPUs, Ampere and later GPUs): epochs 1.6-1.8x as fast for CIFAR ResNets on an AMX "
        "Xeon, 1.07x for MobileNetV2, whose depthwise convolutions stay float32 on the CPU "
        "(benchmarks/results/precision.md). Not for QAT: its fake-quant grid is float32")
