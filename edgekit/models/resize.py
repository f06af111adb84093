"""Rebuild a zoo architecture at the layer widths a checkpoint stores (a pruned model).

A structurally pruned model is its architecture with fewer channels, so its checkpoint stays
"arch + state_dict": on load the fresh arch's Conv2d / BatchNorm (1d/2d/3d) / LayerNorm / Linear
layers (subclasses included) are swapped for copies of themselves at the stored shapes. No pruning code runs, and the
result trains, quantizes and exports like any model. Layers of other types that changed shape
cannot be rebuilt and are named.
"""

from __future__ import annotations

import copy
from typing import Mapping

import torch
from torch import nn

from ..errors import ModelLoadError

__all__ = ["resize_like", "RESIZABLE"]

# BatchNorm1d and LayerNorm: the norms of ViT-style blocks (timm's LeViT, MobileViT), which
# Torch-Pruning narrows with the Linear layers around them
RESIZABLE = (nn.Conv2d, nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.Linear)


def _param(like: torch.Tensor | None, shape) -> nn.Parameter | None:
    return None if like is None else nn.Parameter(torch.zeros(shape, dtype=like.dtype), like.requires_grad)


def _resized(m: nn.Module, name: str, state: Mapping[str, torch.Tensor]) -> nn.Module | None:
    """A copy of layer `m` with the stored shapes, or None when they already match. The copy
    keeps `m`'s class and everything else it holds (timm's BatchNormAct2d keeps its activation;
    a fresh nn.BatchNorm2d would silently drop it); the caller loads the values."""
    own = dict(m.named_parameters(recurse=False)) | dict(m.named_buffers(recurse=False))
    stored = {k: state[f"{name}.{k}" if name else k] for k in own if (f"{name}.{k}" if name else k) in state}
    if all(tuple(v.shape) == tuple(own[k].shape) for k, v in stored.items()):
        return None
    if not isinstance(m, RESIZABLE):
        raise ModelLoadError(f"layer {name} ({type(m).__name__}) has other shapes in the checkpoint and edgekit "
                             f"can rebuild only {', '.join(t.__name__ for t in RESIZABLE)} at a new width")
    new = copy.deepcopy(m)
    if isinstance(m, nn.Conv2d):
        w = stored["weight"]
        out_c, per_group = int(w.shape[0]), int(w.shape[1])
        # depthwise keeps its channel multiplier; other convs keep their group count
        groups = out_c // (m.out_channels // m.groups) if 1 < m.groups == m.in_channels else m.groups
        new.in_channels, new.out_channels, new.groups = per_group * groups, out_c, groups
        new.weight, new.bias = _param(m.weight, w.shape), _param(m.bias, (out_c,))
    elif isinstance(m, nn.modules.batchnorm._BatchNorm):
        n = next(int(v.shape[0]) for v in stored.values() if v.ndim == 1)
        new.num_features = n
        new.weight, new.bias = _param(m.weight, (n,)), _param(m.bias, (n,))
        if m.running_mean is not None:
            new.running_mean, new.running_var = torch.zeros(n), torch.ones(n)
    elif isinstance(m, nn.LayerNorm):
        if len(m.normalized_shape) != 1:
            raise ModelLoadError(f"layer {name} (LayerNorm over {tuple(m.normalized_shape)}) has other shapes in "
                                 "the checkpoint; edgekit rebuilds LayerNorms over one dimension only")
        n = next(int(v.shape[0]) for v in stored.values())
        new.normalized_shape = (n,)
        new.weight, new.bias = _param(m.weight, (n,)), _param(m.bias, (n,))
    else:  # Linear
        out_f, in_f = (int(v) for v in stored["weight"].shape)
        new.in_features, new.out_features = in_f, out_f
        new.weight, new.bias = _param(m.weight, (out_f, in_f)), _param(m.bias, (out_f,))
    return new


def resize_like(module: nn.Module, state: Mapping[str, torch.Tensor]) -> list[str]:
    """Swap every layer whose stored tensors have other shapes for one that has them, in place;
    returns the names of the swapped layers."""
    changed = []
    for name, m in list(module.named_modules()):
        new = _resized(m, name, state)
        if new is not None:
            if name:
                module.set_submodule(name, new)
            changed.append(name)
    return changed
