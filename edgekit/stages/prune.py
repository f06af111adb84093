"""`edgekit prune`: structured pruning (whole residual blocks and/or channels) for measured speed,
or unstructured sparsity with its honest effect, then recovery training with the engine
(optionally distilling from the unpruned model).

Flow (structured): load -> [per step: remove this step's share of blocks, prune channels toward
the target (ratio, MAC fraction or measured latency), check the pruned model runs, recover with
the training engine] -> save model.pt (arch at the new widths, removed blocks named: reloads with
no pruning code) -> time unpruned vs pruned (and rounded vs
unrounded widths) in one interleaved run on the profile's runtimes -> prune.json + report.md.
"""

from __future__ import annotations

import functools
import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from .._io import atomic_write_json, atomic_write_text, check_out_dir
from ..errors import InputError
from ..models.clone import clone_module
from ..train import Supervised, TrainConfig, train
from ..train.engine import evaluate_top1
from ._common import load_for_training

__all__ = ["prune", "PruneResult", "DEFAULT_RECOVERY"]

log = logging.getLogger(__name__)

#: recovery fine-tuning after each pruning step
DEFAULT_RECOVERY = TrainConfig(epochs=1, lr=0.01, warmup_epochs=0.0)


class SameWidths(Exception):
    """The pruned widths equal those of `skip_if_same_as`: recovery (same seed) would only
    reproduce that model, so the caller's retry is pointless (channel rounding often maps a
    gentler target onto the same widths)."""


class TargetAlreadyMet(InputError):
    """The input model already meets the latency target: nothing to prune (a user's target is
    refused with this message; a compress retry with a gentler target skips the attempt)."""


class TargetUnreachable(InputError):
    """Even the most channel pruning tried does not reach the latency target (a user's target
    is refused with this message; a compress run records the stage as unreachable, tries its
    gentler targets and otherwise goes on with the stage's input model). `floor_ms`: the
    latency with the most channels pruned, so a caller can tell which gentler targets are out
    of reach too without measuring again."""

    def __init__(self, message: str, floor_ms: float | None = None):
        super().__init__(message)
        self.floor_ms = floor_ms


def _widths(module: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


@dataclass
class PruneResult:
    out: Path
    model_path: Path
    method: str
    top1_before: float
    top1_pruned: float
    top1_final: float
    eval_images: int
    summary: dict
    steps: list = field(default_factory=list)
    latency: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"model": str(self.model_path), "method": self.method, "eval_images": self.eval_images,
                "top1_before": self.top1_before, "top1_pruned_no_recovery": self.top1_pruned,
                "top1_final": self.top1_final, **self.summary, "steps": self.steps, "latency": self.latency}


