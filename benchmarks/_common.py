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


def distilled_student() -> Path | None:
    """The KD student of the longest finished benchmarks/distill.py run (summary.json marks a
    finished run), or None."""
    import json

    done = list((WORK / "distill").glob("KD*/summary.json"))
    if not done:
        return None
    best = max(done, key=lambda p: json.loads(p.read_text()).get("epochs", 0))
    return best.parent / "last.pt"


# --- Kept artifacts --------------------------------------------------------------------------
# benchmarks/work/ is scratch: it does not survive a fresh checkout, and the long benchmarks
# (compress.py: about ten hours of these 2 cores) outlive one working session. What a finished
# phase costs hours to remake and little to store (float weights of finished trainings, INT8
# artifacts, run records; no optimizer state, no FP32 ONNX) is copied into benchmarks/kept/,
# which is committed and mirrors benchmarks/work/'s layout, and copied back on the next start.
KEPT = ROOT / "benchmarks" / "kept"


def restore_kept() -> int:
    """Copy every kept file back into benchmarks/work/ where it is missing; returns how many."""
    import shutil

    n = 0
    for src in KEPT.rglob("*"):
        if src.is_file() and src.name != "README.md":
            dst = WORK / src.relative_to(KEPT)
            if not dst.exists():
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dst)
                n += 1
    return n


def keep(*paths: Path) -> None:
    """Copy finished artifacts (files under benchmarks/work/) into benchmarks/kept/, atomically."""
    import os
    import shutil

    for p in paths:
        p = Path(p)
        if not p.is_file():
            continue
        dst = KEPT / p.resolve().relative_to(WORK.resolve())
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(dst.name + ".tmp")
        shutil.copyfile(p, tmp)
        os.replace(tmp, dst)


def finished_training(folder: Path, config) -> Path | None:
    """best.pt of a training run in `folder` that finished with `config` (its summary.json says
    so), or None. A kept run has no state.pt (the resume state is not kept), so asking the
    engine to resume it would start over."""
    import json

    s = folder / "summary.json"
    if not (s.exists() and (folder / "best.pt").exists()):
        return None
    same = json.loads(s.read_text()).get("config") == json.loads(json.dumps(config.model_dump()))
    return folder / "best.pt" if same else None


def keep_training(folder: Path) -> None:
    keep(*(folder / f for f in ("best.pt", "summary.json", "metrics.jsonl")))
