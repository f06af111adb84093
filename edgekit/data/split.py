"""A labelled list of images, decoded lazily once and kept in memory as uint8.

Edge workflows (calibration, accuracy checks, benchmarks, training epochs) read the same images
many times, so a split decodes once into one uint8 tensor (4x smaller than float) and normalizes
per batch. Selecting a subset works on the path list, so `subset(500)` of 10,000 images decodes
only 500. A split too large for memory (see `memory_budget`) is streamed instead: `read` and
`batches` decode each batch from the files, the next one in a thread while the caller works.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torchvision.transforms import InterpolationMode

from edgekit.errors import DataError, InputError

__all__ = ["Split", "available_memory", "check_input_size", "memory_budget"]

_MAX_THREADS = 4
_CHUNK = 64  # images per thread task: large enough to amortize scheduling, small enough to fail fast
_THREADS_ABOVE_S = 0.0005  # seconds per image above which decoding in threads beats one thread


def check_input_size(input_size: Sequence[int], resize: int | None = None) -> tuple[int, int, int]:
    """Validate (C, H, W) and `resize` up front, so a bad option fails before any file is read."""
    size = tuple(int(v) for v in input_size)
    if len(size) != 3 or min(size) < 1 or size[0] not in (1, 3):
        raise InputError(f"input size must be (C, H, W) with C 1 or 3, got {tuple(input_size)}")
    if resize is not None and resize < max(size[1:]):
        raise InputError(f"resize {resize} is smaller than the crop {size[1]}x{size[2]}: use resize >= {max(size[1:])}")
    return size  # type: ignore[return-value]


class Split:
    """Images with integer labels; either files (decoded on first use) or an already decoded tensor."""

    def __init__(
        self,
        paths: Sequence[str | Path],
        labels: Sequence[int],
        classes: Sequence[str],
        *,
        input_size: Sequence[int],
        resize: int | None = None,
        name: str = "",
    ) -> None:
        if len(paths) != len(labels):
            raise InputError(f"{len(paths)} paths but {len(labels)} labels")
        # str inside: building 50,000 Path objects costs ~0.5 s per load; `.paths` builds them on demand
        self._paths: list[str] | None = [os.fspath(p) for p in paths]
        self._labels = torch.tensor(labels, dtype=torch.int64)
        self._classes = list(classes)
        self._input_size = check_input_size(input_size, resize)
        self._resize = resize
        self._images: torch.Tensor | None = None
        self._streamed: bool | None = None  # decided on first read, then kept
        self.name = name

    @classmethod
    def from_tensor(
        cls, images: torch.Tensor, labels: Sequence[int] | torch.Tensor, classes: Sequence[str], *, name: str = ""
    ) -> Split:
        """Wrap images already in memory (uint8, N x C x H x W), e.g. a bundled dataset."""
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise InputError(f"expected uint8 images of shape (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        labels = torch.as_tensor(labels, dtype=torch.int64)
        if len(labels) != len(images):
            raise InputError(f"{len(images)} images but {len(labels)} labels")
        self = cls.__new__(cls)
        self._paths = None
        self._labels = labels
        self._classes = list(classes)
        self._input_size = check_input_size(images.shape[1:])
        self._resize = None
        self._images = images.contiguous()
        self._streamed = False
        self.name = name
        return self

    # ---- plain attributes -------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._labels)

    def __repr__(self) -> str:
        state = "decoded" if self._images is not None else "not decoded"
        return f"Split({self.name!r}, {len(self)} images, {len(self._classes)} classes, {self._input_size}, {state})"

    @property
    def labels(self) -> torch.Tensor:
        """int64 labels, indices into `classes`."""
        return self._labels

    @property
    def classes(self) -> list[str]:
        return self._classes

    @property
    def paths(self) -> list[Path] | None:
        """Image files, or None for a split built from a tensor."""
        return None if self._paths is None else [Path(p) for p in self._paths]

    @property
    def input_size(self) -> tuple[int, int, int]:
        return self._input_size

    @property
    def nbytes(self) -> int:
        """Bytes of the whole split once decoded (uint8)."""
        c, h, w = self._input_size
        return len(self) * c * h * w

    @property
    def streamed(self) -> bool:
        """True when the split is too large to keep decoded (see `memory_budget`): `read` and
        `batches` then decode from the files every time. Decided on first use, then kept.

        The decoded tensor is allocated lazily, so without this an ImageNet-size folder would decode
        for an hour and then be killed by the kernel's OOM killer, with no message at all."""
        if self._streamed is None:
            budget = memory_budget()
            self._streamed = self._images is None and budget is not None and self.nbytes > budget
        return self._streamed

    @property
    def images(self) -> torch.Tensor:
        """uint8 (N, C, H, W); decoded on first access, then cached. Refused (DataError) for a split
        that does not fit in memory: use `read` / `batches`, which stream it."""
        if self._images is None:
            assert self._paths is not None
            if self.streamed:
                raise DataError(self._too_large())
            self._images = _decode_all(self._paths, self._input_size, self._resize)
        return self._images

    def _too_large(self) -> str:
        c, h, w = self._input_size
        budget = memory_budget() or 0
        where = f"{MEMORY_ENV} allows {budget / 2**30:.1f} GiB" if os.environ.get(MEMORY_ENV, "").strip() \
            else f"{budget / 2**30:.1f} GiB is free to hold them"
        return (f"{self.name or 'the images'}: {len(self):,} images at {c}x{h}x{w} need {self.nbytes / 2**30:.1f} GiB "
                f"in memory once decoded, and {where}: read it with .batches() or .read_batches(), which "
                "stream it, or take a .subset(N)")

    def read(self, index: torch.Tensor) -> torch.Tensor:
        """uint8 images at `index`: from memory (the whole split decoded on first use), or decoded
        from their files now when the split is `streamed`."""
        if self.streamed:
            assert self._paths is not None
            return _decode_all([self._paths[i] for i in index.tolist()], self._input_size, self._resize)
        return self.images[index]

    def read_batches(self, indices: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
        """`read` of each index batch in turn; a streamed split decodes the next batch in a thread
        while the caller works on this one (PIL releases the GIL while it decodes)."""
        if not self.streamed:
            for index in indices:
                yield self.read(index)
            return
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edgekit-stream")
        try:
            it = iter(indices)
            first = next(it, None)
            pending = None if first is None else pool.submit(self.read, first)
            while pending is not None:
                nxt = next(it, None)
                ahead = None if nxt is None else pool.submit(self.read, nxt)
                yield pending.result()
                pending = ahead
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    # ---- selection (before decoding) --------------------------------------------------------

    def subset(self, n: int | None, *, seed: int = 0) -> Split:
        """A deterministic, class-balanced random `n` items in stable (original) order; self if n covers all."""
        if n is None or n >= len(self):
            return self
        if n < 1:
            raise InputError(f"subset size must be at least 1, got {n}")
        order = _stratified_order(self._labels, seed)
        return self._take(order[:n].sort().values, self.name)

    def split(self, fraction: float, *, seed: int = 0) -> tuple[Split, Split]:
        """Two disjoint class-balanced parts: (`fraction` of the items, the rest); same seed, same parts."""
        if not 0.0 < fraction < 1.0:
            raise InputError(f"split fraction must be between 0 and 1, got {fraction}")
        if len(self) < 2:
            raise DataError(f"cannot split {self.name or 'a split'} of {len(self)} image(s) in two: add images")
        k = min(max(round(fraction * len(self)), 1), len(self) - 1)
        order = _stratified_order(self._labels, seed)
        return self._take(order[:k].sort().values, self.name), self._take(order[k:].sort().values, self.name)

    def _take(self, index: torch.Tensor, name: str) -> Split:
        if self._paths is None or self._images is not None:  # already in memory: slice, don't decode again
            out = Split.from_tensor(self.images[index], self._labels[index], self._classes, name=name)
            out._paths = None if self._paths is None else [self._paths[i] for i in index.tolist()]
            out._resize = self._resize
            return out
        idx = index.tolist()
        return Split(
            [self._paths[i] for i in idx],
            self._labels[index].tolist(),
            self._classes,
            input_size=self._input_size,
            resize=self._resize,
            name=name,
        )

    # ---- reading ------------------------------------------------------------------------------

    def batches(
        self,
        batch_size: int,
        *,
        mean: Sequence[float] | float,
        std: Sequence[float] | float,
        dtype: torch.dtype = torch.float32,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ((x/255 - mean)/std as `dtype`, labels) in order; normalizing per batch keeps memory at uint8."""
        if batch_size < 1:
            raise InputError(f"batch size must be at least 1, got {batch_size}")
        c = self._input_size[0]
        m = _per_channel(mean, c, "mean")
        s = _per_channel(std, c, "std")
        starts = range(0, len(self), batch_size)
        chunks = self.read_batches(torch.arange(i, min(i + batch_size, len(self))) for i in starts)
        for start, chunk in zip(starts, chunks):
            x = chunk.to(torch.float32).div_(255.0).sub_(m).div_(s)
            yield x.to(dtype), self._labels[start : start + batch_size]

    def numpy_batches(
        self,
        batch_size: int,
        *,
        mean: Sequence[float] | float,
        std: Sequence[float] | float,
        dtype: torch.dtype = torch.float32,
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Same as `batches` as numpy arrays, for ONNX Runtime / OpenVINO calibration and inference."""
        for x, y in self.batches(batch_size, mean=mean, std=std, dtype=dtype):
            yield x.numpy(), y.numpy()

    def fingerprint(self) -> str:
        """A short stable id for cache keys: files+labels+preprocessing, or the pixels for in-memory data.

        File contents are not read, so editing an image in place keeps the fingerprint.
        """
        h = hashlib.sha256()
        h.update(repr((self._classes, self._input_size, self._resize)).encode())
        h.update(self._labels.numpy().tobytes())
        if self._paths is not None:
            h.update("\0".join(self._paths).encode())
        else:
            h.update(self.images.numpy().tobytes())
        return h.hexdigest()[:16]


def _per_channel(value: Sequence[float] | float, channels: int, what: str) -> torch.Tensor:
    t = torch.as_tensor(value, dtype=torch.float32).flatten()
    if t.numel() == 1:
        t = t.expand(channels)
    if t.numel() != channels:
        raise InputError(f"{what} has {t.numel()} values but the images have {channels} channel(s)")
    if what == "std" and bool((t <= 0).any()):
        raise InputError(f"std must be positive, got {t.tolist()}")
    return t.view(channels, 1, 1)


def _stratified_order(labels: torch.Tensor, seed: int) -> torch.Tensor:
    """A seeded permutation reordered round-robin over classes, so any prefix is class-balanced."""
    n = len(labels)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    lab = labels[perm]
    grouped = torch.argsort(lab, stable=True)  # by class, keeping the random order inside each class
    counts = torch.bincount(lab)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty(n, dtype=torch.int64)
    rank[grouped] = torch.arange(n) - starts[lab[grouped]]  # k-th pick of its class
    key = rank * n + torch.arange(n)  # first every class's 1st pick, then every 2nd, ...
    return perm[torch.argsort(key)]


# ---- decoding ---------------------------------------------------------------------------------

_MEMORY_SHARE = 0.8  # of the memory available now: the model, the runtime and the batches need the rest
MEMORY_ENV = "EDGEKIT_MAX_MEMORY_GB"


def memory_budget() -> int | None:
    """Bytes one split may take decoded: $EDGEKIT_MAX_MEMORY_GB when set (a shared machine, or to
    force streaming), else 80% of the memory available when asked; None where that is unknown."""
    text = os.environ.get(MEMORY_ENV, "").strip()
    if text:
        try:
            gb = float(text)
        except ValueError:
            gb = -1.0
        if not 0 <= gb < float("inf"):
            raise InputError(f"{MEMORY_ENV} must be a number of GB (e.g. 8 or 0.5), got {text!r}")
        return int(gb * 2**30)
    avail = available_memory()
    return None if avail is None else int(_MEMORY_SHARE * avail)


def available_memory() -> int | None:
    """Bytes this process can still allocate: the kernel's MemAvailable, capped by a cgroup v2
    limit (a container's `--memory`); None where neither can be read (not Linux)."""
    found: list[int] = []
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    found.append(int(line.split()[1]) * 1024)
                    break
    except (OSError, ValueError, IndexError):
        pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text())
            found.append(max(int(limit) - used, 0))
    except (OSError, ValueError):
        pass
    return min(found) if found else None


def _decode_all(paths: list[str], input_size: tuple[int, int, int], resize: int | None) -> torch.Tensor:
    """Decode into one preallocated tensor, in a few threads when images are costly enough to gain.

    PIL releases the GIL while decoding and resizing, so threads pay off for large photos (1.6x on two
    cores at 500x375 -> 224); for tiny images (CIFAR, ~0.15 ms each) per-image Python work dominates
    and threads only contend, so the first chunk is timed inline to choose.
    """
    out = torch.empty((len(paths), *input_size), dtype=torch.uint8)

    def work(start: int) -> None:
        for i in range(start, min(start + _CHUNK, len(paths))):
            out[i] = _decode_one(paths[i], input_size, resize)

    if not paths:
        return out
    t0 = time.perf_counter()
    work(0)
    per_image = (time.perf_counter() - t0) / min(_CHUNK, len(paths))
    rest = range(_CHUNK, len(paths), _CHUNK)
    threads = min(_MAX_THREADS, os.cpu_count() or 1, len(rest))
    if threads <= 1 or per_image < _THREADS_ABOVE_S:
        for start in rest:
            work(start)
        return out
    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="edgekit-decode")
    try:
        for future in [pool.submit(work, start) for start in rest]:
            future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # on error: stop at once instead of decoding the rest
    return out


def _decode_one(path: str | Path, input_size: tuple[int, int, int], resize: int | None) -> torch.Tensor:
    """PIL decode -> RGB/L -> resize (+ center crop) exactly as torchvision's eval transforms do."""
    c, h, w = input_size
    try:
        with Image.open(path) as im:
            img = im.convert("L" if c == 1 else "RGB")
        if resize is not None:
            img = TF.resize(img, resize, interpolation=InterpolationMode.BILINEAR, antialias=True)
            img = TF.center_crop(img, [h, w])
        elif img.size != (w, h):
            img = TF.resize(img, [h, w], interpolation=InterpolationMode.BILINEAR, antialias=True)
    except Exception as exc:  # PIL raises OSError, ValueError, SyntaxError, DecompressionBombError...
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise DataError(f"unreadable image {path}: {reason}") from exc
    arr = torch.from_numpy(np.array(img))  # a writable copy
    return arr.unsqueeze(0) if c == 1 else arr.permute(2, 0, 1)
