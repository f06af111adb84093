"""Latency-aware allocation: decide each layer's width from measured latency, not weight magnitude.

A global magnitude ranking removes channels where the weights are small, wherever that is. On
ResNet-56 and this AVX-512 CPU it halved stage 1's 16-channel convolutions for 22% less time,
and widths between multiples of 16 cost as much as the next multiple (ONNX Runtime computes
16 channels per vector block): 24 channels run as slowly as 32. So, as NetAdapt does, every
prunable group's convolutions are timed alone on the runtime at each candidate width (a lookup
table), and channels are removed greedily where the least importance buys the most time: a
step goes from one width to the next narrower width that is measurably faster, so plateaus of
the table are skipped, not paid for.

The greedy order is computed once per model; a ratio picks how far along it to go, so
`prune_to_macs` and the latency bisection search it exactly as they search the global ranking.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from ..models.stats import hooked_forward

__all__ = ["LatencyAllocation", "allocate"]

#: a lone convolution as the lookup table keys it: cin, cout, kernel, stride, padding, dilation, groups, H, W
_Spec = tuple
#: a narrower width counts as faster only if the table says so by at least this fraction
_MIN_GAIN = 0.03
#: candidate widths per group at most (wide layers step in coarser multiples)
_MAX_WIDTHS = 16


@dataclass
class LatencyAllocation:
    """Greedy pruning order: `steps[i]` = (group root layer, width after the step)."""

    widths: dict[str, int]
    steps: list[tuple[str, int]]
    backend: str
    threads: int
    precision: str = "fp32"

    def widths_at(self, ratio: float) -> dict[str, int]:
        """Widths after the greedy steps that remove about `ratio` of the prunable channels."""
        total = sum(self.widths.values())
        w = dict(self.widths)
        for name, width in self.steps:
            if total - sum(w.values()) >= ratio * total:
                break
            w[name] = width
        return w


def _input_sizes(model: nn.Module, input_size: Sequence[int]) -> dict[nn.Module, tuple[int, int]]:
    sizes: dict[nn.Module, tuple[int, int]] = {}

    def record(mod, args) -> None:  # a pre-hook that returns something replaces the inputs
        sizes.setdefault(mod, tuple(args[0].shape[-2:]))

    hooked_forward(model, torch.zeros(1, *input_size), {m: record for m in model.modules() if isinstance(m, nn.Conv2d)},
                   pre=True)
    return sizes


def time_convs(specs: Sequence[_Spec], backend: str, threads: int, precision: str = "fp32", iters: int = 90,
               passes: int = 3) -> dict[_Spec, float]:
    """Median batch-1 ms of each lone convolution on `backend`, timed in interleaved passes
    (INT8: quantized the backend's default way, so the time includes quantizing its input)."""
    from ..backends import get_backend
    from ..bench import TimingConfig, time_runners
    from ..exporters.onnx import _export

    runners = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, spec in enumerate(specs):
            cin, cout, k, s, p, d, g, h, w = spec
            path = Path(tmp) / f"c{i}.onnx"
            _export(nn.Conv2d(cin, cout, k, s, p, d, g), torch.zeros(1, cin, h, w), path, opset=None,
                    dynamic_batch=False, dynamo=False)
            x = np.random.default_rng(i).standard_normal((1, cin, h, w)).astype(np.float32)
            run = get_backend(backend).onnx_runner(path, threads=threads, precision=precision, calibration=[x])
            runners.append(lambda _, run=run, x=x: run(x))  # each convolution takes its own input shape
        cfg = TimingConfig(warmup=3, iters=iters, passes=passes, throughput_iters=0)
        times = time_runners(runners, np.zeros((1, 1), np.float32), cfg)
    return {s: t.latency_ms_p50 for s, t in zip(specs, times)}


def _candidate_widths(width: int, multiple: int) -> list[int]:
    step = multiple
    while width // step > _MAX_WIDTHS:
        step += multiple
    return sorted({w for w in range(step, width, step)} | {width})


def _members(dg, group, hw) -> list[tuple[nn.Conv2d, str]] | None:
    """The group's convolutions and which side the group's channels are ("out", "in", "dw"),
    or None for a group edgekit does not allocate (grouped convolutions: widths must divide)."""
    out, seen = [], set()
    for dep, _ in group:
        conv = dep.target.module
        if not isinstance(conv, nn.Conv2d) or conv in seen or conv not in hw:
            continue
        seen.add(conv)
        if conv.groups > 1:
            if conv.groups != conv.in_channels:
                return None
            out.append((conv, "dw"))
        else:
            out.append((conv, "out" if dg.is_out_channel_pruning_fn(dep.handler) else "in"))
    return out


def _spec_at(conv: nn.Conv2d, side: str, width: int, hw) -> _Spec:
    cin, cout, g = conv.in_channels, conv.out_channels, conv.groups
    if side == "dw":
        cin = cout = g = width
    elif side == "out":
        cout = width
    else:
        cin = width
    return (cin, cout, conv.kernel_size, conv.stride, conv.padding, conv.dilation, g, *hw[conv])


def allocate(model: nn.Module, input_size: Sequence[int], channel_multiple: int, *, importance,
             ignored: Sequence[nn.Module] = (), backend: str = "onnxruntime", threads: int = 1,
             precision: str = "fp32", grad_batches: Callable | None = None) -> LatencyAllocation:
    """Measure every prunable group's convolutions at its candidate widths and order the pruning
    steps by importance lost per millisecond saved (`importance`: a Torch-Pruning criterion).
    `precision` is the one the model will be deployed in: INT8 kernels block channels
    differently (benchmarks/results/conv_widths.md: ONNX Runtime INT8 runs 8 channels slower
    than 16), so an FP32 table misleads an INT8 deployment."""
    import torch_pruning as tp

    model = model.eval()
    names = {m: n for n, m in model.named_modules()}
    hw = _input_sizes(model, input_size)
    dg = tp.DependencyGraph().build_dependency(model, example_inputs=torch.zeros(1, *input_size))
    if grad_batches is not None:  # Taylor importance reads gradients
        model.zero_grad()
        for x, y in grad_batches():
            nn.functional.cross_entropy(model.train()(x), y).backward()
        model.eval()
    m = max(channel_multiple, 1)
    plans = {}
    for group in dg.get_all_groups(ignored_layers=list(ignored), root_module_types=[nn.Conv2d, nn.Linear]):
        root = group[0].dep.target.module
        members = _members(dg, group, hw)
        if not members:
            continue
        imp = importance(group)
        width = len(imp) if imp is not None else 0
        if width <= m:
            continue
        plans[names[root]] = (members, np.sort(imp.detach().cpu().numpy()), _candidate_widths(width, m))
    model.zero_grad(set_to_none=True)
    specs = sorted({_spec_at(c, side, w, hw) for members, _, widths in plans.values()
                    for c, side in members for w in widths})
    ms = time_convs(specs, backend, threads, precision)

    def lat(name: str, w: int) -> float:
        return sum(ms[_spec_at(c, side, w, hw)] for c, side in plans[name][0])

    def next_step(name: str, w: int) -> tuple[float, int] | None:
        """(importance lost per ms saved, new width) of the group's next faster width."""
        _, imp, widths = plans[name]
        now = lat(name, w)
        for nw in sorted((x for x in widths if x < w), reverse=True):
            gain = now - lat(name, nw)
            if gain > _MIN_GAIN * now:
                lost = float(imp[len(imp) - w:len(imp) - nw].sum())  # next-least-important channels
                return lost / gain, nw
        return None

    widths = {n: p[2][-1] for n, p in plans.items()}
    cur, steps = dict(widths), []
    frontier = {n: next_step(n, w) for n, w in cur.items()}
    while any(frontier.values()):
        name = min((n for n in frontier if frontier[n]), key=lambda n: frontier[n][0])
        cur[name] = frontier[name][1]
        steps.append((name, cur[name]))
        frontier[name] = next_step(name, cur[name])
    return LatencyAllocation(widths, steps, backend, threads, precision)


def prune_to_widths(model: nn.Module, example: torch.Tensor, widths: dict[str, int], importance) -> None:
    """Prune each group (by root layer name) to its width, removing its least important channels."""
    import torch_pruning as tp

    names = {m: n for n, m in model.named_modules()}
    dg = tp.DependencyGraph().build_dependency(model, example_inputs=example)
    todo = []
    for group in dg.get_all_groups(root_module_types=[nn.Conv2d, nn.Linear]):
        root = group[0].dep.target.module
        name = names.get(root)
        if name not in widths:
            continue
        imp = importance(group)
        drop = len(imp) - widths[name]
        if drop > 0:
            idxs = torch.argsort(imp)[:drop].tolist()
            todo.append((root, group[0].dep.handler, idxs))
    for root, handler, idxs in todo:  # indices first, then prune: groups share no channels
        dg.get_pruning_group(root, handler, idxs).prune()
