"""Deep copies of user models that are safe to prune, quantize or export."""

from __future__ import annotations

import copy

from torch import nn

from ..errors import InputError

__all__ = ["clone_module"]


def clone_module(model: nn.Module) -> nn.Module:
    """`copy.deepcopy(model)` without the tensors some modules cache in eval mode.

    timm's LeViT-style attention (LeViT, EfficientFormer, TinyViT, ...) caches its bias table on
    the first eval forward and drops the cache in `train()`. Such a cache, built with autograd
    on, is not a graph leaf and cannot be deep-copied at all; built without, it would be copied
    and then be stale once the copy is pruned. Flipping the model to train mode and back (a
    flag for every other layer) drops it first.
    """
    was_training = model.training
    try:
        model.train(True)
    except InputError:  # a torch.export program, pinned in eval mode: it caches nothing
        pass
    model.train(was_training)
    return copy.deepcopy(model)
