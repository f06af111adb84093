"""The shared ResNet-56 through `edgekit compress`, against the baselines a skeptical engineer
tries first, on the same runtimes and threads.

- x86 (the full recipe): the fine-tuned ResNet-56 (the teacher of benchmarks/distill.py) is
  distilled into a small-input MobileNetV2, the student is pruned in channels until its INT8
  latency on ONNX Runtime (1 thread, timed here: `measure_here`) is at most `--target-latency-ms`
  (default: the measured ResNet-56 INT8 latency / 3.3, so that the 3x target has a margin for
  noise), with KD recovery from the unpruned student, then INT8 QAT (KD), benchmarked.
  Pruning the student, not the teacher: the deployed model is the student, so that is where
  latency is won (an earlier recipe pruned ResNet-56 before distilling and gained nothing on
  the final model's latency).
- x86-depth<N> (`--depth-blocks`, default 14,18; 0 skips them): the alternative a skeptical
  engineer tries once MobileNetV2 turns out no faster than ResNet-32 in INT8 here (pruning.md):
  remove N of ResNet-56's 27 residual blocks, chosen latency-aware (added divergence per ms
  saved, timed on ONNX Runtime INT8 here, one variant per stage: the stages' blocks have equal
  MACs, not equal latency; the prices are in the run's prune.json), with KD recovery, then the same INT8 QAT; no student. 14 sits near ResNet-32's latency, 18 near
  ResNet-20's.
- x86-kd<N> (`--kd-into`, default 20; 0 skips): the fine-tuned ResNet-56 distilled into ResNet-N,
  which starts from the shared ResNet-N weights and trains for the baselines' budget
  (`--baseline-epochs`, lr 0.01), then the same INT8 QAT: "just pick a smaller model", but
  trained with the teacher. It is compared with the same ResNet-N fine-tuned on labels alone.
- x86-kd<N>-drop<K> (`--kd-drop-blocks`, default 2; 0 skips): the distilled ResNet-N of the
  x86-kd<N> route (its finished distill stage is reused, not trained again) with K residual blocks
  removed, latency-aware as above, `--kd-drop-recovery` KD epochs from it (default
  `--depth-recovery`), then the same INT8 QAT. The distill -> prune -> quantize chain the
  pipeline is for, with the student that is fastest here: ResNet-N's layers at 32x32 cost most in
  INT8 at batch 1, and only removing layers (not channels) saves latency there (conv_widths.md).
  It trains for more epochs than the baselines; the headline's setup line says how many.
- jetson, raspberry-pi-5: the model stages are the same and take hours on 2 cores, so these runs
  start from the float model of the x86 route whose final model ran fastest on ONNX Runtime
  INT8 here, among routes that accepted one within the accuracy budget (the pruned or distilled
  student, a depth run's pruned ResNet-56, or a kd run's ResNet-N; the fine-tuned ResNet-56
  when every route was rolled back), and add the profile's own part: INT8
  QAT, export for its runtime (Jetson: TensorRT bundles, ONNX Runtime stand-in, predicted
  latency; Pi: ONNX Runtime) and the report.
- Baselines: the fine-tuned ResNet-56 at INT8 (QAT, its own best INT8 artifact), and ResNet-20 /
  ResNet-32 from the shared weights fine-tuned for `--baseline-epochs` (default: the teacher's
  epochs plus the depth runs' recovery epochs, the same training budget), then INT8 QAT; with
  kd-drop routes, also `--matched-baselines` (default ResNet-20) fine-tuned for their longer
  budget (`--baseline-epochs` + `--kd-drop-recovery`).
- When the x86 run's accuracy budget rolls the distilled student back, or an x86-depth run's
  budget rolls back the blocks it asked to remove, that model still gets its INT8 QAT artifact
  and a headline row: the trade-off the budget refused, measured.
- Headline: every INT8 artifact scored on all 10,000 test images through its runtime and timed
  in one interleaved run of `--rounds` rounds (ONNX Runtime and OpenVINO, 1 and 2 threads, batch
  1); a speed-up is the median of the rounds' own ratios, with their range.

Targets: the compressed model >= 3x faster than ResNet-56's best INT8 artifact and within 1 point
of the fine-tuned ResNet-56; at least as accurate and as fast as ResNet-20 and ResNet-32 at INT8.
The table reports both readings of the second: "beats" each baseline (as accurate and as fast),
and "on or beyond their frontier" (no baseline is both).

Resumable: every phase is a folder under benchmarks/work/compress/ (compress runs resume; one
started with another recipe is refused, move it aside). The whole run takes hours of 2 cores;
`--only PHASES` runs some phases (and what they need) and stops before the headline, which a
later run without it adds from the finished phases' folders.
Writes benchmarks/results/compress.{json,md} and compress_<profile>/{report.md,report.json,pareto.png}.

    python benchmarks/compress.py [--width 1.0] [--student-weights FILE] [--target-latency-ms X] [--quick]

Without `--student-weights` the distill stage trains the student from scratch for
`--distill-epochs` (default 10, lr 0.05; about 6 minutes an epoch for MobileNetV2 x1.0 on 2
cores). With it (benchmarks/distill.py's KD student of the same width) the stage starts from
that student and only adapts it (default 1 epoch at lr 0.002); the report's recipe records it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
from pathlib import Path

from _common import CIFAR, RESULTS, WORK, require_shared, weights

import edgekit
from edgekit._io import atomic_write_json, atomic_write_text
from edgekit.backends.onnxruntime import OrtRunner
from edgekit.backends.openvino import OvRunner
from edgekit.bench import TimingConfig, time_runners
from edgekit.data import load_dataset
from edgekit.env import environment
from edgekit.models.stats import count_macs, count_params
from edgekit.pipeline.recipe import Recipe
from edgekit.stages import finetune, quantize
from edgekit.stages.quantize import QAT_GRAD_CLIP
from edgekit.train import TrainConfig
from edgekit.verify import accuracy, predict

WORKC = WORK / "compress"
TEACHER = WORK / "distill" / "teacher"  # shared with benchmarks/distill.py and pruning.py
RUNTIMES = ("onnxruntime", "openvino")


def teacher(args) -> Path:
    res = finetune(weights(56), arch="cifar_resnet56", data=CIFAR, out=TEACHER, resume=True,
                   config=TrainConfig(epochs=args.teacher_epochs, batch_size=128, lr=0.01, seed=0,
                                      train_limit=args.train_limit))
    return res.best_path


def small_baseline(depth: int, epochs: int, args) -> Path:
    """ResNet-20/32 fine-tuned for a candidate's training budget (`--baseline-epochs`: the depth
    and kd routes'; the kd-drop routes' longer one for `--matched-baselines`): "just pick a
    smaller model", trained as long."""
    res = finetune(weights(depth), arch=f"cifar_resnet{depth}", data=CIFAR,
                   out=WORKC / f"resnet{depth}_ft_e{epochs}", resume=True,
                   config=TrainConfig(epochs=epochs, batch_size=128, lr=0.01, seed=0,
                                      train_limit=args.train_limit))
    return res.best_path


