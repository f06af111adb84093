"""Why a deployed file disagrees with its fake-quant model: the QAT artifacts of
benchmarks/quantization.py, each scored against its own fake-quant torch model.

- ONNX Runtime: `model_<p>.onnx` (UINT8 activations; post-ReLU tensors saturate at 255 steps
  where the torch grid clips at 127) against `model_<p>_tensorrt.onnx` (signed INT8, the torch
  grid exactly), both run on ONNX Runtime.
- OpenVINO: the IR compiled with the CPU's default inference precision (bf16 on this host) and
  with an f32 hint; their batch-1 latency at 1 thread, timed interleaved (`--iters 0`: untimed).
- Two references: the torch model as trained (float biases, checkpoints before the INT32 bias
  grid became the default) and the same weights with each bias on the INT32 grid
  in_scale * w_scale that the ONNX Runtime file (and the OpenVINO IR converted from it) holds.
- OpenVINO once more with every FakeQuantize output exposed: that stops its CPU plugin from
  fusing a convolution, its output quantizer and the residual add that follows, so the row
  shows what the fusion itself changes.
- Where the flips are: the reference's top-2 logit margin on the images a file flips, against
  all images.

Needs the run folders of benchmarks/quantization.py (benchmarks/work/quant/*_kd). Writes
benchmarks/results/agreement.{json,md}.

    python benchmarks/agreement.py [--limit 3000]
"""

from __future__ import annotations

import argparse
import copy
import tempfile
from pathlib import Path

import numpy as np
import torch
from _common import CIFAR, RESULTS, WORK, require_shared

import edgekit
from edgekit._io import atomic_write_json, atomic_write_text
from edgekit.backends.onnxruntime import OrtRunner
from edgekit.backends.openvino import OvRunner, default_inference_precision, executed_precision
from edgekit.bench import TimingConfig, time_runners
from edgekit.data import load_dataset
from edgekit.env import environment
from edgekit.quant import link_bias_grid


