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
