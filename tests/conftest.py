"""Shared fixtures. Real data comes from ../shared beside the repository, or $EDGEKIT_SHARED."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EDGEKIT_SHARED", REPO.parent / "shared"))
CIFAR = Path(os.environ.get("EDGEKIT_CIFAR10", SHARED / "datasets" / "cifar10-jpeg"))
WEIGHTS = Path(os.environ.get("EDGEKIT_WEIGHTS", SHARED / "weights" / "resnet-cifar10"))


@pytest.fixture(scope="session")
def cifar_dir() -> Path:
    if not (CIFAR / "test").is_dir():
        pytest.skip(f"CIFAR-10 JPEG copy not found at {CIFAR} (set EDGEKIT_CIFAR10 or EDGEKIT_SHARED)")
    return CIFAR


@pytest.fixture(scope="session")
def weights_dir() -> Path:
    if not WEIGHTS.is_dir():
        pytest.skip(f"ResNet CIFAR-10 weights not found at {WEIGHTS} (set EDGEKIT_WEIGHTS or EDGEKIT_SHARED)")
    return WEIGHTS


@pytest.fixture(scope="session")
def resnet20_path(weights_dir: Path) -> Path:
    return next(weights_dir.glob("resnet20-*.th"))


@pytest.fixture(scope="session")
def kd_student(tmp_path_factory, resnet20_path: Path, cifar_dir: Path):
    """A MobileNetV2 x0.5 student distilled from the shared ResNet-20 for 3 short epochs (one
    training, shared by the distillation and the TensorRT bundle tests)."""
    from edgekit.stages import distill
    from edgekit.train import TrainConfig

    cfg = TrainConfig(epochs=3, batch_size=64, lr=0.05, train_limit=3000, eval_limit=500)
    return distill(resnet20_path, teacher_arch="cifar_resnet20", student="cifar_mobilenet_v2:width=0.5",
                   data=cifar_dir, out=tmp_path_factory.mktemp("kd"), config=cfg, progress=False)