def _unfused_ir(xml: Path, out: Path) -> Path:
    """The IR with every FakeQuantize output also a model output (logits stay output 0)."""
    import openvino as ov

    model = ov.Core().read_model(str(xml))
    model.add_outputs([op.output(0) for op in model.get_ordered_ops() if op.get_type_name() == "FakeQuantize"])
    ov.save_model(model, str(out), compress_to_fp16=False)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=3000, help="test images")
    ap.add_argument("--iters", type=int, default=600, help="timed calls per OpenVINO runner")
    args = ap.parse_args()
    require_shared()
    folders = sorted(f for f in (WORK / "quant").glob("*_kd") if (f / "quantize.json").exists())
    if not folders:
        raise SystemExit("no QAT run folders under benchmarks/work/quant: run benchmarks/quantization.py first")
    rows = []
    tmp = tempfile.mkdtemp(prefix="edgekit-agreement-")
    for folder in folders:
        loaded = edgekit.load_model(folder / "model.pt")
        card, prec = loaded.card, loaded.card.notes["quantization"]
        test = load_dataset(CIFAR, input_size=card.input_size).evaluation(args.limit)
        xs, ys = zip(*test.batches(100, mean=card.mean, std=card.std))
        x, y = torch.cat(xs), torch.cat(ys).numpy()
        grid = copy.deepcopy(loaded.module)
        link_bias_grid(grid)
        with torch.no_grad():
            trained = loaded.module.eval()(x).numpy().argmax(1)
            logits = grid.eval()(x).numpy()
        ref, top2 = logits.argmax(1), np.sort(logits, 1)[:, -2:]
        margin = top2[:, 1] - top2[:, 0]
        runners = {"onnxruntime, ORT-form file (UINT8)": OrtRunner(folder / f"model_{prec}.onnx", precision=prec, threads=1)}
        if (folder / f"model_{prec}_tensorrt.onnx").exists():
            runners["onnxruntime, TensorRT-rules file (INT8)"] = OrtRunner(
                folder / f"model_{prec}_tensorrt.onnx", precision=prec, threads=1)
        # the CPU's default hint (bf16 here) against f32, whatever edgekit picks for this precision
        xml = folder / f"model_{prec}_openvino.xml"
        ov = {None: OvRunner(xml, precision=prec, threads=1, hint=default_inference_precision()),
              "f32": OvRunner(xml, precision=prec, threads=1, hint="f32")}
        runners.update({f"openvino, {'default' if h is None else h + ' hint'}": r for h, r in ov.items()})
        runners["openvino, f32 hint, FakeQuantize outputs exposed (unfused)"] = OvRunner(
            _unfused_ir(xml, Path(tmp) / f"{folder.name}.xml"), precision=prec, threads=1, hint="f32")
        ov_ms = {}
        if args.iters:
            timed = time_runners(list(ov.values()), x[:1].numpy(), TimingConfig(warmup=20, iters=args.iters, passes=6,
                                                                                throughput_iters=0))
            ov_ms = dict(zip(ov, timed))
        for name, r in runners.items():
            pred = np.concatenate([r(x[i:i + 100].numpy()) for i in range(0, len(x), 100)]).argmax(1)
            flips = pred != ref
            row = {"model": folder.name, "precision": prec, "runtime": name, "images": len(y),
                   "agreement_as_trained": round(100 * float((pred == trained).mean()), 2),
                   "agreement": round(100 * float((pred == ref).mean()), 2),
                   "top1": round(100 * float((pred == y).mean()), 2), "flips": int(flips.sum()),
                   "median_margin_all": round(float(np.median(margin)), 3),
                   "median_margin_flipped": round(float(np.median(margin[flips])), 3) if flips.any() else None,
                   "flips_in_lowest_5pct_margins": int((margin[flips] <= np.quantile(margin, 0.05)).sum())}
            if name.startswith("openvino") and "unfused" not in name:
                hint = None if "default" in name else "f32"
                row["executed"] = executed_precision(ov[hint].compiled)
                if ov_ms:
                    row["p50_ms_1t"] = round(ov_ms[hint].latency_ms_p50, 3)
            rows.append(row)
            print(row, flush=True)
    env = environment(args=vars(args))
    atomic_write_json(RESULTS / "agreement.json", {"rows": rows, "environment": env})
    md = ["# Agreement of deployed files with their fake-quant model", "",
          f"QAT artifacts of benchmarks/quantization.py; top-1 agreement with the fake-quant torch model on "
          f"{args.limit} test images, as trained (float biases) and with its biases on the INT32 grid "
          "in_scale * w_scale that the ONNX Runtime file holds (edgekit's default since); flips, top-1 "
          "and margins against the latter. "
          + (f"OpenVINO latency: batch 1, 1 thread, {args.iters} calls, interleaved." if args.iters else
             "Not timed (--iters 0).")
          + " Margin: the fake-quant model's top-1 minus top-2 logit; \"lowest 5%\": flips among the 5% of "
          "images with the smallest margin.", "",
          "| run | precision | runtime / file | agreement % as trained | agreement % bias grid | top-1 % | flips | "
          "median margin: all / flipped | flips in lowest 5% margins | OpenVINO executed | p50 ms |",
          "|---|---|---|---|---|---|---|---|---|---|---|"]
    md += [f"| {r['model']} | {r['precision']} | {r['runtime']} | {r['agreement_as_trained']:.2f} | "
           f"{r['agreement']:.2f} | {r['top1']:.2f} | "
           f"{r['flips']} | {r['median_margin_all']:.3f} / {r['median_margin_flipped'] if r['median_margin_flipped'] is not None else '-'} | "
           f"{r['flips_in_lowest_5pct_margins']} of {r['flips']} | "
           f"{r.get('executed', '-')} | {r.get('p50_ms_1t', '-')} |" for r in rows]
    md += ["", f"CPU {env['cpu']['model']}; onnxruntime {env['versions']['onnxruntime']}, openvino "
           f"{env['versions']['openvino']}; {env['date']}.", ""]
    atomic_write_text(RESULTS / "agreement.md", "\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
