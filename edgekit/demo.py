"""`edgekit demo`: the whole flow on data that ships with scikit-learn, no files needed.

Trains a small teacher on the bundled handwritten digits (upscaled to 32x32), then runs
`compress` for the x86 profile on it and writes the report.
"""

from __future__ import annotations

from pathlib import Path

from ._io import check_out_dir
from .benchmark import BenchmarkResult
from .compress import compress

__all__ = ["demo"]


def demo(out: str | Path = "runs/demo", *, arch: str = "cifar_resnet20", epochs: int = 6,
         profile: str = "x86", progress: bool = True) -> BenchmarkResult:
    """Train `arch` on digits for `epochs`, save it, then compress it for `profile` into `out`."""
    from .data import digits_stats, load_dataset
    from .models import get_model, save_model
    from .train import FitConfig, fit

    out = check_out_dir(Path(out))
    module, card = get_model(arch, num_classes=10)
    stats = digits_stats(card.input_size)
    ds = load_dataset("digits", input_size=card.input_size)
    card = card.with_(mean=tuple(stats.mean), std=tuple(stats.std), class_names=list(ds.classes),
                      source=f"edgekit demo: {arch} trained {epochs} epochs on sklearn digits")
    fit(module, ds.train, card, FitConfig(epochs=epochs), progress=progress)
    out.mkdir(parents=True, exist_ok=True)
    teacher = out / "teacher.pt"
    save_model(module, card, teacher)
    return compress(teacher, profile=profile, data="digits", out=out, limit=None,
                    progress=progress)
