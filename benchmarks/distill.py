"""Fine-tune the shared ResNet-56, then train a small-input MobileNetV2 student with labels only
and with KD from it (same epochs, seed, init and data order), on the full CIFAR-10 JPEG copy.
Also compares the engine's training throughput with a bare PyTorch loop.

Resumable: every phase is a training run folder under benchmarks/work/distill/ and re-running
the script continues where it stopped. Writes benchmarks/results/distill.{json,md}.

    python benchmarks/distill.py [--teacher-epochs 3] [--student-epochs 10] [--width 0.5] [--throughput-only]
        [--loss dkd --beta 8 --kd-warmup 5] [--feature auto [--feature-weight 1]] [--teacher-bf16]
        [--labels-only-record JSON] [--kd-record JSON] [--seed 0]

--labels-only-record takes a committed labels-only run's summary (distill_labels_only_*_summary.json)
instead of training it again: it is used only if its training config equals this run's and its
student started from the same accuracy (the same initial weights). --kd-record adds a committed
Hinton-KD run as a row beside a --loss dkd or --feature run. --feature adds the feature-map term
(a learned 1x1 projection, relative MSE) to the KD loss: 'auto' or STUDENT_MODULE:TEACHER_MODULE.
--seed N (N > 0) trains the students with another seed (init, data order, augmentation; the teacher
keeps seed 0) in run folders and records suffixed _sN, and writes distill_sN.{json,md}, so the
committed seed-0 table is never overwritten.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from _common import CIFAR, RESULTS, WORK, require_shared, seed_suffix, weights

import edgekit
from edgekit._io import atomic_write_json, atomic_write_text
from edgekit.data import load_dataset
from edgekit.env import environment
from edgekit.models import get_model
from edgekit.models.stats import count_macs, count_params
from edgekit.stages import distill, finetune
from edgekit.train import Supervised, TrainConfig, train


def _fields(name, module, input_size, best, initial, history, epochs) -> dict:
    return {"model": name, "top1": round(best, 2), "final_top1": round(history[-1]["eval_top1"], 2),
            "start_top1": round(initial, 2), "params": count_params(module),
            "macs": count_macs(module, input_size), "epochs": epochs,
            # training time from the run's own epoch records: right even when a phase was resumed
            "wall_min": round(sum(h["seconds"] for h in history) / 60, 1)}


def _row(name, path, res, seconds, epochs):
    loaded = edgekit.load_model(path)
    return _fields(name, loaded.module, loaded.card.input_size, res.best_top1, res.initial_top1, res.history, epochs)


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def teacher_speed(teacher, split, card, batch: int, rounds: int) -> dict:
    """The teacher's forward as distillation runs it (eval, no grad, NHWC), in float32 and in
    bfloat16 autocast (--teacher-bf16), and how far bf16 moves its T=4 soft targets."""
    from edgekit.stages.distill import DistillObjective

    x = torch.cat([xb for xb, _ in split.batches(batch, mean=card.mean, std=card.std)])
    x = x.contiguous(memory_format=torch.channels_last)
    teacher = teacher.eval().to(memory_format=torch.channels_last)
    speeds: dict[bool, list[float]] = {False: [], True: []}
    logits = {}
    for _ in range(rounds):
        for bf16 in (False, True):
            obj = DistillObjective(torch.nn.Identity(), teacher, teacher_bf16=bf16)
            t0 = time.perf_counter()
            with torch.no_grad():
                logits[bf16] = torch.cat([obj.teacher_forward(x[i:i + batch]) for i in range(0, len(x), batch)])
            speeds[bf16].append(len(x) / (time.perf_counter() - t0))
    kl = F.kl_div(F.log_softmax(logits[True] / 4, 1), F.softmax(logits[False] / 4, 1), reduction="batchmean")
    return {"teacher_fp32_img_s": round(statistics.median(speeds[False]), 1),
            "teacher_bf16_img_s": round(statistics.median(speeds[True]), 1),
            "teacher_bf16_kl_t4": float(f"{kl.item():.2e}"),
            "teacher_bf16_argmax_agreement": round(float((logits[True].argmax(1) == logits[False].argmax(1)).float().mean()), 4)}


def throughput(student: str, teacher_card, n: int = 2560, batch: int = 128, rounds: int = 3,
               teacher=None) -> dict:
    """Engine (augmentation, metrics, checkpoint) vs a bare loop, same model/batch/images/memory
    layout, for both layouts: the overhead is engine vs bare in the same layout, and the engine's
    NHWC (TrainConfig.channels_last) vs NCHW is the layout's own gain."""
    import shutil

    ds = load_dataset(CIFAR, input_size=teacher_card.input_size)
    split = ds.train.subset(n, seed=0)
    tiny_eval = ds.evaluation(128)
    images = split.images
    mean = torch.tensor(teacher_card.mean).view(1, -1, 1, 1)
    std = torch.tensor(teacher_card.std).view(1, -1, 1, 1)
    speeds: dict[str, list[float]] = {}
    for r in range(rounds):
        for cl in (True, False):
            fmt = torch.channels_last if cl else torch.contiguous_format
            model, card = get_model(student, num_classes=10)
            card = card.with_(mean=teacher_card.mean, std=teacher_card.std)
            cfg = TrainConfig(epochs=1, batch_size=batch, lr=0.05, channels_last=cl)
            folder = WORK / "distill" / f"tp{r}_{'nhwc' if cl else 'nchw'}"
            shutil.rmtree(folder, ignore_errors=True)  # a fresh run: never a resumed, stale figure
            res = train(Supervised(model), card, split, tiny_eval, cfg, folder, progress=False)
            speeds.setdefault(f"engine_{cl}", []).append(res.history[-1]["images_per_s"])
            model, _ = get_model(student, num_classes=10)
            model.train().to(memory_format=fmt)
            opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
            t0 = time.perf_counter()
            for i in range(0, n, batch):
                x = ((images[i:i + batch].float() / 255 - mean) / std).contiguous(memory_format=fmt)
                loss = F.cross_entropy(model(x), split.labels[i:i + batch])
                opt.zero_grad()
                loss.backward()
                opt.step()
            speeds.setdefault(f"bare_{cl}", []).append(n / (time.perf_counter() - t0))
    med = {k: statistics.median(v) for k, v in speeds.items()}
    e, b = med["engine_True"], med["bare_True"]
    return {**(teacher_speed(teacher, split, teacher_card, batch, rounds) if teacher is not None else {}),
            "engine_img_s": round(e, 1), "bare_img_s": round(b, 1), "overhead_pct": round(100 * (1 - e / b), 1),
            "engine_nchw_img_s": round(med["engine_False"], 1), "bare_nchw_img_s": round(med["bare_False"], 1),
            "overhead_nchw_pct": round(100 * (1 - med["engine_False"] / med["bare_False"]), 1),
            "channels_last_speedup": round(e / med["engine_False"], 2),
            "rounds": rounds, "images": n, "batch": batch}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--teacher-epochs", type=int, default=3)
    ap.add_argument("--student-epochs", type=int, default=10)
    ap.add_argument("--width", type=float, default=0.5)
    ap.add_argument("--temperature", type=float, default=4.0)
    ap.add_argument("--alpha", type=float, default=None, help="kd: KD weight (0.9); dkd: TCKD weight (1.0)")
    ap.add_argument("--loss", choices=("kd", "dkd"), default="kd")
    ap.add_argument("--beta", type=float, default=8.0, help="dkd: NCKD weight")
    ap.add_argument("--kd-warmup", type=float, default=0.0, help="dkd: epochs over which the KD terms ramp up")
    ap.add_argument("--feature", default=None, help="feature distillation pair: auto or STUDENT:TEACHER")
    ap.add_argument("--feature-weight", type=float, default=1.0,
                    help="weight of the feature term (relative MSE) against the KD loss")
    ap.add_argument("--teacher-bf16", action="store_true", help="run the teacher in bfloat16 autocast")
    ap.add_argument("--labels-only-record", type=Path, default=None)
    ap.add_argument("--kd-record", type=Path, default=None)
    ap.add_argument("--seed", type=int, default=0,
                    help="the students' seed; the teacher is fine-tuned at seed 0 whatever this is")
    ap.add_argument("--throughput-only", action="store_true",
                    help="only the engine-vs-bare-loop timing (both layouts), a few minutes; "
                         "writes distill_throughput.{json,md}")
    args = ap.parse_args()
    # refused here, not after the teacher's fine-tune
    if args.feature and args.feature != "auto" and ":" not in args.feature:
        ap.error(f"--feature {args.feature}: pass 'auto' or STUDENT_MODULE:TEACHER_MODULE")
    if args.feature_weight <= 0:
        ap.error(f"--feature-weight {args.feature_weight:g}: must be > 0 (leave --feature out for plain KD)")
    if args.seed < 0:
        ap.error(f"--seed {args.seed}: must be >= 0")
    require_shared()
    work = WORK / "distill"
    student = f"cifar_mobilenet_v2:width={args.width}"
    if args.throughput_only:
        return throughput_only(student)
    t_cfg = TrainConfig(epochs=args.teacher_epochs, batch_size=128, lr=0.01, seed=0)
    # a teacher fine-tuned longer than the first runs' 3 epochs gets its own folders (teacher and
    # KD run), so it never resumes from, or overwrites, a committed run's teacher or record
    t_tag = "" if args.teacher_epochs == 3 else f"_t{args.teacher_epochs}"
    t_dir = "teacher" if args.teacher_epochs == 3 else f"teacher_e{args.teacher_epochs}"
    (teacher, t_sec) = _timed(lambda: finetune(weights(56), arch="cifar_resnet56", data=CIFAR,
                                               out=work / t_dir, config=t_cfg, resume=True))
    s_cfg = TrainConfig(epochs=args.student_epochs, batch_size=128, lr=0.05, warmup_epochs=1, seed=args.seed)
    s_tag = f"_w{args.width}_e{args.student_epochs}{seed_suffix(args.seed)}"
    kd_name = "KD" if args.loss == "kd" else f"DKD (beta {args.beta:g})"
    kd_dir = ("KD" if args.loss == "kd" else f"DKD_b{args.beta:g}_wu{args.kd_warmup:g}") + t_tag
    if args.feature:  # its own folder: a feature run never resumes from a plain KD run
        kd_name += f" + features ({args.feature}, weight {args.feature_weight:g})"
        kd_dir += f"_feat{args.feature.replace(':', '-').replace('.', '')}_fw{args.feature_weight:g}"
    runs = {}
    # KD first: it is the run the targets are about; the folder names carry the schedule so a
    # longer re-run never resumes from a shorter run's checkpoints.
    runs[kd_name] = _timed(lambda: distill(
        teacher.best_path, student=student, data=CIFAR, out=work / f"{kd_dir}{s_tag}",
        temperature=args.temperature, alpha=args.alpha, loss=args.loss, beta=args.beta,
        kd_warmup_epochs=args.kd_warmup, teacher_bf16=args.teacher_bf16, feature=args.feature,
        feature_weight=args.feature_weight, config=s_cfg, resume=True))
    kd_res = runs[kd_name][0]
    # the per-epoch record, committed so a later run can be compared with (or reuse) this one
    summary = json.loads((kd_res.run_dir / "summary.json").read_text())
    atomic_write_json(RESULTS / f"distill_{kd_dir}{s_tag}_summary.json", summary)
    rows = [{**_row("ResNet-56 (shared weights, fine-tuned)", teacher.best_path, teacher, t_sec,
                    args.teacher_epochs), "role": "teacher"}]
    if args.labels_only_record:
        lo_row = _record_row(args.labels_only_record, f"MobileNetV2-32 x{args.width} labels only", student,
                             s_cfg, kd_res.initial_top1, alpha=0.0)
    else:
        res, sec = _timed(lambda: distill(
            teacher.best_path, student=student, data=CIFAR, out=work / f"labels_only{s_tag}",
            temperature=args.temperature, alpha=0.0, config=s_cfg, resume=True))
        lo_row = _row(f"MobileNetV2-32 x{args.width} labels only", res.best_path, res, sec, args.student_epochs)
    rows.append({**lo_row, "role": "student"})
    if args.kd_record:
        # named by its record: which teacher it had is in the record's file name, not in its fields
        rows.append({**_record_row(args.kd_record, f"MobileNetV2-32 x{args.width} KD (Hinton, committed "
                                   f"record {args.kd_record.stem.removeprefix('distill_')})",
                                   student, s_cfg, kd_res.initial_top1), "role": "student"})
    res, sec = runs[kd_name]
    rows.append({**_row(f"MobileNetV2-32 x{args.width} {kd_name}", res.best_path, res, sec,
                        args.student_epochs), "role": "student", "objective": res.extra.get("objective")})
    t_loaded = edgekit.load_model(teacher.best_path)
    tp = throughput(student, t_loaded.card, teacher=t_loaded.module)
    # students are judged by their final epoch: "best" is picked on the same test images it reports
    kd, lo, t = rows[-1]["final_top1"], rows[1]["final_top1"], rows[0]["top1"]
    checks = {"kd_minus_labels_only": round(kd - lo, 2), "teacher_minus_kd": round(t - kd, 2),
              "kd_beats_labels_by_1pt": kd - lo >= 1.0, "kd_within_1pt_of_teacher": t - kd <= 1.0,
              "engine_overhead_under_10pct": tp["overhead_pct"] < 10,
              # the "well under half the teacher's MACs", read as at most a third
              "student_macs_vs_teacher": round(rows[-1]["macs"] / rows[0]["macs"], 3),
              "student_macs_well_under_half": rows[-1]["macs"] <= rows[0]["macs"] / 3}
    env = environment(teacher_config=t_cfg.model_dump(), student_config=s_cfg.model_dump(),
                      objective=kd_res.extra.get("objective"), threads=torch.get_num_threads())
    out_name = f"distill{seed_suffix(args.seed)}"
    atomic_write_json(RESULTS / f"{out_name}.json", {"rows": rows, "throughput": tp, "checks": checks,
                                                "environment": env})
    md = ["# Distillation benchmark (CIFAR-10 JPEG copy: 50k train, 10k test, top-1 on test)", "",
          "| model | role | top-1 % (best) | final | start | params | MACs | epochs | train min |",
          "|---|---|---|---|---|---|---|---|---|"]
    md += [f"| {r['model']} | {r['role']} | {r['top1']:.2f} | {r['final_top1']:.2f} | {r['start_top1']:.2f} | "
           f"{r['params']:,} | {r['macs'] / 1e6:.1f}M | {r['epochs']} | {r['wall_min']} |" for r in rows]
    md += ["", f"Final epochs: {kd_name} - labels only: {checks['kd_minus_labels_only']:+.2f} points (target >= +1); "
           f"teacher - {kd_name}: {checks['teacher_minus_kd']:.2f} points (target <= 1); student MACs "
           f"{checks['student_macs_vs_teacher']:.0%} of the teacher's (target: well under half).", "",
           f"Training throughput, {tp['images']} images, batch {tp['batch']}, median of {tp['rounds']}: "
           f"engine {tp['engine_img_s']} img/s, bare loop {tp['bare_img_s']} img/s, overhead "
           f"{tp['overhead_pct']}% (target < 10%), both in the NHWC layout the engine uses by default; NCHW: engine "
           f"{tp['engine_nchw_img_s']} img/s, bare {tp['bare_nchw_img_s']} img/s, overhead {tp['overhead_nchw_pct']}%. "
           f"NHWC trains {tp['channels_last_speedup']}x as fast as NCHW here.", "",
           f"Teacher forward as distillation runs it (eval, NHWC, batch {tp['batch']}, same images, median of "
           f"{tp['rounds']}): float32 {tp['teacher_fp32_img_s']} img/s, bfloat16 autocast (--teacher-bf16) "
           f"{tp['teacher_bf16_img_s']} img/s ({tp['teacher_bf16_img_s'] / tp['teacher_fp32_img_s']:.2f}x); "
           f"bf16 moves its T=4 soft targets by a KL of {tp['teacher_bf16_kl_t4']:.1e} and keeps "
           f"{tp['teacher_bf16_argmax_agreement']:.2%} of its top-1 answers.", "",
           f"Students: {_init_note(rows[1], rows[-1], args.seed)}, same data order, augmentation (crop+flip), SGD lr {s_cfg.lr} cosine with "
           f"{s_cfg.warmup_epochs} warm-up epoch; {kd_name}: {_objective_note(kd_res.extra.get('objective'))}. "
           f"Teacher: SGD lr {t_cfg.lr} cosine, {args.teacher_epochs} epochs.", "",
           *([f"Rows from committed records (not re-trained here): {', '.join(r['model'] for r in rows if r.get('record'))}; "
              "their config equals this run's and they started from the same accuracy.", ""]
             if any(r.get("record") for r in rows) else []),
           f"CPU {env['cpu']['model']}, {env['threads']} torch threads, torch {env['versions']['torch']}, {env['date']}.", ""]
    atomic_write_text(RESULTS / f"{out_name}.md", "\n".join(md))
    print("\n".join(md))
    print(json.dumps(checks))


