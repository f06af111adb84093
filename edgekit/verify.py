"""Check an artifact against its source model on real images, through its own runtime."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np
from pydantic import BaseModel, Field

if TYPE_CHECKING:  # pragma: no cover
    from .data import Split
    from .models import ModelCard

__all__ = ["Tolerance", "Verification", "predict", "verify", "accuracy"]


class Tolerance(BaseModel):
    """Pass criteria per precision. Float exports must agree almost exactly; INT8 may drift."""

    #: "quantized" applies to every artifact of an edgekit fake-quant model, checked against that
    #: model: the runtime should compute the same integer grid (differences are rounding only).
    min_agreement: dict[str, float] = Field(
        default_factory=lambda: {"fp32": 0.999, "fp16": 0.99, "int8": 0.95, "quantized": 0.99})
    #: Largest allowed top-1 drop (points) against the source model, per precision.
    max_top1_drop: dict[str, float] = Field(
        default_factory=lambda: {"fp32": 0.2, "fp16": 0.5, "int8": 2.0, "quantized": 1.0})


@dataclass
class Verification:
    n: int
    top1: float            # percent, against labels
    top5: float | None     # percent, None when there are fewer than 6 classes
    agreement: float       # fraction of images whose top-1 matches the source model
    max_abs_diff: float    # largest |logit difference| against the source model
    passed: bool
    reason: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def predict(fn: Callable[[np.ndarray], np.ndarray], split: "Split", card: "ModelCard", *,
            batch_size: int = 64, progress: Callable[[int], None] | None = None
            ) -> tuple[np.ndarray, np.ndarray]:
    """Logits of `fn` on every image of `split` (normalized with the card) and the labels."""
    outs, labels = [], []
    for x, y in split.batches(batch_size, mean=card.mean, std=card.std):
        out = np.asarray(fn(np.ascontiguousarray(x.numpy(), dtype=np.float32)))
        outs.append(out.reshape(out.shape[0], -1).astype(np.float32))
        labels.append(y.numpy())
        if progress:
            progress(len(y))
    return np.concatenate(outs), np.concatenate(labels)


def accuracy(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float | None]:
    """Top-1 and top-5 in percent (top-5 is None with fewer than 6 classes)."""
    top1 = float((logits.argmax(1) == labels).mean() * 100)
    if logits.shape[1] < 6:
        return top1, None
    top5_idx = np.argpartition(-logits, 5, axis=1)[:, :5]
    return top1, float((top5_idx == labels[:, None]).any(1).mean() * 100)


def verify(logits: np.ndarray, ref_logits: np.ndarray, labels: np.ndarray, precision: str,
           tol: Tolerance | None = None) -> Verification:
    """Compare an artifact's logits with the source model's on the same images."""
    tol = tol or Tolerance()
    n = len(labels)
    if logits.shape != ref_logits.shape:
        return Verification(n, 0.0, None, 0.0, float("inf"), False,
                            f"output shape {logits.shape} != source {ref_logits.shape}")
    if not np.isfinite(logits).all():
        return Verification(n, 0.0, None, 0.0, float("inf"), False, "non-finite outputs")
    top1, top5 = accuracy(logits, labels)
    ref_top1, _ = accuracy(ref_logits, labels)
    agreement = float((logits.argmax(1) == ref_logits.argmax(1)).mean())
    diff = float(np.abs(logits - ref_logits).max())
    reasons = []
    need = tol.min_agreement.get(precision, 0.95)
    if agreement < need:
        reasons.append(f"agreement {agreement:.2%} < {need:.1%}")
    drop = ref_top1 - top1
    if drop > tol.max_top1_drop.get(precision, 2.0):
        reasons.append(f"top-1 {top1:.2f}% is {drop:.2f} points below source {ref_top1:.2f}%")
    return Verification(n, top1, top5, agreement, diff, not reasons, "; ".join(reasons))
