"""How much does the labels-only student of benchmarks/distill.py move with the seed alone?

distill.py compares KD with labels only at one seed (0). Its targets (+1 point over labels only,
within 1 of the teacher) are judged on single runs, so this trains the labels-only student again
with other seeds (init, data order, augmentation), everything else as distill.py, and sets the
spread beside the committed KD records. No teacher runs in a labels-only run, so none is
fine-tuned here: the shared ResNet-56 only supplies the student's input size, normalization and
classes, as the fine-tuned one does in distill.py. KD students at other seeds come from
`distill.py --seed N` (records distill_*KD*_w<W>_e<E>_s<N>_summary.json); each KD record is set
against the labels-only run of its own seed (a paired difference) and against the labels-only mean.

    python benchmarks/distill_seeds.py [--seeds 1] [--width 1.0] [--student-epochs 60] [--report-only]

Resumable (each seed is a run folder under benchmarks/work/distill/). Writes each run's record
distill_labels_only_w<W>_e<E>_s<SEED>_summary.json and distill_seeds.{json,md}. --report-only
trains nothing and rebuilds the table from the committed records.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics

import torch
from _common import CIFAR, RESULTS, WORK, require_shared, seed_suffix, weights

from edgekit._io import atomic_write_json, atomic_write_text
from edgekit.env import environment
from edgekit.stages import distill
from edgekit.train import TrainConfig


def student_config(epochs: int, seed: int = 0) -> TrainConfig:
    """benchmarks/distill.py's student schedule (its s_cfg), at `seed`."""
    return TrainConfig(epochs=epochs, batch_size=128, lr=0.05, warmup_epochs=1, seed=seed)


def _kd_what(name: str, objective: dict) -> str:
    """'Hinton KD, 8-epoch teacher' from a record's file name (which teacher) and objective."""
    teacher = re.search(r"_t(\d+)_", name)
    what = f"DKD (beta {objective['beta']:g})" if objective.get("loss") == "dkd" else "Hinton KD"
    if objective.get("feature"):
        what += f" + feature pair {objective['feature']}"
    return f"{what}, {teacher.group(1) if teacher else 3}-epoch teacher"


def _same_config(record: dict, cfg) -> bool:
    """A record trained with `cfg` (fields added to TrainConfig after the record must be at their default)."""
    return all(record["config"].get(k, v) == v for k, v in cfg.model_dump().items())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="1", help="comma-separated seeds to train (seed 0 is distill.py's record)")
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--student-epochs", type=int, default=60)
    ap.add_argument("--report-only", action="store_true", help="train nothing; rebuild the table from the records")
    args = ap.parse_args()
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        ap.error(f"--seeds {args.seeds}: pass integers separated by commas, e.g. 1,2")
    if min(seeds) < 0 or args.student_epochs < 1 or args.width <= 0:
        ap.error("--seeds must be >= 0, --student-epochs >= 1 and --width > 0")
    require_shared()
    tag = f"w{args.width}_e{args.student_epochs}"
    student = f"cifar_mobilenet_v2:width={args.width}"
    runs = {}
    if args.report_only:  # every labels-only record of this schedule, as committed
        seeds = []
        for p in RESULTS.glob(f"distill_labels_only_{tag}_s*_summary.json"):
            m = re.fullmatch(rf"distill_labels_only_{re.escape(tag)}_s(\d+)_summary", p.stem)
            if m:
                runs[int(m.group(1))] = json.loads(p.read_text())
    for seed in seeds:
        cfg = student_config(args.student_epochs, seed)
        res = distill(weights(56), teacher_arch="cifar_resnet56", student=student, data=CIFAR,
                      out=WORK / "distill" / f"labels_only_{tag}{seed_suffix(seed)}", alpha=0.0, config=cfg,
                      resume=True)
        summary = json.loads((res.run_dir / "summary.json").read_text())
        name = f"distill_labels_only_{tag}{seed_suffix(seed)}_summary.json"
        atomic_write_json(RESULTS / name, summary)
        runs[seed] = summary
    # seed 0 from its committed record when it was not trained here
    rec0 = RESULTS / f"distill_labels_only_{tag}_summary.json"
    if 0 not in runs and rec0.exists():
        runs[0] = json.loads(rec0.read_text())
    write_report(runs, student, args.student_epochs, tag, trained=seeds)


def kd_records(seed: int, tag: str) -> dict[str, dict]:
    """distill.py's KD records (Hinton, DKD, + features) at `seed`, keyed by run name without the seed."""
    end = f"_{tag}{seed_suffix(seed)}_summary"
    return {p.stem.removeprefix("distill_").removesuffix(end): json.loads(p.read_text())
            for p in sorted(RESULTS.glob(f"distill_*KD*{end}.json"))}