def throughput_only(student: str) -> None:
    tp = throughput(student, get_model(student, num_classes=10)[1])
    env = environment(threads=torch.get_num_threads(), load_average=list(os.getloadavg()))
    atomic_write_json(RESULTS / "distill_throughput.json", {"throughput": tp, "environment": env})
    md = ["# Training throughput: engine vs a bare PyTorch loop, NHWC and NCHW", "",
          f"{student}, {tp['images']} CIFAR-10 train images, batch {tp['batch']}, median of {tp['rounds']} rounds "
          "(each round times all four in turn).", "",
          "| layout | engine img/s | bare loop img/s | engine overhead |", "|---|---|---|---|",
          f"| NHWC (channels_last, the default) | {tp['engine_img_s']} | {tp['bare_img_s']} | {tp['overhead_pct']}% |",
          f"| NCHW | {tp['engine_nchw_img_s']} | {tp['bare_nchw_img_s']} | {tp['overhead_nchw_pct']}% |", "",
          f"The engine in NHWC trains {tp['channels_last_speedup']}x as fast as in NCHW.", "",
          f"CPU {env['cpu']['model']}, {env['threads']} torch threads, torch {env['versions']['torch']}, "
          f"load average at the end {env['load_average'][0]:.2f}, {env['date']}.", ""]
    atomic_write_text(RESULTS / "distill_throughput.md", "\n".join(md))
    print("\n".join(md))


