"""Depth pruning: remove whole residual blocks.

Channel pruning leaves every layer in place, and at batch 1 on a CPU the per-layer overhead
(kernel launch, memory traffic of small tensors) is a floor that thinner layers do not lower
(benchmarks/results/pruning.md). Removing blocks removes that overhead too. Residual networks
tolerate it (Veit et al. 2016, "Residual networks behave like ensembles of relatively shallow
networks"): a block computes x + f(x), so replacing it with the identity keeps the rest of the
network's input distribution close to what it was trained on, and recovery training closes the
remaining gap.

A candidate block is a composite module (it has its own forward and holds a Conv2d or Linear)
that is an element of an nn.Sequential stage and whose output has its input's shape, so an
nn.Identity in its place keeps the model running: torchvision's ResNet blocks without a
downsample, MobileNetV2's and EfficientNet's stride-1 inverted residuals, the CIFAR ResNets'
identity-shortcut blocks. Which to drop is chosen greedily by measurement: at each step the
candidate whose removal changes the model's output least (KL divergence from the unpruned
model's predictions on a few batches of real images) goes; given each block's latency (what
removing it saves, measured or predicted by the caller), the one with the least added KL per
millisecond saved goes instead (on a CPU runtime a block at high resolution can take longer
than one with the same MACs deeper in the network). A shape-preserving block without a
skip connection (a squeeze-excitation gate between convolutions, a plain conv block) is a
candidate too: the measurement ranks it by what its removal costs. A block inside a removable
block is not a candidate of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from ..models.clone import clone_module
from ..models.stats import count_macs, count_params, hooked_forward

__all__ = ["DepthOutcome", "block_groups", "droppable_blocks", "drop_blocks"]


@dataclass
class DepthOutcome:
    model: nn.Module
    dropped: list[str]
    candidates: int
    macs_before: int
    macs_after: int
    params_before: int
    params_after: int
    #: the order of removal, and the KL divergence from the unpruned model's outputs after each
    removal_order: list[str] = field(default_factory=list)
    kl: list[float] = field(default_factory=list)
    #: KL divergence when each candidate alone is removed (the first greedy step's scores)
    alone: dict[str, float] = field(default_factory=dict)
    #: ms each candidate's removal saves, when the choice was latency-aware
    latency_saved_ms: dict[str, float] | None = None

    def to_dict(self) -> dict:
        return {"dropped_blocks": self.dropped, "candidate_blocks": self.candidates,
                "removal_order": self.removal_order, "kl_after_each_removal": [round(k, 4) for k in self.kl],
                "kl_each_block_alone": {k: round(v, 4) for k, v in self.alone.items()}, "macs_before": self.macs_before,
                "macs_after": self.macs_after, "mac_reduction": round(self.macs_before / max(self.macs_after, 1), 3),
                "params_before": self.params_before, "params_after": self.params_after,
                **({"latency_saved_ms": {k: round(v, 4) for k, v in self.latency_saved_ms.items()}}
                   if self.latency_saved_ms else {})}


def droppable_blocks(model: nn.Module, input_size: Sequence[int], keep: Iterable[str] = ()) -> list[str]:
    """Names of the blocks an nn.Identity can replace (see the module docstring), in forward order."""
    keep = tuple(keep)
    stages = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Sequential)]
    candidates = {f"{s}.{c}" if s else c: child for s, seq in stages for c, child in seq.named_children()
                  if not isinstance(child, (nn.Sequential, nn.Identity)) and any(True for _ in child.children())
                  and any(isinstance(x, (nn.Conv2d, nn.Linear)) for x in child.modules())}
    candidates = {n: m for n, m in candidates.items()
                  if not any(n == k or n.startswith(k + ".") or k.startswith(n + ".") for k in keep)}
    shapes: dict[str, bool] = {}
    order: list[str] = []

    def hook(name):
        def fn(mod, args, out):
            x = args[0] if args else None
            same = isinstance(x, torch.Tensor) and isinstance(out, torch.Tensor) and x.shape == out.shape
            shapes[name] = shapes.get(name, True) and same
            order.append(name)
        return fn

    hooked_forward(model, torch.zeros(1, *input_size), {m: hook(n) for n, m in candidates.items()})
    found = [n for n in dict.fromkeys(order) if shapes.get(n)]
    # outermost only: a block inside a removable block goes with it
    return [n for n in found if not any(n.startswith(o + ".") for o in found)]


def block_groups(model: nn.Module, input_size: Sequence[int], names: Sequence[str]) -> list[list[str]]:
    """`names` grouped by what sets a block's latency: its type, its input's shape and its
    weights' shapes (the nine identical blocks of a CIFAR ResNet stage are one group), so a
    caller can time one variant per group instead of one per block."""
    shapes: dict[str, tuple] = {}

    def hook(name):
        def fn(mod, args, out):  # returns None: a hook's return value would replace the output
            shapes.setdefault(name, tuple(args[0].shape))
        return fn

    hooked_forward(model, torch.zeros(1, *input_size), {model.get_submodule(n): hook(n) for n in names})
    groups: dict[tuple, list[str]] = {}
    for n in names:
        m = model.get_submodule(n)
        key = (type(m).__name__, shapes.get(n), tuple(tuple(p.shape) for p in m.parameters()))
        groups.setdefault(key, []).append(n)
    return list(groups.values())


def _kl(model: nn.Module, batches: list[torch.Tensor], reference: list[torch.Tensor]) -> float:
    total, n = 0.0, 0
    with torch.no_grad():
        for x, ref in zip(batches, reference):
            logp = F.log_softmax(model(x), dim=1)
            total += float(F.kl_div(logp, ref, reduction="sum", log_target=True))
            n += len(x)
    return total / max(n, 1)


def drop_blocks(model: nn.Module, input_size: Sequence[int], n: int, batches: list[torch.Tensor], *,
                keep: Iterable[str] = (),
                latency: Callable[[list[str]], dict[str, float]] | None = None) -> DepthOutcome:
    """A copy of `model` with `n` blocks replaced by nn.Identity, chosen greedily on `batches`
    (normalized images) as the ones whose removal moves the outputs least, or, with `latency`
    (candidate names -> ms each one's removal saves), the least per millisecond saved.

    Raises:
        InputError: `n` < 1, or the model has fewer than `n` droppable blocks.
    """
    if n < 1:
        raise InputError(f"--drop-blocks must be >= 1, got {n}")
    model = clone_module(model).eval()
    names = droppable_blocks(model, input_size, keep)
    if n > len(names):
        found = f"{len(names)} ({', '.join(names[:4])}{', ...' if len(names) > 4 else ''})" if names else "none"
        raise InputError(f"--drop-blocks {n}: the model has {found} removable blocks (shape-preserving composite "
                         "modules in an nn.Sequential stage, not in --keep); ask for fewer or prune channels")
    macs, params = count_macs(model, input_size), count_params(model)
    with torch.no_grad():
        reference = [F.log_softmax(model(x), dim=1) for x in batches]
    saved = None
    if latency is not None:
        saved = {k: max(float(v), 1e-6) for k, v in latency(names).items()}  # a block costs something
    originals = {name: model.get_submodule(name) for name in names}
    dropped, kls, alone, current = [], [], {}, 0.0
    for _ in range(n):
        scores = {}
        for name in names:
            if name in dropped:
                continue
            model.set_submodule(name, nn.Identity())
            scores[name] = _kl(model, batches, reference)
            model.set_submodule(name, originals[name])
        alone = alone or dict(scores)
        if saved is None:
            best = min(scores, key=scores.__getitem__)
        else:  # least added divergence per ms saved; among free removals, the one saving most
            best = min(scores, key=lambda k: (max(scores[k] - current, 0.0) / saved[k], -saved[k]))
        current = scores[best]
        model.set_submodule(best, nn.Identity())
        dropped.append(best)
        kls.append(scores[best])
    return DepthOutcome(model, sorted(dropped, key=names.index), len(names), macs, count_macs(model, input_size),
                        params, count_params(model), dropped, kls, alone, saved)
