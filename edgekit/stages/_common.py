"""What the training stages share: load model + data, fit the head to the dataset's classes."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from ..errors import InputError
from ..train import TrainConfig

__all__ = ["load_for_training", "replace_head", "splits"]


def replace_head(module: nn.Module, num_classes: int) -> str:
    """Swap the last nn.Linear for a fresh one with `num_classes` outputs; returns its name."""
    last = None
    for name, m in module.named_modules():
        if isinstance(m, nn.Linear):
            last = name
    if last is None:
        raise InputError("cannot adapt the model to a new class count: no final nn.Linear layer found")
    parent_name, _, attr = last.rpartition(".")
    parent = module.get_submodule(parent_name) if parent_name else module
    old = getattr(parent, attr)
    setattr(parent, attr, nn.Linear(old.in_features, num_classes, bias=old.bias is not None))
    return last


def load_for_training(model: str | Path, *, data: str | Path, arch: str | None,
                      num_classes: int | None, trust_pickle: bool):
    """(module, card, dataset, note). A model with another class count gets a new head."""
    from ..data import load_dataset
    from ..models import load_model

    loaded = load_model(model, arch=arch, num_classes=num_classes, trust_pickle=trust_pickle)
    card = loaded.card
    ds = load_dataset(data, input_size=tuple(card.input_size), resize=card.resize)
    note = ""
    if card.num_classes != len(ds.classes):
        head = replace_head(loaded.module, len(ds.classes))
        note = f"classifier {head} replaced: {card.num_classes} -> {len(ds.classes)} classes"
        card = card.with_(num_classes=len(ds.classes), class_names=list(ds.classes))
    elif not card.class_names:
        card = card.with_(class_names=list(ds.classes))
    return loaded.module, card, ds, note


def splits(ds, cfg: TrainConfig):
    if ds.train is None:
        raise InputError(f"{ds.name} has no train/ split: training needs a folder with train/ and "
                         "test/ (or val/) class folders")
    return ds.train.subset(cfg.train_limit, seed=cfg.seed), ds.evaluation(cfg.eval_limit, seed=cfg.seed)
