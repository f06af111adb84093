"""Paths and helpers shared by the benchmark scripts."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
WORK = ROOT / "benchmarks" / "work"  # artifacts (git-ignored); only results are committed
SHARED = Path(os.environ.get("EDGEKIT_SHARED", ROOT.parent / "shared"))
CIFAR = Path(os.environ.get("EDGEKIT_CIFAR10", SHARED / "datasets" / "cifar10-jpeg"))
WEIGHTS = Path(os.environ.get("EDGEKIT_WEIGHTS", SHARED / "weights" / "resnet-cifar10"))


def require_shared() -> None:
    if not (CIFAR / "test").is_dir() or not WEIGHTS.is_dir():
        sys.exit(f"shared data not found (CIFAR-10 at {CIFAR}, weights at {WEIGHTS}); "
                 "set EDGEKIT_SHARED or EDGEKIT_CIFAR10/EDGEKIT_WEIGHTS")


def weights(depth: int) -> Path:
    return next(WEIGHTS.glob(f"resnet{depth}-*.th"))


def seed_suffix(seed: int) -> str:
    """The run-folder and record-name suffix of distill.py's students at `seed` (seed 0 keeps the
    committed names, so a run at another seed never resumes from or overwrites them)."""
    return "" if seed == 0 else f"_s{seed}"


def distilled_student() -> Path | None:
    """EDGEKIT_STUDENT (a checkpoint) when set; else the KD student of the longest finished
    benchmarks/distill.py run (summary.json marks a finished run; the newest among equally long
    ones), or None. Results name the student's run folder, since a later distill.py run changes
    which one this picks."""
    import json

    if os.environ.get("EDGEKIT_STUDENT"):
        return Path(os.environ["EDGEKIT_STUDENT"])
    done = list((WORK / "distill").glob("KD*/summary.json"))
    if not done:
        return None
    best = max(done, key=lambda p: (json.loads(p.read_text()).get("epochs", 0), p.stat().st_mtime))
    return best.parent / "last.pt"
