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
