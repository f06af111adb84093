"""Why `time_runners` times each runtime apart: the shared ResNet-20 and ResNet-56, FP32, batch 1,
on ONNX Runtime and OpenVINO at 1 and 2 threads, timed three ways in one process:

- alternating: one interleaved run over both runtimes' runners (edgekit before 2026-12-06);
- grouped: interleaved within a runtime, runtimes timed apart (`time_runners` on 2026-12-06
  until it timed multi-thread runners one block each, benchmarks/session_switch.py);
- alone: each runner timed by itself.

Writes benchmarks/results/timing_groups.{json,md}. A few minutes on 2 cores; run nothing else.

    python benchmarks/timing_groups.py [--iters 300] [--rounds 2]
"""

from __future__ import annotations

import argparse

import numpy as np
import openvino as ov
from _common import RESULTS, WORK, require_shared, weights

import edgekit
from edgekit._io import atomic_write_json, atomic_write_text
from edgekit.backends.onnxruntime import OrtRunner
from edgekit.backends.openvino import OvRunner
from edgekit.bench import TimingConfig, _time_group, time_runners
from edgekit.env import environment
from edgekit.exporters.onnx import export_onnx


def files(depth: int) -> tuple:
    folder = WORK / "timing_groups"
    onnx = folder / f"resnet{depth}.onnx"
    if not onnx.exists():
        loaded = edgekit.load_model(weights(depth), arch=f"cifar_resnet{depth}")
        export_onnx(loaded.module.eval(), loaded.card, onnx)
    xml = onnx.with_suffix(".xml")
    if not xml.exists():
        ov.save_model(ov.convert_model(str(onnx)), str(xml), compress_to_fp16=False)
    return onnx, xml


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=2, help="repeats of the three ways; each row keeps its median")
    args = ap.parse_args()
    require_shared()
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    cfg = TimingConfig(warmup=20, iters=args.iters, passes=6, throughput_iters=0)
    rows = []
    for threads in (1, 2):
        names, runners = [], []
        for depth in (56, 20):
            onnx, xml = files(depth)
            names += [(f"ResNet-{depth}", "onnxruntime"), (f"ResNet-{depth}", "openvino")]
            runners += [OrtRunner(onnx, precision="fp32", threads=threads),
                        OvRunner(xml, precision="fp32", threads=threads)]
        one = np.ascontiguousarray(x)
        got: dict[str, list[list[float]]] = {"alternating": [], "grouped": [], "alone": []}
        for _ in range(args.rounds):
            got["alternating"].append([t.latency_ms_p50 for t in _time_group(runners, one, one, cfg, None)])
            per = {}  # runners 0, 2 are ONNX Runtime, 1, 3 OpenVINO
            for idx in ((0, 2), (1, 3)):
                per.update(zip(idx, _time_group([runners[i] for i in idx], one, one, cfg, None)))
            got["grouped"].append([per[i].latency_ms_p50 for i in range(len(runners))])
            got["alone"].append([time_runners([r], x, cfg)[0].latency_ms_p50 for r in runners])
        for i, (model, backend) in enumerate(names):
            row = {"model": model, "runtime": backend, "threads": threads}
            for way, res in got.items():
                row[f"{way}_ms"] = round(float(np.median([r[i] for r in res])), 3)
            row["alternating_vs_alone"] = round(row["alternating_ms"] / row["alone_ms"], 2)
            row["grouped_vs_alone"] = round(row["grouped_ms"] / row["alone_ms"], 2)
            rows.append(row)
    env = environment(iters=args.iters, rounds=args.rounds, passes=cfg.passes)
    atomic_write_json(RESULTS / "timing_groups.json", {"rows": rows, "environment": env})
    md = ["# Timing ONNX Runtime and OpenVINO in one process: alternating vs grouped vs alone", "",
          "| model | runtime | threads | alternating p50 ms | grouped p50 ms | alone p50 ms | alternating / alone | grouped / alone |",
          "|---|---|---|---|---|---|---|---|"]
    md += [f"| {r['model']} | {r['runtime']} | {r['threads']} | {r['alternating_ms']:.3f} | {r['grouped_ms']:.3f} | "
           f"{r['alone_ms']:.3f} | {r['alternating_vs_alone']:.2f}x | {r['grouped_vs_alone']:.2f}x |" for r in rows]
    md += ["", f"FP32, batch 1, {args.iters} calls per row in 6 interleaved passes, median of {args.rounds} rounds "
           "(each round: alternating, grouped, alone).",
           f"CPU {env['cpu']['model']}; onnxruntime {env['versions']['onnxruntime']}, openvino "
           f"{env['versions']['openvino']}; {env['date']}.", ""]
    atomic_write_text(RESULTS / "timing_groups.md", "\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
