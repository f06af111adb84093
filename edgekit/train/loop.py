"""A plain supervised training loop on a decoded Split.

Small on purpose: it trains the demo's teacher. Fine-tuning, QAT, pruning recovery and
distillation extend this loop rather than writing their own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from ..progress import progress_bar

if TYPE_CHECKING:  # pragma: no cover
    from ..data import Split
    from ..models import ModelCard

__all__ = ["FitConfig", "fit"]


@dataclass
class FitConfig:
    epochs: int = 5
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    pad_crop: int = 2        # random-crop padding in pixels (0 = off)
    hflip: bool = False      # off by default: digits and text are not mirror-symmetric
    seed: int = 0


def _augment(x: torch.Tensor, cfg: FitConfig, gen: torch.Generator) -> torch.Tensor:
    """Random crop with padding (+ optional flip) on a uint8 batch, applied per image."""
    if cfg.pad_crop:
        p = cfg.pad_crop
        padded = F.pad(x, (p, p, p, p))
        n, _, h, w = x.shape
        dx = torch.randint(0, 2 * p + 1, (n,), generator=gen)
        dy = torch.randint(0, 2 * p + 1, (n,), generator=gen)
        x = torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])
    if cfg.hflip:
        flip = torch.rand(x.shape[0], generator=gen) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
    return x


def fit(module: torch.nn.Module, train: "Split", card: "ModelCard", cfg: FitConfig | None = None,
        *, progress: bool = True) -> list[dict]:
    """Train `module` in place with SGD + cosine schedule; returns per-epoch loss/accuracy."""
    cfg = cfg or FitConfig()
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    images, labels = train.images, train.labels
    mean = torch.tensor(card.mean).view(1, -1, 1, 1)
    std = torch.tensor(card.std).view(1, -1, 1, 1)
    opt = torch.optim.SGD(module.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                          weight_decay=cfg.weight_decay, nesterov=True)
    steps_per_epoch = math.ceil(len(labels) / cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, epochs=cfg.epochs,
                                                steps_per_epoch=steps_per_epoch, pct_start=0.15)
    history = []
    module.train()
    with progress_bar(cfg.epochs * steps_per_epoch, "train", enabled=progress) as advance:
        for epoch in range(cfg.epochs):
            order = torch.randperm(len(labels), generator=gen)
            total, correct, loss_sum = 0, 0, 0.0
            for i in range(0, len(order), cfg.batch_size):
                idx = order[i:i + cfg.batch_size]
                x = (_augment(images[idx], cfg, gen).float() / 255 - mean) / std
                y = labels[idx]
                out = module(x)
                loss = F.cross_entropy(out, y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total += len(y)
                correct += int((out.argmax(1) == y).sum())
                loss_sum += float(loss) * len(y)
                advance(1, f"train epoch {epoch + 1}/{cfg.epochs} loss {loss_sum / total:.3f}")
            history.append({"epoch": epoch + 1, "loss": loss_sum / total, "train_top1": 100 * correct / total})
    module.eval()
    return history
