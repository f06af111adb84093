"""Datasets for calibration and evaluation: `load_dataset("digits")` or `load_dataset(folder)`.

Nothing is decoded until a split is read, and subsets are chosen from the file list
first, so `load_dataset(path).evaluation(500)` decodes 500 images, not the whole folder.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from edgekit.data.digits import DIGITS_STATS, ChannelStats, digits_stats, load_digits_splits
from edgekit.data.imagefolder import absolute, find_splits, load_image_folder
from edgekit.data.split import Split, check_input_size
from edgekit.errors import DataError

__all__ = [
    "CALIBRATION_FRACTION",
    "ChannelStats",
    "DIGITS_STATS",
    "Dataset",
    "Split",
    "digits_stats",
    "find_splits",
    "load_dataset",
]

# Share of a single-folder dataset (no train split) set aside for calibration; the rest is `eval`.
CALIBRATION_FRACTION = 0.2


@dataclass
class Dataset:
    """A named dataset: `eval` is what accuracy is measured on, and never overlaps calibration data.

    Calibration comes from `train` when there is one; otherwise `load_dataset` splits the single
    folder once (stratified, seed 0) into `calibration_pool` (20%) and `eval` (80%).
    """

    name: str
    classes: list[str]
    train: Split | None
    eval: Split
    calibration_pool: Split | None = field(default=None, repr=False)

    def calibration(self, n: int | None, *, seed: int = 0) -> Split:
        """`n` class-balanced images for quantization calibration (all of them when n is None)."""
        pool = self.train if self.train is not None else self.calibration_pool
        if pool is None:
            raise DataError(f"dataset {self.name} has no train split and no calibration pool to calibrate from")
        return pool.subset(n, seed=seed)

    def evaluation(self, limit: int | None, *, seed: int = 0) -> Split:
        """`limit` class-balanced images of `eval` (all of them when None), the same for the same seed."""
        return self.eval.subset(limit, seed=seed)


def load_dataset(
    spec: str | Path, *, input_size: Sequence[int] = (3, 32, 32), resize: int | None = None
) -> Dataset:
    """"digits" (bundled with scikit-learn) or a folder in ImageFolder layout, at the model's input size.

    `resize` (folders only) scales the shorter side to `resize` and center-crops to (H, W), as
    ImageNet-style evaluation does; None resizes images straight to (H, W) when they differ.
    """
    size = check_input_size(input_size, resize)
    if isinstance(spec, str) and spec == "digits":
        train, test = load_digits_splits(input_size=size)
        return Dataset(name="digits", classes=list(train.classes), train=train, eval=test)
    train, eval_split = load_image_folder(spec, input_size=size, resize=resize)
    name = absolute(spec).name
    if train is not None:
        return Dataset(name=name, classes=list(eval_split.classes), train=train, eval=eval_split)
    pool, rest = eval_split.split(CALIBRATION_FRACTION, seed=0)
    pool.name, rest.name = f"{eval_split.name}/calibration", f"{eval_split.name}/eval"
    return Dataset(name=name, classes=list(rest.classes), train=None, eval=rest, calibration_pool=pool)
