"""`edgekit finetune`: adapt a trained model to a dataset with the training engine."""

from __future__ import annotations

from pathlib import Path

from ..train import Supervised, TrainConfig, TrainResult, train
from ._common import load_for_training, splits

__all__ = ["finetune"]


def finetune(model: str | Path, *, data: str | Path, out: str | Path, arch: str | None = None,
             num_classes: int | None = None, trust_pickle: bool = False,
             config: TrainConfig | None = None, resume: bool = False,
             progress: bool = True) -> TrainResult:
    """Fine-tune `model` on `data`'s train split, evaluating on its held-out split each epoch.

    Writes `out`/best.pt and last.pt (edgekit checkpoints with the model card), metrics.jsonl,
    summary.json and state.pt (for `resume=True`).
    """
    cfg = config or TrainConfig()
    module, card, ds, note = load_for_training(model, data=data, arch=arch, num_classes=num_classes,
                                               trust_pickle=trust_pickle, seed=cfg.seed)
    card = card.with_(source=f"{card.source}; fine-tuned on {ds.name}")
    train_split, eval_split = splits(ds, cfg)
    result = train(Supervised(module, cfg.label_smoothing), card, train_split, eval_split, cfg, out,
                   resume=resume, progress=progress)
    if note:
        result.extra["note"] = note
    return result
