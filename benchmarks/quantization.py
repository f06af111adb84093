"""INT8 / W4A8 / mixed quantization on the full CIFAR-10 JPEG test set: edgekit PTQ+QAT against
ONNX Runtime's `quantize_static` defaults and NNCF PTQ defaults, same model, same calibration
images, every artifact scored through its own runtime and timed in one interleaved run.

Each runtime's rows come from the model edgekit trains for that runtime: unsigned activations for
ONNX Runtime and OpenVINO, signed for the TensorRT-rules file, and for OpenVINO INT8/mixed the
"fused" residual form (see OV_FORM below).

Models: ResNet-20 (shared weights fine-tuned here first, so QAT's training does not pass for a
quantization gain) and the MobileNetV2 student of benchmarks/distill.py (given one more float
epoch here for the same reason), or a small-input MobileNetV2 fine-tuned here when that run is
absent.

Resumable: each training and quantization run is a folder under benchmarks/work/quant/.
Writes benchmarks/results/quantization.{json,md}.

    python benchmarks/quantization.py [--models resnet20,mobilenet_v2] [--qat-epochs 1]
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import torch
from _common import CIFAR, RESULTS, WORK, distilled_student, require_shared, weights

import edgekit
from edgekit._io import atomic_write_json, atomic_write_text
from edgekit.backends.onnxruntime import OrtRunner, _Reader
from edgekit.backends.openvino import OvRunner
from edgekit.bench import TimingConfig, time_runners
from edgekit.data import load_dataset
from edgekit.env import environment
from edgekit.exporters.onnx import export_onnx
from edgekit.exporters.qdq import check_tensorrt_rules
from edgekit.stages import finetune, quantize
from edgekit.stages.quantize import QAT_GRAD_CLIP
from edgekit.train import TrainConfig
from edgekit.verify import Tolerance, accuracy, predict

WORKQ = WORK / "quant"
CALIB = 512
#: the agreement every artifact of an edgekit fake-quant model must reach (edgekit.verify)
VERIFY_AGREEMENT = Tolerance().min_agreement["quantized"]
# ONNX Runtime and OpenVINO rows use the product default for their backends (auto: unsigned
# activations, the UINT8 grid they execute); TensorRT runs signed INT8 only, so its file comes
# from a second INT8 QAT run with signed activations, as `--backends tensorrt` would train it.
SIGNED = "edgekit int8 QAT signed"
# OpenVINO's CPU plugin fuses an INT8 conv, its output quantizer and a residual add into one
# kernel and drops that quantizer's rounding; the OpenVINO rows of INT8 and mixed models come from
# QAT runs in that form (`--residual fused`, what `--backends openvino,...` trains). W4A8 has no
# INT8 conv feeding an add (first and last layers only), so one model serves both runtimes.
OV_FORM = "edgekit OpenVINO-form "
ROUNDED_ON_OV = " (ONNX Runtime-form model)"
TRAIN_LIMIT = None  # --train-limit, for a quick smoke run of the whole script
STUDENT_EPOCHS = 8  # --student-epochs: the MobileNetV2 trained here when no distilled student exists


def float_model(name: str, epochs: int) -> Path:
    """The FP32 baseline every row of a model starts from."""
    if name == "resnet20":
        res = finetune(weights(20), arch="cifar_resnet20", data=CIFAR, out=WORKQ / "resnet20_fp32",
                       config=TrainConfig(epochs=epochs, lr=0.01, seed=0, train_limit=TRAIN_LIMIT), resume=True)
        return res.last_path
    student = distilled_student()
    if student:  # one more float epoch: the compute-matched control for 1 QAT epoch
        src, cfg = student, TrainConfig(epochs=1, lr=0.005, seed=0, train_limit=TRAIN_LIMIT)
    else:
        src, cfg = "cifar_mobilenet_v2:width=0.5", TrainConfig(epochs=STUDENT_EPOCHS, lr=0.05, warmup_epochs=1,
                                                                seed=0, train_limit=TRAIN_LIMIT)
    folder = WORKQ / ("mobilenet_v2_fp32" + (f"_from_{student.parent.name}" if student else ""))
    res = finetune(src, data=CIFAR, out=folder, config=cfg, resume=True)
    return res.last_path


def _origin(res: dict, args) -> str:
    """Where a model's float baseline came from, for the table's reader."""
    folder = Path(res["fp32_checkpoint"]).parent.name
    if res["model"] == "resnet20":
        return f"shared ResNet-20 weights fine-tuned {args.fp32_epochs} epochs on train/"
    if "_from_" in folder:
        return f"the distilled student of benchmarks/distill.py ({folder.split('_from_')[1]}) plus 1 float epoch"
    return (f"MobileNetV2 x0.5 (small input) trained here from scratch for {args.student_epochs} epochs, because "
            "no benchmarks/distill.py student exists")


def _runs_key(fp32: Path) -> str:
    """Run folders are named after the float model they start from, so a newer student (a longer
    distillation run) gets new QAT runs and peer files instead of reusing stale ones."""
    return fp32.parent.name.replace("_fp32", "")


def edgekit_runs(name: str, fp32: Path, qat_epochs: int, max_drop: float, kd: bool) -> dict[str, Path]:
    """edgekit INT8 QAT, W4A8 QAT and mixed (W4/W8 under --max-drop) QAT: run folders. QAT uses the
    product's defaults (gradient clipping 1.0) and, with `kd`, distils from the float model."""
    runs = {"edgekit int8 QAT": dict(bits=8), "edgekit W4A8 QAT": dict(bits=4),
            "edgekit mixed QAT": dict(bits=4, max_drop=max_drop),
            SIGNED: dict(bits=8, activations="signed"),
            OV_FORM + "int8 QAT": dict(bits=8, residual="fused"),
            OV_FORM + "mixed QAT": dict(bits=4, max_drop=max_drop, residual="fused")}
    out = {}
    for label, kw in runs.items():
        kind = (label.replace(OV_FORM, "edgekit ").split()[1].lower() + ("_signed" if label == SIGNED else "")
                + ("_ovform" if "residual" in kw else ""))
        folder = WORKQ / f"{_runs_key(fp32)}_{kind}{'_kd' if kd else ''}"
        if not (folder / "quantize.json").exists():
            # the runtime named first decides the residual form (auto), as `--backends` would
            first = ("openvino", "onnxruntime") if "residual" in kw else ("onnxruntime", "openvino")
            quantize(fp32, data=CIFAR, out=folder, mode="qat", kd=kd, config=TrainConfig(
                epochs=qat_epochs, lr=0.001, weight_decay=0.0, grad_clip=QAT_GRAD_CLIP, seed=0,
                train_limit=TRAIN_LIMIT), calibration_images=CALIB, limit=1000,
                backends=("torch", *first), threads=(1,),
                timing=TimingConfig(warmup=2, iters=10, passes=1, throughput_iters=2), resume=True, **kw)
        out[label] = folder
    return out