def write_report(runs: dict[int, dict], student: str, epochs: int, tag: str, trained: list[int]) -> None:
    """distill_seeds.{json,md} from the labels-only records by seed, beside distill.py's KD records."""
    rows = []
    for seed, s in sorted(runs.items()):
        if not _same_config(s, student_config(epochs, seed)) or s["objective"].get("alpha") != 0.0:
            raise SystemExit(f"seed {seed}: its record was not trained as distill.py trains the "
                             f"labels-only student (config {s['config']}, objective {s['objective']})")
        rows.append({"seed": seed, "final_top1": s["history"][-1]["eval_top1"], "best_top1": s["best_top1"],
                     "start_top1": s["initial_top1"], "train_top1": s["history"][-1]["train_top1"],
                     "wall_min": round(sum(h["seconds"] for h in s["history"]) / 60, 1)})
    finals = [r["final_top1"] for r in rows]
    # KD students of distill.py, same schedule, each against the labels-only run of its own seed
    kd_rows = [{"run": f"{k}_{tag}{seed_suffix(seed)}", "what": _kd_what(f"{k}_{tag}", v["objective"]), "seed": seed,
                "final_top1": v["history"][-1]["eval_top1"],
                "vs_labels_only_same_seed": round(v["history"][-1]["eval_top1"] - runs[seed]["history"][-1]["eval_top1"], 2),
                "vs_labels_only_mean": round(v["history"][-1]["eval_top1"] - statistics.mean(finals), 2)}
               for seed in sorted(runs) for k, v in kd_records(seed, tag).items()
               if _same_config(v, student_config(epochs, seed))]
    kd_rows.sort(key=lambda r: (r["what"], r["seed"]))
    # variants with KD at more than one seed: the mean of their paired differences
    paired = {}
    for r in kd_rows:
        paired.setdefault(r["what"], []).append(r)
    kd_means = [{"what": w, "seeds": [r["seed"] for r in rs],
                 "mean_top1": round(statistics.mean(r["final_top1"] for r in rs), 2),
                 "mean_gain_same_seed": round(statistics.mean(r["vs_labels_only_same_seed"] for r in rs), 2),
                 "min_gain_same_seed": min(r["vs_labels_only_same_seed"] for r in rs)}
                for w, rs in paired.items() if len(rs) > 1]
    stats = {"n": len(finals), "mean": round(statistics.mean(finals), 2),
             "range": round(max(finals) - min(finals), 2),
             "stdev": round(statistics.stdev(finals), 2) if len(finals) > 1 else None}
    env = environment(student_config=student_config(epochs).model_dump(),
                      threads=torch.get_num_threads())
    # which CPU trained each labels-only seed here (records older than the engine's per-epoch "cpu"
    # field do not say): kept across runs
    prev_path = RESULTS / "distill_seeds.json"
    prev = json.loads(prev_path.read_text()) if prev_path.exists() else {}
    trained_on = prev.get("trained_on") or {str(t): prev["environment"]["cpu"]["model"]
                                            for t in prev.get("trained_here", [])}
    trained_on.update({str(t): env["cpu"]["model"] for t in trained})
    for seed, s in runs.items():  # records from after the engine logged each epoch's CPU say it themselves
        cpus = sorted({h["cpu"] for h in s["history"] if h.get("cpu")})
        if cpus:
            trained_on[str(seed)] = " + ".join(cpus)
    atomic_write_json(RESULTS / "distill_seeds.json", {"student": student, "labels_only": rows, "stats": stats,
                                                      "kd": kd_rows, "kd_means": kd_means, "trained_here": trained,
                                                      "trained_on": trained_on,
                                                      "environment": env})
    md = [f"# Labels-only student across seeds ({student}, {epochs} epochs, CIFAR-10 JPEG test)", "",
          "Same config as benchmarks/distill.py but the seed (initial weights, data order, augmentation).", "",
          "| seed | top-1 % final | best | start | train top-1 % (last epoch) | train min |", "|---|---|---|---|---|---|"]
    md += [f"| {r['seed']} | {r['final_top1']:.2f} | {r['best_top1']:.2f} | {r['start_top1']:.2f} | "
           f"{r['train_top1']:.2f} | {r['wall_min']} |" for r in rows]
    md += ["", f"{stats['n']} seeds: mean {stats['mean']:.2f}, range {stats['range']:.2f} points"
           + (f", sample stdev {stats['stdev']:.2f}" if stats["stdev"] is not None else "") + ".", ""]
    if kd_rows:
        md += ["KD students of distill.py (same schedule) against labels only at the same seed (same initial "
               "weights, data order and augmentation) and against the labels-only mean:", "",
               "| KD run | seed | record | top-1 % final | vs labels only, same seed | vs labels-only mean |",
               "|---|---|---|---|---|---|"]
        md += [f"| {r['what']} | {r['seed']} | {r['run']} | {r['final_top1']:.2f} | {r['vs_labels_only_same_seed']:+.2f} | "
               f"{r['vs_labels_only_mean']:+.2f} |" for r in kd_rows]
        md += [""]
    for m in kd_means:
        md += [f"{m['what']} at seeds {', '.join(map(str, m['seeds']))}: mean top-1 {m['mean_top1']:.2f}, "
               f"gain over labels only at the same seed {m['mean_gain_same_seed']:+.2f} on average "
               f"(smallest {m['min_gain_same_seed']:+.2f}; target +1).", ""]
    md += [(f"Trained by this run: seed {', '.join(map(str, trained))}, on the CPU below; the other rows are "
            "committed records" if trained else "Every row is a committed record")
           + "".join(f"; labels-only seed {t} was trained on {cpu}" for t, cpu in sorted(trained_on.items()))
           + " (train minutes are from the machine each ran on; distill.md and distill_s<N>.md name the KD runs').", "",
           f"CPU {env['cpu']['model']}, {env['threads']} torch threads, torch {env['versions']['torch']}, {env['date']}.", ""]
    atomic_write_text(RESULTS / "distill_seeds.md", "\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
