"""What streaming a split costs in training throughput, at ImageNet-style sizes.

A split larger than the memory budget is streamed: every epoch decodes each batch from its JPEG
files again (the next batch in a thread while the current one trains) instead of reading the
decoded tensor kept in memory. This script trains the same models both ways on the same images
and reports the engine's steady-state images/s (epochs after the first), median and p90 over
epochs and rounds, kept and streamed alternated so drift on a shared machine hits both.

The images: CIFAR-10 train/test JPEGs upscaled to photo size (default 500x375 with grain, JPEG quality 90)
into a temporary folder outside the project, read as torchvision's ImageNet models read theirs
(shorter side to 256, center crop 224). Also reports the decoder alone (images/s, one thread and
the split's own decoder) so the cost can be read against a model's step time.

    python benchmarks/streaming.py [--images 1024] [--models mobilenet_v3_small,mobilenet_v2]
        [--epochs 3] [--rounds 3]

Writes benchmarks/results/streaming.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import CIFAR, RESULTS, require_shared
from PIL import Image

from edgekit._io import atomic_write_json, atomic_write_text
from edgekit.data import load_dataset
from edgekit.data.split import MEMORY_ENV, _decode_all, _decode_one
from edgekit.env import environment
from edgekit.errors import EdgekitError
from edgekit.models import get_model
from edgekit.train import Supervised, TrainConfig, train

SIZE, RESIZE = (3, 224, 224), 256  # how torchvision's ImageNet models read their photos


def make_photos(dest: Path, n_train: int, n_eval: int, size: tuple[int, int], grain: float) -> float:
    """The first n images of each split, class-balanced, upscaled to `size` (w, h) photos with
    Gaussian grain (an upscaled 32x32 image is so smooth that its JPEG is several times smaller,
    and faster to decode, than a photo's). Returns the mean file size in KiB."""
    rng = np.random.default_rng(0)
    sizes = []
    for split, n in (("train", n_train), ("test", n_eval)):
        classes = sorted(p.name for p in (CIFAR / split).iterdir() if p.is_dir())
        per_class = -(-n // len(classes))
        for c in classes:
            out = dest / split / c
            out.mkdir(parents=True)
            for src in sorted((CIFAR / split / c).iterdir())[:per_class]:
                with Image.open(src) as im:
                    a = np.asarray(im.convert("RGB").resize(size, Image.BICUBIC), dtype=np.float32)
                a += rng.normal(0.0, grain, a.shape)
                Image.fromarray(a.clip(0, 255).astype(np.uint8)).save(out / (src.stem + ".jpg"), quality=90)
                sizes.append((out / (src.stem + ".jpg")).stat().st_size)
    return sum(sizes) / len(sizes) / 1024


def decoder_speed(split, n: int = 512) -> dict:
    paths = [str(p) for p in split.paths[:n]]
    t0 = time.perf_counter()
    for p in paths:
        _decode_one(p, split.input_size, RESIZE)
    one = len(paths) / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    _decode_all(paths, split.input_size, RESIZE)
    pooled = len(paths) / (time.perf_counter() - t0)
    return {"decode_1thread_img_s": round(one, 1), "decode_split_img_s": round(pooled, 1)}


def run_once(arch: str, data: Path, streamed: bool, cfg: TrainConfig, run_dir: Path) -> list[float]:
    """Steady-state images/s of each epoch after the first (the first also decodes a kept split)."""
    old = os.environ.get(MEMORY_ENV)
    os.environ[MEMORY_ENV] = "0" if streamed else "1000"
    try:
        ds = load_dataset(data, input_size=SIZE, resize=RESIZE)
        assert ds.train.streamed is streamed and ds.eval.streamed is streamed
    finally:
        if old is None:
            os.environ.pop(MEMORY_ENV)
        else:
            os.environ[MEMORY_ENV] = old
    torch.manual_seed(0)
    model, card = get_model(arch, num_classes=len(ds.classes))
    res = train(Supervised(model), card, ds.train, ds.eval, cfg, run_dir, progress=False)
    return [h["images_per_s"] for h in res.history[1:]]


def _at_least(low: int):
    def parse(text: str) -> int:
        if not text.isdigit() or int(text) < low:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {low}, got {text!r}")
        return int(text)
    return parse


def _photo(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(v.isdigit() and int(v) >= 32 for v in parts):
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT in pixels (each >= 32), e.g. 500x375, got {text!r}")
    return int(parts[0]), int(parts[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=_at_least(10), default=1024, help="train images (class-balanced)")
    ap.add_argument("--eval-images", type=_at_least(10), default=100, help="held-out images (evaluated each epoch)")
    ap.add_argument("--photo", type=_photo, default=(500, 375), help="upscaled JPEG size WxH (default 500x375: "
                    "ImageNet's typical photo)")
    ap.add_argument("--grain", type=float, default=16.0, help="Gaussian grain (pixel std) added to each photo")
    ap.add_argument("--models", default="mobilenet_v3_small,mobilenet_v2", help="zoo names, comma-separated")
    ap.add_argument("--epochs", type=_at_least(2), default=3, help="per run; the first is not counted")
    ap.add_argument("--rounds", type=_at_least(1), default=3, help="kept/streamed pairs per model")
    ap.add_argument("--batch", type=_at_least(1), default=64, help="training batch")
    args = ap.parse_args()
    if args.grain < 0:
        ap.error(f"argument --grain: expected a pixel std >= 0, got {args.grain:g}")
    for arch in args.models.split(","):  # an unknown name fails here, not after the photos are made
        try:
            get_model(arch, num_classes=10)
        except EdgekitError as e:
            ap.error(f"argument --models: {e}")
    require_shared()
    torch.set_num_threads(os.cpu_count() or 1)
    w, h = args.photo
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch, lr=0.01, eval_batch_size=args.batch)
    tmp = Path(tempfile.mkdtemp(prefix="edgekit-streaming-"))
    rows = []
    try:
        data = tmp / "photos"
        kib = make_photos(data, args.images, args.eval_images, (w, h), args.grain)
        ds = load_dataset(data, input_size=SIZE, resize=RESIZE)
        dec = decoder_speed(ds.train)
        print(f"decoder: {dec}", flush=True)
        for arch in args.models.split(","):
            speeds: dict[bool, list[float]] = {False: [], True: []}
            for r in range(args.rounds):
                for streamed in (False, True):
                    run_dir = tmp / f"{arch}-{r}-{int(streamed)}"
                    speeds[streamed] += run_once(arch, data, streamed, cfg, run_dir)
                    shutil.rmtree(run_dir)
                    print(f"{arch} round {r} {'streamed' if streamed else 'kept'}: "
                          f"{speeds[streamed][-(args.epochs - 1):]}", flush=True)
            kept, stream = (statistics.median(speeds[s]) for s in (False, True))
            # p90 of the time per image (the slow tail), as images/s
            p90 = {s: float(1 / np.percentile(1 / np.array(speeds[s]), 90)) for s in (False, True)}
            rows.append({"model": arch, "kept_img_s": round(kept, 1), "streamed_img_s": round(stream, 1),
                         "kept_p90_img_s": round(p90[False], 1), "streamed_p90_img_s": round(p90[True], 1),
                         "streamed_over_kept": round(stream / kept, 3),
                         "epochs_measured": len(speeds[False]),
                         "all_img_s": {"kept": speeds[False], "streamed": speeds[True]}})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    env = environment(torch_threads=torch.get_num_threads(), precision="float32 training")
    result = {"images": args.images, "photo": [w, h], "grain": args.grain, "mean_file_kib": round(kib, 1), "input": "resize 256, center crop 224",
              "batch": args.batch, "epochs_per_run": args.epochs, "rounds": args.rounds,
              "decoder": dec, "rows": rows, "environment": env}
    atomic_write_json(RESULTS / "streaming.json", result)
    lines = [
        "# Streaming a split vs keeping it decoded: training throughput",
        "",
        f"{args.images} CIFAR-10 train JPEGs upscaled to {w}x{h} with grain (std {args.grain:g}; JPEG quality 90, "
        f"{kib:.0f} KiB each on average), read as ImageNet models read "
        f"theirs (shorter side 256, center crop 224); random-init torchvision models, SGD, batch {args.batch}, "
        "crop+flip augmentation. Engine images/s per epoch, the first epoch of each run not counted; "
        f"{args.rounds} rounds of kept then streamed per model, {args.epochs - 1} epochs counted each.",
        "",
        "| model | kept img/s (median / p90) | streamed img/s (median / p90) | streamed / kept |",
        "|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['model']} | {r['kept_img_s']} / {r['kept_p90_img_s']} | "
                     f"{r['streamed_img_s']} / {r['streamed_p90_img_s']} | {r['streamed_over_kept']:.2f} |")
    lines += ["", f"Decoder alone, same photos to 224: {dec['decode_1thread_img_s']} img/s on one thread, "
              f"{dec['decode_split_img_s']} img/s through the split's decoder (threads when images are costly). "
              "p90: the 90th percentile of the time per image over the counted epochs, as img/s.",
              "", f"CPU {env['cpu']['model']}, {env['torch_threads']} torch threads, torch {env['versions'].get('torch')}, "
              f"{env['date']}."]
    atomic_write_text(RESULTS / "streaming.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