def peers(fp32: Path, folder: Path, calib_batches: list[np.ndarray]) -> dict[str, Path]:
    """FP32 ONNX, ONNX Runtime quantize_static with its defaults, NNCF PTQ with its defaults."""
    import nncf
    import openvino as ov
    from onnxruntime.quantization import quantize_static

    folder.mkdir(parents=True, exist_ok=True)
    loaded = edgekit.load_model(fp32)
    onnx_fp32 = folder / "fp32.onnx"
    if not onnx_fp32.exists():
        export_onnx(loaded.module, loaded.card, onnx_fp32)
    ort_int8 = folder / "ort_default_int8.onnx"
    if not ort_int8.exists():
        quantize_static(str(onnx_fp32), str(ort_int8), _Reader("input", calib_batches))  # defaults
    nncf_xml = folder / "nncf_default_int8.xml"
    if not nncf_xml.exists():
        logging.getLogger("nncf").setLevel(logging.ERROR)
        q = nncf.quantize(ov.convert_model(str(onnx_fp32)), nncf.Dataset(calib_batches),
                          subset_size=len(calib_batches))  # defaults otherwise
        ov.save_model(q, str(nncf_xml), compress_to_fp16=False)
    return {"FP32": onnx_fp32, "ORT quantize_static (defaults)": ort_int8, "NNCF PTQ (defaults)": nncf_xml}


def _size(path: Path) -> float:
    files = [path, path.with_suffix(".bin")] if path.suffix == ".xml" else [path]
    return sum(f.stat().st_size for f in files if f.exists()) / 1e6


