"""Standard augmentation on uint8 batches, driven by an explicit generator (reproducible resume)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF

__all__ = ["augment_batch"]


def augment_batch(x: torch.Tensor, gen: torch.Generator, *, hflip: bool = True) -> torch.Tensor:
    """Random crop with padding (inputs <= 64 px: CIFAR-style, pad = size/8) or random resized
    crop (larger inputs), then a horizontal flip with probability 0.5 when `hflip`."""
    n, _, h, w = x.shape
    if max(h, w) <= 64:
        p = max(1, h // 8)
        padded = F.pad(x, (p, p, p, p))
        dx = torch.randint(0, 2 * p + 1, (n,), generator=gen).tolist()
        dy = torch.randint(0, 2 * p + 1, (n,), generator=gen).tolist()
        x = torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])
    else:
        x = torch.stack([_random_resized_crop(img, gen) for img in x])
    if hflip:
        flip = (torch.rand(n, generator=gen) < 0.5)[:, None, None, None]
        x = torch.where(flip, x.flip(3), x)
    return x


def _random_resized_crop(img: torch.Tensor, gen: torch.Generator, scale=(0.08, 1.0),
                         ratio=(3 / 4, 4 / 3)) -> torch.Tensor:
    """torchvision's RandomResizedCrop sampling, with our generator instead of the global RNG."""
    _, h, w = img.shape
    area = h * w
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        u = torch.rand(2, generator=gen).tolist()
        target = area * (scale[0] + u[0] * (scale[1] - scale[0]))
        aspect = math.exp(log_ratio[0] + u[1] * (log_ratio[1] - log_ratio[0]))
        cw, ch = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            top = int(torch.randint(0, h - ch + 1, (1,), generator=gen))
            left = int(torch.randint(0, w - cw + 1, (1,), generator=gen))
            return TF.resized_crop(img, top, left, ch, cw, [h, w], antialias=True)
    return img