def prune(model: str | Path, *, data: str | Path, out: str | Path, ratio: float | None = None,
          target_macs: float | None = None, target_latency_ms: float | None = None,
          sparsity: float | None = None, drop_blocks: int | None = None, importance: str = "l2", global_pruning: bool = True,
          latency_aware: bool = False, latency_precision: str | None = None,
          channel_multiple: int | None = None, keep: Sequence[str] = (), steps: int = 1,
          config: TrainConfig | None = None, recover: bool = True, kd: bool = False,
          temperature: float = 4.0, alpha: float = 0.9, profile: str | None = None,
          backends: Sequence[str] | str | None = None, threads: Sequence[int] | str | int | None = None,
          compare_rounding: bool = False, latency_precisions: Sequence[str] | None = None,
          limit: int | None = 1000, arch: str | None = None, num_classes: int | None = None,
          trust_pickle: bool = False, resume: bool = False, progress: bool = True, seed: int = 0, timing=None,
          skip_if_same_as: str | Path | None = None, measure_here: bool = False) -> PruneResult:
    """Prune `model` (see the module docstring); exactly one of ratio / target_macs /
    target_latency_ms (channels) or sparsity (unstructured); `drop_blocks` removes that many
    residual blocks first (pruning.depth, spread over the steps), alone or with a channel goal,
    which then counts from the original model. `latency_aware` sets the widths
    from per-layer latencies measured on the first backend (pruning.latency_aware) instead of
    the magnitude ranking, in `latency_precision` (default: the profile's preferred precision,
    else fp32). The latency table times the deployed precision and `latency_precisions` (default
    FP32) on every backend. Writes into `out`: model.pt,
    train_step<i>/ (recovery runs; `resume=True` continues them), prune.json, report.md.
    `skip_if_same_as` (one-step channel pruning): raise SameWidths, before any recovery, if the
    pruned model has the widths of that model file. A `target_latency_ms` with a profile that is
    not this host is met on the profile's latency model, unless `measure_here` (running on the
    device itself, or this host standing in for it): then it is timed here like the host's.
    The same holds for what `latency_aware` block removal saves per block."""
    from ..inputs import parse_backends, parse_threads
    from ..models import load_model, save_model
    from ..models.stats import count_macs, count_params
    from ..pruning import prune_channels, prune_to_macs, sparsify

    goals = {k: v for k, v in dict(ratio=ratio, target_macs=target_macs, target_latency_ms=target_latency_ms,
                                    sparsity=sparsity).items() if v is not None}
    if drop_blocks is not None and sparsity is not None:
        raise InputError("--drop-blocks removes blocks (structured); combine it with a channel goal, not --sparsity")
    if drop_blocks is not None and drop_blocks < 1:
        raise InputError(f"--drop-blocks must be >= 1, got {drop_blocks}")
    if len(goals) != 1 and not (drop_blocks and not goals):
        raise InputError("give exactly one of --ratio, --target-macs, --target-latency-ms (channel pruning, "
                         "optionally with --drop-blocks N), --drop-blocks N alone (depth) or --sparsity "
                         f"(unstructured); got {', '.join('--' + k.replace('_', '-') for k in goals) or 'none'}")
    if steps < 1:
        raise InputError("--steps must be >= 1")
    from ..pruning import IMPORTANCES
    if importance not in IMPORTANCES:
        raise InputError(f"unknown --importance {importance!r}; valid: {', '.join(IMPORTANCES)}")
    for name, v in (("ratio", ratio), ("target-macs", target_macs), ("sparsity", sparsity)):
        if v is not None and not 0.0 < v < 1.0:
            raise InputError(f"--{name} must be between 0 and 1 (exclusive), got {v}")
    if latency_aware and not ({"ratio", "target_macs", "target_latency_ms"} & goals.keys() or drop_blocks):
        raise InputError("--latency-aware weighs channel or block pruning by measured latency: give --ratio, "
                         "--target-macs, --target-latency-ms or --drop-blocks")
    if latency_precision not in (None, "fp32", "int8"):
        raise InputError(f"--latency-precision must be fp32 or int8, got {latency_precision!r}")
    if target_latency_ms is not None and target_latency_ms <= 0:
        raise InputError("--target-latency-ms must be > 0")
    if measure_here and target_latency_ms is None and not latency_aware:
        raise InputError("--measure-here says where --target-latency-ms (or --latency-aware's block prices) is "
                         "timed: give --target-latency-ms or --latency-aware too")
    prof = None
    if profile:
        from ..profiles import get_profile
        prof = get_profile(profile)
    predicted = prof is not None and prof.name != "host" and not measure_here
    # what the model is deployed in: the latency-aware table, a host latency target and the
    # report measure it (INT8: each runtime's own PTQ on real images), FP32 is reported too
    deploy_precision = latency_precision or (prof.preferred_precision if prof and prof.preferred_precision == "int8"
                                             else "fp32")
    multiple = channel_multiple if channel_multiple is not None else (prof.channel_multiple if prof else 8)
    if multiple < 1:
        raise InputError("--channel-multiple must be >= 1")
    backends = parse_backends(backends or (prof.runtimes if prof else ("onnxruntime",)))
    backends = [b for b in backends if b in ("onnxruntime", "openvino")] or ["onnxruntime"]
    threads = parse_threads(threads or (prof.threads if prof else (1,)))
    cfg = config or DEFAULT_RECOVERY.model_copy(update={"seed": seed})
    out = check_out_dir(Path(out))

    module, card, ds, note = load_for_training(model, data=data, arch=arch, num_classes=num_classes,
                                               trust_pickle=trust_pickle, seed=cfg.seed)
    if note and not recover:
        raise InputError(f"the model's classes do not match {data} ({note}); without recovery the new head "
                         "stays untrained: drop --no-recover or fine-tune first")
    module.eval()
    size = tuple(card.input_size)
    original = clone_module(module).eval()
    eval_split = ds.evaluation(limit, seed=seed)
    top1_before = evaluate_top1(original, eval_split, card)[0]
    train_split = ds.train.subset(cfg.train_limit, seed=cfg.seed) if (recover and ds.train is not None) else None
    if recover and train_split is None:
        raise InputError(f"{data} has no train/ split for recovery training: give train/ and test/ folders "
                         "or pass --no-recover")

    @functools.cache  # a MAC/latency search prunes many candidates: decode the images once
    def grad_batches():
        split = (ds.train or eval_split).subset(256, seed=seed)
        return list(split.batches(64, mean=card.mean, std=card.std))

    @functools.cache
    def calibration():  # real images for the runtimes' INT8 calibration, one per call
        return [x[i:i + 1].numpy() for x, _ in grad_batches() for i in range(len(x))][:64]

    method = "sparsity" if sparsity is not None else ("channels" if goals else "blocks")
    if drop_blocks and goals:
        method = "blocks+channels"
    step_log, pruned_top1 = [], None
    current = module
    for i in range(1, steps + 1):
        step_path = out / f"step{i}.pt"
        if resume and (done := _saved_step(step_path)):  # step already done
            current, rec = done
            step_log.append(rec)
            pruned_top1 = step_log[0]["top1_pruned"]
            continue
        pruned_path = out / f"step{i}_pruned.pt"
        if resume and recover and (saved := _saved_step(pruned_path)):
            # this step's recovery was interrupted: continue it on the same pruned model (a
            # latency-aware or latency-target prune times candidates: a second search could pick
            # other widths than the ones the saved training state has)
            res_model, rec = saved
            pruned_top1 = rec["top1_pruned"] if pruned_top1 is None else pruned_top1
        else:
            frac = i / steps
            depth = {}
            if drop_blocks and (k := round(drop_blocks * frac) - round(drop_blocks * (i - 1) / steps)):
                from ..pruning.depth import drop_blocks as remove
                cost = (_block_latency(current, size, card, backends[0], threads[0], deploy_precision, calibration,
                                       prof if predicted else None) if latency_aware else None)
                d = remove(current, size, k, [x for x, _ in grad_batches()], keep=keep, latency=cost)
                current, depth = d.model, {"depth": d.to_dict()}
                if latency_aware:
                    depth["depth"]["latency_from"] = (f"{prof.name} (predicted)" if predicted else
                                                      f"{backends[0]} {deploy_precision.upper()}, {threads[0]} thread(s), here")
            alloc = {}
            if latency_aware and method != "blocks":  # widths change every step: measure the current model's layers again
                alloc["allocation"] = _allocate(current, size, multiple, importance, keep, backends[0], threads[0],
                                                deploy_precision, grad_batches)
            if method == "sparsity":
                res_model, info = sparsify(current, sparsity * frac), {"sparsity": round(sparsity * frac, 4)}
            elif ratio is not None:
                per_step = 1 - (1 - ratio) ** (1 / steps)
                outcome = prune_channels(current, size, per_step, importance=importance, global_pruning=global_pruning,
                                         channel_multiple=multiple, keep=keep, grad_batches=grad_batches, **alloc)
                res_model, info = outcome.model, outcome.to_dict()
            elif not goals:  # blocks only
                res_model, info = current, {}
            elif target_macs is not None:
                want = (1 - (1 - target_macs) * frac) * count_macs(original, size) / count_macs(current, size)
                if want >= 1:  # the removed blocks already meet the MAC goal
                    res_model, info = current, {"note": "the removed blocks already meet the MAC target: no channels pruned"}
                else:
                    outcome = prune_to_macs(current, size, min(want, 0.999), importance=importance,
                                            global_pruning=global_pruning, channel_multiple=multiple, keep=keep,
                                            grad_batches=grad_batches, **alloc)
                    res_model, info = outcome.model, outcome.to_dict()
            else:
                res_model, info = _prune_to_latency(current, card, size, target_latency_ms, backends[0], threads[0],
                                                    profile=prof if predicted else None,
                                                    precision=deploy_precision, calibration=calibration,
                                                    importance=importance, global_pruning=global_pruning,
                                                    channel_multiple=multiple, keep=keep, grad_batches=grad_batches,
                                                    already_pruned=bool(depth), **alloc)
            if alloc:
                a = alloc["allocation"]
                info["allocation"] = (f"latency-aware: lone-convolution table measured on {a.backend} {a.precision.upper()}, "
                                      f"{a.threads} thread(s), "
                                      f"on this machine; {len(a.steps)} greedy steps")
            if skip_if_same_as is not None and steps == 1 and method == "channels":
                if _widths(res_model) == _widths(load_model(skip_if_same_as).module):
                    raise SameWidths(f"the same widths as {skip_if_same_as}")
            top1 = evaluate_top1(res_model, eval_split, card)[0]
            pruned_top1 = top1 if pruned_top1 is None else pruned_top1
            rec = {"step": i, **depth, **info, "top1_pruned": top1}
            if recover:
                save_model(res_model, card, pruned_path)
                atomic_write_json(pruned_path.with_suffix(".json"), rec)
        if recover:
            objective = (_distill(res_model, original, card, temperature, alpha) if kd
                         else Supervised(res_model, cfg.label_smoothing))
            tr = train(objective, card, train_split, eval_split, cfg, out / f"train_step{i}", resume=resume,
                       progress=progress)
            res_model.eval()
            rec["top1_recovered"] = tr.history[-1]["eval_top1"]
        current = res_model
        save_model(current, card, step_path)
        atomic_write_json(step_path.with_suffix(".json"), rec)
        pruned_path.unlink(missing_ok=True)
        pruned_path.with_suffix(".json").unlink(missing_ok=True)
        step_log.append(rec)
    current.eval()
    top1_final = evaluate_top1(current, eval_split, card)[0]
    if drop_blocks:
        goals["drop_blocks"] = drop_blocks
    pcard = card.with_(source=f"{card.source}; edgekit prune ({method}, {goals})",
                       notes={**card.notes, "pruned": {k: v for k, v in goals.items()}})
    model_path = save_model(current, pcard, out / "model.pt")
    summary = {"goal": goals, "importance": importance, "global": global_pruning, "channel_multiple": multiple,
               "allocation": ("none (whole blocks removed, no channels pruned"
                              + ("; blocks chosen by added divergence per ms saved)" if latency_aware else ")"))
               if method == "blocks"
               else "latency-aware (measured per-layer table)" if latency_aware
               else ("global" if global_pruning else "per-layer") + " magnitude ranking",
               "macs_before": count_macs(original, size), "macs_after": count_macs(current, size),
               "params_before": count_params(original), "params_after": count_params(current)}
    if method == "sparsity":
        from ..pruning.unstructured import compressed_size, sparsity as measure
        summary["sparsity"] = measure(current)["overall"]
        summary["state_dict_bytes"], summary["state_dict_gzip_bytes"] = compressed_size(current)
        summary["state_dict_gzip_bytes_unpruned"] = compressed_size(original)[1]
    variants = {"unpruned": original, "pruned": current}
    if compare_rounding and method == "channels" and multiple > 1:
        variants[f"pruned, widths not rounded (multiple 1 instead of {multiple})"] = _unrounded(
            original, size, summary["macs_after"] / summary["macs_before"], importance, global_pruning, keep,
            grad_batches)
    extra = ["fp32"] if latency_precisions is None else list(latency_precisions)
    latency = measure_latency(variants, card, out / ".work", backends, threads, timing,
                              precisions=list(dict.fromkeys([*extra, deploy_precision])), calibration=calibration)
    if target_latency_ms is not None and not predicted:
        # the search timed candidates briefly; the table above is the longer, final measurement
        final = next(x for x in latency if x["variant"] == "pruned" and x["backend"] == backends[0]
                     and x["precision"] == deploy_precision and x["threads"] == threads[0])
        summary["target_latency"] = {"target_ms": target_latency_ms, "search_ms": step_log[-1].get("measured_ms"),
                                     "final_ms": final["latency_ms_p50"],
                                     "met": final["latency_ms_p50"] <= target_latency_ms,
                                     "on": f"{backends[0]} {deploy_precision.upper()}, {threads[0]} thread(s)"}
    result = PruneResult(out, model_path, method, top1_before, pruned_top1 if pruned_top1 is not None else top1_final,
                         top1_final, len(eval_split), summary, step_log, latency)
    atomic_write_json(out / "prune.json", result.to_dict())
    atomic_write_text(out / "report.md", _report(result))
    shutil.rmtree(out / ".work", ignore_errors=True)
    return result


