"""The model zoo: one registry of architectures, each with a builder and a default ModelCard.

Every torchvision classification builder is registered (random init only: edgekit never downloads
weights), plus CIFAR ResNets matching the shared teachers and 32x32 variants of mobile networks.
timm's classifiers are named `timm/NAME` and registered on first use (when timm is installed).
Add your own with `register_arch(ArchSpec(...))`.

Any arch takes the card options `input_size` (N or HxW), `resize` (N, or none), `mean` and `std`
(one value, or one per channel joined by "/"): the preprocessing the weights were trained with,
e.g. `resnet18:input_size=64` for a ResNet-18 trained on 64x64 images.
"""

from __future__ import annotations

import difflib
import inspect
import json
import re
from dataclasses import dataclass
from typing import Any, Callable

import torchvision
from pydantic import ValidationError
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
    "arch_card",
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
    #: card options (see CARD_OPTIONS) the builder consumes itself, e.g. MaxViT's input_size
    builder_options: tuple[str, ...] = ()


ARCHS: Registry[ArchSpec] = Registry("model")

# Options that would make a builder download weights; edgekit loads weights with load_model only.
_FORBIDDEN_OPTIONS = ("weights", "pretrained", "progress", "weights_backbone", "pretrained_cfg_overlay",
                      "checkpoint_path")
#: Options of every arch that set its card (the preprocessing), not its layers.
CARD_OPTIONS = ("input_size", "resize", "mean", "std")


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
                builder_options=("input_size",) if name.startswith("maxvit") else (),
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


# --------------------------------------------------------------------------- timm (on first use)
TIMM_PREFIX = "timm/"


def _timm():
    try:
        import timm
    except ImportError:
        raise InputError("timm models need timm: pip install 'edgekit[timm]'") from None
    return timm


def _timm_card(name: str) -> Callable[..., ModelCard]:
    def card(num_classes: int, in_chans: int = 3, **_: Any) -> ModelCard:
        # timm's published eval preprocessing for the arch (a config lookup: nothing downloads)
        cfg = _timm().get_pretrained_cfg(name)
        size = tuple(int(v) for v in (cfg.input_size if cfg else (3, 224, 224)))
        crop_pct = (cfg.crop_pct if cfg else None) or 0.875
        mean, std = (tuple(cfg.mean), tuple(cfg.std)) if cfg else (IMAGENET_MEAN, IMAGENET_STD)
        if in_chans not in (1, 3):
            raise ValueError(f"in_chans must be 1 (grayscale) or 3 (RGB), got {in_chans!r}: "
                             "edgekit decodes images as one or the other")
        if in_chans == 1:  # timm's in_chans=1 sums the RGB stem filters: the input is gray
            mean, std = (sum(mean) / len(mean),), (sum(std) / len(std),)
        return ModelCard(
            num_classes=num_classes,
            input_size=(in_chans, *size[1:]),  # type: ignore[arg-type]
            mean=mean,
            std=std,
            resize=max(int(max(size[1:]) / crop_pct), max(size[1:])),
            notes={"interpolation": cfg.interpolation if cfg else "bilinear",
                   "preprocessing": f"timm {cfg.architecture}.{cfg.tag}" if cfg else "timm default"},
        )

    return card


def _register_timm(full: str) -> None:
    """Register `timm/NAME` the first time it is asked for (timm has over a thousand archs; the
    import costs a second, and most runs never need it)."""
    timm = _timm()
    name = full[len(TIMM_PREFIX):]
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
        hint = f" (close: {', '.join(TIMM_PREFIX + c for c in close)})" if close else ""
        raise InputError(f"unknown timm model {name!r}{hint}; see `edgekit models 'timm/*'`")

    def build(*, num_classes: int = 1000, **options: Any) -> nn.Module:
        return timm.create_model(name, pretrained=False, num_classes=num_classes, **options)

    build.__name__ = build.__qualname__ = name
    register_arch(ArchSpec(name=full, builder=build, default_card=_timm_card(name), family="timm",
                           description=f"timm {name}"))


