"""ModelCard: what a model expects as input and what it predicts.

The card travels with every model and every artifact (inside checkpoints and .pt2 archives, or as a
`<artifact>.card.json` sidecar) so that evaluation, calibration and deployment preprocess images
exactly the way the weights were trained, instead of guessing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..errors import ModelLoadError

__all__ = [
    "ModelCard",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR10_CLASSES",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
# The standard CIFAR-10 label order (alphabetical, as in the shared ImageFolder copy).
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)


class ModelCard(BaseModel):
    """Input contract and provenance of a classifier.

    Eval preprocessing: RGB in [0, 1]; if `resize` is set, resize the shorter side to `resize` and
    center-crop to (H, W), else resize directly to (H, W); then normalise with `mean` / `std`.
    Cards are immutable: derive changed copies with `with_()`.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    arch: str | None = None
    arch_kwargs: dict[str, Any] = Field(default_factory=dict)
    num_classes: int
    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resize: int | None = None
    class_names: list[str] | None = None
    source: str = ""
    notes: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> ModelCard:
        channels, height, width = self.input_size
        if min(self.input_size) <= 0:
            raise ValueError(f"input_size must be positive (C, H, W), got {self.input_size}")
        if len(self.mean) != channels or len(self.std) != channels:
            raise ValueError(
                f"mean and std need one value per input channel ({channels}), "
                f"got {len(self.mean)} and {len(self.std)}"
            )
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std values must be > 0, got {self.std}")
        if self.num_classes <= 0:
            raise ValueError(f"num_classes must be > 0, got {self.num_classes}")
        if self.class_names is not None and len(self.class_names) != self.num_classes:
            raise ValueError(
                f"class_names has {len(self.class_names)} names but num_classes is {self.num_classes}"
            )
        if self.resize is not None and self.resize < max(height, width):
            raise ValueError(f"resize ({self.resize}) must be >= the crop size {height}x{width}")
        return self

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (tuples become lists); `from_dict` restores the exact card."""
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelCard:
        return cls.model_validate(data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> ModelCard:
        return cls.from_dict(json.loads(text))

    @property
    def arch_spec(self) -> str | None:
        """The arch as a user writes it, options included ("resnet18:input_size=64")."""
        if self.arch is None or not self.arch_kwargs:
            return self.arch
        return self.arch + ":" + ",".join(f"{k}={v}" for k, v in self.arch_kwargs.items())

    def with_(self, **changes: Any) -> ModelCard:
        """A validated copy with `changes` applied (pydantic's model_copy would skip validation)."""
        return type(self).from_dict({**self.to_dict(), **changes})

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Write JSON atomically: a reader never sees a half-written card."""
        from .._io import atomic_write_text

        path = Path(path)
        atomic_write_text(path, self.to_json() + "\n")
        return path

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> ModelCard:
        """Read a card file; a missing or invalid one raises ModelLoadError naming the problem."""
        path = Path(path)
        try:
            return cls.from_json(path.read_bytes())
        except FileNotFoundError:
            raise ModelLoadError(f"model card not found: {path}") from None
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"invalid model card {path}: {_first_error(exc)}") from None

    @staticmethod
    def sidecar_path(artifact_path: str | os.PathLike[str]) -> Path:
        """Where an artifact's card lives: model.onnx -> model.onnx.card.json."""
        artifact_path = Path(artifact_path)
        return artifact_path.with_name(artifact_path.name + ".card.json")


def _first_error(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        return f"{loc}: {err['msg']}" if loc else err["msg"]
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