def _saved_step(path: Path):
    """(module, record) of a step checkpoint and its JSON record, or None if either is missing."""
    from ..models import load_model

    if not (path.exists() and path.with_suffix(".json").exists()):
        return None
    return load_model(path).module, json.loads(path.with_suffix(".json").read_text())


def _allocate(model, size, multiple, importance, keep, backend, threads, precision, grad_batches):
    from ..pruning.latency_aware import allocate
    from ..pruning.structured import criterion, ignored_layers, risky_layers

    return allocate(model, size, multiple, importance=criterion(importance),
                    ignored=ignored_layers(model, keep, risky_layers(model, size)), backend=backend, threads=threads,
                    precision=precision, grad_batches=grad_batches if importance == "taylor" else None)


def _distill(student, teacher, card, temperature, alpha):
    from .distill import DistillObjective
    return DistillObjective(student, teacher, temperature=temperature, alpha=alpha, input_size=tuple(card.input_size))


def _unrounded(original, size, mac_fraction, importance, global_pruning, keep, grad_batches):
    from ..pruning import prune_to_macs
    return prune_to_macs(original, size, mac_fraction, importance=importance, global_pruning=global_pruning,
                         channel_multiple=1, keep=keep, grad_batches=grad_batches).model


def _runner(module: nn.Module, card, work: Path, name: str, backend: str, threads: int, precision: str = "fp32",
            calibration=None):
    """A runner of `module` on `backend` from its ONNX export (INT8: the backend's own PTQ)."""
    from ..backends import get_backend
    from ..exporters.onnx import export_onnx

    work.mkdir(parents=True, exist_ok=True)
    onnx_path = work / f"{name}.onnx"
    if not onnx_path.exists():
        export_onnx(module.eval(), card, onnx_path)
    return get_backend(backend).onnx_runner(onnx_path, threads=threads, precision=precision,
                                            calibration=calibration() if callable(calibration) else calibration)


