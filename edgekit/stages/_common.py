"""What the training stages share: load model + data, fit the head to the dataset's classes."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from ..errors import InputError
from ..train import TrainConfig

__all__ = ["load_for_training", "replace_head", "seeded", "splits"]


@contextmanager
def seeded(seed: int):
    """Fresh weights (a student, a new head, an architecture without weights) from `seed`, not
    from whatever used torch's global RNG before; the global state is restored after."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


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
                      num_classes: int | None, trust_pickle: bool, seed: int = 0):
    """(module, card, dataset, note). A model with another class count gets a new head. Any
    freshly initialized weights come from `seed`."""
    from ..data import load_dataset
    from ..models import load_model

    with seeded(seed):
        loaded = load_model(model, arch=arch, num_classes=num_classes, trust_pickle=trust_pickle)
    card = loaded.card
    ds = load_dataset(data, input_size=tuple(card.input_size), resize=card.resize)
    note = ""
    if card.num_classes != len(ds.classes):
        with seeded(seed):
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