def _record_row(path: Path, name: str, student: str, cfg: TrainConfig, initial_top1: float,
                alpha: float | None = None) -> dict:
    """A row from a committed run summary; refused unless it was trained exactly as this run."""
    rec = json.loads(path.read_text())
    diff = sorted(k for k, v in cfg.model_dump().items() if rec["config"].get(k) != v)
    if diff or abs(rec["initial_top1"] - initial_top1) > 1e-6:
        raise SystemExit(f"{path}: not comparable with this run (config differs in {diff or 'nothing'}; "
                         f"start top-1 {rec['initial_top1']} vs {initial_top1})")
    if alpha is not None and rec["objective"].get("alpha") != alpha:
        raise SystemExit(f"{path}: alpha {rec['objective'].get('alpha')}, expected {alpha}")
    model, card = get_model(student, num_classes=10)
    return {**_fields(name, model, card.input_size, rec["best_top1"], rec["initial_top1"], rec["history"],
                      rec["epochs"]), "record": str(path), "objective": rec["objective"]}


def _objective_note(obj: dict | None) -> str:
    if not obj:
        return "?"
    if obj.get("loss") == "dkd":
        text = (f"CE + (alpha {obj['alpha']} TCKD + beta {obj['beta']} NCKD), T={obj['temperature']}, "
                f"KD terms ramped over {obj['warmup_epochs']:g} epochs")
    else:
        text = f"T={obj['temperature']}, alpha={obj['alpha']}"
    if obj.get("feature"):
        text += f", feature pair {obj['feature']} (relative MSE, weight {obj['feature_weight']:g})"
    return text + (", teacher in bf16 autocast" if obj.get("teacher_precision") == "bf16" else "")


def _init_note(labels_only: dict, kd: dict, seed: int = 0) -> str:
    """Same initial weights show as the same accuracy before training; say so only if it holds."""
    if labels_only["start_top1"] == kd["start_top1"]:
        return f"same initial weights (seed {seed}; equal top-1 before training)"
    return (f"NOT the same initial weights (top-1 before training {labels_only['start_top1']:.2f} vs "
            f"{kd['start_top1']:.2f}: the runs began in different processes, and before commit dfb819a a "
            "student's init came from torch's global RNG state, not the seed)")


if __name__ == "__main__":
    main()