def measure_latency(variants: dict[str, nn.Module], card, work: Path, backends: Sequence[str],
                    threads: Sequence[int], timing=None, precisions: Sequence[str] = ("fp32",),
                    calibration=None) -> list[dict]:
    """Batch-1 latency of every variant on every (backend, precision, threads), the variants
    interleaved in one run. INT8 is each runtime's own PTQ on `calibration` (real images, or a
    function returning them)."""
    import numpy as np

    from ..bench import TimingConfig, time_runners

    timing = timing or TimingConfig(warmup=10, iters=200, passes=5, throughput_iters=2)
    sample = np.random.default_rng(0).standard_normal((1, *card.input_size)).astype(np.float32)
    rows = []
    for b in backends:
        for p in precisions:
            for t in threads:
                runners = {n: _runner(m, card, work, f"v{i}", b, t, p, calibration)
                           for i, (n, m) in enumerate(variants.items())}
                times = time_runners(list(runners.values()), sample, timing)
                base = times[0].latency_ms_p50
                rows += [{"variant": n, "backend": b, "threads": t, "precision": p,
                          "latency_ms_p50": round(tm.latency_ms_p50, 3), "latency_ms_p90": round(tm.latency_ms_p90, 3),
                          "speedup_vs_unpruned": round(base / tm.latency_ms_p50, 3)}
                         for (n, _), tm in zip(runners.items(), times)]
    return rows


