"""`edgekit eval`: top-1/top-5 of a model or an exported artifact on a dataset."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from .backends import BACKENDS, all_backends, get_backend
from .errors import EdgekitError, ModelLoadError, runtime_reason
from .inputs import check_classes
from .verify import accuracy, predict

__all__ = ["EvalResult", "evaluate", "read_artifact_card"]


@dataclass
class EvalResult:
    model: str
    backend: str
    precision: str
    images: int
    top1: float
    top5: float | None
    executed: str

    def to_dict(self) -> dict:
        return asdict(self)


def read_artifact_card(path: Path):
    """The card beside an artifact (<file>.card.json), or inside an ONNX file's metadata."""
    from .models import ModelCard

    side = ModelCard.sidecar_path(path)
    if side.is_file():
        return ModelCard.read(side)
    if path.suffix == ".onnx":
        import onnx
        try:
            meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
        except Exception as e:  # noqa: BLE001
            raise ModelLoadError(f"cannot read ONNX file {path}: {str(e).splitlines()[0][:200]}") from e
        if "edgekit_card" in meta:
            return ModelCard.from_dict(json.loads(meta["edgekit_card"]))
    raise ModelLoadError(f"no model card for {path}: expected {side.name} beside it "
                         "(edgekit writes one with every artifact)")


def _backend_for(path: Path) -> str | None:
    all_backends()
    for name in BACKENDS.names():
        if name != "torch" and path.suffix in get_backend(name).suffixes:
            return name
    return None


def evaluate(model: str | Path, *, data: str | Path, arch: str | None = None,
             num_classes: int | None = None, trust_pickle: bool = False,
             limit: int | None = None, seed: int = 0, threads: int = 1) -> EvalResult:
    """Accuracy of a torch model file / zoo name, or of an .onnx / .xml artifact, on `data`."""
    from .data import load_dataset

    path = Path(model)
    backend_name = _backend_for(path) if path.exists() else None
    if backend_name:
        card = read_artifact_card(path)
        precision = str(card.notes.get("precision", "fp32"))
        backend = get_backend(backend_name)
        try:
            runner = backend.load(backend.artifact_from_path(path, card, precision), threads=threads)
        except EdgekitError:
            raise
        except Exception as e:  # noqa: BLE001 - a truncated .onnx, an .xml without its .bin, ...
            raise ModelLoadError(f"{backend_name} cannot load {path}: {runtime_reason(e)}") from None
    else:
        from .backends.torch import TorchRunner
        from .models import load_model
        loaded = load_model(model, arch=arch, num_classes=num_classes, trust_pickle=trust_pickle)
        card, backend_name, precision = loaded.card, "torch", "fp32"
        runner = TorchRunner(loaded.module, precision="fp32", threads=threads)
    ds = load_dataset(data, input_size=tuple(card.input_size), resize=card.resize)
    check_classes(card.num_classes, ds.classes, str(data))
    split = ds.evaluation(limit, seed=seed)
    logits, labels = predict(runner, split, card)
    top1, top5 = accuracy(logits, labels)
    return EvalResult(str(model), backend_name, precision, len(labels), top1, top5, runner.executed)
