"""Pruning on real models and images: structured pruning keeps six architectures consistent and
exportable, the pruned model is a real smaller model that reloads in a fresh process without
pruning code, recovery beats no recovery, unstructured sparsity is reported honestly, and bad
inputs get one-line errors."""

from __future__ import annotations

import copy
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

import edgekit
from edgekit.backends.onnxruntime import OrtRunner
from edgekit.bench import TimingConfig
from edgekit.errors import InputError
from edgekit.exporters.onnx import export_onnx
from edgekit.models import get_model
from edgekit.models.stats import count_macs, count_params
from edgekit.pruning import prune_channels, sparsify
from edgekit.data import load_dataset
from edgekit.train import TrainConfig
from edgekit.train.engine import evaluate_top1

FAST = TimingConfig(warmup=2, iters=10, passes=1, throughput_iters=1)


@pytest.mark.parametrize("arch,size", [("cifar_resnet20", 32), ("cifar_mobilenet_v2:width=0.5", 32),
                                       ("cifar_mobilenet_v3_small", 32), ("cifar_efficientnet_b0", 32),
                                       ("resnet18", 64), ("regnet_x_400mf", 64)])
def test_structured_prune_consistent_and_exportable(arch, size, tmp_path):
    module, card = get_model(arch, num_classes=10)
    card = card.with_(input_size=(3, size, size))
    res = prune_channels(module, card.input_size, 0.3, channel_multiple=8)
    m = res.model.eval()
    assert res.macs_after < 0.9 * res.macs_before and res.params_after < res.params_before
    assert count_params(m) == res.params_after and count_macs(m, card.input_size) == res.macs_after
    # kept widths are multiples of 8 wherever a layer was pruned
    before = {n: c.out_channels for n, c in module.named_modules() if isinstance(c, nn.Conv2d)}
    after = {n: c.out_channels for n, c in m.named_modules() if isinstance(c, nn.Conv2d)}
    changed = [n for n in after if after[n] != before[n]]
    assert changed and all(after[n] % 8 == 0 for n in changed), {n: after[n] for n in changed}
    x = torch.randn(2, *card.input_size)
    with torch.no_grad():
        ref = m(x).numpy()
    assert ref.shape == (2, 10)
    onnx_path = export_onnx(m, card, tmp_path / "p.onnx")
    out = OrtRunner(onnx_path, precision="fp32", threads=1)(x.numpy())
    assert np.allclose(out, ref, atol=1e-4, rtol=1e-3)
    # a real smaller model: an edgekit checkpoint of the arch at the new widths
    path = edgekit.save_model(m, card, tmp_path / "p.pt")
    again = edgekit.load_model(path).module.eval()
    with torch.no_grad():
        assert torch.equal(again(x), m(x))


def test_cifar_resnet_shortcut_groups_left_alone(resnet20_path):
    """Option-A shortcuts slice and pad channels: those groups are not pruned, the rest is."""
    loaded = edgekit.load_model(resnet20_path, arch="cifar_resnet20")
    res = prune_channels(loaded.module, (3, 32, 32), 0.5, channel_multiple=8)
    assert res.mode == "safe groups" and "shortcut" in res.notes[0]
    m = res.model
    assert m.layer1[0].conv1.out_channels < 16 and m.layer1[0].conv2.out_channels == 16
    assert m.linear.in_features == 64