def int8_qat(model: Path, name: str, args) -> Path:
    """INT8 QAT with KD from the float model: the same quantization path as the compress recipe."""
    folder = WORKC / f"{name}_int8"
    if not (folder / "quantize.json").exists():
        quantize(model, data=CIFAR, out=folder, mode="qat", bits=8, kd=True, limit=1000, resume=True,
                 config=TrainConfig(epochs=args.qat_epochs, batch_size=128, lr=0.001, weight_decay=0.0,
                                    grad_clip=QAT_GRAD_CLIP, seed=0, train_limit=args.train_limit),
                 backends=RUNTIMES, threads=(1,), timing=TimingConfig(warmup=2, iters=10, passes=1, throughput_iters=1))
    return folder


def _drop(blocks: int, recovery: int) -> dict:
    """A prune stage removing `blocks` residual blocks, latency-aware (priced on ONNX Runtime INT8
    here), with `recovery` epochs of KD from its input model."""
    return {"stage": "prune", "drop_blocks": blocks, "target_macs": None, "latency_aware": True,
            "measure_here": True, "recovery_epochs": recovery, "kd": True}


def recipe(args, full: bool, depth: int = 0, kd_into: int = 0, kd_drop: int = 0) -> Recipe:
    stages = [{"stage": "quantize", "mode": "qat", "bits": 8, "epochs": args.qat_epochs, "kd": True},
              {"stage": "benchmark"}]
    if kd_into:  # the smaller model, trained with the teacher for the same budget as its baseline
        kd = [{"stage": "distill", "student": f"cifar_resnet{kd_into}", "student_weights": str(weights(kd_into)),
               "epochs": args.baseline_epochs, "lr": 0.01}]
        return Recipe.model_validate({
            "name": f"benchmark: distill into ResNet-{kd_into} (from the shared weights)"
                    + (f" + remove {kd_drop} of its residual blocks, latency-aware (KD recovery)" if kd_drop else "")
                    + " + INT8 QAT",
            "train": {"batch_size": 128, "train_limit": args.train_limit},
            "stages": kd + ([_drop(kd_drop, args.kd_drop_recovery)] if kd_drop else []) + stages})
    if depth:  # the alternative x86 recipe: fewer layers of the teacher itself, no student
        return Recipe.model_validate({
            "name": f"benchmark: remove {depth} residual blocks, latency-aware (KD recovery) + INT8 QAT",
            "train": {"batch_size": 128, "train_limit": args.train_limit},
            "stages": [_drop(depth, args.depth_recovery)] + stages})
    if full:
        stages = [{"stage": "distill", "student": f"cifar_mobilenet_v2:width={args.width}",
                   "student_weights": args.student_weights, "epochs": args.distill_epochs, "lr": args.distill_lr},
                  {"stage": "prune", "target_latency_ms": args.target_latency_ms, "measure_here": True,
                   "recovery_epochs": args.recovery_epochs, "kd": True}] + stages
    kd = "distill" + (f" (student starts from {args.student_weights})" if args.student_weights else "")
    what = f"prune the student to {args.target_latency_ms} ms (ONNX Runtime INT8, 1 thread, here)"
    return Recipe.model_validate({"name": f"benchmark: {kd} + {what} + INT8 QAT" if full else "INT8 QAT",
                                  "train": {"batch_size": 128, "train_limit": args.train_limit}, "stages": stages})


