"""Why QAT clips the gradient norm by default: INT8 QAT (batch norms folded) of ResNet-56 with
and without clipping, with KD from the float model and without.

A small setting on purpose (it is where the collapse was found: the --quick compress smoke run):
the shared ResNet-56 fine-tuned 1 epoch on 2,000 train/ images, then 1 QAT epoch on the same
2,000 images (16 steps, SGD lr 0.001, no weight decay), scored on 500 test images.
Writes benchmarks/results/qat_clip.{json,md}.

    python benchmarks/qat_clip.py
"""

from __future__ import annotations

from _common import CIFAR, RESULTS, WORK, require_shared, weights

from edgekit._io import atomic_write_json, atomic_write_text
from edgekit.env import environment
from edgekit.stages import finetune, quantize
from edgekit.train import TrainConfig

WORKQ = WORK / "qat_clip"
CONFIGS = (("KD, no clipping", True, None), ("KD, clip 1.0", True, 1.0), ("labels only, clip 1.0", False, 1.0))


def main() -> None:
    require_shared()
    teacher = finetune(weights(56), arch="cifar_resnet56", data=CIFAR, out=WORKQ / "teacher", resume=True,
                       progress=False, config=TrainConfig(epochs=1, batch_size=128, lr=0.01, seed=0,
                                                          train_limit=2000, eval_limit=500))
    rows = []
    for name, kd, clip in CONFIGS:
        cfg = TrainConfig(epochs=1, batch_size=128, lr=0.001, weight_decay=0.0, grad_clip=clip, seed=0,
                          train_limit=2000)
        r = quantize(teacher.best_path, data=CIFAR, out=WORKQ / name.replace(" ", "_").replace(",", ""), mode="qat",
                     bits=8, kd=kd, config=cfg, limit=500, backends=("torch",), resume=True, progress=False)
        rows.append({"config": name, "kd": kd, "grad_clip": clip, "fp32_top1": r.fp32_top1, "ptq_top1": r.ptq_top1,
                     "qat_top1": r.final_top1})
    env = environment()
    atomic_write_json(RESULTS / "qat_clip.json", {"rows": rows, "environment": env})
    md = ["# INT8 QAT of ResNet-56: gradient clipping", "",
          "| QAT | float top-1 % | PTQ top-1 % | after 1 QAT epoch % |", "|---|---|---|---|"]
    md += [f"| {r['config']} | {r['fp32_top1']:.2f} | {r['ptq_top1']:.2f} | {r['qat_top1']:.2f} |" for r in rows]
    md += ["", "ResNet-56 (shared weights) fine-tuned 1 epoch on 2,000 CIFAR-10 train images; QAT 1 epoch on the same "
           "2,000 (16 steps, SGD lr 0.001 cosine, no weight decay, BN folded), KD T 4 alpha 0.5; 500 test images.",
           f"torch {env['versions']['torch']}, {env['cpu']['model']}, {env['date']}.", ""]
    atomic_write_text(RESULTS / "qat_clip.md", "\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
