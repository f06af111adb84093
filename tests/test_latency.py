"""The latency model on real exported graphs, and a real (small) host calibration."""

from __future__ import annotations

import numpy as np
import pytest
from torch import nn

from edgekit.bench import TimingConfig
from edgekit.errors import InputError
from edgekit.exporters.onnx import export_onnx
from edgekit.latency import graph_work, predict
from edgekit.models import ModelCard, get_model
from edgekit.profiles import get_profile, host_profile, list_profiles


def _card(c, h, w):
    return ModelCard(num_classes=10, input_size=(c, h, w), mean=(0.0,) * c, std=(1.0,) * c)


def _stack(n: int) -> nn.Module:
    """n conv blocks of the same shape, then a classifier: MACs grow linearly in n, op mix fixed."""
    blocks = [nn.Sequential(nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU()) for _ in range(n)]
    return nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), *blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(32, 10)).eval()


@pytest.fixture(scope="module")
def resnet20_onnx(tmp_path_factory):
    m, card = get_model("cifar_resnet20", num_classes=10)
    return export_onnx(m.eval(), card, tmp_path_factory.mktemp("lat") / "r20.onnx")


def test_graph_work_counts_macs_and_fuses(resnet20_onnx):
    layers = graph_work(resnet20_onnx)
    convs = [lw for lw in layers if lw.kind == "conv"]
    assert len(convs) == 19 and sum(1 for lw in layers if lw.kind == "gemm") == 1
    # ResNet-20 on 32x32: 40.55M MACs (conv + fc), the figure of the ResNet-CIFAR paper
    assert sum(lw.macs for lw in layers) == pytest.approx(40.55e6, rel=0.01)
    assert all("Relu" in lw.fused for lw in convs[:1])  # stem conv + ReLU run as one kernel
    assert not any(lw.op in ("Relu", "Reshape", "Flatten") for lw in layers)


def test_depthwise_is_its_own_kind(tmp_path):
    m, card = get_model("cifar_mobilenet_v2", num_classes=10)
    layers = graph_work(export_onnx(m.eval(), card, tmp_path / "mbv2.onnx"))
    assert sum(1 for lw in layers if lw.kind == "depthwise") == 17


def test_channels_are_priced_in_vector_blocks(tmp_path):
    """On a profile whose channel_multiple is 16 (AVX-512), 24 channels cost as much compute as
    32 (measured: benchmarks/results/conv_widths.md); the stem's 3 input channels are not padded."""
    def convs(c):
        return nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.Conv2d(32, c, 3, padding=1),
                             nn.Conv2d(c, 32, 3, padding=1)).eval()

    prof = get_profile("x86-avx512")
    assert prof.channel_multiple == 16
    compute = {}
    for c in (16, 24, 32):
        layers = graph_work(export_onnx(convs(c), _card(3, 32, 32), tmp_path / f"c{c}.onnx"))
        assert layers[1].cout == c and layers[2].cin == c
        compute[c] = [r.compute_ms for r in predict(layers, prof, precision="fp32", runtime="onnxruntime").layers[:3]]
    assert compute[24][1:] == pytest.approx(compute[32][1:])  # 24 -> 32 channels
    assert compute[16][1] < compute[24][1]
    from edgekit.latency.predict import _blocked
    stem = layers[0]
    assert stem.cin == 3 and _blocked(stem.macs, stem, 16) == stem.macs  # 3 input channels: not padded


def test_int8_activation_the_runtime_cannot_fuse_costs_float_passes(tmp_path):
    """ONNX Runtime's integer conv applies ReLU itself but runs HardSwish in float between
    DequantizeLinear and QuantizeLinear; OpenVINO fuses both. Same graph, same profile."""
    def net(act):
        return nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), act, nn.Conv2d(32, 32, 3, padding=1), act).eval()

    hs = graph_work(export_onnx(net(nn.Hardswish()), _card(3, 64, 64), tmp_path / "hs.onnx"))
    relu = graph_work(export_onnx(net(nn.ReLU()), _card(3, 64, 64), tmp_path / "relu.onnx"))
    prof = get_profile("x86-avx2")
    ort_hs = predict(hs, prof, precision="int8", runtime="onnxruntime")
    extra = [r for r in ort_hs.layers if r.op == "HardSwish"]
    assert len(extra) == 2 and all(r.precision == "fp32" and r.ms > 0 for r in extra)
    assert sum(r.ms for r in ort_hs.layers) == pytest.approx(ort_hs.latency_ms)
    assert ort_hs.latency_ms > predict(relu, prof, precision="int8", runtime="onnxruntime").latency_ms
    for p in (predict(hs, prof, precision="int8", runtime="openvino"),
              predict(hs, prof, precision="fp32", runtime="onnxruntime")):
        assert not any(r.op == "HardSwish" for r in p.layers)

