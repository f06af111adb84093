"""Why `time_runners` times multi-thread runners one block each: two ONNX Runtime sessions (the
shared ResNet-56 and ResNet-20, FP32, batch 1, 2 threads each) in one process, alternating in
blocks of 10, 50 and 200 calls, against each session timed alone. After the other session ran, a
session's second thread needs tens of calls before it helps again, so fine interleaving measures
a state a deployed model (its process to itself) never sees.

Writes benchmarks/results/session_switch.{json,md}. A few minutes on 2 cores; run nothing else.

    python benchmarks/session_switch.py [--calls 600] [--rounds 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _common import RESULTS, require_shared
from timing_groups import files

from edgekit._io import atomic_write_json, atomic_write_text
from edgekit.backends.onnxruntime import OrtRunner
from edgekit.env import environment

BLOCKS = (10, 50, 200)


def _median_ms(times: list[float]) -> float:
    return round(float(np.median(times)) * 1e3, 3)


def one_round(runners: list, x: np.ndarray, calls: int) -> dict:
    got = {}
    for block in BLOCKS:
        times: list[list[float]] = [[] for _ in runners]
        for _ in range(max(1, calls // block)):
            for i, r in enumerate(runners):
                for _ in range(block):
                    t0 = time.perf_counter()
                    r(x)
                    times[i].append(time.perf_counter() - t0)
        got[f"blocks_{block}"] = [_median_ms(t) for t in times]
    alone = []
    for r in runners:
        for _ in range(100):  # wake its thread pool again after the other session
            r(x)
        t = []
        for _ in range(calls):
            t0 = time.perf_counter()
            r(x)
            t.append(time.perf_counter() - t0)
        alone.append(_median_ms(t))
    got["alone"] = alone
    return got


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=600, help="timed calls per session and way")
    ap.add_argument("--rounds", type=int, default=3, help="repeats of all ways; each figure is the median")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    require_shared()
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    names = ["ResNet-56", "ResNet-20"]
    runners = [OrtRunner(files(d)[0], precision="fp32", threads=args.threads) for d in (56, 20)]
    one_t = [OrtRunner(files(d)[0], precision="fp32", threads=1) for d in (56, 20)]
    for r in runners + one_t:
        for _ in range(50):
            r(x)
    rounds = [one_round(runners, x, args.calls) for _ in range(args.rounds)]
    single = [one_round(one_t, x, args.calls)["alone"] for _ in range(args.rounds)]
    ways = [f"blocks_{b}" for b in BLOCKS] + ["alone"]
    rows = []
    for i, name in enumerate(names):
        row = {"model": name, "threads": args.threads,
               **{f"{w}_ms": round(float(np.median([r[w][i] for r in rounds])), 3) for w in ways},
               "alone_1_thread_ms": round(float(np.median([s[i] for s in single])), 3)}
        rows.append(row)
    env = environment(calls=args.calls, rounds=args.rounds, threads=args.threads)
    atomic_write_json(RESULTS / "session_switch.json", {"rows": rows, "rounds": rounds, "environment": env})
    md = [f"# Two ONNX Runtime sessions at {args.threads} threads in one process: alternating blocks vs alone", "",
          "| model | " + " | ".join(f"blocks of {b} p50 ms" for b in BLOCKS) + f" | alone p50 ms | alone at 1 thread p50 ms |",
          "|---" * (len(BLOCKS) + 3) + "|"]
    md += [f"| {r['model']} | " + " | ".join(f"{r[f'blocks_{b}_ms']:.3f}" for b in BLOCKS)
           + f" | {r['alone_ms']:.3f} | {r['alone_1_thread_ms']:.3f} |" for r in rows]
    md += ["", f"FP32, batch 1, {args.calls} timed calls per session and way, median of {args.rounds} rounds "
           "(each round: blocks of 10, 50, 200, then each session alone after 100 untimed calls).",
           f"CPU {env['cpu']['model']}; onnxruntime {env['versions']['onnxruntime']}; {env['date']}.", ""]
    atomic_write_text(RESULTS / "session_switch.md", "\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
