"""Load the model files users actually have, safely, and save models together with their card.

Accepted: a zoo name (random init), torch.export archives (.pt2), TorchScript archives, edgekit
checkpoints, bare state_dicts and training checkpoints holding one, and safetensors files (both
with `arch`), and, only with `trust_pickle=True`, pickled whole modules. Files are recognised by
content, not by suffix, and every failure is one ModelLoadError line that says what to do.
"""

from __future__ import annotations

import os
import pickle
import re
import types
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from .._io import atomic_path
from ..errors import EdgekitError, ExportError, InputError, ModelLoadError
from .card import IMAGENET_MEAN, IMAGENET_STD, ModelCard
from .zoo import ARCHS, TIMM_PREFIX, _resolve, arch_card, get_model, parse_arch

__all__ = ["LoadedModel", "load_model", "save_model", "CARD_FILE", "CHECKPOINT_FORMAT"]

CARD_FILE = "edgekit_card.json"  # name of the card inside .pt2 / TorchScript archives
CHECKPOINT_FORMAT = "edgekit-checkpoint"
_STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "net", "ema")
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DataParallel/DDP, torch.compile
_NOT_TORCH_SUFFIXES = {".onnx", ".xml", ".bin", ".engine", ".plan", ".tflite"}
_MAX_NAMES = 5


@dataclass
class LoadedModel:
    """A float32 CPU module in eval mode and the card describing its input and classes."""

    module: nn.Module
    card: ModelCard


Loader = Callable[..., tuple[nn.Module, ModelCard]]


# =========================================================================== load
def load_model(
    source: str | os.PathLike[str],
    *,
    arch: str | None = None,
    num_classes: int | None = None,
    trust_pickle: bool = False,
) -> LoadedModel:
    """Load a model file, or build a zoo arch when `source` is a name rather than a file.

    Args:
        source: a file path, or a zoo name such as "cifar_resnet20" or "cifar_mobilenet_v2:width=0.5".
        arch: the architecture for files holding weights only (state_dicts, training checkpoints).
            A card stored in the file takes precedence.
        num_classes: force the class count; by default it is read from the weights.
        trust_pickle: allow unpickling arbitrary Python objects (can execute code).

    Raises:
        ModelLoadError: missing, corrupt or untrusted file, or weights that do not fit `arch`.
        InputError: unknown arch name or option.
    """
    path = Path(source)
    if not path.exists():
        if _names_zoo_arch(str(source)):
            module, card = get_model(str(source), num_classes=num_classes)
            _check_runs(module, card, str(source))
            return LoadedModel(module, card)
        raise ModelLoadError(f"model file not found: {path}")
    if path.is_dir():
        raise ModelLoadError(f"{path} is a directory, not a model file")
    loader = _LOADERS[_sniff(path)]
    module, card = loader(path, arch=arch, num_classes=num_classes, trust_pickle=trust_pickle)
    module = module.to("cpu").float()
    module.eval()
    _check_runs(module, card, str(path))
    # Keep the provenance a stored card carries ("fine-tuned on ..."); a bare file is its own source.
    return LoadedModel(module, card if card.source and card.source != "random init"
                       else card.with_(source=str(path)))


def _check_runs(module: nn.Module, card: ModelCard, name: str) -> None:
    """One forward at the card's input size, so a model that cannot take it (a ViT built for 224
    asked for input_size=64) is refused here in one line, not by a traceback mid-evaluation."""
    was_training = module.training
    try:
        with torch.no_grad():
            module.eval()(torch.zeros(1, *card.input_size))
    except Exception as exc:  # noqa: BLE001
        size = "x".join(map(str, card.input_size))
        raise ModelLoadError(
            f"{name} ({card.arch or 'model'}) does not run on a {size} input: {_short(exc).rstrip('.')}; give the "
            "input size it was trained at (--arch NAME:input_size=N)"
        ) from None
    finally:
        module.train(was_training)


def _names_zoo_arch(text: str) -> bool:
    try:
        name, _ = parse_arch(text)
    except InputError:
        return False
    return name in ARCHS or name.startswith(TIMM_PREFIX)  # timm's archs register on first use


