"""Training in bf16 autocast (`--precision bf16`) against fp32: speed and accuracy, same runs.

For each model: (1) training-step throughput of the two precisions, interleaved round by round on
the same batch (median of rounds, so a noisy neighbour hits both alike); (2) a full-data run of
the training engine in each precision from the same start and seed, for the held-out top-1 that
each ends at. The CIFAR ResNets fine-tune from the shared weights (as distill.py's teacher);
MobileNetV2-32 (distill.py's student) trains from a fresh init.

    python benchmarks/precision.py [--epochs 1] [--rounds 3] [--models resnet20,resnet56,mobilenet_v2]

Resumable (each run is a folder under benchmarks/work/precision/). Writes
benchmarks/results/precision.{json,md}, with the CPU's bf16/AMX flags.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from _common import CIFAR, RESULTS, WORK, require_shared, weights

from edgekit._io import atomic_write_json, atomic_write_text
from edgekit.env import environment
from edgekit.models import get_model
from edgekit.stages import distill, finetune
from edgekit.train import TrainConfig
from edgekit.train.engine import precision_policy

MODELS = {  # name: (zoo name, fine-tuned from the shared weights of this depth, or None: fresh init, lr)
    "resnet20": ("cifar_resnet20", 20, 0.01),
    "resnet56": ("cifar_resnet56", 56, 0.01),
    "mobilenet_v2": ("cifar_mobilenet_v2:width=1.0", None, 0.05),
}


def step_throughput(arch: str, rounds: int, steps: int = 8, batch: int = 128) -> dict:
    """img/s of a channels-last SGD step, fp32 and bf16 autocast alternating each round."""
    torch.manual_seed(0)
    model, _ = get_model(arch, num_classes=10)
    model = model.to(memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, 32, 32).to(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))

    def step(bf16: bool) -> None:
        # the engine's own policy (autocast, and depthwise convolutions kept in float32 on the CPU)
        with precision_policy(model, "bf16" if bf16 else "fp32", torch.device("cpu")) as autocast, autocast:
            out = model(x).float()
        loss = F.cross_entropy(out, y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    for bf16 in (False, True):  # warm-up: oneDNN picks and caches its kernels per dtype
        for _ in range(3):
            step(bf16)
    ips = {False: [], True: []}
    for _ in range(rounds):
        for bf16 in (False, True):
            t0 = time.perf_counter()
            for _ in range(steps):
                step(bf16)
            ips[bf16].append(steps * batch / (time.perf_counter() - t0))
    f, b = statistics.median(ips[False]), statistics.median(ips[True])
    return {"fp32_img_s": round(f, 1), "bf16_img_s": round(b, 1), "bf16_speedup": round(b / f, 2),
            "rounds": rounds, "steps": steps, "batch": batch}


def run(name: str, precision: str, epochs: int):
    arch, depth, lr = MODELS[name]
    cfg = TrainConfig(epochs=epochs, batch_size=128, lr=lr, seed=0, precision=precision)
    out = WORK / "precision" / f"{name}_{precision}_e{epochs}"
    if depth is not None:
        return finetune(weights(depth), arch=arch, data=CIFAR, out=out, config=cfg, resume=True)
    # a fresh student, labels only: distill() with alpha 0 never runs the teacher, which only
    # lends its input size, normalization and classes (as in distill.py)
    return distill(weights(20), teacher_arch="cifar_resnet20", student=arch, data=CIFAR, out=out,
                   alpha=0.0, config=cfg, resume=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--models", default=",".join(MODELS))
    args = ap.parse_args()
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in names if m not in MODELS]
    if unknown or not names:
        ap.error(f"--models {args.models}: choose from {', '.join(MODELS)}")
    if args.epochs < 1 or args.rounds < 1:
        ap.error("--epochs and --rounds must be at least 1")
    require_shared()
    rows = []
    for name in names:
        tp = step_throughput(MODELS[name][0], args.rounds)
        res = {p: run(name, p, args.epochs) for p in ("fp32", "bf16")}
        ips = {p: statistics.median(h["images_per_s"] for h in r.history) for p, r in res.items()}
        rows.append({"model": name, "arch": MODELS[name][0], "start": "shared weights" if MODELS[name][1] else "fresh init",
                     **tp, "start_top1": res["fp32"].initial_top1,
                     "fp32_top1": res["fp32"].history[-1]["eval_top1"], "bf16_top1": res["bf16"].history[-1]["eval_top1"],
                     "fp32_epoch_img_s": round(ips["fp32"], 1), "bf16_epoch_img_s": round(ips["bf16"], 1),
                     "epoch_speedup": round(ips["bf16"] / ips["fp32"], 2)})
    env = environment(threads=torch.get_num_threads(), epochs=args.epochs)
    bf16_units = [f for f in env["cpu"].get("isa", []) if "bf16" in f]
    atomic_write_json(RESULTS / "precision.json", {"rows": rows, "environment": env})
    md = ["# Training precision: bf16 autocast vs fp32 (CIFAR-10 JPEG copy)", "",
          f"Step throughput: one SGD step on a batch of 128 (channels-last), the two precisions alternating, "
          f"median of {args.rounds} rounds of 8 steps. Runs: the training engine, {args.epochs} epoch(s) on all 50k "
          "train images, batch 128, seed 0, each precision from the same start; top-1 on the 10k test images "
          "(evaluated in fp32).", "",
          "| model | start | step img/s fp32 | step img/s bf16 | bf16 speed-up (steps) | engine img/s fp32 / bf16 "
          "| bf16 speed-up (epochs) | top-1 % start | top-1 % fp32 | top-1 % bf16 | bf16 - fp32 |",
          "|---|---|---|---|---|---|---|---|---|---|---|"]
    md += [f"| {r['arch']} | {r['start']} | {r['fp32_img_s']:.0f} | {r['bf16_img_s']:.0f} | {r['bf16_speedup']:.2f}x | "
           f"{r['fp32_epoch_img_s']:.0f} / {r['bf16_epoch_img_s']:.0f} | {r['epoch_speedup']:.2f}x | {r['start_top1']:.2f} | "
           f"{r['fp32_top1']:.2f} | {r['bf16_top1']:.2f} | {r['bf16_top1'] - r['fp32_top1']:+.2f} |" for r in rows]
    md += ["", f"CPU {env['cpu']['model']} (bf16 units: {', '.join(bf16_units) or 'none'}), {env['threads']} torch "
           f"threads, torch {env['versions']['torch']}, {env['date']}.", ""]
    atomic_write_text(RESULTS / "precision.md", "\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