def bench_model(name: str, args) -> dict:
    fp32 = float_model(name, args.fp32_epochs)
    card = edgekit.load_model(fp32).card
    ds = load_dataset(CIFAR, input_size=card.input_size)
    test = ds.evaluation(args.limit or None)
    calib = [x.numpy() for x, _ in ds.calibration(CALIB, seed=0).batches(1, mean=card.mean, std=card.std)]
    runs = edgekit_runs(name, fp32, args.qat_epochs, args.max_drop, not args.no_kd)
    files = peers(fp32, WORKQ / f"{_runs_key(fp32)}_peers", calib)
    # (row name, runtime, precision, artifact, fake-quant checkpoint or None)
    rows = [("FP32", "onnxruntime", "fp32", files["FP32"], None),
            ("ORT quantize_static (defaults)", "onnxruntime", "int8", files["ORT quantize_static (defaults)"], None),
            ("NNCF PTQ (defaults)", "openvino", "int8", files["NNCF PTQ (defaults)"], None)]
    no_trt = {}  # method -> status of its TensorRT file where not ok (TensorRT has no INT4 convolutions)
    for label, folder in runs.items():
        record = json.loads((folder / "quantize.json").read_text())
        prec = record["precision"]
        if label.startswith(OV_FORM):  # this run is here for its OpenVINO file only
            continue
        if label != SIGNED:  # the signed run is here for its TensorRT file only
            rows.append((label, "onnxruntime", prec, folder / f"model_{prec}.onnx", folder / "model.pt"))
            ov_folder = runs.get(label.replace("edgekit ", OV_FORM), folder)
            rows.append((label, "openvino", prec, ov_folder / f"model_{prec}_openvino.xml", ov_folder / "model.pt"))
            if ov_folder != folder:  # what the ONNX Runtime-form model gives on OpenVINO, for comparison
                rows.append((label + ROUNDED_ON_OV, "openvino", prec, folder / f"model_{prec}_openvino.xml",
                             folder / "model.pt"))
        trt = next(r for r in record["rows"] if "tensorrt" in r["backend"])
        if label == "edgekit int8 QAT" and trt["status"] == "unsupported":
            continue  # unsigned INT8: TensorRT's file comes from the signed run
        if trt["status"] != "ok":
            no_trt[label] = f"{trt['status']}: {trt['details']['reason'].split(';')[0]}"
        if trt["status"] in ("ok", "verification failed"):  # written: measured here, its status shown
            flag = "" if trt["status"] == "ok" else ", verification failed"
            rows.append((label + f" (TensorRT-rules file{flag})", "onnxruntime", prec, folder / f"model_{prec}_tensorrt.onnx",
                         folder / "model.pt"))
    ref_logits, labels = predict(OrtRunner(files["FP32"], precision="fp32", threads=2), test, card)
    fq_cache: dict[Path, np.ndarray] = {}
    out, runners = [], {}
    for label, runtime, prec, path, fq in rows:
        mk = OrtRunner if runtime == "onnxruntime" else OvRunner
        r1, r2 = mk(path, precision=prec, threads=1), mk(path, precision=prec, threads=2)
        logits, _ = predict(r2, test, card)
        top1, _ = accuracy(logits, labels)
        row = {"model": name, "method": label, "runtime": runtime, "precision": prec, "top1": round(top1, 2),
               "agree_fp32": round(float((logits.argmax(1) == ref_logits.argmax(1)).mean()), 4),
               "size_mb": round(_size(path), 3), "executed": r2.executed, "file": path.name}
        if fq is not None:
            if fq not in fq_cache:
                m = edgekit.load_model(fq).module.eval()
                fq_cache[fq], _ = predict(lambda x, m=m: m(torch.from_numpy(x)).detach().numpy(), test, card)
            row["agree_fakequant"] = round(float((logits.argmax(1) == fq_cache[fq].argmax(1)).mean()), 4)
            row["fakequant_top1"] = round(accuracy(fq_cache[fq], labels)[0], 2)
        if "tensorrt" in path.name:
            row["tensorrt_rules"] = check_tensorrt_rules(path) or "ok"
        out.append(row)
        runners[len(out) - 1] = (r1, r2)
    sample = calib[0]
    timing = TimingConfig(warmup=20, iters=args.iters, passes=args.passes)
    for t in (1, 2):
        idx = list(runners)
        res = time_runners([runners[i][t - 1] for i in idx], sample, timing)
        for i, tm in zip(idx, res):
            out[i][f"p50_ms_{t}t"] = round(tm.latency_ms_p50, 3)
            out[i][f"p90_ms_{t}t"] = round(tm.latency_ms_p90, 3)
    return {"model": name, "fp32_checkpoint": str(fp32), "rows": out, "checks": checks(out), "tensorrt_unsupported": no_trt}