def _latency_of(variants: dict[str, nn.Module], card, work: Path, backend: str, threads: int, precision: str,
                calibration, profile=None) -> dict[str, float]:
    """Batch-1 ms of each variant: predicted by `profile`'s latency model when given (a device
    that is not this host), else timed here on `backend` (the variants interleaved)."""
    from ..bench import TimingConfig

    if profile is not None:
        from ..exporters.onnx import export_onnx
        from ..latency import predict
        return {n: predict(export_onnx(m.eval(), card, work / f"{n}.onnx"), profile, batch=1).latency_ms
                for n, m in variants.items()}
    timing = TimingConfig(warmup=5, iters=60, passes=3, throughput_iters=1)
    rows = measure_latency(variants, card, work / "_".join(variants)[:60], [backend], [threads], timing,
                           precisions=[precision], calibration=calibration)
    return {r["variant"]: r["latency_ms_p50"] for r in rows}


def _block_latency(model: nn.Module, size, card, backend: str, threads: int, precision: str, calibration,
                   profile=None) -> Callable[[list[str]], dict[str, float]]:
    """For pruning.depth.drop_blocks: ms each candidate block's removal saves, from one variant
    per group of identical blocks (all of the group removed, against the full model)."""
    import tempfile

    from ..pruning.depth import block_groups

    def saved(names: list[str]) -> dict[str, float]:
        groups = block_groups(model, size, names)
        variants = {"full": model}
        for k, g in enumerate(groups):
            v = clone_module(model)
            for n in g:
                v.set_submodule(n, nn.Identity())
            variants[f"g{k}"] = v
        with tempfile.TemporaryDirectory() as tmp:
            ms = _latency_of(variants, card, Path(tmp), backend, threads, precision, calibration, profile)
        return {n: (ms["full"] - ms[f"g{k}"]) / len(g) for k, g in enumerate(groups) for n in g}
    return saved


