"""The one training loop: fine-tuning, distillation, QAT and pruning recovery all run here.

An `Objective` (an nn.Module holding the model being trained plus any extra trainable parts,
e.g. a distillation projection) turns a batch into (loss, logits). The engine owns everything
else: sharding (DistributedSampler), augmentation, optimizer and schedule, gradient clipping,
per-epoch evaluation, metrics log, atomic checkpoints and resume.

Resume is exact: every epoch re-seeds its shuffling, augmentation and dropout from
(seed, epoch, rank), and a checkpoint is written at every epoch end, so a run killed at any
point and resumed replays the interrupted epoch exactly as an uninterrupted run would.
"""

from __future__ import annotations

import json
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DistributedSampler

from .._io import atomic_path, atomic_write_text
from ..env import cpu_info
from ..errors import InputError
from ..progress import progress_bar
from .augment import augment_batch
from .config import TrainConfig
from .distributed import DistInfo, all_reduce_sum, setup

if TYPE_CHECKING:  # pragma: no cover
    from ..data import Split
    from ..models import ModelCard

__all__ = ["Objective", "Supervised", "TrainResult", "train", "evaluate_top1"]


class Objective(nn.Module):
    """Batch -> (loss, logits). `model` is what gets saved; other submodules train alongside."""

    model: nn.Module

    def forward(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:  # pragma: no cover - interface
        raise NotImplementedError

    def describe(self) -> dict:
        return {"objective": type(self).__name__}

    def set_epoch(self, epoch: int) -> None:
        """Called before each epoch (0-based), for losses with their own schedule."""


class Supervised(Objective):
    """Cross-entropy on the labels (with optional label smoothing)."""

    def __init__(self, model: nn.Module, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.model = model
        self.label_smoothing = label_smoothing

    def forward(self, x, y, index):
        logits = self.model(x).float()  # the loss in float32 under bf16 autocast
        return F.cross_entropy(logits, y, label_smoothing=self.label_smoothing), logits


@dataclass
class TrainResult:
    run_dir: Path
    history: list[dict]
    best_top1: float
    best_path: Path
    last_path: Path
    initial_top1: float | None = None
    resumed_from_epoch: int = 0
    extra: dict = field(default_factory=dict)


def _schedule(cfg: TrainConfig, steps_per_epoch: int):
    total = cfg.epochs * steps_per_epoch
    warm = int(cfg.warmup_epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        progress = (step - warm) / max(1, total - warm)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return factor


def _optimizer(cfg: TrainConfig, params) -> torch.optim.Optimizer:
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]  # biases and norms are not decayed
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)


def _normalizer(card: "ModelCard", device, channels_last: bool = False):
    mean = torch.tensor(card.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(card.std, device=device).view(1, -1, 1, 1)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return lambda x: ((x.to(device, torch.float32) / 255 - mean) / std).contiguous(memory_format=fmt)


def _layout(module: nn.Module, channels_last: bool) -> None:
    """Put the 4-D parameters (and a distillation teacher's, see DistillObjective._apply) in the
    NHWC or the default layout; values are unchanged."""
    module.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


@contextmanager
def precision_policy(module: nn.Module, precision: str, device: torch.device):
    """Yields the training forward's autocast context for `precision` (disabled for fp32).

    Under bf16 on the CPU, depthwise convolutions of `module` run in float32 while the policy
    is active: oneDNN has no fast bf16 depthwise kernel, and a MobileNetV2-32 training step ran
    at 0.71x of its fp32 speed with them in bf16, 1.14x with them in float32 (AMX Xeon,
    benchmarks/precision.py). Other grouped convolutions (ResNeXt) were not measured and stay
    bf16. The hooks that do it are removed on exit, so the model leaves as it came."""
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise InputError("--precision bf16: this GPU has no bfloat16 support; train in fp32")
    handles, saved = [], []

    def enter(_m, args):
        saved.append(torch.is_autocast_enabled("cpu"))
        torch.set_autocast_enabled("cpu", False)
        return (args[0].float(), *args[1:]) if saved[-1] else None

    def leave(_m, _args, _out):
        torch.set_autocast_enabled("cpu", saved.pop())

    if precision == "bf16" and device.type == "cpu":
        for m in module.modules():
            if isinstance(m, nn.Conv2d) and 1 < m.groups == m.in_channels:
                handles += [m.register_forward_pre_hook(enter), m.register_forward_hook(leave)]
    try:
        yield torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    finally:
        for h in handles:
            h.remove()


def _same_config(saved: dict, cfg: TrainConfig) -> list[str]:
    """Settings that differ from a saved run's; a setting newer than the run counts as its default."""
    now = cfg.model_dump()
    defaults = {k: f.default for k, f in TrainConfig.model_fields.items()}
    return [k for k in now if saved.get(k, defaults[k]) != now[k]]


@torch.no_grad()
def evaluate_top1(model: nn.Module, split: "Split", card: "ModelCard", info: DistInfo | None = None,
                  batch_size: int = 256) -> tuple[float, float]:
    """(top-1 %, mean loss) on `split`, each process scoring its own shard."""
    info = info or DistInfo()
    was = model.training
    model.eval()
    cl = any(p.dim() == 4 and p.is_contiguous(memory_format=torch.channels_last)
             and not p.is_contiguous() for p in model.parameters())
    norm = _normalizer(card, info.device, channels_last=cl)
    idx = torch.arange(info.rank, len(split), info.world)
    labels = split.labels
    correct = loss = 0.0
    batches = [idx[i:i + batch_size] for i in range(0, len(idx), batch_size)]
    for b, x in zip(batches, split.read_batches(batches)):
        out = model(norm(x))
        y = labels[b].to(info.device)
        correct += float((out.argmax(1) == y).sum())
        loss += float(F.cross_entropy(out, y, reduction="sum"))
    model.train(was)
    correct, loss, n = all_reduce_sum([correct, loss, float(len(idx))], info)
    return 100 * correct / max(n, 1), loss / max(n, 1)


def _save_state(path: Path, **state) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def train(objective: Objective, card: "ModelCard", train_split: "Split", eval_split: "Split",
          cfg: TrainConfig, run_dir: str | Path, *, resume: bool = False, progress: bool = True,
          info: DistInfo | None = None) -> TrainResult:
    """Train `objective.model` in place; writes metrics.jsonl, last.pt, best.pt and state.pt.

    `last.pt` / `best.pt` are edgekit checkpoints (model + card) that go straight into
    `edgekit export` / `benchmark`; `state.pt` holds what `resume=True` needs.
    """
    from ..models import save_model

    info = info or setup()
    run_dir = Path(run_dir)
    state_path = run_dir / "state.pt"
    if state_path.exists() and not resume:
        raise InputError(f"{run_dir} already holds a training run; pass --resume to continue it "
                         "or choose another --out")
    if train_split is None or len(train_split) == 0:
        raise InputError("training needs a train split: give --data a folder with train/ and test/ "
                         "(or val/) class folders")
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    model = objective.model
    objective.to(info.device)
    _layout(objective, cfg.channels_last)
    params = [p for p in objective.parameters() if p.requires_grad]
    if not params:
        raise InputError("the model has no trainable parameters (a torch.export .pt2 or TorchScript "
                         "file cannot be trained: start from a state_dict or edgekit .pt checkpoint)")
    step_module: nn.Module = objective
    if info.enabled:
        step_module = nn.parallel.DistributedDataParallel(objective)
    opt = _optimizer(cfg, params)
    sampler = DistributedSampler(range(len(train_split)), num_replicas=info.world, rank=info.rank,
                                 shuffle=True, seed=cfg.seed)
    steps_per_epoch = math.ceil(len(sampler) / cfg.batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _schedule(cfg, steps_per_epoch))
    start_epoch, best, history, initial = 0, -1.0, [], None
    if resume and info.rank == 0:
        from .._io import remove_stale_temps
        remove_stale_temps(run_dir)
    if resume and state_path.exists():
        st = torch.load(state_path, map_location=info.device, weights_only=True)
        diff = _same_config(st["config"], cfg)
        if diff:
            raise InputError(f"cannot resume {run_dir}: settings differ from the interrupted run ({', '.join(diff)})")
        objective.load_state_dict(st["objective"])
        opt.load_state_dict(st["optimizer"])
        sched.load_state_dict(st["scheduler"])
        start_epoch, best, history, initial = st["epoch"], st["best"], st["history"], st.get("initial_top1")
    labels = train_split.labels
    if train_split.streamed and info.is_main and progress:
        from rich.console import Console
        Console(stderr=True).print(
            f"note: {train_split.name or 'train'} ({len(train_split):,} images, "
            f"{train_split.nbytes / 2**30:.1f} GiB decoded) exceeds the memory budget: each epoch decodes "
            "it from the files again (set EDGEKIT_MAX_MEMORY_GB to change the budget)", highlight=False)
    norm = _normalizer(card, info.device, cfg.channels_last)
    best_path, last_path = run_dir / "best.pt", run_dir / "last.pt"
    if initial is None:
        initial, _ = evaluate_top1(model, eval_split, card, info, cfg.eval_batch_size)
    with precision_policy(objective, cfg.precision, info.device) as autocast:
        for epoch in range(start_epoch, cfg.epochs):
            sampler.set_epoch(epoch)
            objective.set_epoch(epoch)
            torch.manual_seed(cfg.seed * 1_000_003 + epoch * 101 + info.rank)  # dropout etc.
            gen = torch.Generator().manual_seed(cfg.seed * 7_919 + epoch * 31 + info.rank)
            order = torch.tensor(list(sampler))
            objective.train()
            n_seen = n_correct = loss_sum = 0.0
            t0 = time.perf_counter()
            desc = f"epoch {epoch + 1}/{cfg.epochs}"
            with progress_bar(steps_per_epoch, desc, enabled=progress and info.is_main) as advance:
                batches = [order[i:i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
                # from memory, or decoded from the files one batch ahead when train/ is too large for it
                for idx, x in zip(batches, train_split.read_batches(batches)):
                    if cfg.augment:
                        x = augment_batch(x, gen, hflip=cfg.hflip)
                    y = labels[idx].to(info.device)
                    with autocast:  # the forward only: backward follows the dtypes it recorded
                        loss, logits = step_module(norm(x), y, idx)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    if cfg.grad_clip:
                        nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                    opt.step()
                    sched.step()
                    n_seen += len(idx)
                    n_correct += float((logits.detach().argmax(1) == y).sum())
                    loss_sum += loss.item() * len(idx)
                    ips = n_seen * info.world / (time.perf_counter() - t0)
                    advance(1, f"{desc} loss {loss_sum / n_seen:.3f} acc {100 * n_correct / n_seen:.1f}% "
                               f"{ips:.0f} img/s")
            seconds = time.perf_counter() - t0
            loss_sum, n_correct, n_seen = all_reduce_sum([loss_sum, n_correct, n_seen], info)
            top1, eval_loss = evaluate_top1(model, eval_split, card, info, cfg.eval_batch_size)
            rec = {"epoch": epoch + 1, "train_loss": loss_sum / n_seen, "train_top1": 100 * n_correct / n_seen,
                   "eval_top1": top1, "eval_loss": eval_loss, "lr": sched.get_last_lr()[0],
                   "images_per_s": n_seen / seconds, "seconds": seconds, "train_images": int(n_seen),
                   "world_size": info.world,
                   # per epoch: a resumed run may have run its epochs on different machines
                   "cpu": cpu_info()["model"], "threads": torch.get_num_threads()}
            history.append(rec)
            improved = top1 > best
            best = max(best, top1)
            if info.is_main:
                # rewritten whole from the history, so a resumed run never repeats or loses a line
                atomic_write_text(run_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in history))
                save_model(model, card, last_path)
                if improved:
                    save_model(model, card, best_path)
                _save_state(state_path, epoch=epoch + 1, objective=objective.state_dict(),
                            optimizer=opt.state_dict(), scheduler=sched.state_dict(), best=best,
                            history=history, config=cfg.model_dump(), initial_top1=initial,
                            rng=torch.get_rng_state())
                if progress:
                    from rich.console import Console
                    Console(stderr=True).print(
                        f"epoch {epoch + 1}: train loss {rec['train_loss']:.3f}, held-out top-1 {top1:.2f}%"
                        f"{' (best)' if improved else ''}", highlight=False)
            if info.enabled:
                torch.distributed.barrier()
    _layout(objective, False)  # callers export, prune and quantize the model next
    if info.is_main:
        atomic_write_text(run_dir / "summary.json", json.dumps(
            {"initial_top1": initial, "best_top1": best, "epochs": cfg.epochs, "config": cfg.model_dump(),
             "objective": objective.describe(), "history": history, "world_size": info.world,
             "streamed": {"train": train_split.streamed, "eval": eval_split.streamed}}, indent=2))
    return TrainResult(run_dir, history, best, best_path, last_path, initial, start_epoch)