def _sniff(path: Path) -> str:
    """Which loader a file needs: "export", "torchscript", "pickle" (torch.save, either format) or
    "safetensors"."""
    with open(path, "rb") as fh:
        head = fh.read(9)
    if not head:
        raise ModelLoadError(f"cannot read model file {path}: the file is empty")
    if head.startswith(b"PK"):
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
        except (zipfile.BadZipFile, OSError):
            raise ModelLoadError(f"cannot read model file {path}: truncated or corrupt zip archive") from None
        if any(n.endswith("/archive_format") for n in names):
            return "export"
        if any("/code/" in n or n.endswith("/constants.pkl") for n in names):
            return "torchscript"
        if any(n.endswith("data.pkl") for n in names):
            return "pickle"
        raise ModelLoadError(f"cannot read model file {path}: a zip archive that is not a PyTorch model")
    if head[:1] == b"\x80":  # pickle PROTO opcode: legacy torch.save (e.g. the shared .th files)
        return "pickle"
    if _is_safetensors(head, path):
        return "safetensors"
    raise ModelLoadError(f"cannot read model file {path}: not a PyTorch file (unrecognised header)")


# --------------------------------------------------------------------------- archives
def _load_export(
    path: Path, *, arch: str | None, num_classes: int | None, **_: Any
) -> tuple[nn.Module, ModelCard]:
    extra = {CARD_FILE: ""}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.export.load(str(path), extra_files=extra)
        module = _pin_eval(program.module())
    except Exception as exc:  # noqa: BLE001 - any failure here means an unreadable archive
        raise ModelLoadError(f"cannot read model file {path}: {_short(exc)}") from None
    card = _stored_card(extra, path)
    if card is None:
        input_size, out_classes = _program_shapes(program)
        card = _card_for_module(
            module, path, arch=arch, num_classes=num_classes, input_size=input_size, out_classes=out_classes
        )
    batch = _static_batch(program)
    if batch is not None:  # torch.export's default: the batch size of the example input
        module = _pin_eval(FixedBatch(module, batch))
        card = card.with_(notes={**card.notes, "fixed_batch": f"exported at a fixed batch of {batch}: "
                                 "runs in chunks of that size in torch, cannot be exported again"})
    return module, card


class FixedBatch(nn.Module):
    """A torch.export program traced at a fixed batch size, run on any batch in chunks of that
    size (the last chunk padded with copies of its last image, their outputs dropped). Its graph
    has the batch baked into its reshapes, so it cannot be re-exported with a dynamic batch."""

    def __init__(self, program: nn.Module, batch: int) -> None:
        super().__init__()
        self.program, self.batch = program, batch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = []
        for start in range(0, x.shape[0], self.batch):
            chunk = x[start:start + self.batch]
            real = chunk.shape[0]
            if real < self.batch:
                chunk = torch.cat([chunk, chunk[-1:].expand(self.batch - real, *chunk.shape[1:])])
            outs.append(self.program(chunk)[:real])
        return torch.cat(outs)


def _static_batch(program: Any) -> int | None:
    """The first user input's batch size when the program fixed it, else None (dynamic)."""
    user_inputs = set(program.graph_signature.user_inputs)
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name in user_inputs:
            shape = getattr(node.meta.get("val"), "shape", ())
            # a dynamic batch is a torch.SymInt, which int() would turn into its example value
            return int(shape[0]) if len(shape) and type(shape[0]) is int else None
    return None


def _program_shapes(program: Any) -> tuple[tuple[int, int, int] | None, int | None]:
    """(C, H, W) of the first user input and the class count of the first output, when static."""
    user_inputs = set(program.graph_signature.user_inputs)
    input_size = out_classes = None
    for node in program.graph.nodes:
        val = node.meta.get("val")
        if node.op == "placeholder" and node.name in user_inputs and input_size is None:
            input_size = _static(getattr(val, "shape", ())[1:], 3)
        elif node.op == "output":
            first = node.args[0][0] if node.args and node.args[0] else None
            shape = getattr(getattr(first, "meta", {}).get("val"), "shape", ())
            dims = _static(shape[1:], 1)
            out_classes = dims[0] if dims else None
    return input_size, out_classes  # type: ignore[return-value]


def _static(dims: Any, n: int) -> tuple[int, ...] | None:
    try:
        values = tuple(int(d) for d in dims)
    except (TypeError, ValueError, RuntimeError):
        return None  # symbolic size
    return values if len(values) == n else None


