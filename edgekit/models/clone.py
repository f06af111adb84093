"""Deep copies of user models that are safe to prune, quantize or export."""

from __future__ import annotations

import copy

from torch import nn

from ..errors import InputError

__all__ = ["clone_module", "drop_eval_caches"]


def clone_module(model: nn.Module) -> nn.Module:
    """`copy.deepcopy(model)` without the tensors some modules cache in eval mode.

    timm's LeViT-style attention (LeViT, EfficientFormer, TinyViT, ...) caches its bias table on
    the first eval forward and drops the cache in `train()`. Such a cache, built with autograd
    on, is not a graph leaf and cannot be deep-copied at all; built without, it would be copied
    and then be stale once the copy is pruned. Flipping the model to train mode and back (a
    flag for every other layer) drops it first.
    """
    drop_eval_caches(model)
    return copy.deepcopy(model)


def drop_eval_caches(model: nn.Module) -> None:
    """Drop what modules cached on an eval forward (see `clone_module`) by flipping the model to
    train mode and back. Needed around torch.fx tracing too: a trace in eval mode fills LeViT's
    cache with a Proxy of that trace, which the next trace then reads as a node of another graph."""
    was_training = model.training
    try:
        model.train(True)
    except InputError:  # a torch.export program, pinned in eval mode: it caches nothing
        return
    model.train(was_training)
