"""The model zoo: one registry of architectures, each with a builder and a default ModelCard.

Every torchvision classification builder is registered (random init only: edgekit never downloads
weights), plus CIFAR ResNets matching the shared teachers and 32x32 variants of mobile networks.
Add your own with `register_arch(ArchSpec(...))`.
"""

from __future__ import annotations

import difflib
import inspect
import json
import re
from dataclasses import dataclass
from typing import Any, Callable

import torchvision
from torch import nn

from .._registry import Registry
from ..errors import InputError
from . import small_input
from .card import CIFAR10_CLASSES, CIFAR10_MEAN, CIFAR10_STD, IMAGENET_MEAN, IMAGENET_STD, ModelCard
from .cifar_resnet import DEPTHS, cifar_resnet

__all__ = [
    "ArchSpec",
    "ARCHS",
    "register_arch",
    "list_models",
    "parse_arch",
    "get_model",
    "describe",
]


@dataclass(frozen=True)
class ArchSpec:
    """One architecture.

    Attributes:
        builder: keyword-only, `builder(*, num_classes, **options) -> nn.Module` (random init).
        default_card: `default_card(num_classes, **options) -> ModelCard`; options may change the
            input size (e.g. ViT's image_size), so the card sees them too.
    """

    name: str
    builder: Callable[..., nn.Module]
    default_card: Callable[..., ModelCard]
    family: str
    description: str
    default_num_classes: int = 1000


ARCHS: Registry[ArchSpec] = Registry("model")

# Options that would make a builder download weights; edgekit loads weights with load_model only.
_FORBIDDEN_OPTIONS = ("weights", "pretrained", "progress", "weights_backbone")


def register_arch(spec: ArchSpec, *, aliases: tuple[str, ...] = ()) -> ArchSpec:
    """Add an architecture; duplicate names raise ValueError."""
    return ARCHS.register(spec.name, spec, aliases=aliases)


# --------------------------------------------------------------------------- torchvision
# googlenet / inception_v3 return a namedtuple with aux logits unless told otherwise; with
# init_weights=False they skip a slow truncated-normal init and a warning.
_TV_DEFAULTS: dict[str, dict[str, Any]] = {
    "googlenet": {"aux_logits": False, "init_weights": False},
    "inception_v3": {"aux_logits": False, "init_weights": False},
}


def _tv_builder(name: str) -> Callable[..., nn.Module]:
    defaults = _TV_DEFAULTS.get(name, {})

    def build(*, num_classes: int = 1000, **options: Any) -> nn.Module:
        return torchvision.models.get_model(name, weights=None, num_classes=num_classes, **{**defaults, **options})

    build.__name__ = build.__qualname__ = name
    return build


def _tv_card(name: str) -> Callable[..., ModelCard]:
    def card(num_classes: int, **options: Any) -> ModelCard:
        # The preprocessing torchvision publishes for the arch's weights (no download involved).
        # The smallest crop wins: it is what the random-init builder accepts (e.g. vit_h_14 at 224).
        preset = min(torchvision.models.get_model_weights(name), key=lambda w: w.transforms().crop_size[0])
        tf = preset.transforms()
        crop, resize = tf.crop_size[0], tf.resize_size[0]
        if "image_size" in options:  # VisionTransformer
            crop, resize = int(options["image_size"]), None
        height = width = crop
        if "input_size" in options:  # MaxVit
            height, width = (int(s) for s in options["input_size"])
            resize = None
        categories = preset.meta.get("categories") or []
        return ModelCard(
            num_classes=num_classes,
            input_size=(3, height, width),
            mean=tuple(tf.mean),
            std=tuple(tf.std),
            resize=resize,
            class_names=list(categories) if len(categories) == num_classes else None,
            notes={"interpolation": tf.interpolation.value, "preprocessing": f"torchvision {preset}"},
        )

    return card


def _docstring_summary(fn: Callable[..., Any]) -> str:
    text = " ".join((inspect.getdoc(fn) or "").split("\n\n")[0].split())
    text = re.sub(r"`([^`<]+?)\s*<[^>]+>`_+", r"\1", text)  # rst links -> their text
    return text.split(". ")[0].rstrip(".")


def _register_torchvision() -> None:
    for name in torchvision.models.list_models(module=torchvision.models):
        fn = torchvision.models.get_model_builder(name)
        register_arch(
            ArchSpec(
                name=name,
                builder=_tv_builder(name),
                default_card=_tv_card(name),
                family="torchvision",
                description=_docstring_summary(fn),
            )
        )


# --------------------------------------------------------------------------- CIFAR ResNets
def _cifar_resnet_card(num_classes: int, **_: Any) -> ModelCard:
    # The shared teachers were trained on ImageNet statistics, not CIFAR's (see their README).
    return ModelCard(
        num_classes=num_classes,
        input_size=(3, 32, 32),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        class_names=list(CIFAR10_CLASSES) if num_classes == 10 else None,
    )


def _register_cifar_resnets() -> None:
    for depth in DEPTHS:

        def build(*, num_classes: int = 10, _depth: int = depth) -> nn.Module:
            return cifar_resnet(_depth, num_classes=num_classes)

        build.__name__ = build.__qualname__ = f"cifar_resnet{depth}"
        register_arch(
            ArchSpec(
                name=f"cifar_resnet{depth}",
                builder=build,
                default_card=_cifar_resnet_card,
                family="cifar_resnet",
                description=f"ResNet-{depth} for 32x32 inputs (He et al. 2016), option-A shortcuts; "
                "loads akamaster/pytorch_resnet_cifar10 weights",
                default_num_classes=10,
            ),
            aliases=(f"resnet{depth}",),
        )


