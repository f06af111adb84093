"""INT8 on architectures outside the CIFAR zoo: does each export for every runtime, how much of it
runs in integer kernels, and how far each runtime's logits are from the fake-quant torch model.

Models are random-init (nothing downloads), so top-1 means nothing here and argmax agreement is
trivial; the logit error is the check. Each model: PTQ INT8 in ONNX Runtime's form (unsigned
activations, rounded residuals: what `edgekit quantize --profile x86` writes), calibrated on
CIFAR-10 train images upscaled to the model's input size; ONNX Runtime runs that file, OpenVINO its
IR converted from it (f32 hint for the float parts), both on 64 test images; "error" is the largest
absolute logit difference over the torch model's largest absolute logit. Writes
benchmarks/results/architectures.{json,md}. A few minutes on 2 cores.

    python benchmarks/architectures.py [--archs convnext_tiny:input_size=64,timm/mobilevit_xxs,...]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch
from _common import CIFAR, RESULTS, WORK, require_shared

from edgekit._io import atomic_write_json, atomic_write_text
from edgekit.backends.onnxruntime import OrtRunner, executed_ops
from edgekit.backends.openvino import OvRunner
from edgekit.data import load_dataset
from edgekit.env import environment
from edgekit.errors import runtime_reason
from edgekit.exporters.qdq import export_qdq
from edgekit.models import get_model
from edgekit.quant import calibrate, plan, prepare, spec_of

ARCHS = ("convnext_tiny:input_size=64", "timm/convnext_atto:input_size=64", "timm/levit_128s",
         "timm/mobilevit_xxs", "timm/efficientvit_b0", "timm/repvit_m0_9", "regnet_y_400mf:input_size=64")


def run(arch: str, ds_cache: dict, work) -> dict:
    import openvino as ov

    torch.manual_seed(0)
    model, card = get_model(arch, num_classes=10)
    model.eval()
    key = (tuple(card.input_size), card.resize)
    if key not in ds_cache:
        ds_cache[key] = load_dataset(CIFAR, input_size=card.input_size, resize=card.resize)
    ds = ds_cache[key]
    calib = [x for x, _ in ds.calibration(128, seed=0).batches(32, mean=card.mean, std=card.std)]
    x = torch.cat([x for x, _ in ds.evaluation(64, seed=0).batches(64, mean=card.mean, std=card.std)])
    row = {"arch": arch, "input": "x".join(map(str, card.input_size))}
    t0 = time.perf_counter()
    try:
        q = prepare(model, plan(model, 8), label="int8", unsigned=True, input_size=card.input_size)
        calibrate(q, calib)
        q.eval()
        spec = spec_of(q)
        row.update(quantized_layers=len(spec.weights), float_blocks=len(spec.opaque))
        with torch.no_grad():
            ref = q(x).numpy()
        scale = float(np.abs(ref).max())
        path = export_qdq(q, card, work / f"{arch.replace('/', '_').replace(':', '_')}.onnx", target="onnxruntime")
        row["onnxruntime"] = executed_ops(path, "int8").split(": ", 1)[1]
        row["ort_error"] = float(np.abs(OrtRunner(path, precision="int8", threads=2)(x.numpy()) - ref).max() / scale)
        xml = path.with_suffix(".xml")
        ov.save_model(ov.convert_model(str(path)), str(xml), compress_to_fp16=False)
        try:
            runner = OvRunner(xml, precision="int8", threads=2)
            row["openvino"] = runner.executed
            row["ov_error"] = float(np.abs(runner(x.numpy()) - ref).max() / scale)
        except Exception as e:  # noqa: BLE001 - reported, as the table does
            row["openvino"] = f"could not run: {runtime_reason(e, 160)}"
    except Exception as e:  # noqa: BLE001
        row["failed"] = runtime_reason(e, 200)
    row["seconds"] = round(time.perf_counter() - t0, 1)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", default=",".join(ARCHS))
    args = ap.parse_args()
    require_shared()
    warnings.simplefilter("ignore")
    work = WORK / "architectures"
    work.mkdir(parents=True, exist_ok=True)
    cache: dict = {}
    rows = []
    for arch in args.archs.split(","):
        rows.append(run(arch, cache, work))
        print(rows[-1], flush=True)
    import timm

    env = environment(threads=2, timm=timm.__version__)

    def pct(v):
        return "-" if v is None else f"{100 * v:.2f}%"

    lines = ["# INT8 (PTQ, ONNX Runtime's form) on architectures outside the CIFAR zoo", "",
             "Random-init models (nothing downloads): the check is each runtime's largest logit error against "
             "the fake-quant torch model, over its largest logit, on 64 CIFAR-10 test images upscaled to the "
             "input size; OpenVINO runs the IR converted from the same file (f32 hint).", "",
             "| arch | input | layers INT8 | blocks kept float | ONNX Runtime executed | ORT error | OpenVINO executed | OpenVINO error | s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "failed" in r:
            lines.append(f"| {r['arch']} | {r['input']} | failed: {r['failed']} | | | | | | {r['seconds']} |")
            continue
        lines.append(f"| {r['arch']} | {r['input']} | {r['quantized_layers']} | {r['float_blocks']} | {r['onnxruntime']} | "
                     f"{pct(r.get('ort_error'))} | {r['openvino']} | {pct(r.get('ov_error'))} | {r['seconds']} |")
    v = env["versions"]
    lines += ["", f"CPU {env['cpu']['model']}, 2 threads; torch {v['torch']}, onnxruntime {v['onnxruntime']}, "
              f"openvino {v['openvino']}, timm {env['timm']}; {env['date']}."]
    atomic_write_json(RESULTS / "architectures.json", {"rows": rows, "environment": env})
    atomic_write_text(RESULTS / "architectures.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
