"""edgekit.models: zoo, cards, loading and saving, against the real shared weights where present."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torch import nn

from edgekit.errors import ExportError, InputError, ModelLoadError
from edgekit.models import (
    ARCHS,
    ModelCard,
    describe,
    get_model,
    list_models,
    load_model,
    parse_arch,
    save_model,
)
from edgekit.models.cifar_resnet import PadShortcut
from edgekit.models.small_input import stem_conv

PARAMS = {20: 269_722, 32: 464_154, 44: 658_586, 56: 853_018}
SMALL = ["cifar_mobilenet_v2", "cifar_mobilenet_v3_small", "cifar_mobilenet_v3_large", "cifar_efficientnet_b0"]


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def randomize_bn(module: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial running stats so that round-trip comparisons mean something."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return module


@pytest.fixture(scope="module")
def resnet20() -> tuple[nn.Module, ModelCard]:
    module, card = get_model("cifar_resnet20")
    return randomize_bn(module), card


# =========================================================================== CIFAR ResNets
@pytest.mark.parametrize("depth", sorted(PARAMS))
def test_cifar_resnet_param_counts_match_readme(depth: int) -> None:
    module, card = get_model(f"resnet{depth}")
    assert n_params(module) == PARAMS[depth]
    assert card.arch == f"cifar_resnet{depth}"
    assert not module.training


def test_option_a_shortcut_is_a_parameter_free_module() -> None:
    module, _ = get_model("cifar_resnet20")
    shortcuts = [m for m in module.modules() if isinstance(m, PadShortcut)]
    assert len(shortcuts) == 2 and all(not list(s.parameters()) for s in shortcuts)
    out = shortcuts[0](torch.ones(1, 16, 32, 32))
    assert out.shape == (1, 32, 16, 16)
    assert out[0, :8].abs().sum() == 0 and out[0, 24:].abs().sum() == 0 and out[0, 8:24].min() == 1


def test_shared_weights_load_strictly(weights_dir: Path) -> None:
    files = sorted(weights_dir.glob("resnet*.th"))
    assert len(files) == 4
    for path in files:
        raw = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
        state = {k.removeprefix("module."): v for k, v in raw.items()}
        module, _ = get_model(path.name.split("-")[0])
        for key in module.state_dict():
            if key.endswith("num_batches_tracked"):
                state[key] = torch.tensor(0)
        module.load_state_dict(state, strict=True)  # the architecture is key-for-key exact
        loaded = load_model(path, arch=path.name.split("-")[0])
        assert torch.equal(loaded.module.state_dict()["linear.weight"], raw["module.linear.weight"])
        assert loaded.card.source == str(path) and loaded.card.num_classes == 10


def _cifar_subset(cifar_dir: Path, per_class: int) -> tuple[np.ndarray, np.ndarray]:
    classes = sorted(d.name for d in (cifar_dir / "test").iterdir() if d.is_dir())
    images, labels = [], []
    for label, name in enumerate(classes):
        for file in sorted((cifar_dir / "test" / name).glob("*.jpg"))[:per_class]:
            images.append(np.asarray(Image.open(file).convert("RGB"), dtype=np.float32) / 255.0)
            labels.append(label)
    return np.stack(images), np.array(labels)


def test_resnet20_shared_weights_accuracy(resnet20_path: Path, cifar_dir: Path) -> None:
    loaded = load_model(resnet20_path, arch="resnet20")
    card = loaded.card
    assert card.class_names == sorted(d.name for d in (cifar_dir / "test").iterdir() if d.is_dir())
    images, labels = _cifar_subset(cifar_dir, per_class=20)
    x = torch.from_numpy(images).permute(0, 3, 1, 2)
    x = (x - torch.tensor(card.mean).view(1, 3, 1, 1)) / torch.tensor(card.std).view(1, 3, 1, 1)
    with torch.no_grad():
        pred = loaded.module(x).argmax(1).numpy()
    accuracy = float((pred == labels).mean())
    assert accuracy >= 0.75, accuracy  # ~0.80 on these 200 JPEG images; a wrong arch scores ~0.10


# =========================================================================== 32x32 variants
@pytest.mark.parametrize("arch", SMALL)
def test_small_input_variants(arch: str) -> None:
    full, card = get_model(arch)
    half, half_card = get_model(f"{arch}:width=0.5")
    assert stem_conv(full).stride == (1, 1) and stem_conv(half).stride == (1, 1)
    assert n_params(half) < n_params(full)
    assert half_card.arch_kwargs == {"width": 0.5}
    assert card.input_size == (3, 32, 32) and card.resize is None
    assert card.mean == (0.4914, 0.4822, 0.4465)
    with torch.no_grad():
        assert half(torch.randn(2, 3, 32, 32)).shape == (2, 10)
        assert get_model(arch, num_classes=100)[0](torch.randn(2, 3, 32, 32)).shape == (2, 100)


# =========================================================================== torchvision
@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v3_small", "regnet_x_400mf", "googlenet"])
def test_torchvision_builders_random_init(arch: str) -> None:
    module, card = get_model(arch, num_classes=7)
    assert card.input_size == (3, 224, 224) and card.resize == 256 and card.class_names is None
    assert card.mean == (0.485, 0.456, 0.406) and card.source == "random init"
    with torch.no_grad():
        out = module(torch.randn(1, 3, 224, 224))
    assert isinstance(out, torch.Tensor) and out.shape == (1, 7)  # googlenet: no aux-logits tuple


def test_registry_covers_all_groups() -> None:
    names = set(list_models())
    classification = torchvision.models.list_models(module=torchvision.models)
    assert set(classification) <= names
    assert {f"cifar_resnet{d}" for d in PARAMS} <= names
    assert set(SMALL) <= names
    assert not {"fasterrcnn_resnet50_fpn", "fcn_resnet50", "r3d_18", "raft_small", "quantized_resnet18"} & names
    assert list_models("cifar_resnet*") == [f"cifar_resnet{d}" for d in sorted(PARAMS)]
    for name in names:  # every arch has a valid default card (no weights involved)
        spec = ARCHS.get(name)
        assert spec.default_card(spec.default_num_classes).num_classes == spec.default_num_classes


def test_default_cards_follow_torchvision_presets() -> None:
    inception = ARCHS.get("inception_v3").default_card(1000)
    assert inception.input_size == (3, 299, 299) and inception.resize == 342
    assert len(inception.class_names or []) == 1000
    assert ARCHS.get("vit_h_14").default_card(1000).input_size == (3, 224, 224)
    assert get_model("vit_b_16:image_size=32", num_classes=3)[1].input_size == (3, 32, 32)
    assert "cifar_resnet20" in describe("resnet20") and "32x32" in describe("resnet20")


def test_parse_arch() -> None:
    assert parse_arch("resnet18") == ("resnet18", {})
    assert parse_arch("cifar_mobilenet_v2:width=0.5") == ("cifar_mobilenet_v2", {"width": 0.5})
    assert parse_arch("x:a=1, b=true,c=abc,d=None") == ("x", {"a": 1, "b": True, "c": "abc", "d": None})
    for bad in ("x:width", "x:=1", ":a=1"):
        with pytest.raises(InputError):
            parse_arch(bad)


def test_get_model_errors_name_the_problem() -> None:
    with pytest.raises(InputError, match="resnet18"):
        get_model("resnet181")
    with pytest.raises(InputError, match="'widht'"):
        get_model("cifar_mobilenet_v2:widht=0.5")
    with pytest.raises(InputError, match="'depth'"):
        get_model("cifar_resnet20", depth=3)
    with pytest.raises(InputError, match="never downloads"):
        get_model("resnet18", weights="DEFAULT")
    with pytest.raises(InputError, match="num_classes"):
        get_model("resnet18", num_classes=0)


# =========================================================================== ModelCard
def test_model_card_round_trip_and_validation(tmp_path: Path) -> None:
    card = get_model("cifar_mobilenet_v2:width=0.5")[1]
    assert ModelCard.from_dict(card.to_dict()) == card
    path = card.write(tmp_path / "card.json")
    assert ModelCard.read(path) == card
    assert [p.name for p in tmp_path.iterdir()] == ["card.json"]
    assert ModelCard.sidecar_path(tmp_path / "model.onnx") == tmp_path / "model.onnx.card.json"
    changed = card.with_(num_classes=3, class_names=None)
    assert changed.num_classes == 3 and card.num_classes == 10
    base = dict(num_classes=2, input_size=(3, 8, 8), mean=(0.5,) * 3, std=(0.5,) * 3)
    ModelCard(**base)
    for bad in ({"mean": (0.5,)}, {"num_classes": 0}, {"class_names": ["a"]}, {"resize": 4}):
        with pytest.raises(ValueError):
            ModelCard(**{**base, **bad})
    with pytest.raises(ValueError):
        card.with_(num_classes=5)  # class_names no longer fit
    (tmp_path / "bad.json").write_text('{"num_classes": 1}')
    with pytest.raises(ModelLoadError, match="invalid model card"):
        ModelCard.read(tmp_path / "bad.json")


# =========================================================================== load_model
def test_load_zoo_name_and_missing_file(tmp_path: Path) -> None:
    loaded = load_model("cifar_mobilenet_v3_small:width=0.5", num_classes=4)
    assert loaded.card.source == "random init" and loaded.card.num_classes == 4
    with pytest.raises(ModelLoadError, match="model file not found"):
        load_model(tmp_path / "nope.pt")
    with pytest.raises(ModelLoadError, match="directory"):
        load_model(tmp_path)


def test_wrapper_prefixes_and_checkpoint_keys(tmp_path: Path, resnet20: tuple[nn.Module, ModelCard]) -> None:
    module, _ = resnet20
    state = module.state_dict()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = module(x)
    variants = {
        "plain.pt": state,
        "dp.pt": {f"module.{k}": v for k, v in state.items()},
        "compiled.pt": {f"_orig_mod.{k}": v for k, v in state.items() if "num_batches" not in k},
        "ckpt.pt": {"model_state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3},
    }
    for name, obj in variants.items():
        torch.save(obj, tmp_path / name)
        loaded = load_model(tmp_path / name, arch="resnet20")
        with torch.no_grad():
            assert torch.equal(loaded.module(x), ref), name


def test_wrong_arch_and_missing_arch(resnet20_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"do not match arch cifar_resnet32: 60 missing keys \(layer1\.3\."):
        load_model(resnet20_path, arch="cifar_resnet32")
    with pytest.raises(ModelLoadError, match="--arch"):
        load_model(resnet20_path)
    with pytest.raises(InputError, match="unknown model"):
        load_model(resnet20_path, arch="resnet_twenty")


def test_shape_mismatch_is_reported(tmp_path: Path) -> None:
    state = get_model("cifar_mobilenet_v2:width=0.5")[0].state_dict()
    torch.save(state, tmp_path / "half.pt")
    expected = r"shape mismatches \(features\.0\.0\.weight: file \(16,3,3,3\) vs model \(32,3,3,3\)"
    with pytest.raises(ModelLoadError, match=expected):
        load_model(tmp_path / "half.pt", arch="cifar_mobilenet_v2")
    assert load_model(tmp_path / "half.pt", arch="cifar_mobilenet_v2:width=0.5").card.arch_kwargs == {"width": 0.5}


def test_num_classes_inferred_from_state_dict(tmp_path: Path) -> None:
    torch.save(get_model("cifar_resnet20", num_classes=100)[0].state_dict(), tmp_path / "c100.pt")
    loaded = load_model(tmp_path / "c100.pt", arch="cifar_resnet20")
    assert loaded.card.num_classes == 100 and loaded.card.class_names is None
    assert loaded.module(torch.randn(1, 3, 32, 32)).shape == (1, 100)
    torch.save(get_model("mobilenet_v3_small", num_classes=5)[0].state_dict(), tmp_path / "mnv3.pt")
    assert load_model(tmp_path / "mnv3.pt", arch="mobilenet_v3_small").card.num_classes == 5


def test_corrupt_files_fail_in_one_line(
    tmp_path: Path, resnet20_path: Path, resnet20: tuple[nn.Module, ModelCard]
) -> None:
    (tmp_path / "garbage.pt").write_bytes(os.urandom(64).replace(b"\x80", b"\x00").replace(b"PK", b"pk"))
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "trunc.th").write_bytes(resnet20_path.read_bytes()[:5000])
    torch.save(resnet20[0].state_dict(), tmp_path / "full.pt")
    (tmp_path / "trunc.pt").write_bytes((tmp_path / "full.pt").read_bytes()[:3000])
    (tmp_path / "bad.pt2").write_bytes(b"PK\x03\x04 not really a zip")
    for name in ("garbage.pt", "empty.pt", "trunc.th", "trunc.pt", "bad.pt2"):
        with pytest.raises(ModelLoadError, match="cannot read model file") as info:
            load_model(tmp_path / name, arch="resnet20")
        assert "\n" not in str(info.value), name


class _Hostile:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {self.marker}",))


def test_hostile_pickle_is_refused_without_side_effects(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": _Hostile(marker)}, path)
    with pytest.raises(ModelLoadError, match="--trust-pickle") as info:
        load_model(path, arch="resnet20")
    assert "pickled Python objects" in str(info.value)
    assert not marker.exists()


def test_whole_module_pickle_needs_trust(tmp_path: Path, resnet20: tuple[nn.Module, ModelCard]) -> None:
    module, _ = resnet20
    path = tmp_path / "whole.pt"
    torch.save(module, path)
    with pytest.raises(ModelLoadError, match="--trust-pickle"):
        load_model(path, arch="resnet20")
    with pytest.raises(ModelLoadError, match="--arch"):
        load_model(path, trust_pickle=True)
    loaded = load_model(path, arch="resnet20", trust_pickle=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded.module(x), module(x))
    assert loaded.card.arch == "cifar_resnet20" and loaded.card.num_classes == 10


# =========================================================================== save / round trips
def _same_outputs(a: nn.Module, b: nn.Module, batch: int = 2) -> None:
    """Equal up to float32 rounding. Relative as well as absolute: a saved program run in chunks
    of another batch size takes other oneDNN kernels, which on an AVX-512/AMX Xeon moved logits
    of about 16 by 1.3e-5 (8e-7 relative), past a bare atol of 1e-5."""
    x = torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x), rtol=1e-5, atol=1e-5)


def test_checkpoint_round_trip(tmp_path: Path, resnet20: tuple[nn.Module, ModelCard]) -> None:
    module, card = resnet20
    card = card.with_(notes={"stage": "test"})
    path = save_model(module, card, tmp_path / "sub" / "model.pt")
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.pt"]  # no temp files left
    loaded = load_model(path)  # no --arch needed
    _same_outputs(module, loaded.module)
    assert loaded.card == card.with_(source=str(path))


def test_export_round_trip(tmp_path: Path, resnet20: tuple[nn.Module, ModelCard]) -> None:
    module, card = resnet20
    path = save_model(module, card, tmp_path / "model.pt2")
    loaded = load_model(path)
    _same_outputs(module, loaded.module, batch=3)  # batch dimension is dynamic
    assert loaded.card == card.with_(source=str(path))
    assert loaded.module.eval() is loaded.module and not loaded.module.training
    with pytest.raises(InputError, match="eval mode"):
        loaded.module.train()


def test_export_without_card_infers_input(tmp_path: Path, resnet20: tuple[nn.Module, ModelCard]) -> None:
    module, _ = resnet20
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.export.save(torch.export.export(module, (torch.randn(1, 3, 32, 32),)), tmp_path / "bare.pt2")
    card = load_model(tmp_path / "bare.pt2").card
    assert card.input_size == (3, 32, 32) and card.num_classes == 10 and "assumed" in card.notes


def test_fixed_batch_program_runs_in_chunks(tmp_path: Path, resnet20: tuple[nn.Module, ModelCard]) -> None:
    """torch.export fixes the batch of its example unless told otherwise (and bakes it into the
    reshapes): such a file runs on any batch in chunks, and refuses a re-export by name."""
    from edgekit.exporters.onnx import export_onnx

    module, _ = resnet20
    module.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.export.save(torch.export.export(module, (torch.randn(2, 3, 32, 32),)), tmp_path / "b2.pt2")
    loaded = load_model(tmp_path / "b2.pt2")
    assert "fixed batch of 2" in loaded.card.notes["fixed_batch"]
    _same_outputs(module, loaded.module, batch=5)  # 2 + 2 + 1 padded
    with pytest.raises(ExportError, match="fixed batch of 2"):
        export_onnx(loaded.module, loaded.card, tmp_path / "m.onnx")


def test_torchscript_round_trip(tmp_path: Path, resnet20: tuple[nn.Module, ModelCard]) -> None:
    module, card = resnet20
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module, torch.randn(1, 3, 32, 32))
        torch.jit.save(traced, tmp_path / "with_card.ts", _extra_files={"edgekit_card.json": card.to_json()})
        torch.jit.save(traced, tmp_path / "bare.ts")
    loaded = load_model(tmp_path / "with_card.ts")
    _same_outputs(module, loaded.module)
    assert loaded.card == card.with_(source=str(tmp_path / "with_card.ts"))
    with pytest.raises(ModelLoadError, match="--arch"):
        load_model(tmp_path / "bare.ts")
    assert load_model(tmp_path / "bare.ts", arch="resnet20").card.arch == "cifar_resnet20"


def test_save_refuses_what_a_checkpoint_cannot_hold(tmp_path: Path, resnet20: tuple[nn.Module, ModelCard]) -> None:
    module, card = resnet20
    with pytest.raises(InputError, match=r"\.pt2"):
        save_model(module, card.with_(arch=None, arch_kwargs={}), tmp_path / "a.pt")
    with pytest.raises(InputError, match="cifar_resnet32"):
        save_model(module, card.with_(arch="cifar_resnet32"), tmp_path / "b.pt")
    with pytest.raises(InputError):
        save_model(module, card, tmp_path / "c.onnx")

    class Branchy(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.flatten(1)[:, :10] if x.sum().item() > 0 else x.flatten(1)[:, :10] * 0

    with pytest.raises(ExportError):
        save_model(Branchy(), card.with_(arch=None, arch_kwargs={}), tmp_path / "d.pt2")
    assert list(tmp_path.iterdir()) == []
