"""Conv outputs in ONNX Runtime's INT8 form, on a MobileNetV3 (HardSwish, squeeze-excite): with a
quantizer on every INT8 conv output that a float op consumes (what `edgekit quantize` does for ONNX
Runtime), ONNX Runtime runs those convs as QLinearConv; without one, it dequantizes their weights
and convolves in float. Both placements from the same trained model, PTQ on the same calibration
images; each file scored on the test images through ONNX Runtime (top-1, and agreement with its
own fake-quant torch model), with the float ONNX as the reference, timed at batch 1, 1 thread,
interleaved.

The model: the zoo's `cifar_mobilenet_v3_small` trained here from random init on the CIFAR-10 JPEG
copy (`--epochs`, resumable under benchmarks/work/conv_outputs/). Writes
benchmarks/results/conv_outputs.{json,md}. About 15 minutes on 2 cores.

    python benchmarks/conv_outputs.py [--epochs 8] [--limit 0]
"""

from __future__ import annotations

import argparse
import copy

import numpy as np
import torch
from _common import CIFAR, RESULTS, WORK, require_shared

import edgekit
from edgekit._io import atomic_write_json, atomic_write_text
from edgekit.backends.onnxruntime import OrtRunner
from edgekit.bench import TimingConfig, time_runners
from edgekit.data import load_dataset
from edgekit.env import environment
from edgekit.exporters.onnx import export_onnx
from edgekit.exporters.qdq import export_qdq
from edgekit.quant import calibrate, plan, prepare
from edgekit.stages import finetune
from edgekit.train import TrainConfig

ARCH = "cifar_mobilenet_v3_small"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--limit", type=int, default=0, help="test images (0: all 10,000)")
    ap.add_argument("--iters", type=int, default=300)
    args = ap.parse_args()
    require_shared()
    work = WORK / "conv_outputs"
    cfg = TrainConfig(epochs=args.epochs, batch_size=128, lr=0.05, warmup_epochs=1.0, seed=0)
    trained = finetune(ARCH, data=CIFAR, out=work / "train", num_classes=10, config=cfg, resume=True)
    loaded = edgekit.load_model(trained.last_path)
    card = loaded.card
    ds = load_dataset(CIFAR, input_size=tuple(card.input_size))
    calib = [x for x, _ in ds.calibration(512, seed=0).batches(64, mean=card.mean, std=card.std)]
    test = ds.evaluation(args.limit or None, seed=0)
    batches = list(test.batches(200, mean=card.mean, std=card.std))
    x = torch.cat([b for b, _ in batches])
    y = torch.cat([t for _, t in batches]).numpy()

    def scored(runner, ref=None) -> dict:
        out = np.concatenate([runner(b.numpy()) for b, _ in batches])
        row = {"top1": round(100 * float((out.argmax(1) == y).mean()), 2), "executed": runner.executed}
        if ref is not None:
            row["agreement"] = round(100 * float((out.argmax(1) == ref.argmax(1)).mean()), 2)
        return row

    float_file = export_onnx(loaded.module.eval(), card, work / "float.onnx")
    runners = [OrtRunner(float_file, precision="fp32", threads=1)]
    rows = [{"model": "float (FP32 ONNX)", "quantized_tensors": 0, **scored(runners[0])}]
    for label, conv_outputs in (("INT8, conv outputs rounded (ONNX Runtime form)", True),
                                ("INT8, quantizers on conv inputs only", False)):
        q = prepare(copy.deepcopy(loaded.module), plan(loaded.module, 8), unsigned=True, residual="rounded",
                    conv_outputs=conv_outputs)
        calibrate(q, calib)
        q.eval()
        with torch.no_grad():
            ref = torch.cat([q(b) for b, _ in batches]).numpy()
        runner = OrtRunner(export_qdq(q, card, work / f"int8_{int(conv_outputs)}.onnx", target="onnxruntime"),
                           precision="int8", threads=1)
        runners.append(runner)
        rows.append({"model": label, "quantized_tensors": len(q.edgekit_quant["tensors"]),
                     "torch_fakequant_top1": round(100 * float((ref.argmax(1) == y).mean()), 2),
                     **scored(runner, ref)})
    timed = time_runners(runners, x[:1].numpy(), TimingConfig(warmup=20, iters=args.iters, passes=6,
                                                              throughput_iters=0))
    for row, t in zip(rows, timed):
        row["p50_ms"], row["p90_ms"] = round(t.latency_ms_p50, 3), round(t.latency_ms_p90, 3)
        row["speedup_vs_float"] = round(timed[0].latency_ms_p50 / t.latency_ms_p50, 2)
    env = environment(threads=[1])
    atomic_write_json(RESULTS / "conv_outputs.json", {"rows": rows, "environment": env, "args": vars(args),
                                                       "float_top1_torch": trained.history[-1]["eval_top1"]})
    md = [f"# Conv outputs in ONNX Runtime's INT8 form ({ARCH}, {args.epochs} epochs from random init, INT8 PTQ)", "",
          "| model | quantized tensors | top-1 % (ONNX Runtime) | agreement with its torch model % | "
          "p50 / p90 ms | speed-up vs float | executed |",
          "|---|---|---|---|---|---|---|"]
    md += [f"| {r['model']} | {r['quantized_tensors']} | {r['top1']:.2f} | {r.get('agreement', '-')} | "
           f"{r['p50_ms']:.3f} / {r['p90_ms']:.3f} | {r['speedup_vs_float']:.2f}x | {r['executed']} |" for r in rows]
    md += ["", f"{len(y)} test images; 512 calibration images (train split, seed 0); unsigned activations, rounded "
           f"residuals; batch 1, 1 thread, {args.iters} interleaved calls per row, median and p90. CPU "
           f"{env['cpu']['model']}; onnxruntime {env['versions']['onnxruntime']}, torch {env['versions']['torch']}; "
           f"{env['date']}.", ""]
    atomic_write_text(RESULTS / "conv_outputs.md", "\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