def _pin_eval(module: nn.Module) -> nn.Module:
    """An exported program is fixed in the mode it was exported in (eval): make eval() a no-op.

    torch.export's module() raises on both train() and eval(); callers routinely call eval().
    """
    for sub in module.modules():
        sub.training = False

    def _train(self: nn.Module, mode: bool = True) -> nn.Module:
        if mode:
            raise InputError(
                "a torch.export program (.pt2) is fixed in eval mode and cannot be trained; "
                "fine-tune from a checkpoint (.pt) instead"
            )
        return self

    def _eval(self: nn.Module) -> nn.Module:
        return self

    module.train = types.MethodType(_train, module)  # type: ignore[method-assign]
    module.eval = types.MethodType(_eval, module)  # type: ignore[method-assign]
    return module


def _load_torchscript(
    path: Path, *, arch: str | None, num_classes: int | None, **_: Any
) -> tuple[nn.Module, ModelCard]:
    extra = {CARD_FILE: ""}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(f"cannot read model file {path}: {_short(exc)}") from None
    module.eval()
    card = _stored_card(extra, path) or _card_for_module(module, path, arch=arch, num_classes=num_classes)
    return module, card


def _stored_card(extra: Mapping[str, Any], path: Path) -> ModelCard | None:
    text = extra.get(CARD_FILE)
    if not text:
        return None
    try:
        return ModelCard.from_json(text)
    except ValueError as exc:
        raise ModelLoadError(f"invalid model card inside {path}: {_short(exc)}") from None


def _card_for_module(
    module: nn.Module,
    path: Path,
    *,
    arch: str | None,
    num_classes: int | None,
    input_size: tuple[int, int, int] | None = None,
    out_classes: int | None = None,
) -> ModelCard:
    """A card for a module whose file stored none: from `arch`, else from a known input shape."""
    if arch is not None:
        size = arch_card(arch).input_size
        classes = out_classes or _probe_classes(module, size, path)
        card = arch_card(arch, num_classes=classes)
    elif input_size is not None:
        classes = out_classes or _probe_classes(module, input_size, path)
        card = ModelCard(
            num_classes=classes,
            input_size=input_size,
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            notes={"assumed": "the file stores no normalization; ImageNet mean/std assumed (pass --arch to set it)"},
        )
    else:
        raise ModelLoadError(
            f"{path} does not record its input size or normalization; "
            "pass --arch NAME with matching preprocessing (see `edgekit models`)"
        )
    if num_classes is not None and num_classes != card.num_classes:
        raise ModelLoadError(f"{path} outputs {card.num_classes} classes, not {num_classes}")
    return card


def _probe_classes(module: nn.Module, input_size: tuple[int, int, int], path: Path) -> int:
    try:
        with torch.no_grad():
            out = module(torch.zeros(1, *input_size))
    except Exception as exc:  # noqa: BLE001
        size = "x".join(map(str, input_size))
        raise ModelLoadError(f"{path}: forward on a 1x{size} input failed: {_short(exc)}") from None
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        raise ModelLoadError(f"{path}: the model does not return a (batch, classes) tensor")
    return int(out.shape[1])


# --------------------------------------------------------------------------- torch.save files
def _load_pickle(
    path: Path, *, arch: str | None, num_classes: int | None, trust_pickle: bool
) -> tuple[nn.Module, ModelCard]:
    return _from_object(_torch_load(path, trust_pickle), path, arch=arch, num_classes=num_classes)


def _torch_load(path: Path, trust_pickle: bool) -> Any:
    """torch.load with weights_only=True; arbitrary objects only when the user trusts the file."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" not in str(exc):
            raise ModelLoadError(f"cannot read model file {path}: {_short(exc)}") from None
        if not trust_pickle:
            raise ModelLoadError(
                f"{path} contains pickled Python objects (e.g. a whole nn.Module), which can execute code "
                "when loaded; re-run with --trust-pickle only if you trust its source, or save a state_dict instead"
            ) from None
    except Exception as exc:  # noqa: BLE001 - corrupt files fail in many ways
        raise ModelLoadError(f"cannot read model file {path}: {_short(exc)}") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=False)
    except (ImportError, AttributeError) as exc:
        raise ModelLoadError(
            f"cannot read model file {path}: {_short(exc)} (the pickled classes must be importable)"
        ) from None
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(f"cannot read model file {path}: {_short(exc)}") from None


def _is_safetensors(head: bytes, path: Path) -> bool:
    """safetensors: a little-endian u64 header length, then that many bytes of JSON."""
    if len(head) < 9 or head[8:9] != b"{":
        return False
    return 2 <= int.from_bytes(head[:8], "little") <= path.stat().st_size - 8


def _load_safetensors(
    path: Path, *, arch: str | None, num_classes: int | None, **_: Any
) -> tuple[nn.Module, ModelCard]:
    """Weights only (the format cannot hold code: the Hugging Face hub's timm files are these)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot read model file {path}: {_short(exc)}") from None
    if not state:
        raise ModelLoadError(f"{path} holds no tensors")
    return _from_object(state, path, arch=arch, num_classes=num_classes)


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    )