def _prune_to_latency(model, card, size, target_ms, backend, threads, profile=None, precision="fp32",
                      calibration=None, already_pruned=False, **kw):
    """Bisect the channel ratio until the batch-1 latency meets the target: measured on `backend`
    in `precision` here, or, for a `profile` that is not this host, predicted by its latency
    model (at the profile's preferred precision). Keeps the least-pruned candidate that meets it.
    Unreachable targets are refused up front, and so is a model that already meets the target,
    unless it is `already_pruned` (blocks removed this step): then no channels go."""
    import tempfile

    from ..pruning import prune_channels
    from ..pruning.structured import risky_layers

    kw["risky"] = risky_layers(model, size)
    if profile is not None:
        threads = profile.threads[0]
    where = f"{profile.name} (predicted)" if profile is not None else f"{backend} {precision.upper()}"
    with tempfile.TemporaryDirectory() as tmp:
        def latency(m, name):
            return _latency_of({name: m}, card, Path(tmp), backend, threads, precision, calibration, profile)[name]

        base = latency(model, "base")
        kind = "predicted_ms" if profile is not None else "measured_ms"
        if base <= target_ms and already_pruned:
            return model, {kind: base, "unpruned_ms": base, "backend": where, "threads": threads,
                           "note": "the removed blocks already meet the latency target: no channels pruned"}
        if base <= target_ms:
            raise TargetAlreadyMet(f"the model already runs in {base:.3f} ms (<= --target-latency-ms {target_ms}) on "
                             f"{where} at {threads} thread(s): nothing to prune")
        most = prune_channels(model, size, 0.85, **kw)
        floor = latency(most.model, "floor")
        if floor > target_ms:
            raise TargetUnreachable(
                f"--target-latency-ms {target_ms} is not reachable on {where} at {threads} thread(s): "
                f"unpruned {base:.3f} ms, with 85% of the prunable channels removed still {floor:.3f} ms "
                "(per-layer overhead dominates at small widths); ask for more, or add --drop-blocks N", floor_ms=floor)
        lo, hi, best = 0.0, 0.85, (most, floor)
        for k in range(6):
            mid = (lo + hi) / 2
            outcome = prune_channels(model, size, mid, **kw)
            ms = latency(outcome.model, f"c{k}")
            log.info("ratio %.3f -> %.3f ms", mid, ms)
            if ms <= target_ms:
                hi = mid
                if mid < best[0].ratio:
                    best = (outcome, ms)
            else:
                lo = mid
    outcome, ms = best
    return outcome.model, {**outcome.to_dict(), kind: ms, "unpruned_ms": base, "backend": where,
                           "threads": threads}