@pytest.mark.parametrize("name", list_profiles())
def test_rows_add_up_and_scale(tmp_path_factory, name):
    folder = tmp_path_factory.mktemp("scale")
    small = graph_work(export_onnx(_stack(4), _card(3, 32, 32), folder / "s.onnx"))
    big = graph_work(export_onnx(_stack(8), _card(3, 32, 32), folder / "b.onnx"))
    assert sum(lw.macs for lw in big) / sum(lw.macs for lw in small) == pytest.approx(2, rel=0.1)
    prof = get_profile(name)
    for prec in prof.precisions:
        if prec not in ("fp32", "fp16", "int8"):
            continue
        p = predict(small, prof, precision=prec)
        assert p.label == "predicted"
        assert sum(r.ms for r in p.layers) == pytest.approx(p.latency_ms)
        assert all(r.ms > 0 for r in p.layers)
        assert predict(big, prof, precision=prec).latency_ms > 1.3 * p.latency_ms
    if "int8" in prof.unit().peak_gops and "fp32" in prof.unit().peak_gops:
        assert predict(big, prof, precision="int8").latency_ms < predict(big, prof, precision="fp32").latency_ms


def test_precision_the_device_lacks_is_refused(resnet20_onnx):
    with pytest.raises(InputError, match="jetson-nano has no int8"):
        predict(resnet20_onnx, "jetson-nano", precision="int8")


def test_qdq_graph_marks_integer_layers(tmp_path, resnet20_onnx):
    from edgekit.backends.onnxruntime import quantize_ort_int8

    batches = [np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32) for _ in range(2)]
    q = quantize_ort_int8(resnet20_onnx, tmp_path / "q.onnx", batches, work=tmp_path)
    layers = graph_work(q)
    assert [lw.macs for lw in layers if lw.kind == "conv"] == [lw.macs for lw in graph_work(resnet20_onnx)
                                                                if lw.kind == "conv"]
    assert all(lw.quantized for lw in layers if lw.kind == "conv")
    pred = predict(q, "host", precision="fp32", batch=1)  # the file says int8, per layer
    assert {r.precision for r in pred.layers if r.kind == "conv"} == {"int8"}


@pytest.mark.parametrize("target", ["onnxruntime", "tensorrt"])
def test_edgekit_qdq_export_has_the_float_graphs_work(tmp_path, resnet20_onnx, target):
    """edgekit's own QDQ files write ResNet-20's shortcut F.pad with pads computed by a small
    subgraph, which ONNX shape inference cannot follow: the convolutions after it must still be
    counted (they were not, and a QAT model was predicted at half its latency), and the pad
    arithmetic is folded away, not priced as layers."""
    import copy

    from edgekit.exporters.qdq import export_qdq
    from edgekit.quant import plan, prepare

    m, card = get_model("cifar_resnet20", num_classes=10)
    q = prepare(copy.deepcopy(m.eval()), plan(m, 8)).eval()
    layers = graph_work(export_qdq(q, card, tmp_path / "q.onnx", target=target, work=tmp_path))
    ref = graph_work(resnet20_onnx)
    assert [lw.macs for lw in layers if lw.kind == "conv"] == [lw.macs for lw in ref if lw.kind == "conv"]
    assert all(lw.quantized for lw in layers if lw.kind == "conv")
    assert len(layers) == len(ref)
    prof = get_profile("x86-avx2")
    assert predict(layers, prof, precision="int8").latency_ms == pytest.approx(
        predict(ref, prof, precision="int8").latency_ms, rel=0.05)


def test_calibration_fits_and_is_picked_up(tmp_path, monkeypatch):
    from edgekit.latency.calibrate import calibrate

    out = tmp_path / "host.yaml"
    rec = calibrate(out, runtimes=("onnxruntime",), precisions=("fp32",), references=(),
                    micro=("conv3x3", "depthwise", "tiny_chain", "elementwise"), iters=8, rounds=2)
    assert out.exists() and set(rec["efficiency"]) == {"default", "onnxruntime/fp32"}
    assert len(rec["fit"]) == 4  # two rounds, one row per model: its fastest round
    prof = host_profile(calibration=out)
    assert prof.efficiency_source.startswith("calibrated") and prof.memory.bandwidth_gbs == rec["bandwidth_gbs"]
    assert "onnxruntime/fp32" in prof.efficiency
    # the fitted model explains what it was fitted on far better than a factor of 2
    ratios = [f["predicted_ms"] / f["measured_ms"] for f in rec["fit"]]
    assert all(0.5 < r < 2 for r in ratios), rec["fit"]
    monkeypatch.setenv("EDGEKIT_HOST_PROFILE", str(out))
    assert get_profile("host").efficiency_source.startswith("calibrated")


def test_prune_to_predicted_latency(tmp_path, cifar_dir, resnet20_path):
    """`prune --target-latency-ms --profile P` for a device that is not here uses P's prediction."""
    from edgekit.stages import prune

    m, card = get_model("cifar_resnet20", num_classes=10)
    base = predict(export_onnx(m.eval(), card, tmp_path / "r.onnx"), "rpi", batch=1).latency_ms
    res = prune(resnet20_path, arch="cifar_resnet20", data=cifar_dir, out=tmp_path / "p", profile="rpi",
                target_latency_ms=0.8 * base, recover=False, limit=100, progress=False, threads=1,
                timing=TimingConfig(warmup=1, iters=4, passes=1, throughput_iters=1))
    step = res.steps[0]
    assert step["predicted_ms"] <= 0.8 * base and step["backend"] == "raspberry-pi-5 (predicted)"
    assert res.summary["macs_after"] < res.summary["macs_before"]
