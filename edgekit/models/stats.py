"""Parameter and MAC counts (MACs from torch's own FLOP counter: conv/matmul FLOPs / 2)."""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

__all__ = ["count_params", "count_macs", "hooked_forward"]


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def count_macs(module: nn.Module, input_size: Sequence[int]) -> int:
    """Multiply-accumulates of one forward pass at batch 1."""
    from torch.utils.flop_counter import FlopCounterMode

    was = module.training
    module.eval()
    try:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            module(torch.zeros(1, *input_size))
    finally:
        module.train(was)
    return counter.get_total_flops() // 2


def hooked_forward(module: nn.Module, x: torch.Tensor, hooks: dict[nn.Module, Callable], *, pre: bool = False) -> None:
    """One eval-mode, no-grad forward pass of `x` with these forward hooks (or pre-hooks)
    attached to the given submodules; the hooks are removed and the training flag restored after.
    (A hook that returns something replaces the output, a pre-hook the inputs: return None.)"""
    handles = [m.register_forward_pre_hook(fn) if pre else m.register_forward_hook(fn) for m, fn in hooks.items()]
    was = module.training
    try:
        with torch.no_grad():
            module.eval()(x)
    finally:
        for h in handles:
            h.remove()
        module.train(was)
