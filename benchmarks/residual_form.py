"""The residual form (`edgekit quantize --residual`) on OpenVINO and ONNX Runtime: the shared
ResNet-20, INT8 PTQ with unsigned activations, in the "rounded" form (a conv output entering a
residual add is quantized, as ONNX Runtime and TensorRT run it) and the "fused" form (it is not,
as OpenVINO's CPU plugin runs it). Each file is scored against its own fake-quant torch model
(mean absolute logit difference, top-1 agreement) and timed at batch 1, 1 thread, interleaved.

Writes benchmarks/results/residual_form.{json,md}. A few minutes on 2 cores.

    python benchmarks/residual_form.py [--limit 1000]
"""

from __future__ import annotations

import argparse
import copy

import numpy as np
import openvino as ov
import torch
from _common import CIFAR, RESULTS, WORK, require_shared, weights

import edgekit
from edgekit._io import atomic_write_json, atomic_write_text
from edgekit.backends.onnxruntime import OrtRunner
from edgekit.backends.openvino import OvRunner
from edgekit.bench import TimingConfig, time_runners
from edgekit.data import load_dataset
from edgekit.env import environment
from edgekit.exporters.qdq import export_qdq
from edgekit.quant import calibrate, plan, prepare


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=1000, help="test images")
    ap.add_argument("--iters", type=int, default=300)
    args = ap.parse_args()
    require_shared()
    loaded = edgekit.load_model(weights(20), arch="cifar_resnet20")
    card = loaded.card
    ds = load_dataset(CIFAR, input_size=tuple(card.input_size))
    calib = [x for x, _ in ds.calibration(512, seed=0).batches(64, mean=card.mean, std=card.std)]
    x = torch.cat([b for b, _ in ds.evaluation(args.limit, seed=0).batches(100, mean=card.mean, std=card.std)])
    work = WORK / "residual_form"
    work.mkdir(parents=True, exist_ok=True)
    rows, runners = [], []
    for form in ("rounded", "fused"):
        q = prepare(copy.deepcopy(loaded.module), plan(loaded.module, 8), unsigned=True, residual=form)
        calibrate(q, calib)
        q.eval()
        with torch.no_grad():
            ref = q(x).numpy()
        onnx_file = export_qdq(q, card, work / f"{form}.onnx", target="onnxruntime")
        xml = work / f"{form}.xml"  # as the OpenVINO backend writes it: the ONNX Runtime form, converted
        ov.save_model(ov.convert_model(str(onnx_file)), str(xml), compress_to_fp16=False)
        for runner in (OrtRunner(onnx_file, precision="int8", threads=1), OvRunner(xml, precision="int8", threads=1)):
            out = np.concatenate([runner(x[i:i + 1].numpy()) for i in range(len(x))])
            rows.append({"form": form, "runtime": runner.backend, "quantized_tensors": len(q.edgekit_quant["tensors"]),
                         "mean_abs_logit_diff": round(float(np.abs(out - ref).mean()), 5),
                         "agreement": round(float((out.argmax(1) == ref.argmax(1)).mean()), 4),
                         "executed": runner.executed})
            runners.append(runner)
    timed = time_runners(runners, x[:1].numpy(), TimingConfig(warmup=20, iters=args.iters, passes=6, throughput_iters=0))
    for row, t in zip(rows, timed):
        row["p50_ms"], row["p90_ms"] = round(t.latency_ms_p50, 3), round(t.latency_ms_p90, 3)
    env = environment(threads=[1])
    atomic_write_json(RESULTS / "residual_form.json", {"rows": rows, "environment": env, "args": vars(args)})
    md = ["# Residual form: what each runtime runs (ResNet-20, INT8 PTQ, unsigned activations)", "",
          "| form | runtime | quantized tensors | mean abs logit diff vs torch | top-1 agreement % | p50 / p90 ms | executed |",
          "|---|---|---|---|---|---|---|"]
    md += [f"| {r['form']} | {r['runtime']} | {r['quantized_tensors']} | {r['mean_abs_logit_diff']:.4f} | "
           f"{100 * r['agreement']:.2f} | {r['p50_ms']:.3f} / {r['p90_ms']:.3f} | {r['executed']} |" for r in rows]
    md += ["", f"{args.limit} test images; 512 calibration images (train split, seed 0); batch 1, 1 thread, "
           f"{args.iters} interleaved calls per row; OpenVINO with the f32 hint. CPU {env['cpu']['model']}; "
           f"onnxruntime {env['versions']['onnxruntime']}, openvino {env['versions']['openvino']}; {env['date']}.", ""]
    atomic_write_text(RESULTS / "residual_form.md", "\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
