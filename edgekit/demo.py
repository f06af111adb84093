"""`edgekit demo`: the whole flow on data that ships with scikit-learn, no files needed.

Trains a small teacher on the bundled handwritten digits (upscaled to 32x32), then runs the
compress pipeline for the x86 profile on it (prune 2x with KD recovery, INT8 QAT, export,
verify, benchmark) and writes the report.
"""

from __future__ import annotations

from pathlib import Path

from ._io import check_out_dir
from .compress import CompressResult, compress

__all__ = ["demo", "demo_recipe"]


def demo_recipe(stage_epochs: int = 2):
    """Prune 2x (KD recovery) and INT8 QAT on digits: no horizontal flips (digits are not symmetric)."""
    from .pipeline import Recipe
    return Recipe.model_validate({"name": "demo", "train": {"batch_size": 64, "hflip": False}, "stages": [
        {"stage": "prune", "target_macs": 0.5, "recovery_epochs": stage_epochs, "lr": 0.02},
        {"stage": "quantize", "mode": "qat", "bits": 8, "epochs": 1, "lr": 0.0005},
        {"stage": "benchmark"}]})


def demo(out: str | Path = "runs/demo", *, arch: str = "cifar_resnet20", epochs: int = 6,
         profile: str = "x86", stage_epochs: int = 2, resume: bool = True,
         progress: bool = True) -> CompressResult:
    """Train `arch` on digits for `epochs`, save it, then compress it for `profile` into `out`."""
    from .data import digits_stats, load_dataset
    from .models import get_model
    from .stages._common import seeded
    from .train import Supervised, TrainConfig, train

    out = check_out_dir(Path(out))
    cfg = TrainConfig(epochs=epochs, batch_size=64, lr=0.05, hflip=False, warmup_epochs=0.5)
    with seeded(cfg.seed):  # torch's own initial seed differs per process: the demo would too
        module, card = get_model(arch, num_classes=10)
    stats = digits_stats(card.input_size)
    ds = load_dataset("digits", input_size=card.input_size)
    card = card.with_(mean=tuple(stats.mean), std=tuple(stats.std), class_names=list(ds.classes),
                      source=f"edgekit demo: {arch} trained {epochs} epochs on sklearn digits")
    # Digits are not mirror-symmetric: crop augmentation only. resume=True makes a re-run reuse
    # the trained teacher instead of refusing the existing run folder.
    result = train(Supervised(module), card, ds.train, ds.eval, cfg, out / "teacher",
                   resume=True, progress=progress)
    return compress(result.last_path, profile=profile, data="digits", out=out, limit=None,
                    recipe=demo_recipe(stage_epochs), resume=resume, progress=progress)
