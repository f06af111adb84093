"""How good is the latency model? Predicted vs measured batch-1 latency on this host.

1. Calibrate the `host` profile (edgekit.latency.calibrate: micro-benchmarks + the reference
   models cifar_resnet20@32, mobilenet_v3_small@160, regnet_x_400mf@128, mnasnet0_5@160,
   squeezenet1_1@128) into
   benchmarks/work/latency/host.yaml.
2. Score models kept apart from calibration (other architectures, or other sizes/widths of none
   of the calibration models): torchvision at 224 and smaller inputs, small-input CIFAR models at
   several widths, and 6 "fresh" models added after the model's last change (the out-of-sample
   score: the first 18 guided its development); FP32 and INT8 (each runtime's own INT8 path: ONNX Runtime QDQ U8S8, NNCF for
   OpenVINO); ONNX Runtime and OpenVINO; 1 thread. Report the fraction within +-10% / +-20% and
   the median absolute error, with the calibrated and the uncalibrated (assumed) factors.
3. Predict MobileNetV2, ResNet-18 and ResNet-50 at 224x224 on every shipped profile.

Weights are random (latency does not depend on their values; nothing is downloaded). Resumable:
exported artifacts are kept under benchmarks/work/latency/. Writes benchmarks/results/
latency_model.{json,md}. Needs a quiet machine (timings).

    python benchmarks/latency_model.py [--iters 30] [--recalibrate]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from _common import RESULTS, WORK

from edgekit._io import atomic_write_json, atomic_write_text
from edgekit.env import environment
from edgekit.latency import graph_work, predict
from edgekit.latency.calibrate import REFERENCE, Measured, calibrate, measure
from edgekit.models import get_model
from edgekit.profiles import get_profile, host_profile, list_profiles

W = WORK / "latency"
#: (label, arch, options, input size): none of these is a calibration model
SCORED = [
    ("resnet18@224", "resnet18", {}, 224),
    ("resnet50@224", "resnet50", {}, 224),
    ("mobilenet_v2@224", "mobilenet_v2", {}, 224),
    ("mobilenet_v3_large@224", "mobilenet_v3_large", {}, 224),
    ("efficientnet_b0@224", "efficientnet_b0", {}, 224),
    ("shufflenet_v2_x1_0@224", "shufflenet_v2_x1_0", {}, 224),
    ("resnet18@128", "resnet18", {}, 128),
    ("mobilenet_v2@160", "mobilenet_v2", {}, 160),
    ("cifar_resnet56@32", "cifar_resnet56", {}, 32),
    ("cifar_mobilenet_v2@32", "cifar_mobilenet_v2", {}, 32),
    ("cifar_mobilenet_v2 x0.5@32", "cifar_mobilenet_v2", {"width": 0.5}, 32),
    ("cifar_efficientnet_b0@32", "cifar_efficientnet_b0", {}, 32),
    # the out-of-sample set before channel blocking (predict._blocked) was added
    ("mnasnet1_0@224", "mnasnet1_0", {}, 224),
    ("regnet_y_400mf@224", "regnet_y_400mf", {}, 224),
    ("resnet34@160", "resnet34", {}, 160),
    ("efficientnet_b1@192", "efficientnet_b1", {}, 192),
    ("googlenet@160", "googlenet", {}, 160),
    ("resnext50_32x4d@160", "resnext50_32x4d", {}, 160),
]
#: added after the last change to the model (channel blocking, predict._blocked), never looked at
#: while the model was developed: their score is the out-of-sample one
FRESH = [
    ("regnet_x_800mf@160", "regnet_x_800mf", {}, 160),
    ("shufflenet_v2_x1_5@160", "shufflenet_v2_x1_5", {}, 160),
    ("mnasnet0_75@192", "mnasnet0_75", {}, 192),
    ("densenet121@128", "densenet121", {}, 128),
    ("resnet101@128", "resnet101", {}, 128),
    ("efficientnet_b2@160", "efficientnet_b2", {}, 160),
]
FRESH_LABELS = {label for label, *_ in FRESH}
DEVICE_MODELS = ("mobilenet_v2@224", "resnet18@224", "resnet50@224")


def scored_models(names=None):
    for label, arch, opts, size in SCORED + FRESH:
        if names and label not in names:
            continue
        m, _ = get_model(arch, num_classes=10 if arch.startswith("cifar") else 1000, **opts)
        yield label, m.eval(), (3, size, size)


def _saved(rows: list[dict], folder: Path) -> list[Measured]:
    """Measurements from an earlier run, with the layers read again from their ONNX files."""
    return [Measured(r["model"], r["runtime"], r["precision"], r.get("threads", 1),
                     graph_work(folder / r["model"] / "fp32.onnx"), r["measured_ms"],
                     r.get("measured_p90_ms", r["measured_ms"])) for r in rows]


def score(rows: list[dict], key: str) -> dict:
    errs = [abs(r[key] / r["measured_ms"] - 1) for r in rows]
    return {"n": len(errs), "within_10": round(sum(e <= 0.10 for e in errs) / len(errs), 3),
            "within_20": round(sum(e <= 0.20 for e in errs) / len(errs), 3),
            "median_abs_error": round(statistics.median(errs), 3)}


def device_table() -> list[dict]:
    out = []
    for label in DEVICE_MODELS:
        layers = graph_work(W / label / "fp32.onnx")
        for name in list_profiles():
            prof = get_profile(name) if name != "host" else host_profile(calibration=W / "host.yaml")
            for prec in prof.precisions:
                if prec not in ("fp32", "fp16", "int8"):
                    continue
                p = predict(layers, prof, precision=prec)
                out.append({"model": label, "profile": name, "unit": p.unit, "runtime": p.runtime, "precision": prec,
                            "threads": p.threads, "predicted_ms": round(p.latency_ms, 3), "batch": p.batch,
                            "predicted_ips": round(p.throughput_ips, 1), "efficiency": p.efficiency_source})
    return out


def markdown(res: dict, env: dict) -> str:
    cal, unc = res["scores"]["calibrated"], res["scores"]["uncalibrated"]
    md = ["# Latency model: predicted vs measured (batch 1, this host)", "",
          f"{cal['n']} model variants ({cal['n'] // 4} models x FP32/INT8 x ONNX Runtime/OpenVINO, 1 thread), none of "
          "them a calibration model. Calibration: micro-benchmarks + " + ", ".join(f"{a}@{s}" for a, s in REFERENCE) + ".",
          "",
          f"The model's structure was developed looking at the errors on the first {len(SCORED)} models (their score "
          f"is optimistic); the {len(FRESH)} fresh ones ({', '.join(label for label, *_ in FRESH)}) were added after its last change "
          "and are the out-of-sample score. Factors are fitted on the calibration set only.",
          "", "| factors | within +-10% | within +-20% | median abs error |", "|---|---|---|---|",
          f"| calibrated on this host | {100 * cal['within_10']:.0f}% | {100 * cal['within_20']:.0f}% | "
          f"{100 * cal['median_abs_error']:.1f}% |",
          f"| assumed (uncalibrated) | {100 * unc['within_10']:.0f}% | {100 * unc['within_20']:.0f}% | "
          f"{100 * unc['median_abs_error']:.1f}% |", "",
          "By set (calibrated):", "", "| set | n | within +-10% | within +-20% | median abs error |", "|---|---|---|---|---|",
          *[f"| {k} | {v['n']} | {100 * v['within_10']:.0f}% | {100 * v['within_20']:.0f}% | "
            f"{100 * v['median_abs_error']:.1f}% |" for k, v in res["scores"].get("by_set", {}).items()], "",
          "By runtime and precision (calibrated):", "", "| runtime/precision | n | within +-10% | within +-20% | median abs error |",
          "|---|---|---|---|---|"]
    for k, s in res["scores"]["by_group"].items():
        md.append(f"| {k} | {s['n']} | {100 * s['within_10']:.0f}% | {100 * s['within_20']:.0f}% | "
                  f"{100 * s['median_abs_error']:.1f}% |")
    md += ["", "| model | runtime | precision | measured p50 ms | p90 ms | predicted ms (calibrated) | error | "
           "predicted ms (assumed) |", "|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        md.append(f"| {r['model']}{' (fresh)' if r.get('fresh') else ''} | {r['runtime']} | {r['precision']} | {r['measured_ms']:.3f} | {r['measured_p90_ms']:.3f} | "
                  f"{r['predicted_ms']:.3f} | {100 * (r['predicted_ms'] / r['measured_ms'] - 1):+.0f}% | "
                  f"{r['predicted_uncalibrated_ms']:.3f} |")
    md += ["", "## Predicted on every profile (batch 1; throughput at the profile's batch)", "",
           "Predictions only: none of these devices is here. Non-host profiles use their files' assumed efficiency "
           "factors; host uses the calibration above.", "",
           "| model | profile | runs on | runtime | precision | threads | predicted ms | predicted img/s (batch) |",
           "|---|---|---|---|---|---|---|---|"]
    for d in res["devices"]:
        md.append(f"| {d['model']} | {d['profile']} | {d['unit']} | {d['runtime']} | {d['precision']} | {d['threads']} | "
                  f"{d['predicted_ms']:.2f} | {d['predicted_ips']:.0f} ({d['batch']}) |")
    md += ["", f"Host: {env['cpu']['model']} ({', '.join(env['cpu']['isa'])}), {env['cpu']['affinity_cores']} cores; "
           f"memory bandwidth measured {res['calibration']['bandwidth_gbs']} GB/s (1-thread copy). onnxruntime "
           f"{env['versions']['onnxruntime']}, openvino {env['versions']['openvino']}, nncf {env['versions']['nncf']}; "
           f"{env['date']}. Timing: {res['args']['iters']} batch-1 calls per row in interleaved passes after warm-up, "
           f"the whole list timed {res['args'].get('rounds', 1)} times minutes apart; each row reports the p50 (and p90) "
           "of its fastest round.", ""]
    return "\n".join(md)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--iters", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=3, help="time the whole list this many times, keep each row's "
                    "fastest round (neighbours on a shared host slow single rounds by up to 2x)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--recalibrate", action="store_true", help="measure the calibration set again")
    ap.add_argument("--refit", action="store_true", help="refit and rescore from the saved measurements "
                    "(after a change to the model); only models with no saved measurement are timed")
    ap.add_argument("--models", default="", help="comma-separated labels (smoke runs); default all")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    W.mkdir(parents=True, exist_ok=True)
    import yaml
    cal_file = W / "host.yaml"
    if args.refit and cal_file.exists():
        old = yaml.safe_load(cal_file.read_text())
        calibrate(cal_file, samples=_saved(old["fit"], W / "calibration"), bandwidth_gbs=old["bandwidth_gbs"])
    elif args.recalibrate or not cal_file.exists():
        calibrate(cal_file, threads=args.threads, work=W / "calibration", iters=max(args.iters, 20), rounds=args.rounds,
                  progress=lambda n: print("calibrate:", n, flush=True))
    cal = yaml.safe_load(cal_file.read_text())
    calibrated, assumed = host_profile(calibration=cal_file), host_profile(calibration=None)
    names = [n for n in args.models.split(",") if n] or None
    saved = args.out / "latency_model.json"
    if args.refit and saved.exists():
        old_rows = [r for r in json.loads(saved.read_text())["rows"] if not names or r["model"] in names]
        samples = _saved(old_rows, W)
        have = {r["model"] for r in old_rows}
        missing = [label for label, *_ in SCORED + FRESH if label not in have and (not names or label in names)]
        if missing:
            samples += measure(scored_models(missing), W, threads=args.threads, iters=args.iters, rounds=args.rounds,
                               progress=lambda n: print("measure:", n, flush=True))
    else:
        samples = measure(scored_models(names), W, threads=args.threads, iters=args.iters, rounds=args.rounds,
                          progress=lambda n: print("measure:", n, flush=True))
    rows = []
    for s in samples:
        kw = dict(precision=s.precision, runtime=s.runtime, threads=s.threads, batch=1)
        rows.append({"model": s.name, "runtime": s.runtime, "precision": s.precision, "threads": s.threads,
                     "measured_ms": round(s.ms, 4), "measured_p90_ms": round(s.ms_p90, 4),
                     "predicted_ms": round(predict(s.layers, calibrated, **kw).latency_ms, 4),
                     "predicted_uncalibrated_ms": round(predict(s.layers, assumed, **kw).latency_ms, 4),
                     "macs": sum(lw.macs for lw in s.layers), "fresh": s.name in FRESH_LABELS})
    groups = {}
    for r in rows:
        groups.setdefault(f"{r['runtime']}/{r['precision']}", []).append(r)
    res = {"rows": rows,
           "scores": {"calibrated": score(rows, "predicted_ms"), "uncalibrated": score(rows, "predicted_uncalibrated_ms"),
                      "by_group": {k: score(v, "predicted_ms") for k, v in groups.items()},
                      "by_set": {k: score(v, "predicted_ms") for k, v in (
                          ("developed on", [r for r in rows if not r["fresh"]]),
                          ("fresh (out of sample)", [r for r in rows if r["fresh"]])) if v}},
           "calibration": {k: cal[k] for k in ("host_id", "date", "bandwidth_gbs", "efficiency", "models", "fit")},
           "devices": device_table() if not names else [], "args": {k: str(v) for k, v in vars(args).items()}}
    env = environment(threads=[args.threads])
    res["environment"] = env
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "latency_model.json", res)
    md = markdown(res, env)
    atomic_write_text(args.out / "latency_model.md", md)
    print(md)


if __name__ == "__main__":
    main()