def latency_target(teacher_ckpt: Path, r56_int8: Path, args) -> float:
    """ResNet-56 INT8's ONNX Runtime latency (1 thread, batch 1, measured here) / 3.3: the 3x
    target with a 10% margin for the noise between this search and the headline's timing."""
    card = edgekit.load_model(teacher_ckpt).card
    sample = next(load_dataset(CIFAR, input_size=card.input_size).evaluation(1).batches(1, mean=card.mean,
                                                                                          std=card.std))[0].numpy()
    t = time_runners([OrtRunner(r56_int8 / "model_int8.onnx", precision="int8", threads=1)], sample,
                     TimingConfig(warmup=20, iters=args.iters, passes=args.passes, throughput_iters=1))[0]
    return round(t.latency_ms_p50 / 3.3, 3)


def route(profile: str, args, depth: int = 0, kd_into: int = 0, kd_drop: int = 0) -> str:
    """A compress run's name: its folder is run_<name>, its reports compress_<name>. A kd-drop
    route whose recovery differs from the depth routes' is named for it (-r<epochs>)."""
    name = f"{profile}-depth{depth}" if depth else f"{profile}-kd{kd_into}" if kd_into else profile
    if kd_drop:
        name += f"-drop{kd_drop}" + (f"-r{args.kd_drop_recovery}" if args.kd_drop_recovery != args.depth_recovery else "")
    return name


def run_profile(profile: str, model: Path, args, full: bool, depth: int = 0, kd_into: int = 0, kd_drop: int = 0):
    name = route(profile, args, depth, kd_into, kd_drop)
    out = WORKC / f"run_{name}"
    if kd_drop:
        _reuse_distill(WORKC / f"run_{route(profile, args, kd_into=kd_into)}", out)
    res = edgekit.compress(model, profile=profile, data=CIFAR, out=out,
                           recipe=recipe(args, full, depth, kd_into, kd_drop), limit=args.limit or None, resume=True)
    dest = RESULTS / f"compress_{name}"
    dest.mkdir(parents=True, exist_ok=True)
    for f in ("report.md", "report.json", "pareto.png"):
        if (res.out / f).exists():
            shutil.copyfile(res.out / f, dest / f)
    return res


def _reuse_distill(kd_run: Path, out: Path) -> None:
    """An x86-kd<N>-drop<K> route begins with the same distill stage (same input, student, settings,
    seed) as the finished x86-kd<N> run: copy that stage's folder rather than train it again. The
    training engine resumes it only if its saved settings equal the recipe's, and then has nothing
    left to train; the pipeline re-scores it as usual."""
    src, dst = kd_run / "stages" / "01_distill", out / "stages" / "01_distill"
    if not dst.exists() and (src / "summary.json").exists():
        shutil.copytree(src, dst.with_name(dst.name + ".tmp"), dirs_exist_ok=True)
        dst.with_name(dst.name + ".tmp").rename(dst)


def _accepted(res) -> list[dict]:
    """The run's model stages (prune, distill) that the accuracy budget accepted, in order."""
    return [s for s in res.report["stages"] if s["stage"] in ("prune", "distill") and s["status"] == "ok"]


def _float_model(runs: dict) -> Path:
    """Where the other profiles' runs start: of the x86 routes that accepted a float model within
    the accuracy budget, the one whose final model ran fastest on ONNX Runtime INT8 in its own
    deploy table (one basis for every route: a distill stage does not time its model, a prune
    stage does); its last accepted float model. If no route accepted one, the fine-tuned ResNet-56."""
    best = None
    for res in (r for p, r in runs.items() if p.startswith("x86")):
        ms = [d["latency_ms_p50"] for d in res.report["deploy"] if d["backend"] == "onnxruntime"
              and d["precision"] == "int8" and d["status"] == "ok"]
        if (ok := _accepted(res)) and ms and (best is None or ms[0] < best[0]):
            best = (ms[0], Path(ok[-1]["model"]))
    return best[1] if best else Path(runs["x86"].report["baseline_model"]["model"])


