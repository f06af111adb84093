"""Structured channel pruning through Torch-Pruning's dependency graph.

The graph keeps residual adds, depthwise convolutions, concatenations and squeeze-excitation
blocks consistent. It only sees what it can trace, though: on the CIFAR ResNets (option-A
shortcut: a strided slice and a channel pad it does not see) a global prune left the classifier
with the wrong input width at some ratios and, worse, ran at others with the shortcut adding into
the wrong channels. So groups that pass through slicing/splitting or custom ops are never pruned
(for those ResNets that leaves the block-internal channels), and every pruned model is run
before it is returned.

Kept channel counts are multiples of `channel_multiple` (Torch-Pruning's round_to), because
widths off the runtime's vector width can make a smaller model slower.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

import torch
from torch import nn

from ..errors import InputError
from ..models.clone import clone_module
from ..models.stats import count_macs, count_params

if TYPE_CHECKING:
    from .latency_aware import LatencyAllocation

__all__ = ["IMPORTANCES", "PruneOutcome", "criterion", "ignored_layers", "prune_channels", "prune_to_macs", "risky_layers"]


def criterion(name: str):
    """The Torch-Pruning importance for one of IMPORTANCES."""
    import torch_pruning as tp

    return {"l1": lambda: tp.importance.MagnitudeImportance(p=1),
            "l2": lambda: tp.importance.MagnitudeImportance(p=2),
            "bn": lambda: tp.importance.BNScaleImportance(),
            "taylor": lambda: tp.importance.TaylorImportance()}[name]()


#: importance criteria: L1/L2 weight magnitude, BN scale, first-order Taylor (needs batches)
IMPORTANCES = ("l1", "l2", "bn", "taylor")
#: Torch-Pruning node types whose index mapping the graph gets wrong on some models
_RISKY = {"SPLIT", "CUSTOMIZED", "UNBIND", "EXPAND", "SLICE", "PARAMETER"}


@dataclass
class PruneOutcome:
    model: nn.Module
    ratio: float
    macs_before: int
    macs_after: int
    params_before: int
    params_after: int
    #: "dependency graph", or "safe groups" when some layers' groups were left alone (see notes)
    mode: str
    channel_multiple: int
    notes: list[str] = field(default_factory=list)

    @property
    def mac_ratio(self) -> float:
        return self.macs_before / max(self.macs_after, 1)

    def to_dict(self) -> dict:
        return {"ratio": round(self.ratio, 4), "macs_before": self.macs_before, "macs_after": self.macs_after,
                "mac_reduction": round(self.mac_ratio, 3), "params_before": self.params_before,
                "params_after": self.params_after, "mode": self.mode, "channel_multiple": self.channel_multiple,
                "notes": self.notes}


def _classifier(model: nn.Module) -> nn.Module | None:
    last = None
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            last = m
    return last


def risky_layers(model: nn.Module, input_size: Sequence[int]) -> list[str]:
    """Names of the layers whose output-channel group passes through ops the dependency graph
    may map wrongly. Depends only on the architecture: searches compute it once."""
    import torch_pruning as tp
    from torch_pruning.ops import OPTYPE

    dg = tp.DependencyGraph().build_dependency(model, example_inputs=torch.zeros(1, *input_size))
    risky_types = {getattr(OPTYPE, t) for t in _RISKY if hasattr(OPTYPE, t)}
    out = []
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            group = dg.get_pruning_group(m, dg.get_pruner_of_module(m).prune_out_channels, idxs=[0])
            if any(dep.target.type in risky_types for dep, _ in group):
                out.append(name)
    return out


def _check(model: nn.Module, example: torch.Tensor, out_shape: torch.Size) -> str:
    """Why the pruned model is broken (empty if it runs and keeps its output shape)."""
    try:
        with torch.no_grad():
            y = model.eval()(example.repeat(2, 1, 1, 1))
    except Exception as e:  # noqa: BLE001
        return f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
    if y.shape[1:] != out_shape[1:]:
        return f"output shape {tuple(y.shape)} != {tuple(out_shape)}"
    return ""


def ignored_layers(model: nn.Module, keep: Iterable[str], risky: Iterable[str]) -> list[nn.Module]:
    """Layers whose channels are never pruned: those named in `keep`, the `risky` ones and the classifier."""
    mods = dict(model.named_modules())
    unknown = [k for k in keep if k not in mods]
    if unknown:
        raise InputError(f"--keep names unknown layer(s) {', '.join(unknown[:3])} (see model.named_modules())")
    return [mods[k] for k in [*keep, *risky]] + [c for c in [_classifier(model)] if c is not None]


def _round_keeping_one(n_pruned: int, current: int, multiple: int) -> int:
    """Channels to prune so the kept count is a multiple, never below one multiple. (Torch-Pruning's
    own rounding sends a layer that rounds to 0 channels back to full width, so more pruning
    could mean a bigger model.)"""
    keep = current - n_pruned
    keep = max(multiple, keep - keep % multiple)
    return max(current - keep, 0)


def _prune_once(model: nn.Module, example: torch.Tensor, ratio: float, importance: str, global_pruning: bool,
                channel_multiple: int, ignored: list[nn.Module], grad_batches: Callable | None,
                widths: dict[str, int] | None = None) -> None:
    import torch_pruning as tp

    imp = criterion(importance)
    if importance == "taylor":
        if grad_batches is None:
            raise InputError("--importance taylor needs images (gradients of the loss): pass --data")
        model.zero_grad()
        model.train()
        for x, y in grad_batches():
            nn.functional.cross_entropy(model(x), y).backward()
        model.eval()
    if widths is not None:  # a latency-aware allocation decided the widths
        from .latency_aware import prune_to_widths
        prune_to_widths(model, example, widths, imp)
    else:
        pruner = tp.pruner.MetaPruner(model, example, importance=imp, pruning_ratio=ratio,
                                      global_pruning=global_pruning, max_pruning_ratio=0.9, ignored_layers=ignored,
                                      round_to=channel_multiple if channel_multiple > 1 else None)
        if channel_multiple > 1:
            pruner._round_to = _round_keeping_one
        pruner.step()
    model.zero_grad(set_to_none=True)


def prune_channels(model: nn.Module, input_size: Sequence[int], ratio: float, *, importance: str = "l2",
                   global_pruning: bool = True, channel_multiple: int = 8, keep: Iterable[str] = (),
                   grad_batches: Callable | None = None, risky: list[str] | None = None,
                   allocation: "LatencyAllocation | None" = None) -> PruneOutcome:
    """Remove `ratio` of the prunable channels (a copy of `model`; the classifier's outputs and
    the layers named in `keep` are not pruned). `risky` passes `risky_layers(model)` when the
    caller already has it. With an `allocation` (from `latency_aware.allocate` on this model),
    the widths come from its measured greedy order instead of the global ranking."""
    if not 0.0 <= ratio < 1.0:
        raise InputError(f"--ratio must be in [0, 1) (the fraction of channels removed), got {ratio}")
    if importance not in IMPORTANCES:
        raise InputError(f"unknown --importance {importance!r}; valid: {', '.join(IMPORTANCES)}")
    example = torch.zeros(1, *input_size)
    m = clone_module(model).eval()
    mods = dict(m.named_modules())
    with torch.no_grad():
        out_shape = m(example).shape
    macs0, params0 = count_macs(m, input_size), count_params(m)
    if ratio == 0.0:
        return PruneOutcome(m, 0.0, macs0, macs0, params0, params0, "none", channel_multiple)
    risky = risky_layers(m, input_size) if risky is None else risky
    ignored = ignored_layers(m, keep, risky)
    prunable = [x for x in m.modules() if isinstance(x, (nn.Conv2d, nn.Linear)) and not any(x is i for i in ignored)]
    if not prunable:
        raise InputError("nothing in this architecture can be pruned safely: every layer's channels pass through "
                         "ops Torch-Pruning's dependency graph cannot map (slicing/splitting/custom) or are kept")
    notes = [f"{len(risky)} layer(s) left at full width: their channels pass through slicing/splitting ops "
             "the dependency graph can map wrongly (e.g. an option-A shortcut)"] if risky else []
    try:
        _prune_once(m, example, ratio, importance, global_pruning, channel_multiple, ignored, grad_batches,
                    allocation.widths_at(ratio) if allocation is not None else None)
        err = _check(m, example, out_shape)
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001
        err = f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"
    if err:
        raise InputError(f"cannot prune this architecture: Torch-Pruning's dependency graph could not prune it "
                         f"consistently ({err}); leave the offending layers alone with --keep NAME")
    return PruneOutcome(m, ratio, macs0, count_macs(m, input_size), params0, count_params(m),
                        "safe groups" if risky else "dependency graph", channel_multiple, notes)


def prune_to_macs(model: nn.Module, input_size: Sequence[int], target: float, *, tolerance: float = 0.02,
                  **kw) -> PruneOutcome:
    """Prune until MACs are about `target` x the original (e.g. 0.5): the channel ratio is searched
    on a grid, then refined between the grid points around the target. (With channel rounding
    the MACs are not monotonic in the ratio, e.g. 16-channel layers drop to 8 or stay, so a plain
    bisection lands anywhere.) Picks the closest result at or below target + tolerance."""
    if not 0.0 < target < 1.0:
        raise InputError(f"--target-macs must be in (0, 1) (fraction of the original MACs kept), got {target}")
    tried: dict[float, PruneOutcome] = {}
    kw.setdefault("risky", risky_layers(model, input_size))  # the same for every candidate

    def at(r: float) -> float:
        r = round(r, 4)
        if r not in tried:
            tried[r] = prune_channels(model, input_size, r, **kw)
        return tried[r].macs_after / tried[r].macs_before

    # walk the grid only up to the first point at or below the target (each point is a full
    # Torch-Pruning pass; the points past it keep fewer MACs, further from the target)
    grid = [round(0.05 * i, 2) for i in range(1, 19)]
    for a, b in zip([0.0] + grid, grid):
        if at(b) <= target:
            if a > 0:  # refine inside the first bracket
                for _ in range(4):
                    mid = (a + b) / 2
                    if at(mid) > target:
                        a = mid
                    else:
                        b = mid
            break
    ok = [o for o in tried.values() if o.macs_after / o.macs_before <= target + tolerance]
    if not ok:
        least = min(tried.values(), key=lambda o: o.macs_after)
        why = f"{least.mode}{'; ' + least.notes[0] if least.notes else ''}"
        if kw.get("allocation") is not None:
            a = kw["allocation"]
            why = (f"--latency-aware: narrower widths were not measured faster on {a.backend} {a.precision.upper()}, "
                   f"so the allocation stops there; {why}")
        raise InputError(f"--target-macs {target} is not reachable: the most this model could be pruned keeps "
                         f"{least.macs_after / least.macs_before:.2f}x the MACs ({why}); ask for less, or lower "
                         "--channel-multiple")
    return min(ok, key=lambda o: (abs(o.macs_after / o.macs_before - target), o.ratio))
