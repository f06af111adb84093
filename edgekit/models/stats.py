"""Parameter and MAC counts (MACs from torch's own FLOP counter: conv/matmul FLOPs / 2)."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

__all__ = ["count_params", "count_macs"]


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
