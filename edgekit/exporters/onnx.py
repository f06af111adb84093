"""Torch -> ONNX, checked with onnx.checker, with the model card in the file's metadata."""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ExportError

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from ..models import ModelCard

__all__ = ["export_onnx", "attach_card", "opset_of", "INPUT_NAME", "OUTPUT_NAME"]

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
_EXTERNAL_DATA_BYTES = 1_800_000_000  # protobuf's 2 GB limit, with headroom


def export_onnx(module: "torch.nn.Module", card: "ModelCard", path: Path, *,
                opset: int | None = None, dynamic_batch: bool = True) -> Path:
    """Export `module` to ONNX at `path` (batch axis dynamic unless told otherwise).

    The dynamo exporter is tried first (the maintained path); the legacy TorchScript exporter
    is the fallback, since it handles some modules dynamo cannot trace.
    """
    import onnx
    import torch

    from ..models.loading import FixedBatch

    fixed = next((m for m in module.modules() if isinstance(m, FixedBatch)), None)
    if fixed is not None:
        raise ExportError(f"the model is a torch.export program traced at a fixed batch of {fixed.batch}, "
                          "whose reshapes hold that batch: export it again with a dynamic batch "
                          "(torch.export.export(m, (x,), dynamic_shapes=({0: torch.export.Dim('batch')},))) "
                          "or give its state_dict with --arch")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    x = torch.zeros(1, *card.input_size)
    key = _cache_key(module, tuple(card.input_size), opset, dynamic_batch)
    if key is not None and _CACHE.get(key, path):
        attach_card(path, card)
        return path
    errors = []
    for dynamo in (True, False):
        try:
            # torch.export specialises a size-1 dimension (0/1 specialisation), so a dynamic batch
            # needs an example of 2 (ConvNeXt: "Invalid ranges [2:1]" at 1); the legacy tracer
            # records the shapes of its example, 1 as before
            example = x.expand(2, *x.shape[1:]) if dynamo and dynamic_batch else x
            _export(module, example, path, opset=opset, dynamic_batch=dynamic_batch, dynamo=dynamo)
            onnx.checker.check_model(str(path), full_check=False)
            written = opset_of(path)
            if opset is not None and written != opset:
                # dynamo writes opset 18 at least, whatever it is asked for; older targets
                # (TensorRT 8.x) need the TorchScript exporter's real lower opsets
                raise ExportError(f"wrote opset {written}, not the {opset} asked for")
            if key is not None:
                _CACHE.put(key, path)
            attach_card(path, card)
            return path
        except Exception as e:  # noqa: BLE001 - every exporter failure is reported, not raised raw
            errors.append(f"{'dynamo' if dynamo else 'legacy'}: {type(e).__name__}: "
                          f"{str(e).strip().splitlines()[0][:200] if str(e).strip() else ''}")
    raise ExportError("ONNX export failed (" + "; ".join(errors) + ")")


class _ExportCache:
    """Exported graphs of this process, by model content: the pipeline exports the same model
    several times (its latency predicted, timed, deployed, again as a retry's baseline), and a
    dynamo export costs seconds (minutes for large models). Files live in a private temporary
    folder (removed at exit); small models only, the last few."""

    MAX_BYTES, MAX_ENTRIES = 200_000_000, 16

    def __init__(self) -> None:
        self.dir: Path | None = None
        self.files: dict[str, Path] = {}

    def get(self, key: str, dest: Path) -> bool:
        import shutil

        src = self.files.get(key)
        if src is None or not src.exists():
            return False
        tmp = dest.with_name(f".{dest.name}.tmp")
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
        self.files[key] = self.files.pop(key)  # most recently used last
        return True

    def put(self, key: str, path: Path) -> None:
        import atexit
        import shutil
        import tempfile

        if path.stat().st_size > self.MAX_BYTES or path.with_name(path.name + ".data").exists():
            return  # external data travels beside the file: not worth the bookkeeping
        if self.dir is None:
            self.dir = Path(tempfile.mkdtemp(prefix="edgekit-onnx-"))
            atexit.register(shutil.rmtree, self.dir, True)
        shutil.copyfile(path, self.dir / f"{key}.onnx")
        self.files[key] = self.dir / f"{key}.onnx"
        while len(self.files) > self.MAX_ENTRIES:
            self.files.pop(next(iter(self.files))).unlink(missing_ok=True)


_CACHE = _ExportCache()
_SIMPLE = (bool, int, float, str, type(None))


def _cache_key(module, input_size: tuple, opset, dynamic_batch: bool) -> str | None:
    """What the exported graph depends on: every submodule's class, plain attributes (flags,
    bit widths, strides) and tensors, the input size and the export options; None (do not
    cache) where a hook or an attribute the key cannot see could change the forward pass."""
    import hashlib

    import torch

    h = hashlib.sha1(repr((input_size, opset, dynamic_batch)).encode())
    for name, m in module.named_modules():
        if m._forward_hooks or m._forward_pre_hooks:
            return None
        attrs = []
        for k, v in sorted(vars(m).items()):
            if k in ("_parameters", "_buffers", "_modules", "training") or k.startswith("_"):
                continue
            if not (isinstance(v, _SIMPLE) or (isinstance(v, (tuple, list)) and all(isinstance(e, _SIMPLE) for e in v))):
                return None  # an attribute the key cannot read (a tensor, a function, an object)
            attrs.append((k, v))
        h.update(repr((name, type(m).__module__, type(m).__qualname__, attrs)).encode())
        for k, t in list(m._parameters.items()) + list(m._buffers.items()):
            if t is not None:
                h.update(repr((k, t.dtype, tuple(t.shape))).encode())
                try:
                    h.update(t.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
                except (RuntimeError, TypeError):  # e.g. a quantized tensor: no plain bytes to hash
                    return None
    return h.hexdigest()


def opset_of(model) -> int:
    """The default-domain opset of an ONNX model (a path or a loaded ModelProto)."""
    import onnx

    if isinstance(model, (str, os.PathLike)):
        model = onnx.load(str(model), load_external_data=False)
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)


def _export(module, x, path: Path, *, opset, dynamic_batch: bool, dynamo: bool) -> None:
    import torch

    was_training = module.training
    module.eval()
    kwargs = dict(input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], dynamo=dynamo)
    if opset is not None:
        kwargs["opset_version"] = opset
    if dynamo:
        if dynamic_batch:
            kwargs["dynamic_shapes"] = ({0: torch.export.Dim("batch", min=1, max=4096)},)
        kwargs["verbose"] = False
    elif dynamic_batch:
        kwargs["dynamic_axes"] = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}
    big = sum(p.numel() * p.element_size() for p in module.state_dict().values()) > _EXTERNAL_DATA_BYTES
    if dynamo:
        kwargs["external_data"] = big
    prev = logging.getLogger("torch.onnx").level
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            from ..backends.base import quiet
            with quiet():
                torch.onnx.export(module, (x,), str(path), **kwargs)
    finally:
        logging.getLogger("torch.onnx").setLevel(prev)
        module.train(was_training)


def attach_card(path: Path, card: "ModelCard") -> None:
    """Store the model card in the ONNX metadata so the file describes itself."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    props = {p.key: p.value for p in model.metadata_props}
    props["edgekit_card"] = json.dumps(card.to_dict())
    del model.metadata_props[:]
    for k, v in props.items():
        model.metadata_props.add(key=k, value=v)
    tmp = path.with_name(f".{path.name}.tmp")
    onnx.save(model, str(tmp))
    os.replace(tmp, path)
