"""Every runtime x precision x threads for the shared ResNet-20 and ResNet-56 on the full
CIFAR-10 JPEG test set (10,000 images). Writes benchmarks/results/backends.{json,md}.

    python benchmarks/backends.py [--limit N] [--iters N]
"""

from __future__ import annotations

import argparse
import json

from _common import CIFAR, RESULTS, WORK, require_shared, weights

import edgekit
from edgekit._io import atomic_write_json, atomic_write_text
from edgekit.bench import TimingConfig
from edgekit.report import render_markdown


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--limit", type=int, default=None, help="evaluation images (default: all 10,000)")
    ap.add_argument("--iters", type=int, default=300, help="timed batch-1 calls per row")
    ap.add_argument("--depths", default="20,56")
    args = ap.parse_args()
    require_shared()
    timing = TimingConfig(warmup=20, iters=args.iters, passes=6, throughput_batch=32, throughput_iters=30)
    report, records = ["# Backends benchmark: shared CIFAR ResNets, CIFAR-10 JPEG test set", ""], []
    for depth in map(int, args.depths.split(",")):
        res = edgekit.benchmark(weights(depth), arch=f"cifar_resnet{depth}", data=CIFAR,
                                out=WORK / f"backends_resnet{depth}",
                                backends="torch,onnxruntime,openvino,tensorrt",
                                precisions="fp32,fp16,int8", threads="1,2", limit=args.limit,
                                calibration_images=300, timing=timing)
        env = res.environment
        rows = [r for r in res.rows if r.status != "unsupported"]
        records.append({"model": f"cifar_resnet{depth}", "rows": [{**r.to_dict(), **{
            k: r.details.get(k) for k in ("executed", "reason", "top5", "max_abs_diff", "images")}}
            for r in rows], "environment": env})
        base = {r.threads: r.latency_ms_p50 for r in rows if (r.backend, r.precision) == ("torch", "fp32")}
        report += [render_markdown(rows, title=f"ResNet-{depth} ({env['eval_images']} images)"), "",
                   "Speed-up over torch eager FP32 at the same thread count (p50 ratio, same run):", ""]
        report += [f"- {r.backend} {r.precision} x{r.threads}: {base[r.threads] / r.latency_ms_p50:.2f}x"
                   for r in rows if r.status == "ok" and r.latency_ms_p50 and base.get(r.threads)]
        report.append("")
    env = records[0]["environment"]
    report += ["## Environment", "", f"- CPU: {env['cpu']['model']}, ISA {', '.join(env['cpu']['isa'])}, "
               f"{env['cpu']['affinity_cores']} cores available",
               "- versions: " + ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v),
               f"- OpenVINO default CPU precision: {env.get('openvino_default_precision')}; fp32 rows "
               "compiled with the f32 hint",
               f"- timing: {json.dumps(env['timing'])}; latency at batch 1, configurations interleaved",
               f"- date: {env['date']}", ""]
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_json(RESULTS / "backends.json", records)
    atomic_write_text(RESULTS / "backends.md", "\n".join(report))
    print("\n".join(report))


if __name__ == "__main__":
    main()