def test_prune_recover_reload(resnet20_path, cifar_dir, tmp_path):
    """2x fewer MACs; recovery beats the same prune without it; measured speed-up reported;
    the checkpoint reloads in a fresh process with identical outputs and benchmarks."""
    cfg = TrainConfig(epochs=1, batch_size=64, lr=0.01, train_limit=2560, seed=0)
    res = edgekit.prune(resnet20_path, arch="cifar_resnet20", data=cifar_dir, out=tmp_path / "p", target_macs=0.5,
                        config=cfg, limit=300, progress=False, timing=FAST)
    s = res.summary
    assert 0.45 <= s["macs_after"] / s["macs_before"] <= 0.52
    assert res.top1_final > res.top1_pruned + 5, (res.top1_pruned, res.top1_final)
    assert {(r["variant"], r["backend"]) for r in res.latency} == {("unpruned", "onnxruntime"), ("pruned", "onnxruntime")}
    assert (tmp_path / "p" / "report.md").exists() and (tmp_path / "p" / "prune.json").exists()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    here = edgekit.load_model(res.model_path).module.eval()(x).detach().numpy()
    code = ("import sys, torch, numpy as np, edgekit; m = edgekit.load_model(sys.argv[1]).module.eval(); "
            "x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)); "
            "np.save(sys.argv[2], m(x).detach().numpy())")
    subprocess.run([sys.executable, "-c", code, str(res.model_path), str(tmp_path / "o.npy")], check=True)
    assert np.array_equal(np.load(tmp_path / "o.npy"), here)
    bench = edgekit.benchmark(res.model_path, data=cifar_dir, out=tmp_path / "b", limit=100,
                              backends="onnxruntime", precisions="fp32", progress=False, timing=FAST)
    assert bench.rows[0].status == "ok"
    # pruned, then quantized: the checkpoint rebuilds (new widths, BN folded) and scores the same
    q = edgekit.quantize(res.model_path, data=cifar_dir, out=tmp_path / "q", mode="ptq", calibration_images=128,
                         limit=100, backends=("onnxruntime",), progress=False, timing=FAST)
    reloaded = edgekit.load_model(q.model_path)
    split = load_dataset(cifar_dir, input_size=reloaded.card.input_size).evaluation(100, seed=0)
    assert evaluate_top1(reloaded.module, split, reloaded.card)[0] == q.final_top1


def test_unstructured_is_honest(resnet20_path, cifar_dir, tmp_path):
    loaded = edgekit.load_model(resnet20_path, arch="cifar_resnet20")
    sparse = sparsify(loaded.module, 0.5)
    assert count_params(sparse) == count_params(loaded.module)
    res = edgekit.prune(resnet20_path, arch="cifar_resnet20", data=cifar_dir, out=tmp_path / "s", sparsity=0.5,
                        recover=False, limit=100, progress=False, timing=FAST)
    s = res.summary
    assert 0.49 <= s["sparsity"] <= 0.51
    assert s["params_after"] == s["params_before"] and s["macs_after"] == s["macs_before"]
    assert s["state_dict_gzip_bytes"] < 0.8 * s["state_dict_gzip_bytes_unpruned"]
    assert "do not change" in (tmp_path / "s" / "report.md").read_text()
    # a finished step is not redone on --resume: same weights, same record
    again = edgekit.prune(resnet20_path, arch="cifar_resnet20", data=cifar_dir, out=tmp_path / "s", sparsity=0.5,
                          recover=False, limit=100, progress=False, timing=FAST, resume=True)
    assert again.steps == res.steps and again.summary["sparsity"] == s["sparsity"]