# --------------------------------------------------------------------------- 32x32 mobile nets
def _small_input_card(num_classes: int, **_: Any) -> ModelCard:
    return ModelCard(
        num_classes=num_classes,
        input_size=(3, 32, 32),
        mean=CIFAR10_MEAN,
        std=CIFAR10_STD,
        class_names=list(CIFAR10_CLASSES) if num_classes == 10 else None,
    )


def _register_small_input() -> None:
    for fn in (
        small_input.cifar_mobilenet_v2,
        small_input.cifar_mobilenet_v3_small,
        small_input.cifar_mobilenet_v3_large,
        small_input.cifar_efficientnet_b0,
    ):
        register_arch(
            ArchSpec(
                name=fn.__name__,
                builder=fn,
                default_card=_small_input_card,
                family="small_input",
                description=f"{_docstring_summary(fn)} for 32x32 inputs; option width (default 1.0)",
                default_num_classes=10,
            )
        )


_register_torchvision()
_register_cifar_resnets()
_register_small_input()


# --------------------------------------------------------------------------- public API
def list_models(pattern: str = "*") -> list[str]:
    """Canonical arch names matching a shell-style pattern, e.g. "cifar_*"."""
    return ARCHS.names(pattern)


def _parse_value(text: str) -> Any:
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low == "none":
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_arch(spec: str) -> tuple[str, dict[str, Any]]:
    """Split "name" or "name:key=val,key=val" into (name, options); values become int/float/bool/str.

    Example:
        >>> parse_arch("cifar_mobilenet_v2:width=0.5")
        ('cifar_mobilenet_v2', {'width': 0.5})
    """
    name, sep, rest = spec.strip().partition(":")
    name = name.strip()
    if not name:
        raise InputError(f"empty model name in {spec!r}")
    options: dict[str, Any] = {}
    if sep:
        for item in rest.split(","):
            key, eq, value = item.partition("=")
            key = key.strip()
            if not eq or not key.isidentifier():
                raise InputError(f"bad model option {item.strip()!r} in {spec!r}; expected NAME:key=value,key=value")
            options[key] = _parse_value(value.strip())
    return name, options


def _resolve(name: str) -> str:
    try:
        return ARCHS.resolve(name)
    except InputError as exc:
        if "(close:" in str(exc):
            raise
        close = difflib.get_close_matches(name, [*ARCHS.names(), *ARCHS.aliases()], n=5, cutoff=0.6)
        if not close:
            raise
        raise InputError(f"unknown model {name!r} (close: {', '.join(close)}); see `edgekit models`") from None


def _option_names(builder: Callable[..., Any]) -> list[str] | None:
    params = inspect.signature(builder).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    hidden = {"num_classes"}
    return [p.name for p in params if p.kind is p.KEYWORD_ONLY and not p.name.startswith("_") and p.name not in hidden]


def get_model(arch: str, *, num_classes: int | None = None, **options: Any) -> tuple[nn.Module, ModelCard]:
    """Build a random-init model (eval mode) and its card.

    Args:
        arch: a name or alias from `list_models()`, optionally with options ("name:key=val").
        num_classes: output classes; None keeps the arch's default (1000 torchvision, 10 CIFAR).
        **options: builder options; they override those in `arch`.

    Raises:
        InputError: unknown arch (with close names), unknown or invalid option.
    """
    name, parsed = parse_arch(arch)
    name = _resolve(name)
    spec = ARCHS.get(name)
    options = {**parsed, **options}
    for key in _FORBIDDEN_OPTIONS:
        if key in options:
            raise InputError(
                f"option {key!r} is not supported: edgekit builds random-init models and never downloads "
                "weights; load trained weights from a file instead (with --arch NAME for weights-only files)"
            )
    try:
        json.dumps(options)
    except (TypeError, ValueError):
        raise InputError(
            f"options for model {name} must be numbers, strings, booleans or lists so the card can record them"
        ) from None
    if "num_classes" in options:  # e.g. "resnet18:num_classes=10"
        given = options.pop("num_classes")
        num_classes = given if num_classes is None else num_classes
    if num_classes is None:
        num_classes = spec.default_num_classes
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes <= 0:
        raise InputError(f"num_classes must be a positive integer, got {num_classes!r}")
    try:
        module = spec.builder(num_classes=num_classes, **options)
    except TypeError as exc:
        match = re.search(r"unexpected keyword argument '(\w+)'", str(exc))
        if match:
            known = _option_names(spec.builder)
            hint = f"; options: {', '.join(known) or 'none'}" if known is not None else ""
            raise InputError(f"model {name} has no option {match.group(1)!r}{hint}") from None
        raise InputError(f"bad option for model {name} {options}: {exc}") from None
    except (ValueError, AssertionError) as exc:
        raise InputError(f"bad option for model {name} {options}: {exc}") from None
    try:
        card = spec.default_card(num_classes, **options)
    except (TypeError, ValueError) as exc:
        raise InputError(f"bad option for model {name} {options}: {exc}") from None
    card = card.with_(arch=name, arch_kwargs=options, source="random init")
    return module.eval(), card


def describe(arch: str) -> str:
    """One line for `edgekit models`: description, family and default input."""
    name, options = parse_arch(arch)
    spec = ARCHS.get(_resolve(name))
    card = spec.default_card(spec.default_num_classes, **options)
    c, h, w = card.input_size
    resize = f", resize {card.resize}" if card.resize else ""
    return f"{spec.name}: {spec.description} [{spec.family}; input {c}x{h}x{w}{resize}]"
