"""torchvision mobile classifiers adapted to 32x32 inputs (CIFAR-sized students).

At 224 px the stride-2 stem is harmless; at 32 px it throws away three quarters of the pixels
before any feature is computed. These variants keep torchvision's blocks, widths and heads and only
set the stem convolution's stride to 1, plus a `width` multiplier for smaller students.
Uses torchvision's private `_mobilenet_v3_conf` / `_efficientnet_conf` (torchvision is pinned).
"""

from __future__ import annotations

from torch import nn
from torchvision.models.efficientnet import EfficientNet, _efficientnet_conf
from torchvision.models.mobilenetv2 import MobileNetV2
from torchvision.models.mobilenetv3 import MobileNetV3, _mobilenet_v3_conf

__all__ = [
    "cifar_mobilenet_v2",
    "cifar_mobilenet_v3_small",
    "cifar_mobilenet_v3_large",
    "cifar_efficientnet_b0",
    "stem_conv",
]


def stem_conv(model: nn.Module) -> nn.Conv2d:
    """The first convolution (features[0][0] in all four torchvision families)."""
    conv = model.features[0][0]  # type: ignore[index]
    if not isinstance(conv, nn.Conv2d):
        raise TypeError(f"expected a Conv2d stem, found {type(conv).__name__}")
    return conv


def _stride1_stem(model: nn.Module) -> nn.Module:
    stem_conv(model).stride = (1, 1)
    return model


def _check_width(width: float) -> float:
    if not isinstance(width, (int, float)) or isinstance(width, bool) or width <= 0:
        raise ValueError(f"width must be a positive number, got {width!r}")
    return float(width)


def cifar_mobilenet_v2(*, num_classes: int = 10, width: float = 1.0, dropout: float = 0.2) -> nn.Module:
    """MobileNetV2 with a stride-1 stem."""
    model = MobileNetV2(num_classes=num_classes, width_mult=_check_width(width), dropout=dropout)
    return _stride1_stem(model)


def _mobilenet_v3(arch: str, num_classes: int, width: float, dropout: float) -> nn.Module:
    setting, last_channel = _mobilenet_v3_conf(arch, width_mult=_check_width(width))
    model = MobileNetV3(setting, last_channel, num_classes=num_classes, dropout=dropout)
    return _stride1_stem(model)


def cifar_mobilenet_v3_small(*, num_classes: int = 10, width: float = 1.0, dropout: float = 0.2) -> nn.Module:
    """MobileNetV3-Small with a stride-1 stem."""
    return _mobilenet_v3("mobilenet_v3_small", num_classes, width, dropout)


def cifar_mobilenet_v3_large(*, num_classes: int = 10, width: float = 1.0, dropout: float = 0.2) -> nn.Module:
    """MobileNetV3-Large with a stride-1 stem."""
    return _mobilenet_v3("mobilenet_v3_large", num_classes, width, dropout)


def cifar_efficientnet_b0(
    *, num_classes: int = 10, width: float = 1.0, dropout: float = 0.2, stochastic_depth_prob: float = 0.2
) -> nn.Module:
    """EfficientNet-B0 (depth multiplier 1.0) with a stride-1 stem."""
    setting, last_channel = _efficientnet_conf(
        "efficientnet_b0", width_mult=_check_width(width), depth_mult=1.0
    )
    model = EfficientNet(
        setting,
        dropout,
        stochastic_depth_prob=stochastic_depth_prob,
        num_classes=num_classes,
        last_channel=last_channel,
    )
    return _stride1_stem(model)
