"""Unstructured magnitude pruning: zeros, not fewer channels.

The parameter count, the MACs and (on ONNX Runtime and OpenVINO CPU, which run dense kernels)
the latency stay what they were; only a compressed file shrinks. edgekit measures and says so.
"""

from __future__ import annotations

import gzip
import io

import torch
from torch import nn

from ..errors import InputError
from ..models.clone import clone_module

__all__ = ["sparsify", "sparsity", "compressed_size"]


def sparsify(model: nn.Module, amount: float) -> nn.Module:
    """A copy with the `amount` smallest-magnitude conv/linear weights (globally) set to zero."""
    from torch.nn.utils import prune

    if not 0.0 < amount < 1.0:
        raise InputError(f"--sparsity must be in (0, 1), got {amount}")
    m = clone_module(model)
    params = [(mod, "weight") for mod in m.modules() if isinstance(mod, (nn.Conv2d, nn.Linear))]
    prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=amount)
    for mod, name in params:
        prune.remove(mod, name)  # bake the mask in: a plain model with zeros
    return m


def sparsity(model: nn.Module) -> dict:
    """Zero fraction per conv/linear layer and overall."""
    layers, zeros, total = {}, 0, 0
    for n, mod in model.named_modules():
        if isinstance(mod, (nn.Conv2d, nn.Linear)):
            z, t = int((mod.weight == 0).sum()), mod.weight.numel()
            layers[n] = round(z / t, 4)
            zeros, total = zeros + z, total + t
    return {"overall": round(zeros / max(total, 1), 4), "layers": layers}


def compressed_size(model: nn.Module) -> tuple[int, int]:
    """(raw, gzip) bytes of the state_dict: what zeros save in a compressed file."""
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    raw = buf.getvalue()
    return len(raw), len(gzip.compress(raw, compresslevel=6))