def _report(r: PruneResult) -> str:
    s = r.summary
    lines = [f"# edgekit prune ({r.method}, goal {s['goal']})", "",
             f"Accuracy on {r.eval_images} held-out images (torch):", "", "| model | top-1 % |", "|---|---|",
             f"| unpruned | {r.top1_before:.2f} |", f"| pruned, before recovery | {r.top1_pruned:.2f} |",
             f"| final | {r.top1_final:.2f} |", "",
             f"MACs {s['macs_before'] / 1e6:.2f}M -> {s['macs_after'] / 1e6:.2f}M "
             f"({s['macs_before'] / max(s['macs_after'], 1):.2f}x fewer); params {s['params_before']:,} -> "
             f"{s['params_after']:,}; channel multiple {s['channel_multiple']}; widths: {s['allocation']}."]
    lines += [f"Step {x['step']}: {x['allocation']}." for x in r.steps if x.get("allocation")]
    for x in r.steps:
        if (d := x.get("depth")):
            how = "changes the outputs least"
            if d.get("latency_saved_ms"):
                prices = {}
                for name, ms in d["latency_saved_ms"].items():
                    prices.setdefault(ms, []).append(name)
                how = (f"adds least divergence per ms it saves (ms saved per block, {d['latency_from']}: "
                       + "; ".join(f"{', '.join(ns)}: {ms:.4f}" for ms, ns in prices.items()) + ")")
            lines.append(f"Step {x['step']}: removed {len(d['dropped_blocks'])} of {d['candidate_blocks']} removable "
                         f"blocks ({', '.join(d['dropped_blocks'])}), chosen one at a time as the block whose removal {how}.")
    if (t := s.get("target_latency")):
        lines += ["", f"Latency target {t['target_ms']} ms on {t['on']}: **{'met' if t['met'] else 'NOT met'}** in the "
                  f"final measurement below ({t['final_ms']:.3f} ms; the search measured {t['search_ms'] or float('nan'):.3f} ms). "
                  "Timings on a busy machine drift: compare the ratios, measured in the same run."]
    if r.method == "sparsity":
        lines += ["", f"Unstructured: {100 * s['sparsity']:.1f}% of conv/linear weights are zero. The parameter count "
                  "and MACs do not change, and ONNX Runtime / OpenVINO run dense kernels, so latency does not either "
                  f"(measured below). What shrinks is a compressed file: state_dict gzip "
                  f"{s['state_dict_gzip_bytes_unpruned'] / 1e6:.2f} MB -> {s['state_dict_gzip_bytes'] / 1e6:.2f} MB "
                  f"(raw {s['state_dict_bytes'] / 1e6:.2f} MB either way)."]
    lines += ["", "Measured batch-1 latency (interleaved passes; not a MAC ratio; INT8 rows are each runtime's own "
              "post-training quantization of the variant, calibrated on 64 of your images):", "",
              "| variant | runtime | precision | threads | p50 ms | p90 ms | speed-up vs unpruned |",
              "|---|---|---|---|---|---|---|"]
    lines += [f"| {x['variant']} | {x['backend']} | {x.get('precision', 'fp32')} | {x['threads']} | {x['latency_ms_p50']:.3f} | "
              f"{x['latency_ms_p90']:.3f} | {x['speedup_vs_unpruned']:.2f}x |" for x in r.latency]
    return "\n".join(lines) + "\n"