class SliceNet(nn.Module):
    """Every prunable channel passes through a slice: nothing can be pruned safely."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 16 * 16, 10)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x))[:, :, ::2, ::2].flatten(1))


def test_prune_bad_inputs(resnet20_path, cifar_dir, tmp_path):
    module, _ = get_model("cifar_resnet20", num_classes=10)
    with pytest.raises(InputError, match="--ratio must be in"):
        prune_channels(module, (3, 32, 32), 1.0)
    with pytest.raises(InputError, match="nothing in this architecture can be pruned"):
        prune_channels(SliceNet(), (3, 32, 32), 0.5)
    with pytest.raises(InputError, match="exactly one of"):
        edgekit.prune(resnet20_path, arch="cifar_resnet20", data=cifar_dir, out=tmp_path / "a", ratio=0.3,
                      target_macs=0.5)
    with pytest.raises(InputError, match="not reachable"):
        edgekit.prune(resnet20_path, arch="cifar_resnet20", data=cifar_dir, out=tmp_path / "b",
                      target_latency_ms=0.001, recover=False, limit=50, progress=False)


def _reachable_target(resnet20_path, tmp_path, channel_multiple=8):
    """A latency target halfway between ResNet-20 and its 85%-channel-pruned floor, both timed here
    on ONNX Runtime FP32 at 1 thread. A fixed fraction of the unpruned time is not portable: on a
    host where per-layer overhead weighs more, the floor sits above it and the target is (rightly)
    refused as unreachable; CI saw the floor at 0.76x."""
    from edgekit.pruning.structured import risky_layers
    from edgekit.stages.prune import measure_latency

    loaded = edgekit.load_model(resnet20_path, arch="cifar_resnet20")
    module, card = loaded.module, loaded.card
    floor = prune_channels(module, (3, 32, 32), 0.85, channel_multiple=channel_multiple,
                           risky=risky_layers(module, (3, 32, 32))).model
    rows = measure_latency({"base": module, "floor": floor}, card, tmp_path / "m", ["onnxruntime"], [1],
                           TimingConfig(warmup=5, iters=60, passes=3, throughput_iters=1))  # the search's own
    base, low = (r["latency_ms_p50"] for r in rows)
    assert low < 0.9 * base, f"85% of the channels removed should be faster: {low:.3f} vs {base:.3f} ms"
    return round((base + low) / 2, 3)


def test_latency_target_for_a_profile_measured_here(resnet20_path, cifar_dir, tmp_path):
    """`--measure-here`: a named profile (x86, a device that is not this machine) normally meets a
    latency target on its prediction; on the device itself, or with this host standing in, the
    candidates are timed here on the profile's first runtime instead (as with no profile). The
    search finds a smaller model, and the record states whether the final (longer) measurement
    still meets the target, on the runtime and precision it used."""
    from edgekit.errors import InputError
    from edgekit.profiles import get_profile
    from edgekit.stages.prune import TargetAlreadyMet, TargetUnreachable

    for attempt in range(2):
        # The target sits halfway between two timings taken seconds before the search's own. On a
        # shared host they can drift by a quarter (CI saw the floor at 0.369 ms against a 0.368 ms
        # target), so a target the search's measurements put out of range is derived once more.
        target = _reachable_target(resnet20_path, tmp_path / f"t{attempt}", get_profile("x86").channel_multiple)
        try:
            out = tmp_path / f"p{attempt}"
            res = edgekit.prune(resnet20_path, arch="cifar_resnet20", data=cifar_dir, out=out,
                                profile="x86", measure_here=True, latency_precision="fp32",
                                target_latency_ms=target, recover=False, limit=50, progress=False, timing=FAST)
            break
        except (TargetAlreadyMet, TargetUnreachable):
            if attempt:
                raise
    step = res.steps[0]
    assert "predicted_ms" not in step and step["backend"] == "onnxruntime FP32"
    assert step["measured_ms"] <= target + 1e-3 and res.summary["target_latency"]["on"] == "onnxruntime FP32, 1 thread(s)"
    t = res.summary["target_latency"]
    assert t["met"] == (t["final_ms"] <= t["target_ms"]) and t["target_ms"] < step["unpruned_ms"]
    assert res.summary["macs_after"] < res.summary["macs_before"]
    assert "Latency target" in (out / "report.md").read_text()
    with pytest.raises(InputError, match="--measure-here .* --target-latency-ms"):
        edgekit.prune(resnet20_path, arch="cifar_resnet20", data=cifar_dir, out=tmp_path / "q", profile="x86",
                      measure_here=True, target_macs=0.5, recover=False, progress=False)


def test_more_pruning_never_gives_a_bigger_model(resnet20_path):
    """With channel rounding, a layer that would round to 0 keeps one multiple (Torch-Pruning's
    own rounding put it back to full width, so ratio 0.9 pruned less than 0.6)."""
    loaded = edgekit.load_model(resnet20_path, arch="cifar_resnet20")
    macs = [prune_channels(loaded.module, (3, 32, 32), r, channel_multiple=8).macs_after for r in (0.3, 0.6, 0.9)]
    assert macs[0] >= macs[1] >= macs[2], macs
    assert macs[2] < 0.35 * count_macs(loaded.module, (3, 32, 32))


@pytest.mark.parametrize("arch", ["cifar_resnet20", "cifar_mobilenet_v2:width=0.5"])
def test_latency_aware_allocation(arch, tmp_path):
    """Widths from a lone-convolution latency table measured on ONNX Runtime: the greedy order
    only takes steps to widths the table measured faster, larger ratios remove more, and the
    pruned model stays consistent and exportable (depthwise groups included)."""
    from edgekit.pruning.latency_aware import allocate
    from edgekit.pruning.structured import criterion, ignored_layers, risky_layers

    module, card = get_model(arch, num_classes=10)
    size = tuple(card.input_size)
    ignored = ignored_layers(module, (), risky_layers(module, size))
    alloc = allocate(module, size, 8, importance=criterion("l2"), ignored=ignored)
    assert alloc.steps and alloc.backend == "onnxruntime"
    last = dict(alloc.widths)
    for name, w in alloc.steps:  # every step narrows one group to a multiple of 8
        assert w < last[name] and w % 8 == 0, (name, last[name], w)
        last[name] = w
    removed = [sum(alloc.widths.values()) - sum(alloc.widths_at(r).values()) for r in (0.1, 0.3, 0.5)]
    assert 0 < removed[0] <= removed[1] <= removed[2], removed
    res = prune_channels(module, size, 0.3, channel_multiple=8, allocation=alloc)
    m = res.model.eval()
    assert res.macs_after < res.macs_before
    mods = dict(m.named_modules())
    for name, w in alloc.widths_at(0.3).items():  # the model has exactly the allocated widths
        assert mods[name].out_channels == w, (name, mods[name].out_channels, w)
    x = torch.randn(2, *size)
    with torch.no_grad():
        ref = m(x).numpy()
    out = OrtRunner(export_onnx(m, card, tmp_path / "p.onnx"), precision="fp32", threads=1)(x.numpy())
    assert np.allclose(out, ref, atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize("backend,precision", [("onnxruntime", "int8"), ("openvino", "fp32")])
def test_latency_aware_prune_stage(backend, precision, resnet20_path, cifar_dir, tmp_path):
    """The table is measured on the runtime and in the precision the user deploys
    (the first of --backends, --latency-precision)."""
    # INT8: how far the greedy can go depends on which narrower widths the table measures faster
    # (ResNet-20 reached 0.6x MACs in one run and stopped at 0.8x in the next), so it asks for a ratio
    goal = {"target_macs": 0.6} if precision == "fp32" else {"ratio": 0.2}
    res = edgekit.prune(resnet20_path, arch="cifar_resnet20", data=cifar_dir, out=tmp_path / "p", **goal,
                        latency_aware=True, latency_precision=precision, recover=False, limit=50, progress=False,
                        timing=FAST, backends=backend)
    assert res.summary["allocation"].startswith("latency-aware")
    assert res.steps[0]["allocation"].startswith(
        f"latency-aware: lone-convolution table measured on {backend} {precision.upper()}")
    assert {r["backend"] for r in res.latency} == {backend}
    # the report times the deployed precision too: INT8 through the runtime's own PTQ
    assert {r["precision"] for r in res.latency} == ({"fp32", "int8"} if precision == "int8" else {"fp32"})
    assert all(r["latency_ms_p50"] > 0 for r in res.latency)
    assert res.summary["macs_after"] <= (0.62 if precision == "fp32" else 0.99) * res.summary["macs_before"]
    assert "latency-aware" in (tmp_path / "p" / "report.md").read_text()
    if backend == "onnxruntime":
        with pytest.raises(InputError, match="--latency-aware weighs channel or block pruning"):
            edgekit.prune(resnet20_path, arch="cifar_resnet20", data=cifar_dir, out=tmp_path / "s", sparsity=0.5,
                          latency_aware=True)
        with pytest.raises(InputError, match="--latency-precision must be fp32 or int8"):
            edgekit.prune(resnet20_path, arch="cifar_resnet20", data=cifar_dir, out=tmp_path / "s", ratio=0.3,
                          latency_aware=True, latency_precision="fp16")


@pytest.mark.parametrize("arch,size,removable", [("cifar_resnet20", 32, 7), ("cifar_mobilenet_v2:width=0.5", 32, 10),
                                                 ("resnet18", 64, 5), ("regnet_x_400mf", 64, 18)])
def test_drop_blocks_real_smaller_model(arch, size, removable, tmp_path):
    """Removable blocks are the shape-preserving blocks of each stage; removing two gives a model
    with fewer layers, MACs and params that exports, and whose checkpoint reloads identically."""
    from edgekit.pruning.depth import drop_blocks, droppable_blocks

    module, card = get_model(arch, num_classes=10)
    card = card.with_(input_size=(3, size, size))
    names = droppable_blocks(module, card.input_size)
    assert len(names) == removable, names
    x = torch.randn(4, *card.input_size, generator=torch.Generator().manual_seed(0))
    res = drop_blocks(module, card.input_size, 2, [x])
    m = res.model.eval()
    assert len(res.dropped) == 2 and set(res.dropped) <= set(names)
    assert all(isinstance(m.get_submodule(n), nn.Identity) for n in res.dropped)
    assert res.macs_after < res.macs_before and count_params(m) == res.params_after < res.params_before
    with torch.no_grad():
        ref = m(x).numpy()
    out = OrtRunner(export_onnx(m, card, tmp_path / "d.onnx"), precision="fp32", threads=1)(x.numpy())
    assert np.allclose(out, ref, atol=1e-4, rtol=1e-3)
    again = edgekit.load_model(edgekit.save_model(m, card, tmp_path / "d.pt")).module.eval()
    with torch.no_grad():
        assert torch.equal(again(x), m(x))


def test_drop_blocks_chooses_by_measurement_and_recovers(resnet20_path, cifar_dir, tmp_path):
    """On the shared ResNet-20: the blocks the greedy measurement removes cost less accuracy than
    removing the blocks it ranks last; with recovery the depth-pruned model (then pruned in
    channels too) improves, reloads, and quantizes."""
    from edgekit.pruning.depth import drop_blocks, droppable_blocks

    loaded = edgekit.load_model(resnet20_path, arch="cifar_resnet20")
    card = loaded.card
    ds = load_dataset(cifar_dir, input_size=card.input_size)
    batches = [x for x, _ in ds.train.subset(256, seed=0).batches(64, mean=card.mean, std=card.std)]
    split = ds.evaluation(1000, seed=1)
    chosen = drop_blocks(loaded.module, card.input_size, 2, batches)
    costly = sorted(chosen.alone, key=chosen.alone.__getitem__)[-2:]  # the two that cost most alone
    assert not set(costly) & set(chosen.dropped)
    worst = copy.deepcopy(loaded.module)
    for name in costly:
        worst.set_submodule(name, nn.Identity())
    top_chosen, top_worst = evaluate_top1(chosen.model, split, card)[0], evaluate_top1(worst, split, card)[0]
    assert top_chosen > top_worst + 2, (top_chosen, top_worst, chosen.alone)

    cfg = TrainConfig(epochs=1, batch_size=64, lr=0.01, train_limit=2560, seed=0)
    res = edgekit.prune(resnet20_path, arch="cifar_resnet20", data=cifar_dir, out=tmp_path / "p", drop_blocks=3,
                        ratio=0.2, config=cfg, limit=300, progress=False, timing=FAST)
    assert res.method == "blocks+channels" and len(res.steps[0]["depth"]["dropped_blocks"]) == 3
    assert res.top1_final > res.top1_pruned, (res.top1_pruned, res.top1_final)
    assert res.summary["macs_after"] < 0.7 * res.summary["macs_before"]
    assert "removed 3 of 7 removable blocks" in (tmp_path / "p" / "report.md").read_text()
    q = edgekit.quantize(res.model_path, data=cifar_dir, out=tmp_path / "q", mode="ptq", calibration_images=128,
                         limit=100, backends=("onnxruntime",), progress=False, timing=FAST)
    assert q.rows[0].status == "ok"
    reloaded = edgekit.load_model(q.model_path)
    assert evaluate_top1(reloaded.module, ds.evaluation(100, seed=0), reloaded.card)[0] == q.final_top1
    # a latency target the removed blocks already meet: no channels pruned, and the record says so
    met = edgekit.prune(resnet20_path, arch="cifar_resnet20", data=cifar_dir, out=tmp_path / "t", drop_blocks=2,
                        target_latency_ms=100.0, recover=False, limit=50, progress=False, timing=FAST)
    assert "already meet" in met.steps[0]["note"] and met.steps[0]["measured_ms"] <= 100
    blocks = edgekit.prune(resnet20_path, arch="cifar_resnet20", data=cifar_dir, out=tmp_path / "o", drop_blocks=2,
                           latency_aware=True, recover=False, limit=50, progress=False, timing=FAST)
    assert blocks.method == "blocks" and blocks.summary["allocation"].startswith("none")
    # latency-aware: one timed variant per group of identical blocks, every candidate priced
    depth = blocks.steps[0]["depth"]
    saved = depth["latency_saved_ms"]
    assert len(saved) == 7 and all(v > 0 for v in saved.values()), saved
    assert saved["layer1.0"] == saved["layer1.2"] and saved["layer3.1"] == saved["layer3.2"]
    assert depth["latency_from"] == "onnxruntime FP32, 1 thread(s), here"
    assert met.summary["params_after"] < met.summary["params_before"] and met.method == "blocks+channels"
    with pytest.raises(InputError, match="removable blocks"):
        edgekit.prune(resnet20_path, arch="cifar_resnet20", data=cifar_dir, out=tmp_path / "x", drop_blocks=8,
                      recover=False, limit=50, progress=False)
    with pytest.raises(InputError, match="not --sparsity"):
        edgekit.prune(resnet20_path, arch="cifar_resnet20", data=cifar_dir, out=tmp_path / "y", drop_blocks=2,
                      sparsity=0.5)


def test_latency_aware_block_choice_trades_divergence_for_time(resnet20_path, cifar_dir):
    """Given what each block's removal saves, the greedy choice is the least added divergence per
    ms: the block it would drop first on divergence alone, priced as saving almost nothing,
    gives way to the next one. Identical blocks (same type, input shape, weights) group."""
    from edgekit.pruning.depth import block_groups, drop_blocks, droppable_blocks

    loaded = edgekit.load_model(resnet20_path, arch="cifar_resnet20")
    size = loaded.card.input_size
    ds = load_dataset(cifar_dir, input_size=size)
    batches = [x for x, _ in ds.train.subset(128, seed=0).batches(64, mean=loaded.card.mean, std=loaded.card.std)]
    names = droppable_blocks(loaded.module, size)
    assert block_groups(loaded.module, size, names) == [["layer1.0", "layer1.1", "layer1.2"],
                                                       ["layer2.1", "layer2.2"], ["layer3.1", "layer3.2"]]
    plain = drop_blocks(loaded.module, size, 1, batches)
    first = plain.dropped[0]
    second = sorted(plain.alone, key=plain.alone.__getitem__)[1]
    priced = drop_blocks(loaded.module, size, 1, batches,
                         latency=lambda ns: {n: (1e-3 if n == first else 1.0) for n in ns})
    assert priced.dropped == [second] and priced.latency_saved_ms[first] == 1e-3
    assert priced.to_dict()["latency_saved_ms"][second] == 1.0


class _Interrupted(Exception):
    pass


def test_interrupted_recovery_resumes_on_the_saved_pruned_model(resnet20_path, cifar_dir, tmp_path, monkeypatch):
    """An interrupted recovery continues on the model that step pruned, not on a new search: a
    latency-measured search can choose other widths than the saved training state holds."""
    import importlib

    from edgekit.models import save_model

    stage = importlib.import_module("edgekit.stages.prune")  # the module (edgekit.stages.prune is the function)

    cfg = TrainConfig(epochs=1, batch_size=64, lr=0.01, train_limit=256, seed=0)
    kw = dict(arch="cifar_resnet20", data=cifar_dir, out=tmp_path / "p", ratio=0.3, config=cfg, limit=100,
              progress=False, timing=FAST)
    real_train = stage.train

    def interrupted(*a, **k):
        raise _Interrupted

    monkeypatch.setattr(stage, "train", interrupted)
    with pytest.raises(_Interrupted):
        edgekit.prune(resnet20_path, **kw)
    saved = tmp_path / "p" / "step1_pruned.pt"
    assert saved.exists() and saved.with_suffix(".json").exists()
    # stand in for a search that would now pick other widths: swap in a narrower prune
    loaded = edgekit.load_model(saved)
    other = prune_channels(edgekit.load_model(resnet20_path, arch="cifar_resnet20").module, (3, 32, 32), 0.5,
                           channel_multiple=8).model
    save_model(other, loaded.card, saved)
    monkeypatch.setattr(stage, "train", real_train)
    res = edgekit.prune(resnet20_path, resume=True, **kw)
    final = edgekit.load_model(res.model_path).module
    assert {k: v.shape for k, v in final.state_dict().items()} == {k: v.shape for k, v in other.state_dict().items()}
    assert count_params(final) < count_params(loaded.module)
    assert not saved.exists() and (tmp_path / "p" / "step1.pt").exists()
