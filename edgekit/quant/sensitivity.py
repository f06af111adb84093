"""Mixed precision under an accuracy budget: measure each layer's sensitivity, keep the most
sensitive layers at higher precision until the measured drop fits the budget."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

from torch import nn

from ..models.clone import clone_module
from .prepare import calibrate, prepare

__all__ = ["LayerSensitivity", "scan", "choose"]


@dataclass
class LayerSensitivity:
    layer: str
    bits: int
    top1: float
    drop: float

    def to_dict(self) -> dict:
        return asdict(self)


def _ptq_top1(model: nn.Module, weights: dict[str, int], calib, score: Callable[[nn.Module], float],
              form: dict) -> float:
    q = prepare(clone_module(model), weights, **form)
    calibrate(q, calib())
    return score(q)


def scan(model: nn.Module, weights: dict[str, int], calib: Callable, score: Callable[[nn.Module], float],
         progress: Callable[[str], None] | None = None, **form) -> tuple[float, list[LayerSensitivity]]:
    """(float top-1, per-layer results): top-1 with only that layer (weights and input) quantized
    at its planned bits, calibrated on the same images. `form`: prepare()'s unsigned / residual."""
    base = score(model)
    out = []
    for name, b in weights.items():
        if progress:
            progress(name)
        top1 = _ptq_top1(model, {name: b}, calib, score, form)
        out.append(LayerSensitivity(name, b, top1, base - top1))
    return base, out


def choose(model: nn.Module, weights: dict[str, int], sens: list[LayerSensitivity], base: float,
           max_drop: float, calib: Callable, score: Callable[[nn.Module], float],
           **form) -> tuple[dict[str, int], float, list[str]]:
    """Raise the most sensitive layers (4 -> 8 bit, or 8 bit -> float) until the *measured* PTQ
    drop of the whole model is within `max_drop`. Returns (weights, measured drop, raised layers).

    Single-layer drops do not add up exactly, so they only decide the order and when a
    measurement is worth making; the budget is checked on the combined model."""
    def measure(w: dict[str, int]) -> float:
        return base - _ptq_top1(model, w, calib, score, form) if w else 0.0

    drops = {s.layer: max(s.drop, 0.0) for s in sens}
    order = sorted(drops, key=drops.get, reverse=True)
    current, raised = dict(weights), []
    predicted = sum(drops.values())
    drop, measured = measure(current), True
    for name in order:
        if measured and drop <= max_drop:
            break
        current = _raise(current, name)
        raised.append(name)
        predicted -= drops[name]
        measured = predicted <= max_drop
        if measured:
            drop = measure(current)
    if not measured:
        drop = measure(current)
    return current, drop, raised


def _raise(weights: dict[str, int], name: str) -> dict[str, int]:
    w = dict(weights)
    if w[name] == 4:
        w[name] = 8
    else:
        del w[name]
    return w