def _x86_label(res) -> str:
    """What the x86 student route delivered: the budget may have rolled back its every model stage
    (then its final model is the fine-tuned ResNet-56, quantized)."""
    ok = [s["stage"] for s in _accepted(res)]
    return "compressed (x86, " + (" + ".join(ok) if ok else "student route: nothing within budget, ResNet-56") + ")"


def headline(models: dict[str, tuple[Path, Path]], args) -> list[dict]:
    """models: name -> (float checkpoint, folder with model_int8.onnx + model_int8_openvino.xml)."""
    card = edgekit.load_model(next(iter(models.values()))[0]).card
    test = load_dataset(CIFAR, input_size=card.input_size).evaluation(args.limit or None)
    sample = next(test.batches(1, mean=card.mean, std=card.std))[0].numpy()
    rows, runners = [], []
    for name, (ckpt, folder) in models.items():
        m = edgekit.load_model(ckpt)
        info = {"model": name, "params": count_params(m.module), "macs": count_macs(m.module, m.card.input_size)}
        for backend, f in (("onnxruntime", folder / "model_int8.onnx"), ("openvino", folder / "model_int8_openvino.xml")):
            mk = OrtRunner if backend == "onnxruntime" else OvRunner
            r = {t: mk(f, precision="int8", threads=t) for t in (1, 2)}
            logits, labels = predict(r[1], test, m.card)
            rows.append({**info, "backend": backend, "top1": round(accuracy(logits, labels)[0], 2),
                         "size_mb": round(f.stat().st_size / 1e6 + (f.with_suffix(".bin").stat().st_size / 1e6
                                                                     if f.suffix == ".xml" else 0), 3)})
            runners.append(r)
    timing = TimingConfig(warmup=20, iters=args.iters, passes=args.passes, throughput_iters=2)
    # --rounds whole timing runs, one after another: the speed-ups are taken within each round
    # (checks) and their spread shows how much the host's speed moved between rounds
    for _ in range(args.rounds):
        for t in (1, 2):
            for row, tm in zip(rows, time_runners([r[t] for r in runners], sample, timing)):
                row.setdefault(f"rounds_p50_ms_{t}t", []).append(round(tm.latency_ms_p50, 3))
                row.setdefault(f"rounds_p90_ms_{t}t", []).append(round(tm.latency_ms_p90, 3))
    for row in rows:
        for t in (1, 2):
            row[f"p50_ms_{t}t"] = round(statistics.median(row[f"rounds_p50_ms_{t}t"]), 3)
            row[f"p90_ms_{t}t"] = round(statistics.median(row[f"rounds_p90_ms_{t}t"]), 3)
    return rows


def checks(rows: list[dict], teacher_top1: float, smalls: list[str]) -> dict:
    """Per candidate and runtime: speed-up over ResNet-56 INT8, drop, the 3x target, and whether it
    beats each smaller-model baseline in `smalls` (at least as accurate and as fast, 1 thread), and
    whether none of them dominates it."""
    by = {(r["model"], r["backend"]): r for r in rows}
    out = {}
    for cand in dict.fromkeys(r["model"] for r in rows if r["model"] != "ResNet-56 INT8" and r["model"] not in smalls):
        for b in RUNTIMES:
            if (cand, b) not in by:
                continue
            c, r56 = by[(cand, b)], by[("ResNet-56 INT8", b)]
            o = out[f"{cand} / {b}"] = {"drop_vs_finetuned_resnet56": round(teacher_top1 - c["top1"], 2)}
            for t in (1, 2):  # the median of the rounds' own ratios, and their range
                ratios = [a / x for a, x in zip(r56[f"rounds_p50_ms_{t}t"], c[f"rounds_p50_ms_{t}t"])]
                o[f"speedup_vs_resnet56_int8_{t}t"] = round(statistics.median(ratios), 2)
                o[f"speedup_rounds_{t}t"] = [round(min(ratios), 2), round(max(ratios), 2)]
            o["3x_faster_and_within_1pt"] = o["speedup_vs_resnet56_int8_1t"] >= 3 and o["drop_vs_finetuned_resnet56"] <= 1
            dominated = False
            for small in smalls:
                s = by[(small, b)]
                o[f"beats {small}"] = c["top1"] >= s["top1"] and c["p50_ms_1t"] <= s["p50_ms_1t"]
                dominated |= (s["top1"] >= c["top1"] and s["p50_ms_1t"] <= c["p50_ms_1t"]
                              and (s["top1"], s["p50_ms_1t"]) != (c["top1"], c["p50_ms_1t"]))
            # the issue's reading of "as accurate and as fast as each": on or beyond the baselines'
            # accuracy/latency frontier, i.e. no smaller model is as accurate and as fast and better in one
            o["on_or_beyond_frontier"] = not dominated
    return out


