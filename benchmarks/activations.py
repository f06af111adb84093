"""Signed vs unsigned activations (`--activations`), same model, same calibration: how closely
each runtime's INT8 file follows its fake-quant torch model, and what it costs.

PTQ (512 calibration images, seed 0) of ResNet-20 (shared weights), the MobileNetV2 KD student of
benchmarks/distill.py (if present) and the 2x-pruned ResNet-56 of benchmarks/compress.py (if
present), once signed (TensorRT's grid) and once with ReLU outputs unsigned (the UINT8 grid ONNX
Runtime and OpenVINO execute). Each file is scored against its own torch model on the test
images; ONNX Runtime files are timed at batch 1, 1 thread, interleaved.

Writes benchmarks/results/activations.{json,md}.

    python benchmarks/activations.py [--limit 3000]
"""

from __future__ import annotations

import argparse
import copy
import tempfile
from pathlib import Path

import numpy as np
import torch
from _common import CIFAR, RESULTS, WORK, distilled_student, require_shared, weights

import edgekit
from edgekit._io import atomic_write_json, atomic_write_text
from edgekit.backends.onnxruntime import OrtRunner
from edgekit.backends.openvino import OvRunner
from edgekit.bench import TimingConfig, time_runners
from edgekit.data import load_dataset
from edgekit.env import environment
from edgekit.exporters.qdq import export_qdq
from edgekit.quant import act_quants, calibrate, plan, prepare


def models() -> dict[str, tuple[Path, str | None]]:
    out = {"resnet20 (shared weights, not fine-tuned on the JPEG copy)": (weights(20), "cifar_resnet20")}
    student = distilled_student()
    if student:
        out[f"mobilenet_v2 student ({student.parent.name})"] = (student, None)
    pruned = WORK / "compress" / "run_x86" / "stages" / "01_prune" / "model.pt"
    if pruned.exists():
        out["resnet56 pruned 2x"] = (pruned, None)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=3000, help="test images")
    ap.add_argument("--iters", type=int, default=600, help="timed calls per ONNX Runtime file")
    args = ap.parse_args()
    require_shared()
    import openvino as ov

    rows = []
    work = Path(tempfile.mkdtemp(prefix="edgekit_act_"))
    for name, (ckpt, arch) in models().items():
        loaded = edgekit.load_model(ckpt, arch=arch)
        card = loaded.card
        ds = load_dataset(CIFAR, input_size=card.input_size)
        calib = [x for x, _ in ds.calibration(512, seed=0).batches(64, mean=card.mean, std=card.std)]
        xs, ys = zip(*ds.evaluation(args.limit).batches(100, mean=card.mean, std=card.std))
        x, y = torch.cat(xs), torch.cat(ys).numpy()
        ort_runners, group = [], []
        for unsigned in (False, True):
            q = prepare(copy.deepcopy(loaded.module).eval(), plan(loaded.module, 8), unsigned=unsigned)
            calibrate(q, calib)
            q.eval()
            with torch.no_grad():
                ref = torch.cat([q(x[i:i + 100]) for i in range(0, len(x), 100)]).argmax(1).numpy()
            tag = "unsigned" if unsigned else "signed"
            ort_file = export_qdq(q, card, work / f"{tag}.onnx", target="onnxruntime")
            exact = ort_file if unsigned else export_qdq(q, card, work / f"{tag}_trt.onnx", target="tensorrt")
            xml = work / f"{tag}.xml"
            ov.save_model(ov.convert_model(str(exact)), str(xml), compress_to_fp16=False)
            runners = {"onnxruntime": OrtRunner(ort_file, precision="int8", threads=1),
                       "openvino": OvRunner(xml, precision="int8", threads=1)}
            base = {"model": name, "activations": tag,
                    "unsigned_tensors": f"{sum(a.unsigned for a in act_quants(q).values())}/{len(act_quants(q))}",
                    "torch_top1": round(100 * float((ref == y).mean()), 2), "images": len(y)}
            for rt, r in runners.items():
                pred = np.concatenate([r(x[i:i + 100].numpy()) for i in range(0, len(x), 100)]).argmax(1)
                row = {**base, "runtime": rt, "agreement": round(100 * float((pred == ref).mean()), 2),
                       "top1": round(100 * float((pred == y).mean()), 2), "executed": r.executed}
                rows.append(row)
                group.append(row)
                print(row, flush=True)
            ort_runners.append(runners["onnxruntime"])
        timed = time_runners(ort_runners, x[:1].numpy(), TimingConfig(warmup=20, iters=args.iters, passes=6,
                                                                      throughput_iters=0))
        for row in group:
            if row["runtime"] == "onnxruntime":
                t = timed[0 if row["activations"] == "signed" else 1]
                row["p50_ms_1t"], row["p90_ms_1t"] = round(t.latency_ms_p50, 3), round(t.latency_ms_p90, 3)
    env = environment(args=vars(args))
    atomic_write_json(RESULTS / "activations.json", {"rows": rows, "environment": env})
    md = ["# Signed vs unsigned activations (PTQ INT8, same model and calibration)", "",
          f"Top-1 agreement of each deployed file with its own fake-quant torch model on {args.limit} test "
          "images (the 99% check every edgekit artifact must pass). Signed: TensorRT's grid (OpenVINO "
          "converts the TensorRT-rules file; ONNX Runtime's file writes post-ReLU tensors as UINT8, which "
          "lets through values the torch grid clipped at 127 steps). Unsigned: ReLU outputs on [0, 255] in "
          "torch too (OpenVINO converts the ONNX Runtime file, which then holds the grid exactly). OpenVINO "
          f"INT8 rows compile with an f32 hint. ONNX Runtime latency: batch 1, 1 thread, {args.iters} calls, "
          "interleaved per model.", "",
          "| model | activations | unsigned tensors | runtime | torch top-1 % | file top-1 % | agreement % | executed | p50/p90 ms |",
          "|---|---|---|---|---|---|---|---|---|"]
    md += [f"| {r['model']} | {r['activations']} | {r['unsigned_tensors']} | {r['runtime']} | {r['torch_top1']:.2f} | "
           f"{r['top1']:.2f} | {r['agreement']:.2f} | {r['executed']} | "
           f"{str(r['p50_ms_1t']) + ' / ' + str(r['p90_ms_1t']) if 'p50_ms_1t' in r else '-'} |" for r in rows]
    md += ["", "An unsigned model has no TensorRT file (TensorRT takes signed INT8 only); `--activations auto` "
           "trains unsigned only when TensorRT is not among the targets.", "",
           f"CPU {env['cpu']['model']}; torch {env['versions']['torch']}, onnxruntime {env['versions']['onnxruntime']}, "
           f"openvino {env['versions']['openvino']}; {env['date']}.", ""]
    atomic_write_text(RESULTS / "activations.md", "\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