def checks(rows: list[dict]) -> dict:
    fp32 = next(r for r in rows if r["method"] == "FP32")
    peer = [r for r in rows if "defaults" in r["method"]]
    int8 = [r for r in rows if r["method"] == "edgekit int8 QAT"]
    w4 = [r for r in rows if r["method"] == "edgekit W4A8 QAT"]
    int8_onnx = next(r for r in int8 if r["runtime"] == "onnxruntime")
    w4_onnx = next(r for r in w4 if r["runtime"] == "onnxruntime")
    fastest_peer = min(r["p50_ms_1t"] for r in peer)
    fastest_int8 = min(r["p50_ms_1t"] for r in int8)
    return {
        "int8_qat_minus_fp32_worst_runtime": round(min(r["top1"] for r in int8) - fp32["top1"], 2),
        "int8_qat_within_0.3_of_fp32": all(fp32["top1"] - r["top1"] <= 0.3 for r in int8),
        "int8_qat_at_least_peers": all(r["top1"] >= max(p["top1"] for p in peer) for r in int8),
        "int8_fastest_vs_fastest_peer_1t": round(fastest_int8 / fastest_peer, 3),
        "int8_latency_no_worse_than_fastest_peer": fastest_int8 <= fastest_peer,
        "w4a8_minus_fp32_worst_runtime": round(min(r["top1"] for r in w4) - fp32["top1"], 2),
        "w4a8_within_1.5_of_fp32": all(fp32["top1"] - r["top1"] <= 1.5 for r in w4),
        "w4a8_size_vs_int8_onnx": round(w4_onnx["size_mb"] / int8_onnx["size_mb"], 3),
        "w4a8_at_most_0.6x_int8": w4_onnx["size_mb"] <= 0.6 * int8_onnx["size_mb"],
        # the ONNX Runtime-form model's OpenVINO row is a comparison, not an artifact edgekit deploys
        "min_agreement_with_fakequant": min(r.get("agree_fakequant", 1.0) for r in rows
                                            if not r["method"].endswith(ROUNDED_ON_OV)),
    }