def _is_model_or_state(obj: Any) -> bool:
    return isinstance(obj, nn.Module) or _is_state_dict(obj)


def _from_object(obj: Any, path: Path, *, arch: str | None, num_classes: int | None) -> tuple[nn.Module, ModelCard]:
    if isinstance(obj, nn.Module):  # only reachable with trust_pickle
        obj.eval()
        return obj, _card_for_module(obj, path, arch=arch, num_classes=num_classes)
    if not isinstance(obj, Mapping):
        raise ModelLoadError(f"{path} holds a {type(obj).__name__}, not a model or a state_dict")
    if obj.get("format") == CHECKPOINT_FORMAT:
        return _from_checkpoint(obj, path)
    state = obj
    if not _is_state_dict(obj):
        key = next((k for k in _STATE_DICT_KEYS if _is_model_or_state(obj.get(k))), None)
        if key is None:
            raise ModelLoadError(
                f"{path} holds no model: a dict with keys {_few([str(k) for k in obj])}; expected a state_dict "
                f"or a checkpoint with one of {', '.join(_STATE_DICT_KEYS)}"
            )
        if isinstance(obj[key], nn.Module):
            return _from_object(obj[key], path, arch=arch, num_classes=num_classes)
        state = obj[key]
    if arch is None:
        raise ModelLoadError(f"{path} holds weights only; pass --arch NAME (see `edgekit models`)")
    return _fit_arch(state, path, arch, num_classes)


def _from_checkpoint(obj: Mapping[str, Any], path: Path) -> tuple[nn.Module, ModelCard]:
    try:
        card = ModelCard.from_dict(obj["card"])
        arch, options, state = obj["arch"], dict(obj.get("arch_kwargs") or {}), obj["state_dict"]
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelLoadError(f"invalid edgekit checkpoint {path}: {_short(exc)}") from None
    try:
        module, _ = get_model(arch, num_classes=card.num_classes, **options)
    except EdgekitError as exc:
        raise ModelLoadError(f"{path} was saved from model {arch}, which cannot be built here: {exc}") from None
    if obj.get("dropped_blocks"):  # a depth-pruned model: these blocks are identities
        drop_blocks_in(module, list(obj["dropped_blocks"]))
    if obj.get("resized"):  # a pruned model: the arch at the stored layer widths
        from .resize import resize_like
        resize_like(module, _strip_prefixes(state))
    if obj.get("quantization"):  # edgekit quantize: rebuild the fake-quant structure first
        from ..quant import rebuild
        module = rebuild(module, obj["quantization"])
    _fit(module, _strip_prefixes(state), path, arch)
    return module, card


# --------------------------------------------------------------------------- state_dict fitting
def _fit_arch(
    state: Mapping[str, torch.Tensor], path: Path, arch: str, num_classes: int | None
) -> tuple[nn.Module, ModelCard]:
    name, options = parse_arch(arch)
    name = _resolve(name)
    state = _strip_prefixes(state)
    module, card = get_model(name, num_classes=num_classes, **options)
    if num_classes is None:
        rows = _classifier_rows(module, state)
        if rows is not None and rows != card.num_classes:
            module, card = get_model(name, num_classes=rows, **options)
    _fit(module, state, path, name)
    return module, card


