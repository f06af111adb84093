"""Latency and throughput through any Runner: warm-up, interleaved passes, median and p90.

Shared machines are noisy: configurations compared in one run are timed interleaved
(A B A B ...) over several passes so a slow spell hits all of them, not one.

Interleaving stops at the runtime: runners of one runtime and thread count are a group, timed
interleaved with each other and apart from every other group. Two runtimes' thread pools in one
process disturb each other when their calls alternate at 2 threads: on a 2-core x86 host the
shared ResNet-20 on OpenVINO took 0.89 ms alternating with ONNX Runtime sessions, 0.54 ms
grouped, 0.59 alone (benchmarks/results/timing_groups.md).

At more than one thread even one runtime's sessions must not alternate: a multi-threaded ONNX
Runtime session needs tens of calls after another session ran before its second thread helps
again. ResNet-20 at 2 threads alternating with ResNet-56 every 10 calls ran 0.764 ms, as slow as
at 1 thread (0.763); every 50 calls 0.530; alone 0.464 (benchmarks/results/session_switch.md).
INT8 suffers more: ResNet-56 pruned to 14 blocks ran 0.51 ms in the pruning benchmark's 50-call
passes and 0.35 ms in blocks (uncommitted pruning runs). A deployed model has its process to itself, so multi-thread groups
time each runner in one block, warmed up just before it; drift between runners is then for whole
rounds of the caller to average (benchmarks/pruning.py --rounds).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import numpy as np

__all__ = ["TimingConfig", "Timing", "time_runners"]


@dataclass
class TimingConfig:
    warmup: int = 10           # calls per runner before the first timed pass
    iters: int = 100           # timed batch-1 calls per runner, split over passes
    passes: int = 5            # interleaved rounds
    throughput_batch: int = 32  # batch size for the throughput measurement
    throughput_iters: int = 10  # timed calls at that batch size, split over passes (0: none)


@dataclass
class Timing:
    latency_ms_p50: float
    latency_ms_p90: float
    latency_ms_mean: float
    throughput_ips: float
    iters: int
    warmup: int
    throughput_batch: int
    #: p50 of each part of a batch-1 call, where the runner times them apart (TensorRT: CUDA
    #: events for host->device copy, compute, device->host copy); latency_ms_* stay end to end
    split_ms_p50: dict[str, float] | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def time_runners(runners: Sequence[Callable[[np.ndarray], np.ndarray]], sample: np.ndarray,
                 cfg: TimingConfig | None = None,
                 progress: Callable[[], None] | None = None) -> list[Timing]:
    """Time each runner at batch 1 and at cfg.throughput_batch on the same real input.

    `sample` is one normalized image batch (N >= 1); batch-1 calls use its first image and
    throughput calls tile it to the throughput batch size.
    """
    cfg = cfg or TimingConfig()
    one = np.ascontiguousarray(sample[:1])
    reps = -(-cfg.throughput_batch // len(sample))
    big = np.ascontiguousarray(np.concatenate([sample] * reps)[: cfg.throughput_batch])
    groups: dict[tuple, list[int]] = {}
    for i, r in enumerate(runners):
        key = (getattr(r, "backend", type(r).__name__), getattr(r, "threads", None))
        groups.setdefault(key, []).append(i)
    out: list[Timing | None] = [None] * len(runners)
    for (_, threads), idx in groups.items():
        pooled = isinstance(threads, int) and threads > 1
        batches = [[i] for i in idx] if pooled else [idx]  # one block per runner: see the module docstring
        warm_s = 0.2 if pooled else 0.0  # long enough for the thread pool to be awake again
        for b in batches:
            for i, tm in zip(b, _time_group([runners[i] for i in b], one, big, cfg, progress, warm_s)):
                out[i] = tm
    return out  # type: ignore[return-value]


def _time_group(runners, one: np.ndarray, big: np.ndarray, cfg: TimingConfig,
                progress: Callable[[], None] | None, warm_s: float = 0.0) -> list[Timing]:
    """Warm up (cfg.warmup calls, and for at least `warm_s` seconds), then interleaved passes
    over runners that may share the process's cores."""
    lat: list[list[float]] = [[] for _ in runners]
    split: list[list[dict]] = [[] for _ in runners]
    thr: list[list[float]] = [[] for _ in runners]
    for r in runners:
        t_end = time.perf_counter() + warm_s
        for _ in range(cfg.warmup):
            r(one)
        while time.perf_counter() < t_end:
            r(one)
        if cfg.throughput_iters:
            r(big)
    per_pass = max(1, cfg.iters // cfg.passes)
    per_pass_thr = max(1, cfg.throughput_iters // cfg.passes) if cfg.throughput_iters else 0
    for _ in range(cfg.passes):
        for i, r in enumerate(runners):
            for _ in range(per_pass):
                t0 = time.perf_counter()
                r(one)
                lat[i].append(time.perf_counter() - t0)
                if getattr(r, "last_split_ms", None):
                    split[i].append(r.last_split_ms)
            for _ in range(per_pass_thr):
                t0 = time.perf_counter()
                r(big)
                thr[i].append(time.perf_counter() - t0)
            if progress:
                progress()
    out = []
    for times, big_times, parts in zip(lat, thr, split):
        ms = np.array(times) * 1e3
        out.append(Timing(
            latency_ms_p50=float(np.percentile(ms, 50)),
            latency_ms_p90=float(np.percentile(ms, 90)),
            latency_ms_mean=float(ms.mean()),
            throughput_ips=float(cfg.throughput_batch / np.median(big_times)) if big_times else float("nan"),
            iters=len(times), warmup=cfg.warmup, throughput_batch=cfg.throughput_batch,
            split_ms_p50={k: float(np.median([p[k] for p in parts])) for k in parts[0]} if parts else None,
        ))
    return out
