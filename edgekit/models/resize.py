"""Rebuild a zoo architecture at the layer widths a checkpoint stores (a pruned model).

A structurally pruned model is its architecture with fewer channels, so its checkpoint stays
"arch + state_dict": on load the fresh arch's Conv2d / BatchNorm2d / Linear layers are swapped for
ones of the stored shapes. No pruning code runs, and the result trains, quantizes and exports
like any model. Layers of other types that changed shape cannot be rebuilt and are named.
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from ..errors import ModelLoadError

__all__ = ["resize_like", "RESIZABLE"]

RESIZABLE = (nn.Conv2d, nn.BatchNorm2d, nn.Linear)


def _conv(m: nn.Conv2d, w: torch.Tensor) -> nn.Conv2d:
    out_c, per_group = int(w.shape[0]), int(w.shape[1])
    if m.groups > 1 and m.groups == m.in_channels:  # depthwise: keep the channel multiplier
        groups = out_c // (m.out_channels // m.groups)
    else:
        groups = m.groups
    return nn.Conv2d(per_group * groups, out_c, m.kernel_size, m.stride, m.padding, m.dilation, groups,
                     m.bias is not None, m.padding_mode)


def _resized(m: nn.Module, name: str, state: Mapping[str, torch.Tensor]) -> nn.Module | None:
    """A copy of layer `m` with the stored shapes, or None when they already match."""
    own = dict(m.named_parameters(recurse=False)) | dict(m.named_buffers(recurse=False))
    stored = {k: state[f"{name}.{k}" if name else k] for k in own if (f"{name}.{k}" if name else k) in state}
    if all(tuple(v.shape) == tuple(own[k].shape) for k, v in stored.items()):
        return None
    if isinstance(m, nn.Conv2d):
        return _conv(m, stored["weight"])
    if isinstance(m, nn.BatchNorm2d):
        return nn.BatchNorm2d(int(stored["running_mean"].shape[0]), m.eps, m.momentum, m.affine,
                              m.track_running_stats)
    if isinstance(m, nn.Linear):
        out_f, in_f = stored["weight"].shape
        return nn.Linear(int(in_f), int(out_f), m.bias is not None)
    raise ModelLoadError(f"layer {name} ({type(m).__name__}) has other shapes in the checkpoint and edgekit "
                         f"can rebuild only {', '.join(t.__name__ for t in RESIZABLE)} at a new width")


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