def _strip_prefixes(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop wrapper prefixes shared by every key (DataParallel's module., torch.compile's _orig_mod.)."""
    state = dict(state)
    while state:
        prefix = next((p for p in _WRAPPER_PREFIXES if all(k.startswith(p) for k in state)), None)
        if prefix is None:
            break
        state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def _classifier_rows(module: nn.Module, state: Mapping[str, torch.Tensor]) -> int | None:
    """Rows of the file's final classifier weight: the last Linear (else last Conv2d) of the arch."""
    last_linear = last_conv = None
    for name, sub in module.named_modules():
        if isinstance(sub, nn.Linear):
            last_linear = name
        elif isinstance(sub, nn.Conv2d):
            last_conv = name
    head = last_linear if last_linear is not None else last_conv
    weight = state.get(f"{head}.weight") if head is not None else None
    return int(weight.shape[0]) if isinstance(weight, torch.Tensor) and weight.ndim >= 2 else None


def _fit(module: nn.Module, state: Mapping[str, torch.Tensor], path: Path, arch: str) -> None:
    """load_state_dict(strict=True) with a one-line report of what does not match."""
    state = dict(state)
    expected = module.state_dict()
    for key in expected:
        if key.endswith(".num_batches_tracked") and key not in state:
            state[key] = torch.tensor(0, dtype=torch.long)
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    problems = []
    if missing or unexpected:
        problems.append(
            f"{len(missing)} missing keys{_few(missing, paren=True)}, "
            f"{len(unexpected)} unexpected keys{_few(unexpected, paren=True)}"
        )
    if mismatched:
        shown = [f"{k}: file {_shape(state[k])} vs model {_shape(expected[k])}" for k in mismatched[:_MAX_NAMES]]
        more = ", ..." if len(mismatched) > _MAX_NAMES else ""
        problems.append(f"{len(mismatched)} shape mismatches ({', '.join(shown)}{more})")
    if problems:
        raise ModelLoadError(f"weights in {path} do not match arch {arch}: {'; '.join(problems)}")
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelLoadError(f"weights in {path} do not match arch {arch}: {_short(exc)}") from None


def _shape(t: torch.Tensor) -> str:
    return "(" + ",".join(str(d) for d in t.shape) + ")"


def _few(names: list[str], *, paren: bool = False) -> str:
    if not names:
        return ""
    text = ", ".join(names[:_MAX_NAMES]) + (", ..." if len(names) > _MAX_NAMES else "")
    return f" ({text})" if paren else text


def _short(exc: BaseException) -> str:
    """One line of an exception, without ANSI codes or torch's multi-paragraph advice."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    if "central directory" in text:
        return "truncated or corrupt archive"
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    if not line or isinstance(exc, (LookupError, EOFError)):
        line = f"{type(exc).__name__}: {line}".rstrip(": ")
    return line if len(line) <= 200 else line[:197] + "..."


_LOADERS: dict[str, Loader] = {
    "export": _load_export,
    "torchscript": _load_torchscript,
    "pickle": _load_pickle,
    "safetensors": _load_safetensors,
}


# =========================================================================== save
def save_model(module: nn.Module, card: ModelCard, path: str | os.PathLike[str]) -> Path:
    """Write `module` with its card, atomically (temp file in the same folder, then os.replace).

    A `.pt2` path gets a torch.export archive (batch dimension dynamic, card inside); any other
    suffix an edgekit checkpoint (arch + card + state_dict), which needs a zoo arch in the card.

    Raises:
        InputError: unsuitable path, or a checkpoint for a module that is not its card's arch.
        ExportError: torch.export could not capture the module.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if path.is_dir():
        raise InputError(f"{path} is a directory; give a file path ending in .pt or .pt2")
    if suffix in _NOT_TORCH_SUFFIXES:
        raise InputError(f"{path}: save_model writes .pt checkpoints or .pt2 archives; use an exporter for {suffix}")
    writer = _export_writer(module, card, path) if suffix == ".pt2" else _checkpoint_writer(module, card, path)
    with atomic_path(path) as tmp:
        writer(str(tmp))
    return path


def _export_writer(module: nn.Module, card: ModelCard, path: Path) -> Callable[[str], None]:
    param = next(iter(module.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    was_training = module.training
    module.eval()
    try:
        try:  # batch 2 example: torch.export specialises sizes 0 and 1
            example = torch.zeros(2, *card.input_size, device=device)
            batch = torch.export.Dim("batch", min=1, max=4096)
            program = torch.export.export(module, (example,), dynamic_shapes=({0: batch},))
        except Exception:  # noqa: BLE001 - some graphs need a static batch
            example = torch.zeros(1, *card.input_size, device=device)
            program = torch.export.export(module, (example,))
    except Exception as exc:  # noqa: BLE001
        raise ExportError(f"torch.export failed for {path}: {_short(exc)}") from None
    finally:
        if was_training:
            module.train()
    text = card.to_json()
    return lambda tmp: torch.export.save(program, tmp, extra_files={CARD_FILE: text})


def _checkpoint_writer(module: nn.Module, card: ModelCard, path: Path) -> Callable[[str], None]:
    if card.arch is None:
        raise InputError(
            f"cannot save {path} as a checkpoint: the model is not a zoo architecture (its card has no arch); "
            "save it to a .pt2 path (torch.export) instead"
        )
    # contiguous: a model saved mid-training is in NHWC layout (TrainConfig.channels_last)
    state = {k: v.detach().to("cpu").contiguous() for k, v in module.state_dict().items()}
    quant = getattr(module, "edgekit_quant", None)  # a fake-quant model from edgekit quantize
    reference = _reference(card)
    dropped = _dropped_blocks(module, reference)
    problem, resized = _arch_mismatch(state, drop_blocks_in(reference, dropped), quantized=bool(quant))
    if problem:
        raise InputError(
            f"cannot save {path} as a {card.arch} checkpoint: {problem}; "
            "save it to a .pt2 path (torch.export) instead"
        )
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": 1,
        "arch": card.arch,
        "arch_kwargs": dict(card.arch_kwargs),
        "card": card.to_dict(),
        "state_dict": state,
    }
    if resized:  # pruned: load_model rebuilds the arch at these widths (models/resize.py)
        payload["resized"] = True
    if dropped:  # depth-pruned: these blocks are nn.Identity (pruning/depth.py)
        payload["dropped_blocks"] = dropped
    if quant:
        payload["quantization"] = dict(quant)
    return lambda tmp: torch.save(payload, tmp)


def _reference(card: ModelCard) -> nn.Module:
    """A fresh `card.arch` to compare a module against (on the meta device where it builds there:
    no weight init)."""
    assert card.arch is not None
    try:
        with torch.device("meta"):
            return get_model(card.arch, num_classes=card.num_classes, **card.arch_kwargs)[0]
    except EdgekitError:
        raise
    except Exception:  # noqa: BLE001 - a few builders need real tensors
        return get_model(card.arch, num_classes=card.num_classes, **card.arch_kwargs)[0]


def _dropped_blocks(module: nn.Module, reference: nn.Module) -> list[str]:
    """Composite submodules of the fresh arch that are nn.Identity in `module`: removed blocks.
    (Leaf layers turned Identity are a fake-quant model's folded BNs, rebuilt by quant.rebuild.)"""
    ref = dict(reference.named_modules())
    return [n for n, m in module.named_modules()
            if n and isinstance(m, nn.Identity) and n in ref and any(True for _ in ref[n].children())]


def drop_blocks_in(module: nn.Module, names: list[str]) -> nn.Module:
    """Replace the named submodules with nn.Identity, in place (a depth-pruned checkpoint's arch)."""
    for name in names:
        try:
            module.get_submodule(name)
        except AttributeError:
            raise ModelLoadError(f"the checkpoint removes block {name!r}, which its arch does not have") from None
        module.set_submodule(name, nn.Identity())
    return module


def _arch_mismatch(state: Mapping[str, torch.Tensor], model: nn.Module, quantized: bool = False) -> tuple[str, bool]:
    """(why `state` would not load into `model` (a fresh arch, removed blocks applied), or "", and
    whether it loads only after resizing layers: a pruned model). A fake-quant model's keys differ
    by design (BN folded, quantizers added): only the shapes of the keys both have are compared."""
    from .resize import RESIZABLE

    reference = model.state_dict()
    if quantized:
        return "", any(tuple(reference[k].shape) != tuple(v.shape) for k, v in state.items() if k in reference)
    missing = [k for k in reference if k not in state]
    unexpected = [k for k in state if k not in reference]
    if missing or unexpected:
        return f"{len(missing)} missing and {len(unexpected)} unexpected keys ({_few(missing + unexpected)})", False
    resized = [k for k in reference if tuple(reference[k].shape) != tuple(state[k].shape)]
    if not resized:
        return "", False
    mods = dict(model.named_modules())
    odd = sorted({k.rpartition(".")[0] for k in resized if not isinstance(mods.get(k.rpartition(".")[0]), RESIZABLE)})
    if odd:
        return f"{len(resized)} tensors changed shape, in layers edgekit cannot rebuild ({_few(odd)})", False
    return "", True
