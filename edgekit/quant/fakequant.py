"""Fake quantization with learned scales, symmetric, zero point 0.

Scales are trained in the log domain (as in TQT, Jain et al. 2020) with LSQ's gradient scaling
(Esser et al. 2020): a plain learned scale took steps larger than itself at ordinary QAT learning
rates and the model diverged within a few batches; in log space a step is relative to the scale.

Symmetric per-output-channel weights and symmetric per-tensor signed activations are what
TensorRT's explicit quantization accepts. ONNX Runtime's and OpenVINO's x86 kernels take
unsigned activations (U8S8): a tensor that cannot be negative (after a ReLU) is then better
quantized on [0, 255], twice the steps, and that is the grid those runtimes execute, so the
torch model must be trained on it too (a signed-trained tensor written as UINT8 lets through
values the torch model clipped). The same code does 4-bit weights, which no library offers for
convolutions. Scales are trainable parameters, so QAT adapts the clipping ranges as well as
the weights.

Biases: an integer kernel adds the bias as INT32 on the grid in_scale * w_scale (the form the
ONNX Runtime file stores and OpenVINO converts). A layer linked to its input's quantizer
(`link_input`) rounds its bias to that grid too. The rounding is below one part in a thousand
of an activation step, yet on MobileNetV2 it alone moved 1.3% of top-1 predictions, and
keeping the float bias left its ONNX Runtime files at 98.1-98.8% agreement with the torch model.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["fake_quant", "qrange", "ActQuant", "QuantConv2d", "QuantLinear", "QUANT_LAYERS"]


def qrange(bits: int, *, narrow: bool = False, unsigned: bool = False) -> tuple[int, int]:
    """(qmin, qmax) of a signed (or unsigned) `bits` integer; `narrow` drops -2^(b-1)
    (symmetric weights)."""
    if unsigned:
        return 0, 2 ** bits - 1
    qmax = 2 ** (bits - 1) - 1
    return (-qmax if narrow else -qmax - 1), qmax


def _round_ste(x: torch.Tensor) -> torch.Tensor:
    return (x.round() - x).detach() + x


def _scale_grad(s: torch.Tensor, g: float) -> torch.Tensor:
    """Identity forward, gradient times g (LSQ's step-size gradient scaling)."""
    return (s - s * g).detach() + s * g


def fake_quant(x: torch.Tensor, log_scale: torch.Tensor, qmin: int, qmax: int, g: float = 1.0) -> torch.Tensor:
    """round(x / s) clamped to [qmin, qmax], times s = exp(log_scale); straight-through gradient
    for x and the scale."""
    s = _scale_grad(log_scale, g).exp()
    return torch.clamp(_round_ste(x / s), qmin, qmax) * s


def _mse_scale(x: torch.Tensor, qmin: int, qmax: int, dim: int | None = None) -> torch.Tensor:
    """The clipping scale minimising the quantization error of x (per `dim` slice, or overall)."""
    if dim is None:
        flat = x.reshape(1, -1)
    else:
        flat = x.transpose(0, dim).reshape(x.shape[dim], -1)
    amax = flat.abs().amax(1).clamp_min(1e-8)
    best_err = torch.full_like(amax, float("inf"))
    best = amax / qmax
    for frac in torch.linspace(0.3, 1.0, 36):
        s = (amax * frac / qmax).unsqueeze(1)
        err = ((torch.clamp((flat / s).round(), qmin, qmax) * s - flat) ** 2).mean(1)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best = torch.where(better, s.squeeze(1), best)
    return best if dim is not None else best[0]


class ActQuant(nn.Module):
    """Per-tensor activation quantizer, zero point 0, learned scale: signed, or unsigned for a
    tensor that cannot be negative.

    `cap`: the upper bound of a clip producing the tensor (ReLU6: 6). The scale is held at or
    below cap / qmax, so the grid saturates where the clip does and an exporter may drop the
    clip (a runtime fuses a ReLU into the conv, not a Clip inside the grid); calibration never
    picks a larger scale anyway, this keeps QAT from drifting there.

    Calibration (`observing = True`) keeps a sample of the values seen; `calibrate()` then sets
    the scale that minimises the quantization error on that sample.
    """

    def __init__(self, bits: int = 8, *, unsigned: bool = False, cap: float | None = None) -> None:
        super().__init__()
        self.bits, self.unsigned, self.cap = bits, unsigned, cap
        self.qmin, self.qmax = qrange(bits, unsigned=unsigned)
        self.log_scale = nn.Parameter(torch.tensor(0.0))
        self.observing = False
        #: a python float when exporting (a constant to the exporter, not a traced tensor)
        self.export_scale: float | None = None
        self._seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.export_scale is not None:  # exporters write this op as QuantizeLinear -> DequantizeLinear
            return torch.fake_quantize_per_tensor_affine(x, self.export_scale, 0, self.qmin, self.qmax)
        if self.observing:
            flat = x.detach().reshape(-1)
            if flat.numel() > 65536:  # a strided sample keeps memory flat
                flat = flat[:: flat.numel() // 65536]
            self._seen.append(flat.cpu())
            return x
        g = 1.0 / (x[0].numel() * self.qmax) ** 0.5 if self.training else 1.0
        return fake_quant(x, self._log_scale(), self.qmin, self.qmax, g)

    def _log_scale(self) -> torch.Tensor:
        if self.cap is None:
            return self.log_scale
        return torch.clamp(self.log_scale, max=math.log(self.cap / self.qmax))

    @property
    def scale(self) -> torch.Tensor:
        return self._log_scale().detach().exp()

    @torch.no_grad()
    def calibrate(self) -> None:
        if self._seen:
            self.log_scale.copy_(_mse_scale(torch.cat(self._seen), self.qmin, self.qmax).log())
        self._seen.clear()
        self.observing = False

    def extra_repr(self) -> str:
        return f"{'u' if self.unsigned else ''}int{self.bits}, scale={float(self.scale):.4g}"


class _QuantWeight(nn.Module):
    """Per-output-channel symmetric weights with learned scales (activations are quantized by
    ActQuant modules placed on tensors, see prepare.py)."""

    w_bits: int
    w_log_scale: nn.Parameter
    bias: torch.Tensor | None

    def link_input(self, aq: ActQuant) -> None:
        """Put the bias on the INT32 grid of this input quantizer. Kept out of `_modules` (the
        quantizer is registered where prepare.py placed it; a second registration would add
        its scale to this layer's state_dict)."""
        self.__dict__["_input_quant"] = aq

    def quant_bias(self) -> torch.Tensor | None:
        """The bias as the integer kernel adds it: round(b / (in_scale * w_scale)) on that grid
        (straight-through gradient; the scales get none from it). Float while the input
        quantizer is still calibrating, or when the input is not quantized."""
        aq = self.__dict__.get("_input_quant")
        if self.bias is None or aq is None or aq.observing:
            return self.bias
        step = (aq.scale * self.w_log_scale.detach().exp()).to(self.bias.dtype)
        return _round_ste(self.bias / step) * step

    def _init_quant(self, w_bits: int) -> None:
        self.w_bits = w_bits
        self.w_qmin, self.w_qmax = qrange(w_bits, narrow=True)
        with torch.no_grad():
            s = _mse_scale(self.weight.detach(), self.w_qmin, self.w_qmax, dim=0)
        self.w_log_scale = nn.Parameter(s.to(self.weight.dtype).log())

    def _shape(self) -> tuple[int, ...]:
        return (-1,) + (1,) * (self.weight.ndim - 1)

    def quant_weight(self) -> torch.Tensor:
        g = 1.0 / (self.weight[0].numel() * self.w_qmax) ** 0.5 if self.training else 1.0
        return fake_quant(self.weight, self.w_log_scale.view(self._shape()), self.w_qmin, self.w_qmax, g)

    @torch.no_grad()
    def int_weight(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(integer weights, per-channel scales) exactly as the fake-quant forward uses them."""
        s = self.w_log_scale.detach().exp()
        return torch.clamp((self.weight / s.view(self._shape())).round(), self.w_qmin, self.w_qmax), s

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, w_bits={self.w_bits}"


class QuantConv2d(nn.Conv2d, _QuantWeight):
    @classmethod
    def from_float(cls, conv: nn.Conv2d, w_bits: int) -> "QuantConv2d":
        q = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode)
        q.load_state_dict(conv.state_dict())
        q._init_quant(w_bits)
        return q

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.quant_weight(), self.quant_bias())


class QuantLinear(nn.Linear, _QuantWeight):
    @classmethod
    def from_float(cls, lin: nn.Linear, w_bits: int) -> "QuantLinear":
        q = cls(lin.in_features, lin.out_features, lin.bias is not None)
        q.load_state_dict(lin.state_dict())
        q._init_quant(w_bits)
        return q

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.quant_weight(), self.quant_bias())


#: float layer type -> its fake-quant replacement
QUANT_LAYERS: dict[type[nn.Module], type[nn.Module]] = {nn.Conv2d: QuantConv2d, nn.Linear: QuantLinear}