# --------------------------------------------------------------------------- public API
def list_models(pattern: str = "*") -> list[str]:
    """Canonical arch names matching a shell-style pattern, e.g. "cifar_*"; timm's archs only for
    a pattern that starts with "timm/" (they are more than a thousand)."""
    if pattern.startswith(TIMM_PREFIX):
        return sorted(TIMM_PREFIX + n for n in _timm().list_models(pattern[len(TIMM_PREFIX):]))
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
    if name.startswith(TIMM_PREFIX) and name not in ARCHS:
        _register_timm(name)
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
        **options: builder and card options; they override those in `arch`.

    Raises:
        InputError: unknown arch (with close names), unknown or invalid option.
    """
    name, spec, options, num_classes = _arch(arch, num_classes, options)
    built_with, _ = _split_options(spec, options)
    try:
        module = spec.builder(num_classes=num_classes, **built_with)
    except TypeError as exc:
        match = re.search(r"unexpected keyword argument '(\w+)'", str(exc))
        if match:
            known = _option_names(spec.builder)
            hint = f"; options: {', '.join(known) or 'none'}" if known is not None else ""
            raise InputError(f"model {name} has no option {match.group(1)!r}{hint}") from None
        raise InputError(f"bad option for model {name} {options}: {exc}") from None
    except (ValueError, AssertionError) as exc:
        raise InputError(f"bad option for model {name} {options}: {exc}") from None
    return module.eval(), _card(spec, num_classes, options).with_(source="random init")


def arch_card(arch: str, *, num_classes: int | None = None) -> ModelCard:
    """The card of `arch` (options included) without building the model."""
    _, spec, options, num_classes = _arch(arch, num_classes, {})
    return _card(spec, num_classes, options)


def _arch(arch: str, num_classes: int | None, options: dict[str, Any]) -> tuple[str, ArchSpec, dict[str, Any], int]:
    """Resolve and check an arch spec: (canonical name, spec, all options, class count)."""
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
    return name, spec, options, num_classes


def _split_options(spec: ArchSpec, options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the builder's options, the card's): CARD_OPTIONS go to the card unless the builder takes them."""
    card = {k: options[k] for k in CARD_OPTIONS if k in options and k not in spec.builder_options}
    return {k: v for k, v in options.items() if k not in card}, card


def _card(spec: ArchSpec, num_classes: int, options: dict[str, Any]) -> ModelCard:
    built_with, card_options = _split_options(spec, options)
    try:
        card = _with_card_options(spec.default_card(num_classes, **built_with), card_options)
    except (TypeError, ValueError) as exc:
        raise InputError(f"bad option for model {spec.name} {options}: {exc}") from None
    return card.with_(arch=spec.name, arch_kwargs=options)


def _floats(key: str, value: Any, channels: int) -> tuple[float, ...]:
    parts = [float(v) for v in str(value).split("/")]
    if len(parts) == 1:
        parts *= channels
    if len(parts) != channels:
        raise ValueError(f"{key} needs 1 or {channels} values joined by '/', got {value!r}")
    return tuple(parts)


def _with_card_options(card: ModelCard, options: dict[str, Any]) -> ModelCard:
    """The arch's default card with the preprocessing the user's weights were trained with.
    A new input_size drops the default resize-then-crop (set `resize` to keep one)."""
    if not options:
        return card
    changes: dict[str, Any] = {}
    channels = card.input_size[0]
    if "input_size" in options:
        text = str(options["input_size"]).lower()
        match = re.fullmatch(r"(\d+)(?:x(\d+))?", text)
        if not match:
            raise ValueError(f"input_size takes N or HxW (e.g. 64 or 96x128), got {options['input_size']!r}")
        h = int(match.group(1))
        w = int(match.group(2) or h)
        changes["input_size"], changes["resize"] = (channels, h, w), None
    if "resize" in options:
        r = options["resize"]
        if r is not None and (isinstance(r, bool) or not isinstance(r, int)):
            raise ValueError(f"resize takes a whole number of pixels (or none), got {r!r}")
        changes["resize"] = r
    for key in ("mean", "std"):
        if key in options:
            changes[key] = _floats(key, options[key], channels)
    try:
        return card.with_(**changes)
    except ValidationError as exc:  # the card's own reason, without pydantic's frame
        raise ValueError(exc.errors()[0]["msg"].removeprefix("Value error, ")) from None


def describe(arch: str) -> str:
    """One line for `edgekit models`: description, family and default input."""
    spec = ARCHS.get(_resolve(parse_arch(arch)[0]))
    card = arch_card(arch)
    c, h, w = card.input_size
    resize = f", resize {card.resize}" if card.resize else ""
    return f"{spec.name}: {spec.description} [{spec.family}; input {c}x{h}x{w}{resize}]"