def support_matrix(res: dict) -> list[str]:
    """Runtime x precision: does it run, what really executes, size, latency (1 thread)."""
    kinds = [("ONNX Runtime (`model_<p>.onnx`)", lambda r: r["runtime"] == "onnxruntime" and "TensorRT" not in r["method"]),
             ("OpenVINO IR (`model_<p>_openvino.xml`)", lambda r: r["runtime"] == "openvino"),
             ("TensorRT-rules QDQ file, run on ONNX Runtime", lambda r: "TensorRT" in r["method"])]
    methods = {"INT8": "edgekit int8 QAT", "W4A8": "edgekit W4A8 QAT", "mixed": "edgekit mixed QAT"}
    md = ["| runtime | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for name, pick in kinds:
        cells = []
        for method in methods.values():
            r = next((r for r in res["rows"] if r["method"].startswith(method) and pick(r)), None)
            cells.append("-" if r is None else
                         f"runs: {r['executed']}; {r['size_mb']:.3f} MB; {r['p50_ms_1t']:.2f} ms")
        md.append(f"| {name} | " + " | ".join(cells) + " |")
    cells = []
    for m in methods.values():
        why = res.get("tensorrt_unsupported", {}).get(m)
        ok = next((r.get("tensorrt_rules", "-") for r in res["rows"]
                   if r["method"].startswith(m) and "TensorRT" in r["method"]), "-")
        cells.append(why if why else
                     f"not installed here; the TensorRT-rules file passes the explicit-quantization check: {ok}")
    md.append("| TensorRT | " + " | ".join(cells) + " |")
    return md


def markdown(results: list[dict], env: dict, args) -> str:
    md = ["# Quantization benchmark (CIFAR-10 JPEG test set, every row measured on the deployed artifact)", ""]
    for res in results:
        md += [f"## {res['model']}", "", f"Float model: {_origin(res, args)}.", "",
               "| method | runtime | precision | top-1 % | agree FP32 % | agree fake-quant % | verified | size MB | "
               "p50/p90 ms 1 thr | p50/p90 ms 2 thr | executed |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in res["rows"]:
            fq = f"{100 * r['agree_fakequant']:.2f}" if "agree_fakequant" in r else "-"
            # edgekit's own check of an artifact: >= 99% top-1 agreement with its fake-quant model
            ok = "-" if "agree_fakequant" not in r else ("ok" if r["agree_fakequant"] >= VERIFY_AGREEMENT else "**FAILED**")
            md.append(f"| {r['method']} | {r['runtime']} | {r['precision']} | {r['top1']:.2f} | "
                      f"{100 * r['agree_fp32']:.2f} | {fq} | {ok} | {r['size_mb']:.3f} | {r['p50_ms_1t']:.3f} / "
                      f"{r['p90_ms_1t']:.3f} | {r['p50_ms_2t']:.3f} / {r['p90_ms_2t']:.3f} | {r['executed']} |")
        md += ["", "Checks: " + ", ".join(f"{k} = {v}" for k, v in res["checks"].items()), "",
               f"Runtime support matrix ({res['model']}, measured above; `executed` is read from the "
               "optimized ONNX Runtime graph and OpenVINO's compiled runtime model):", ""]
        md += support_matrix(res) + [""]
    md += [f"Setup: {args.limit or 'all 10,000'} test images; {CALIB} calibration images (train split, seed 0) "
           f"shared by every method; QAT {args.qat_epochs} epoch(s), SGD lr 0.001 cosine, batch 128, gradient "
           f"norm clipped at {QAT_GRAD_CLIP}, {'labels only' if args.no_kd else 'KD from the float model (T 4, alpha 0.5)'}, "
           f"full train split; mixed = W4 with the most sensitive layers raised to W8 until the PTQ drop <= {args.max_drop} "
           "points; edgekit activations `auto` (unsigned, the UINT8 grid ONNX Runtime and OpenVINO execute), the "
           "TensorRT-rules file from a second INT8 QAT run with signed activations (TensorRT's grid). "
           "Latency: batch 1, interleaved passes "
           f"({args.iters} calls per row per thread count). Every OpenVINO row (peer included) compiles with "
           "an f32 inference hint (the CPU default here is bf16, which the torch model does not compute in); "
           "the executed column shows conv precisions. OpenVINO rows of INT8 and mixed come from a QAT run in "
           "OpenVINO's form (`--residual fused`: an INT8 conv output entering a residual add is not quantized, "
           "because OpenVINO's CPU plugin fuses conv, quantizer and add and drops that rounding); the row marked "
           f"'{ROUNDED_ON_OV.strip()}' runs the ONNX Runtime-form model's IR for comparison.",
           f"CPU {env['cpu']['model']}; torch {env['versions']['torch']}, onnxruntime {env['versions']['onnxruntime']}, "
           f"openvino {env['versions']['openvino']}, nncf {env['versions']['nncf']}; {env['date']}.", ""]
    return "\n".join(md)


def main() -> None:
    global WORKQ, TRAIN_LIMIT, STUDENT_EPOCHS
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--models", default="resnet20,mobilenet_v2")
    ap.add_argument("--fp32-epochs", type=int, default=2)
    ap.add_argument("--student-epochs", type=int, default=STUDENT_EPOCHS,
                    help="epochs of the MobileNetV2 x0.5 trained from scratch when benchmarks/distill.py has not run")
    ap.add_argument("--qat-epochs", type=int, default=1)
    ap.add_argument("--no-kd", action="store_true", help="QAT on labels only (default: KD from the float model)")
    ap.add_argument("--max-drop", type=float, default=1.0)
    ap.add_argument("--limit", type=int, default=0, help="test images (0 = all)")
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--passes", type=int, default=6)
    ap.add_argument("--train-limit", type=int, default=0, help="smoke runs: train on N images (0 = all)")
    ap.add_argument("--work", type=Path, default=WORKQ, help="run folders (smoke runs: elsewhere)")
    args = ap.parse_args()
    require_shared()
    WORKQ, TRAIN_LIMIT, STUDENT_EPOCHS = args.work, args.train_limit or None, args.student_epochs
    results = [bench_model(m.strip(), args) for m in args.models.split(",") if m.strip()]
    env = environment(threads=[1, 2], calibration_images=CALIB, qat_epochs=args.qat_epochs)
    results_dir = RESULTS if args.work == WORK / "quant" else args.work
    atomic_write_json(results_dir / "quantization.json", {"results": results, "environment": env, "args": vars(args)})
    md = markdown(results, env, args)
    atomic_write_text(results_dir / "quantization.md", md)
    print(md)


if __name__ == "__main__":
    main()