def _depth_label(res, asked: int) -> str:
    """What an x86-depth run delivered: the accuracy budget may have kept a gentler attempt (fewer
    blocks removed) or none (then its final model is the teacher, quantized)."""
    ok = _accepted(res)
    if not ok:
        return f"compressed (x86, asked {asked} blocks removed: rolled back, no blocks removed)"
    n = ok[-1]["settings"]["drop_blocks"]
    return f"compressed (x86, {n} blocks removed" + (f"; {asked} missed the budget)" if n != asked else ")")


def _rolled_back_depth(res) -> tuple[int, Path] | None:
    """The x86-depth run's first attempt (the blocks asked for) when it missed the budget (a
    gentler attempt replaced it, or none did and the stage was rolled back)."""
    first = next((s for s in res.report["stages"] if s["stage"] == "prune"), None)
    missed = first and first["status"] in ("over budget", "rolled back")
    return (first["settings"]["drop_blocks"], Path(first["model"])) if missed else None


def _kd_label(res, n: int) -> str:
    return f"compressed (x86, distilled into ResNet-{n})" if _accepted(res) else \
        f"compressed (x86, KD into ResNet-{n}: nothing within budget, ResNet-56)"


def _kd_drop_label(res, n: int, asked: int) -> str:
    """What an x86-kd<N>-drop<K> run delivered: the distilled ResNet-N with K blocks removed, fewer
    (a gentler attempt), none (the prune stage rolled back) or, with the distill stage rolled back,
    ResNet-56 itself."""
    ok = _accepted(res)
    base = _kd_drop_input(res, n)
    if not ok or ok[-1]["stage"] != "prune":
        return f"compressed (x86, {base}; asked {asked} blocks removed: " + \
            ("rolled back)" if ok else "nothing within budget, ResNet-56)")
    k = ok[-1]["settings"]["drop_blocks"]
    return f"compressed (x86, {base}, {k} block{'s' * (k != 1)} removed" + \
        (f"; {asked} missed the budget)" if k != asked else ")")


def _distilled(res) -> bool:
    """Whether the budget accepted the run's distill stage: otherwise a kd-drop run's prune stage
    started from ResNet-56 itself."""
    return any(s["stage"] == "distill" for s in _accepted(res))


def _kd_drop_input(res, n: int) -> str:
    return f"distilled into ResNet-{n}" if _distilled(res) else f"KD into ResNet-{n} rolled back, so ResNet-56"


def _rolled_back_student(res) -> Path | None:
    rows = [s for s in res.report["stages"] if s["stage"] == "distill"]
    return Path(rows[-1]["model"]) if rows and rows[-1]["status"] != "ok" else None


