"""scikit-learn's bundled handwritten digits as the dataset "digits": real images with no download.

1,797 8x8 grayscale images (values 0..16) ship inside scikit-learn, which makes them the offline
dataset for quick end-to-end runs. They are scaled to uint8 0..255, upsampled bilinearly to the
model's (H, W) and replicated to 3 channels when C == 3. The train/test split is a fixed stratified
80/20 (`train_test_split(random_state=0)`: 1,437 train, 360 test), so the test set never changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import NamedTuple

import torch
import torch.nn.functional as F

from edgekit.data.split import Split, check_input_size

__all__ = ["DIGITS_CLASSES", "DIGITS_STATS", "ChannelStats", "digits_stats", "load_digits_splits"]

DIGITS_CLASSES = [str(d) for d in range(10)]


class ChannelStats(NamedTuple):
    """Per-channel mean and std on [0, 1], as a model card's normalization wants them."""

    mean: tuple[float, ...]
    std: tuple[float, ...]


# Mean/std of the 1,437 train images upsampled to 32x32, on [0, 1]; the same in every channel since the
# digits are gray. Kept as constants so importing edgekit.data does not load scikit-learn; a test checks
# them against `digits_stats((3, 32, 32))`. Other sizes differ slightly: call `digits_stats(input_size)`.
DIGITS_STATS = ChannelStats(mean=(0.3054,) * 3, std=(0.3237,) * 3)


@lru_cache(maxsize=4)
def _digits(h: int, w: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train images, train labels, test images, test labels), 1 channel uint8, built once per size."""
    from sklearn.datasets import load_digits  # deferred: scikit-learn takes a second to import
    from sklearn.model_selection import train_test_split

    data = load_digits()
    images = torch.as_tensor(data.images, dtype=torch.float32).unsqueeze(1) * (255.0 / 16.0)
    if (h, w) != (8, 8):
        images = F.interpolate(images, size=(h, w), mode="bilinear", align_corners=False)
    images = images.round_().clamp_(0, 255).to(torch.uint8)
    labels = torch.as_tensor(data.target, dtype=torch.int64)
    train_idx, test_idx = train_test_split(
        torch.arange(len(labels)).numpy(), test_size=0.2, random_state=0, stratify=data.target
    )
    train_idx, test_idx = torch.as_tensor(sorted(train_idx)), torch.as_tensor(sorted(test_idx))
    return images[train_idx], labels[train_idx], images[test_idx], labels[test_idx]


def load_digits_splits(*, input_size: Sequence[int] = (3, 32, 32)) -> tuple[Split, Split]:
    """(train, test) splits of the digits at `input_size`, in memory."""
    c, h, w = check_input_size(input_size)
    train_x, train_y, test_x, test_y = _digits(h, w)
    # copies, so a caller editing pixels in place cannot change the cached originals
    train_x, test_x = train_x.repeat(1, c, 1, 1), test_x.repeat(1, c, 1, 1)
    train = Split.from_tensor(train_x, train_y, DIGITS_CLASSES, name="digits/train")
    test = Split.from_tensor(test_x, test_y, DIGITS_CLASSES, name="digits/test")
    return train, test


def digits_stats(input_size: Sequence[int] = (3, 32, 32)) -> ChannelStats:
    """Mean/std of the train images at `input_size` on [0, 1], one value per channel."""
    c, h, w = check_input_size(input_size)
    x = _digits(h, w)[0].to(torch.float64) / 255.0
    mean, std = round(x.mean().item(), 4), round(x.std().item(), 4)
    return ChannelStats(mean=(mean,) * c, std=(std,) * c)
