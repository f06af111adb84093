"""edgekit.data on real images: the shared CIFAR-10 JPEG copy, small PNG trees, scikit-learn digits."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from edgekit.data import DIGITS_STATS, Dataset, Split, digits_stats, find_splits, load_dataset
from edgekit.errors import DataError, InputError

CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR_TEST_MEAN = (0.4941, 0.4851, 0.4504)  # README of the shared copy
CIFAR_TEST_STD = (0.2448, 0.2422, 0.2606)


# ---- CIFAR-10 (shared JPEG copy) ----------------------------------------------------------------


@pytest.fixture(scope="module")
def cifar(cifar_dir: Path) -> Dataset:
    return load_dataset(cifar_dir)


def test_cifar_layout_and_counts(cifar: Dataset, cifar_dir: Path) -> None:
    assert cifar.name == cifar_dir.name
    assert cifar.classes == CIFAR_CLASSES
    assert cifar.train is not None and len(cifar.train) == 50_000
    assert len(cifar.eval) == 10_000
    assert cifar.eval.paths is not None and all(p.parent.parent.name == "test" for p in cifar.eval.paths)
    assert torch.equal(cifar.eval.labels.bincount(), torch.full((10,), 1000))
    assert find_splits(cifar_dir) == (cifar_dir.absolute() / "train", cifar_dir.absolute() / "test")


def test_cifar_evaluation_subset_is_seeded_balanced_and_lazy(cifar: Dataset) -> None:
    a, b = cifar.evaluation(500, seed=0), cifar.evaluation(500, seed=0)
    other = cifar.evaluation(500, seed=1)
    assert a.paths == b.paths and a.paths != other.paths
    assert a.paths == sorted(a.paths)  # stable order
    assert torch.equal(a.labels.bincount(), torch.full((10,), 50))
    assert a.fingerprint() == b.fingerprint() != other.fingerprint()
    assert cifar.evaluation(None) is cifar.eval and cifar.evaluation(10**6) is cifar.eval
    assert cifar.eval._images is None  # choosing 500 decoded nothing of the 10,000

    images = a.images
    assert images.shape == (500, 3, 32, 32) and images.dtype == torch.uint8
    assert a.images is images  # cached
    mean = (images.float() / 255).mean(dim=(0, 2, 3))
    assert torch.allclose(mean, torch.tensor(CIFAR_TEST_MEAN), atol=0.03)


def test_cifar_calibration_is_disjoint_from_eval(cifar: Dataset) -> None:
    calib = cifar.calibration(200, seed=0)
    assert len(calib) == 200 and calib.paths is not None
    assert all(p.parent.parent.name == "train" for p in calib.paths)
    assert not set(calib.paths) & set(cifar.eval.paths or [])
    assert calib.paths == cifar.calibration(200, seed=0).paths


def test_cifar_batches_normalize(cifar: Dataset) -> None:
    split = cifar.evaluation(100, seed=3)
    batches = list(split.batches(32, mean=CIFAR_TEST_MEAN, std=CIFAR_TEST_STD))
    assert [len(x) for x, _ in batches] == [32, 32, 32, 4]
    x, y = batches[0]
    assert x.shape == (32, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    expected = (split.images[:32].float() / 255 - torch.tensor(CIFAR_TEST_MEAN).view(3, 1, 1)) / torch.tensor(
        CIFAR_TEST_STD
    ).view(3, 1, 1)
    assert torch.allclose(x, expected)
    assert torch.equal(torch.cat([y for _, y in batches]), split.labels)
    half = next(split.batches(8, mean=0.5, std=0.5, dtype=torch.float16))[0]
    assert half.dtype == torch.float16 and float(half.min()) >= -1 and float(half.max()) <= 1
    xn, yn = next(split.numpy_batches(16, mean=CIFAR_TEST_MEAN, std=CIFAR_TEST_STD))
    assert isinstance(xn, np.ndarray) and xn.shape == (16, 3, 32, 32) and xn.dtype == np.float32
    assert yn.dtype == np.int64
    with pytest.raises(InputError):
        next(split.batches(8, mean=(0.5, 0.5), std=0.5))


# ---- small folders made here --------------------------------------------------------------------


def _image_tree(root: Path, classes: tuple[str, ...] = ("cat", "dog"), per_class: int = 5) -> Path:
    """A class-per-folder tree of 50x40 PNGs whose left half is dark and right half bright."""
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            arr = np.zeros((40, 50, 3), dtype=np.uint8)
            arr[:, 25:] = 200
            arr[..., 2] = 10 * i + c
            Image.fromarray(arr).save(root / name / f"{i}.PNG" if i == 0 else root / name / f"{i}.png")
    return root


def test_resize_none_scales_straight_to_input_size(tmp_path: Path) -> None:
    ds = load_dataset(_image_tree(tmp_path / "shapes"), input_size=(3, 32, 32))
    assert ds.classes == ["cat", "dog"] and ds.train is None
    images = torch.cat([ds.eval.images, ds.calibration(None).images])
    assert images.shape[1:] == (3, 32, 32) and len(images) == 10  # upper-case .PNG counted too
    row = images[0, 0, 16].float()
    assert row[:14].max() < 20 and row[18:].min() > 180  # whole width kept: edge at the middle


def test_resize_crops_the_center(tmp_path: Path) -> None:
    root = _image_tree(tmp_path / "shapes")
    straight = load_dataset(root, input_size=(3, 32, 32)).eval
    cropped = load_dataset(root, input_size=(3, 32, 32), resize=36).eval
    assert cropped.images.shape == straight.images.shape == (len(straight), 3, 32, 32)
    # 50x40 -> 45x36 -> center 32x32 keeps columns 6..38 of 45: the edge (22.5) lands at column ~16.5
    row = cropped.images[0, 0, 16].float()
    assert row[:14].max() < 20 and row[19:].min() > 180
    assert not torch.equal(cropped.images, straight.images)
    assert cropped.fingerprint() != straight.fingerprint()
    with pytest.raises(InputError, match="resize 28"):
        load_dataset(root, input_size=(3, 32, 32), resize=28)


def test_single_folder_splits_calibration_from_eval(tmp_path: Path) -> None:
    root = _image_tree(tmp_path / "flat", per_class=10)
    ds = load_dataset(root)
    assert ds.train is None and ds.classes == ["cat", "dog"]
    calib = ds.calibration(None)
    assert len(calib) == 4 and len(ds.eval) == 16
    assert not set(calib.paths or []) & set(ds.eval.paths or [])
    assert not set(ds.calibration(3, seed=5).paths or []) & set(ds.evaluation(None, seed=5).paths or [])
    assert torch.equal(calib.labels.bincount(), torch.tensor([2, 2]))  # stratified
    again = load_dataset(root)
    assert again.eval.paths == ds.eval.paths and again.calibration(None).paths == calib.paths


def test_train_and_val_layout(tmp_path: Path) -> None:
    _image_tree(tmp_path / "ds" / "train", per_class=3)
    _image_tree(tmp_path / "ds" / "val", per_class=2)
    ds = load_dataset(tmp_path / "ds")
    assert ds.train is not None and len(ds.train) == 6 and len(ds.eval) == 4
    assert ds.eval.name == "ds/val" and ds.calibration(None) is ds.train


def test_split_is_disjoint_and_complete(tmp_path: Path) -> None:
    split = load_dataset(_image_tree(tmp_path / "flat", per_class=10)).eval
    a, b = split.split(0.25, seed=1)
    assert len(a) + len(b) == len(split)
    assert set(a.paths or []) | set(b.paths or []) == set(split.paths or [])
    assert not set(a.paths or []) & set(b.paths or [])
    assert a.paths == split.split(0.25, seed=1)[0].paths
    with pytest.raises(InputError):
        split.split(1.0)


def test_grayscale_folder(tmp_path: Path) -> None:
    ds = load_dataset(_image_tree(tmp_path / "g"), input_size=(1, 28, 28))
    assert ds.eval.images.shape == (len(ds.eval), 1, 28, 28)


# ---- errors ---------------------------------------------------------------------------------------


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found") as err:
        load_dataset(tmp_path / "nope")
    assert str(tmp_path / "nope") in str(err.value)


def test_file_instead_of_folder(tmp_path: Path) -> None:
    f = tmp_path / "data.zip"
    f.write_bytes(b"PK")
    with pytest.raises(DataError, match="is a file") as err:
        load_dataset(f)
    assert str(f) in str(err.value)


def test_empty_folder_has_no_classes(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no class folders in") as err:
        load_dataset(tmp_path)
    assert str(tmp_path) in str(err.value) and "\n" not in str(err.value)


def test_class_folders_without_images(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match="no images"):
        load_dataset(tmp_path)
    _image_tree(tmp_path / "c_d", classes=("c", "d"))
    (tmp_path / "c_d" / "e").mkdir()
    with pytest.raises(DataError, match="without images.*: e;"):
        load_dataset(tmp_path / "c_d")


def test_train_only_or_mismatched_classes(tmp_path: Path) -> None:
    _image_tree(tmp_path / "ds" / "train", classes=("cat", "dog", "eel"))
    with pytest.raises(DataError, match="no test/, val/"):
        load_dataset(tmp_path / "ds")
    _image_tree(tmp_path / "ds" / "test", classes=("cat", "dog", "fox"))
    with pytest.raises(DataError, match="only in train: eel; only in test: fox"):
        load_dataset(tmp_path / "ds")


def test_corrupt_image_fails_on_decode(tmp_path: Path) -> None:
    root = _image_tree(tmp_path / "bad")
    corrupt = root / "dog" / "zz_corrupt.jpg"
    corrupt.write_bytes(os.urandom(2048))
    ds = load_dataset(root)  # listing reads no pixels
    with pytest.raises(DataError, match="unreadable image") as err:
        torch.cat([ds.eval.images, ds.calibration(None).images])
    assert str(corrupt) in str(err.value) and "\n" not in str(err.value)


def test_split_too_large_for_memory_is_streamed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # 9 evaluation images at 3x200000x200000 would need about 1 TiB once decoded: asking for them
    # all at once is refused before any file is read (not killed by the OOM killer an hour into
    # decoding), and the split says it streams
    root = _image_tree(tmp_path / "big")
    (root / "dog" / "zz_corrupt.jpg").write_bytes(os.urandom(2048))  # reading any file would fail differently
    big = load_dataset(root, input_size=(3, 200_000, 200_000)).eval
    with pytest.raises(DataError, match=r"big/eval: 9 images at 3x200000x200000 need 1005\.8 GiB in memory once "
                                        r"decoded, and [\d.]+ GiB is free to hold them: read it with \.batches\(\) "
                                        r"or \.read_batches\(\), which stream it, or take a \.subset\(N\)$"):
        big.images
    assert big.streamed and big.nbytes == 9 * 3 * 200_000**2
    # a streamed split reads the same pixels and batches, decoded from the files each time
    root = _image_tree(tmp_path / "small", per_class=7)
    kept = load_dataset(root, input_size=(3, 32, 32)).eval
    assert not kept.streamed  # decided once, on first use
    monkeypatch.setenv("EDGEKIT_MAX_MEMORY_GB", "0")
    streamed = load_dataset(root, input_size=(3, 32, 32)).eval
    assert streamed.streamed and not kept.streamed
    a = list(kept.batches(3, mean=0.5, std=0.25))
    b = list(streamed.batches(3, mean=0.5, std=0.25))
    assert len(a) == len(b) == 4 and all(torch.equal(x, y) and torch.equal(i, j) for (x, i), (y, j) in zip(a, b))
    index = [torch.tensor([4, 0]), torch.tensor([1]), torch.tensor([3, 2, 5])]
    assert all(torch.equal(x, kept.images[i]) for x, i in zip(streamed.read_batches(index), index))
    assert streamed._images is None  # nothing was kept
    with pytest.raises(DataError, match=r"EDGEKIT_MAX_MEMORY_GB allows 0\.0 GiB"):
        streamed.images
    monkeypatch.setenv("EDGEKIT_MAX_MEMORY_GB", "lots")
    with pytest.raises(InputError, match=r"EDGEKIT_MAX_MEMORY_GB must be a number of GB \(e\.g\. 8 or 0\.5\), got 'lots'"):
        load_dataset(root, input_size=(3, 32, 32)).eval.streamed


def test_bad_input_size() -> None:
    with pytest.raises(InputError):
        load_dataset("digits", input_size=(4, 32, 32))


# ---- digits ---------------------------------------------------------------------------------------


def test_digits() -> None:
    ds = load_dataset("digits")
    assert ds.name == "digits" and ds.classes == [str(d) for d in range(10)]
    assert ds.train is not None and len(ds.train) + len(ds.eval) == 1797
    assert len(ds.eval) == 360
    x = ds.eval.images
    assert x.shape == (360, 3, 32, 32) and x.dtype == torch.uint8
    assert torch.equal(x[:, 0], x[:, 2]) and int(x.max()) == 255
    again = load_dataset("digits")
    assert torch.equal(again.eval.images, x) and torch.equal(again.eval.labels, ds.eval.labels)
    assert again.eval.fingerprint() == ds.eval.fingerprint() != ds.train.fingerprint()
    assert len(ds.calibration(100)) == 100 and len(ds.evaluation(50, seed=1)) == 50


def test_digits_grayscale_and_stats() -> None:
    ds = load_dataset("digits", input_size=(1, 28, 28))
    assert ds.eval.images.shape == (360, 1, 28, 28)
    assert digits_stats((3, 32, 32)) == DIGITS_STATS
    assert len(digits_stats((1, 28, 28)).mean) == 1


def test_split_from_tensor_validates() -> None:
    with pytest.raises(InputError):
        Split.from_tensor(torch.zeros(2, 3, 4, 4), [0, 1], ["a", "b"])
    s = Split.from_tensor(torch.zeros(4, 3, 4, 4, dtype=torch.uint8), [0, 1, 0, 1], ["a", "b"], name="t")
    assert len(s.subset(2)) == 2 and s.subset(2).paths is None