def markdown(rows, chk, runs, teacher_top1, env, args) -> str:
    md = ["# Compress benchmark: the shared ResNet-56, CIFAR-10 JPEG copy", "",
          f"Fine-tuned ResNet-56 (float): {teacher_top1:.2f}% top-1 on {args.limit or 'all 10,000'} test images.", "",
          "| model | runtime | top-1 % (through the runtime) | params | MACs | MB | p50/p90 ms 1 thr | p50/p90 ms 2 thr |",
          "|---|---|---|---|---|---|---|---|"]
    md += [f"| {r['model']} | {r['backend']} | {r['top1']:.2f} | {r['params']:,} | {r['macs'] / 1e6:.1f}M | {r['size_mb']:.2f} | "
           f"{r['p50_ms_1t']:.3f} / {r['p90_ms_1t']:.3f} | {r['p50_ms_2t']:.3f} / {r['p90_ms_2t']:.3f} |" for r in rows]
    beats = [k for k in next(iter(chk.values()), {}) if k.startswith("beats ")]
    md += ["", "| model / runtime | speed-up vs ResNet-56 INT8 (1 / 2 thr; 1-thr range over rounds) | drop vs fine-tuned ResNet-56 | >= 3x and within 1 pt | "
           + " | ".join(beats) + " | no smaller model as accurate and as fast |", "|---|---|---|---" + "|---" * (len(beats) + 1) + "|"]
    md += [f"| {b} | {c['speedup_vs_resnet56_int8_1t']:.2f}x / {c['speedup_vs_resnet56_int8_2t']:.2f}x "
           f"({c['speedup_rounds_1t'][0]:.2f}-{c['speedup_rounds_1t'][1]:.2f}x) | "
           f"{c['drop_vs_finetuned_resnet56']:+.2f} | {c['3x_faster_and_within_1pt']} | "
           + " | ".join(str(c[k]) for k in beats) + f" | {c['on_or_beyond_frontier']} |" for b, c in chk.items()]
    md += ["", "Beats: at least as accurate and at least as fast (1 thread) as that baseline. The last column is "
           "the issue's \"on or beyond their accuracy/latency frontier\": no smaller-model baseline is as "
           "accurate and as fast.", "", "Compress runs (reports under benchmarks/results/compress_<profile>/):", ""]
    for p, res in runs.items():
        st = ", ".join(f"{s['stage']} {s['status']} ({s['top1']:.2f}%)" for s in res.report["stages"])
        src = Path(res.report["input"])
        start = "" if p.startswith("x86") else \
            f", starting from {src.relative_to(WORK) if src.is_relative_to(WORK) else src}"
        md.append(f"- {p}{start}: {st}")
    md += ["", f"Setup: teacher fine-tuned {args.teacher_epochs} epochs, ResNet-20/32 {args.baseline_epochs} "
           f"(SGD lr 0.01 cosine); distill "
           f"{args.distill_epochs} epoch(s) at lr {args.distill_lr} into cifar_mobilenet_v2:width={args.width}"
           + (f" starting from {args.student_weights}" if args.student_weights else " from a fresh init")
           + f"; prune the student's channels to {args.target_latency_ms} ms (ONNX Runtime INT8, 1 thread, batch 1, "
           f"measured here), {args.recovery_epochs} KD recovery epoch(s); INT8 QAT {args.qat_epochs} epoch(s) with KD "
           f"for every INT8 model"
           + (f"; x86-depth<N>: N = {', '.join(map(str, args.depth_blocks))} of ResNet-56's 27 blocks removed "
              f"(latency-aware), {args.depth_recovery} KD recovery epoch(s), then the same QAT"
              if args.depth_blocks else "")
           + (f"; x86-kd<N>: ResNet-56 distilled into ResNet-N (N = {', '.join(map(str, args.kd_into))}) from the "
              f"shared weights, {args.baseline_epochs} epochs at lr 0.01, then the same QAT" if args.kd_into else "")
           + (f"; x86-kd<N>-drop<K>: that distilled ResNet-N (the same stage, reused) with K = "
              f"{', '.join(map(str, args.kd_drop_blocks))} of its blocks removed (latency-aware, halved when over "
              f"budget), {args.kd_drop_recovery} KD recovery epoch(s) from it, then the same QAT: "
              f"{args.baseline_epochs} + {args.kd_drop_recovery} training epochs against the baselines' "
              f"{args.baseline_epochs}" if args.kd_into and args.kd_drop_blocks else "")
           + f". Latency: batch 1; at 1 thread passes interleaved within each runtime, at 2 threads one block per "
           f"model (edgekit/bench.py); {args.iters} calls per row per thread count and round, {args.rounds} "
           f"round(s): p50/p90 are medians over rounds, speed-ups the median of each round's own ratio"
           + (f"; QUICK smoke run (train_limit {args.train_limit})" if args.train_limit else "") + ".",
           f"CPU {env['cpu']['model']}; torch {env['versions']['torch']}, onnxruntime {env['versions']['onnxruntime']}, "
           f"openvino {env['versions']['openvino']}; {env['date']}.", ""]
    return "\n".join(md)


