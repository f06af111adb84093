"""Class-per-folder image trees (torchvision ImageFolder layout), listed with torchvision's own rules.

Two layouts are accepted:
- `ROOT/train/<class>/...` plus an eval folder `ROOT/test/`, `ROOT/val/` or `ROOT/validation/`
  (first found, in that order: test is the held-out set when both exist); train may be absent;
- `ROOT/<class>/...`: a single split, used for evaluation (and split for calibration by the caller).

Listing reuses `torchvision.datasets.folder` (sorted class names, `IMG_EXTENSIONS` matched
case-insensitively, sub-folders walked) so class indices match a model trained with ImageFolder.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

from edgekit.data.split import Split, check_input_size
from edgekit.errors import DataError

__all__ = ["EVAL_DIRS", "absolute", "find_splits", "read_image_folder", "load_image_folder"]

EVAL_DIRS = ("test", "val", "validation")


def absolute(path: str | Path) -> Path:
    """Absolute, `~` expanded and `..` folded (symlinks kept), so names and messages read well."""
    return Path(os.path.abspath(os.path.expanduser(path)))


def find_splits(root: str | Path) -> tuple[Path | None, Path]:
    """Return (train folder or None, eval folder) for a dataset root; checks the layout, not the images."""
    root = absolute(root)
    if not root.exists():
        raise DataError(f"dataset folder not found: {root} (give a folder in ImageFolder layout, or 'digits')")
    if not root.is_dir():
        raise DataError(f"{root} is a file, not a folder: give a folder of class sub-folders (ImageFolder layout)")
    train = root / "train"
    evals = [root / d for d in EVAL_DIRS if (root / d).is_dir()]
    if evals:
        return (train if train.is_dir() else None), evals[0]
    if train.is_dir():
        raise DataError(
            f"{train} has no test/, val/ or validation/ folder beside it: add one, "
            f"or give {train} itself to split it into calibration and evaluation"
        )
    return None, root


def read_image_folder(folder: str | Path) -> tuple[list[str], list[int], list[str]]:
    """List (paths, labels, classes) of one ImageFolder split; every class folder must hold an image.

    Paths stay strings: 50,000 Path objects would cost more than the directory walk itself.
    """
    folder = Path(folder)
    try:
        classes, class_to_idx = find_classes(folder)
    except FileNotFoundError:
        parent = folder.parent if folder.name in ("train", *EVAL_DIRS) else folder
        raise DataError(
            f"no class folders in {folder}: expected {parent}/<class>/<image> or {parent}/train/<class>/..."
        ) from None
    samples = make_dataset(folder, class_to_idx, extensions=IMG_EXTENSIONS, allow_empty=True)
    if not samples:
        raise DataError(
            f"no images in the class folders of {folder}: expected files ending in "
            f"{', '.join(IMG_EXTENSIONS)} (any case) under {folder}/<class>/"
        )
    empty = [classes[i] for i in sorted(set(range(len(classes))) - {label for _, label in samples})]
    if empty:
        raise DataError(f"class folders without images in {folder}: {', '.join(empty)}; add images or remove them")
    return [p for p, _ in samples], [label for _, label in samples], classes


def load_image_folder(
    root: str | Path, *, input_size: Sequence[int] = (3, 32, 32), resize: int | None = None
) -> tuple[Split | None, Split]:
    """(train split or None, eval split) of a dataset root, listed now and decoded on first use."""
    size = check_input_size(input_size, resize)
    train_dir, eval_dir = find_splits(root)
    name = absolute(root).name
    paths, labels, classes = read_image_folder(eval_dir)
    eval_name = name if eval_dir == absolute(root) else f"{name}/{eval_dir.name}"
    eval_split = Split(paths, labels, classes, input_size=size, resize=resize, name=eval_name)
    if train_dir is None:
        return None, eval_split
    paths, labels, train_classes = read_image_folder(train_dir)
    if train_classes != classes:
        only_train = sorted(set(train_classes) - set(classes))
        only_eval = sorted(set(classes) - set(train_classes))
        raise DataError(
            f"{train_dir} and {eval_dir} have different class folders "
            f"(only in train: {', '.join(only_train) or '-'}; only in {eval_dir.name}: {', '.join(only_eval) or '-'}): "
            "make both hold the same classes"
        )
    return Split(paths, labels, classes, input_size=size, resize=resize, name=f"{name}/train"), eval_split