def main() -> None:
    global WORKC, TEACHER, RESULTS
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher-epochs", type=int, default=3)
    ap.add_argument("--recovery-epochs", type=int, default=4)
    ap.add_argument("--target-latency-ms", type=float, default=None,
                    help="the x86 prune stage's goal for the student (default: ResNet-56 INT8's measured "
                         "ONNX Runtime 1-thread latency / 3.3)")
    ap.add_argument("--distill-epochs", type=int, default=None,
                    help="default 10 from a fresh student, 1 with --student-weights")
    ap.add_argument("--distill-lr", type=float, default=None,
                    help="default 0.05 from a fresh student, 0.002 with --student-weights")
    ap.add_argument("--qat-epochs", type=int, default=1)
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--student-weights", default=None,
                    help="start the distill stage's student from these weights (e.g. benchmarks/distill.py's "
                         "KD student of the same --width) instead of a fresh init")
    ap.add_argument("--depth-blocks", default="14,18",
                    help="also x86 runs that remove this many of ResNet-56's 27 residual blocks each "
                         "(latency-aware, KD recovery) before INT8 QAT, no student: the alternative recipe (0 = none)")
    ap.add_argument("--depth-recovery", type=int, default=8, help="recovery epochs of those runs")
    ap.add_argument("--kd-into", default="20",
                    help="also x86 runs that distil the fine-tuned ResNet-56 into ResNet-N (comma-separated N of "
                         "20, 32, 44) from the shared weights for --baseline-epochs, then INT8 QAT (0 = none)")
    ap.add_argument("--kd-drop-blocks", default="2",
                    help="also x86 runs that take each --kd-into route's distilled ResNet-N and remove this many of "
                         "its residual blocks (latency-aware, --kd-drop-recovery KD epochs) before INT8 QAT: "
                         "comma-separated, 1 to 8, 0 = none")
    ap.add_argument("--kd-drop-recovery", type=int, default=None,
                    help="KD recovery epochs of the --kd-drop-blocks runs (default: --depth-recovery; another "
                         "value names the run x86-kd<N>-drop<K>-r<epochs>)")
    ap.add_argument("--matched-baselines", default="20",
                    help="also fine-tune these of ResNet-20/32 (comma-separated, 0 = none) for the kd-drop routes' "
                         "longer budget (--baseline-epochs + --kd-drop-recovery), each then INT8 QAT: the "
                         "smaller-model baseline trained as long as that route")
    ap.add_argument("--baseline-epochs", type=int, default=None,
                    help="fine-tuning epochs of ResNet-20/32 (default: --teacher-epochs + --depth-recovery)")
    ap.add_argument("--profiles", default="x86,jetson,raspberry-pi-5")
    ap.add_argument("--limit", type=int, default=0, help="test images (0 = all)")
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--passes", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=5, help="whole headline timing runs (speed-ups per round)")
    ap.add_argument("--only", default="",
                    help="run just these phases (comma-separated: resnet56, x86, depth<N>, kd<N>, kd<N>-drop<K>, jetson, raspberry-pi-5, "
                         "resnet20, resnet32) and what they need, without the headline: to run the hours-long "
                         "benchmark in parts (finished phases stay in benchmarks/work/compress/)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 2,000 training images, 1 epoch each, 500 "
                    "test images, results under benchmarks/work/compress_quick/ (not committed)")
    args = ap.parse_args()
    args.train_limit = None
    def ints(flag: str, text: str, allowed=None) -> list[int]:
        try:
            out = [int(v) for v in text.split(",") if v.strip() and int(v) > 0]
        except ValueError:
            ap.error(f"{flag}: {text!r} is not a comma-separated list of integers")
        if allowed and (bad := [v for v in out if v not in allowed]):
            choices = f"{allowed[0]} to {allowed[-1]}" if isinstance(allowed, range) else ", ".join(map(str, allowed))
            ap.error(f"{flag}: {bad} not available; choose from {choices} (0 = none)")
        return out

    args.depth_blocks = ints("--depth-blocks", args.depth_blocks, range(1, 27))
    args.kd_into = ints("--kd-into", args.kd_into, (20, 32, 44))
    args.kd_drop_blocks = ints("--kd-drop-blocks", args.kd_drop_blocks, range(1, 9))
    args.matched_baselines = ints("--matched-baselines", args.matched_baselines, (20, 32))
    warm = args.student_weights is not None
    args.distill_epochs = args.distill_epochs or (1 if warm else 10)
    args.distill_lr = args.distill_lr or (0.002 if warm else 0.05)
    require_shared()
    if args.quick:
        args.train_limit, args.limit, args.iters, args.passes, args.rounds = 2000, 500, 20, 2, 2
        args.teacher_epochs = args.recovery_epochs = args.distill_epochs = args.qat_epochs = args.depth_recovery = 1
        args.depth_blocks = args.depth_blocks[:1]
        WORKC = WORK / "compress_quick"
        TEACHER = WORKC / "teacher"
        RESULTS = WORKC / "results"
    args.baseline_epochs = args.baseline_epochs or args.teacher_epochs + args.depth_recovery
    if args.kd_drop_recovery is None:
        args.kd_drop_recovery = args.depth_recovery
    if args.rounds < 1 or args.kd_drop_recovery < 0:
        ap.error("--rounds must be >= 1 and --kd-drop-recovery >= 0")
    RESULTS.mkdir(parents=True, exist_ok=True)
    profiles = [p.strip() for p in args.profiles.split(",") if p.strip()]
    others = [p for p in profiles if p != "x86"]
    only = [p.strip() for p in args.only.split(",") if p.strip()]
    known = ["resnet56", "x86", *(f"depth{d}" for d in args.depth_blocks), *(f"kd{n}" for n in args.kd_into),
             *(f"kd{n}-drop{k}" for n in args.kd_into for k in args.kd_drop_blocks),
             *others, "resnet20", "resnet32"]
    if unknown := [p for p in only if p not in known]:
        ap.error(f"--only: unknown phase(s) {', '.join(unknown)}; choose from {', '.join(known)}")

    def want(*phases: str) -> bool:
        return not only or any(p in only for p in phases)

    t = teacher(args)
    teacher_top1 = json.loads((t.parent / "summary.json").read_text()).get("best_top1") \
        if (t.parent / "summary.json").exists() else None
    models, runs = {}, {}
    if want("resnet56", "x86", *others):
        models["ResNet-56 INT8"] = (t, int8_qat(t, "resnet56", args))
    if want("x86", *others):
        if args.target_latency_ms is None:  # measured once: a resumed run keeps its recipe
            saved = WORKC / "latency_target.json"
            if not saved.exists():
                atomic_write_json(saved, {"target_ms": latency_target(t, models["ResNet-56 INT8"][1], args),
                                          "how": "ResNet-56 INT8, ONNX Runtime, 1 thread, batch 1, p50 / 3.3"})
            args.target_latency_ms = json.loads(saved.read_text())["target_ms"]
            print(f"student latency target: {args.target_latency_ms} ms (ResNet-56 INT8 / 3.3)")
        runs["x86"] = run_profile("x86", t, args, full=True)
    for d in args.depth_blocks:
        if want(f"depth{d}", *others):
            runs[f"x86-depth{d}"] = run_profile("x86", t, args, full=False, depth=d)
    for n in args.kd_into:
        if want(f"kd{n}", *others):
            runs[f"x86-kd{n}"] = run_profile("x86", t, args, full=False, kd_into=n)
        for k in args.kd_drop_blocks:
            if want(f"kd{n}-drop{k}", *others):
                runs[route("x86", args, kd_into=n, kd_drop=k)] = run_profile("x86", t, args, full=False, kd_into=n, kd_drop=k)
    for p in others:
        if want(p):
            runs[p] = run_profile(p, _float_model(runs), args, full=False)
    budgets = [(d, args.baseline_epochs) for d in (20, 32)]
    if args.kd_into and args.kd_drop_blocks:  # the kd-drop routes train longer: baselines as long
        budgets += [(d, args.baseline_epochs + args.kd_drop_recovery) for d in args.matched_baselines]
    smalls = {(d, e): f"ResNet-{d} INT8 ({e} epochs)" for d, e in budgets}
    for (d, e), name in smalls.items():
        if want(f"resnet{d}"):
            ft = small_baseline(d, e, args)
            models[name] = (ft, int8_qat(ft, ft.parent.name, args))  # named for its float model
    if only:
        print(f"finished: {', '.join(only)}; the headline needs every phase: run without --only")
        return
    final = Path(runs["x86"].report["final_model"])
    models[_x86_label(runs["x86"])] = (final, WORKC / "run_x86" / "deploy")
    for d in args.depth_blocks:
        models[_depth_label(runs[f"x86-depth{d}"], d)] = (Path(runs[f"x86-depth{d}"].report["final_model"]),
                                                          WORKC / f"run_x86-depth{d}" / "deploy")
    for n in args.kd_into:
        res = runs[f"x86-kd{n}"]
        models[_kd_label(res, n)] = (Path(res.report["final_model"]), WORKC / f"run_x86-kd{n}" / "deploy")
        if (student := _rolled_back_student(res)) is not None:
            models[f"ResNet-{n} distilled (rolled back)"] = (student, int8_qat(student, f"kd{n}_student", args))
        for k in args.kd_drop_blocks:
            res = runs[name := route("x86", args, kd_into=n, kd_drop=k)]
            models[_kd_drop_label(res, n, k)] = (Path(res.report["final_model"]), res.out / "deploy")
            if (miss := _rolled_back_depth(res)) is not None and miss[1].exists():
                what = f"ResNet-{n} distilled" if _distilled(res) else f"ResNet-56 (KD into ResNet-{n} rolled back)"
                models[f"{what}, {miss[0]} blocks removed (rolled back)"] = (
                    miss[1], int8_qat(miss[1], f"{name.removeprefix('x86-').replace('-', '_')}_asked", args))
    for d in args.depth_blocks:  # the trade-off the budget refused, measured like the rest
        if (miss := _rolled_back_depth(runs[f"x86-depth{d}"])) is not None and miss[1].exists():
            models[f"ResNet-56, {miss[0]} blocks removed (rolled back)"] = (miss[1], int8_qat(miss[1], f"depth{d}_asked", args))
    if (student := _rolled_back_student(runs["x86"])) is not None:
        models["distilled student (rolled back)"] = (student, int8_qat(student, "student", args))
    rows = headline(models, args)
    if teacher_top1 is None:
        teacher_top1 = runs["x86"].report["baseline_model"]["top1"]
    chk = checks(rows, teacher_top1, list(smalls.values()))
    env = environment(args=vars(args))
    atomic_write_json(RESULTS / "compress.json", {"rows": rows, "checks": chk, "teacher_top1": teacher_top1,
                                                 "runs": {p: r.report["stages"] for p, r in runs.items()},
                                                 "environment": env})
    md = markdown(rows, chk, runs, teacher_top1, env, args)
    atomic_write_text(RESULTS / "compress.md", md)
    print(md)


if __name__ == "__main__":
    main()
