"""Quantization on real models and real images: BN folding, fake-quant grid, QDQ exports run in
ONNX Runtime and OpenVINO and agree with the fake-quant model, W4A8 is smaller, QAT beats PTQ,
mixed precision stays within its budget, quantized checkpoints reload and benchmark."""

from __future__ import annotations

import copy
import math

import numpy as np
import onnx
import pytest
import torch

import edgekit
from edgekit.backends import get_backend
from edgekit.backends.onnxruntime import OrtRunner
from edgekit.backends.openvino import OvRunner
from edgekit.bench import TimingConfig
from edgekit.data import load_dataset
from edgekit.errors import ExportError, InputError
from edgekit.exporters.qdq import check_tensorrt_rules, export_qdq
from edgekit.models import get_model
from edgekit.quant import (ActQuant, QuantConv2d, act_quants, calibrate, fold_batchnorm, plan, prepare,
                           quant_layers)
from edgekit.train import TrainConfig
from edgekit.train.engine import evaluate_top1
from edgekit.verify import Tolerance


@pytest.fixture(scope="module")
def r20(resnet20_path, cifar_dir):
    loaded = edgekit.load_model(resnet20_path, arch="cifar_resnet20")
    ds = load_dataset(cifar_dir, input_size=tuple(loaded.card.input_size))
    card = loaded.card
    calib = [x for x, _ in ds.calibration(256, seed=0).batches(64, mean=card.mean, std=card.std)]
    test = ds.evaluation(300, seed=0)
    x_test = torch.cat([x for x, _ in test.batches(300, mean=card.mean, std=card.std)])
    return loaded.module, card, ds, calib, test, x_test


def _ptq(module, bits, calib, unsigned=False):
    q = prepare(copy.deepcopy(module), plan(module, bits), label={8: "int8", 4: "w4a8"}[bits], unsigned=unsigned)
    calibrate(q, calib)
    return q.eval()


def _agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float((a.argmax(1) == b.argmax(1)).mean())


def test_fold_batchnorm_keeps_outputs(r20):
    module, _, _, _, _, x = r20
    ref = module.eval()(x[:32])
    folded = copy.deepcopy(module)
    names = fold_batchnorm(folded)
    assert len(names) == 19  # every conv of ResNet-20 is followed by a BN
    assert torch.allclose(folded.eval()(x[:32]), ref, atol=1e-4)
    # a torchvision model with non-trivial BN statistics folds the same way
    tv, _ = get_model("mobilenet_v2", num_classes=10)
    for m in tv.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    xi = torch.randn(2, 3, 64, 64)
    ref = tv.eval()(xi)
    fold_batchnorm(tv)
    assert torch.allclose(tv(xi), ref, atol=1e-3)


def test_plan_and_placement(r20):
    module = r20[0]
    w8 = plan(module, 8)
    assert len(w8) == 20 and set(w8.values()) == {8}
    w4 = plan(module, 4)
    assert w4["conv1"] == 8 and w4["linear"] == 8 and w4["layer2.1.conv1"] == 4
    q = prepare(copy.deepcopy(module), w4, label="w4a8")
    layers = quant_layers(q)
    assert len(layers) == 20 and layers["layer2.1.conv1"].w_bits == 4
    tensors = q.edgekit_quant["tensors"]
    # inputs of quantized layers and both operands of every residual add carry a quantizer
    # (folded BNs and identity shortcuts are bypassed, so the add sees conv2's output and relu's)
    assert "x" in tensors and "layer1_0_conv2" in tensors and "relu" in tensors
    # one quantizer per tensor: two on the same value drift apart in QAT and break ORT's fusion
    for node in q.graph.nodes:
        assert sum(u.op == "call_module" and u.target.startswith("aq_") for u in node.users) <= 1, node.name
    assert len(act_quants(q)) == len(tensors)
    with pytest.raises(InputError, match="--bits 3"):
        plan(module, 3)
    with pytest.raises(InputError, match="unknown layer"):
        plan(module, 8, keep_float=["no.such.layer"])


def test_fake_quant_weights_on_integer_grid(r20):
    q = _ptq(r20[0], 4, r20[3])
    conv = quant_layers(q)["layer1.0.conv1"]
    assert isinstance(conv, QuantConv2d)
    iw, s = conv.int_weight()
    assert iw.abs().max() <= 7 and torch.equal(iw, iw.round())
    assert torch.allclose(conv.quant_weight(), iw * s.view(-1, 1, 1, 1), atol=1e-7)


def test_qdq_exports_run_and_agree(r20, tmp_path):
    module, card, _, calib, _, x = r20
    q = _ptq(module, 8, calib)
    with torch.no_grad():
        ref = q(x).numpy()
    trt = export_qdq(q, card, tmp_path / "trt.onnx", target="tensorrt")
    ort_file = export_qdq(q, card, tmp_path / "ort.onnx", target="onnxruntime")
    assert check_tensorrt_rules(trt) == []
    # the ONNX Runtime flavour uses unsigned activations: not TensorRT's rules, and the checker says so
    assert check_tensorrt_rules(ort_file)
    weights = [t for t in onnx.load(str(trt)).graph.initializer
               if t.data_type == onnx.TensorProto.INT8 and len(t.dims) >= 2]
    assert len(weights) == 20  # every conv/linear weight is stored as INT8
    ort_runner = OrtRunner(ort_file, precision="int8", threads=1)
    assert ort_runner.executed.startswith("int8: 20/20")  # every conv in an integer kernel
    agree_ort = _agreement(ort_runner(x.numpy()), ref)
    trt_on_ort = _agreement(OrtRunner(trt, precision="int8", threads=1)(x.numpy()), ref)
    import openvino as ov
    ov.save_model(ov.convert_model(str(trt)), str(tmp_path / "ov.xml"), compress_to_fp16=False)
    ov_runner = OvRunner(tmp_path / "ov.xml", precision="int8", threads=1)
    assert "i8 x20" in ov_runner.executed or "u8" in ov_runner.executed
    agree_ov = _agreement(ov_runner(x.numpy()), ref)
    assert min(agree_ort, trt_on_ort, agree_ov) >= 0.97, (agree_ort, trt_on_ort, agree_ov)


def test_unsigned_activations_are_the_grid_onnxruntime_runs(r20, tmp_path):
    """For ONNX Runtime / OpenVINO, ReLU outputs are trained on [0, 255]: the ONNX Runtime file then
    holds the torch model's grid exactly (a signed model's UINT8 form lets through values beyond
    its 127 steps), still runs every conv in an integer kernel, reloads, and has no TensorRT form."""
    module, card, _, calib, _, x = r20
    q = _ptq(module, 8, calib, unsigned=True)
    spec, aqs = q.edgekit_quant, act_quants(q)
    # relu outputs (and the pooled, flattened one feeding the classifier) are unsigned; the
    # network input and conv outputs entering a residual add stay signed
    assert "relu" in spec["unsigned"] and "flatten" in spec["unsigned"]
    assert "x" not in spec["unsigned"] and "layer1_0_conv2" not in spec["unsigned"]
    assert (aqs["aq_relu"].qmin, aqs["aq_relu"].qmax, aqs["aq_x"].qmin) == (0, 255, -128)
    path = export_qdq(q, card, tmp_path / "u.onnx", target="onnxruntime")
    runner = OrtRunner(path, precision="int8", threads=1)
    assert runner.executed.startswith("int8: 20/20"), runner.executed
    with torch.no_grad():
        ref = q(x).numpy()
    err = np.abs(runner(x.numpy()) - ref).mean()
    signed = _ptq(module, 8, calib)
    with torch.no_grad():
        ref_s = signed(x).numpy()
    s_path = export_qdq(signed, card, tmp_path / "s.onnx", target="onnxruntime")
    err_signed = np.abs(OrtRunner(s_path, precision="int8", threads=1)(x.numpy()) - ref_s).mean()
    assert err < 0.7 * err_signed, (err, err_signed)
    assert _agreement(runner(x.numpy()), ref) >= 0.98
    with pytest.raises(ExportError, match="signed"):
        export_qdq(q, card, tmp_path / "t.onnx", target="tensorrt")
    assert "signed INT8 only" in get_backend("tensorrt").unsupported("int8", q)
    # the checkpoint rebuilds the same unsigned quantizers and outputs
    back = edgekit.load_model(edgekit.save_model(q, card, tmp_path / "u.pt"))
    assert back.module.edgekit_quant["unsigned"] == spec["unsigned"]
    with torch.no_grad():
        assert torch.allclose(back.module.eval()(x), torch.from_numpy(ref), atol=1e-5)


def _openvino_ir(q, card, tmp_path, name):
    """The IR the OpenVINO backend writes for a quantized model (its ONNX Runtime form, converted)."""
    import openvino as ov

    src = export_qdq(q, card, tmp_path / f"{name}.onnx", target="onnxruntime")
    ov.save_model(ov.convert_model(str(src)), str(tmp_path / f"{name}.xml"), compress_to_fp16=False)
    return tmp_path / f"{name}.xml"


def test_openvino_form_is_what_openvino_runs(r20, tmp_path):
    """OpenVINO's CPU plugin fuses an INT8 conv, its output quantizer and the residual add after it
    into one kernel and replaces that quantizer by its scale (no rounding). The "fused" form leaves
    those tensors unquantized: its OpenVINO file follows its torch model about ten times more
    closely than the rounded form's does (benchmarks/results/residual_form.md), and ONNX Runtime
    runs the same fused model exactly, with those convs in float."""
    from edgekit.stages.quantize import residual_form

    module, card, _, calib, _, x = r20
    rounded = _ptq(module, 8, calib, unsigned=True)
    fused = prepare(copy.deepcopy(module), plan(module, 8), unsigned=True, residual="fused")
    calibrate(fused, calib)
    fused.eval()
    rs, fs = rounded.edgekit_quant, fused.edgekit_quant
    assert (rs["residual"], fs["residual"]) == ("rounded", "fused")
    # the 9 residual blocks' second conv outputs are the only tensors left unquantized
    assert sorted(set(rs["tensors"]) - set(fs["tensors"])) == sorted(
        f"layer{s}_{b}_conv2" for s in (1, 2, 3) for b in range(3)) and set(fs["tensors"]) < set(rs["tensors"])
    err = {}
    for name, q in (("rounded", rounded), ("fused", fused)):
        with torch.no_grad():
            ref = q(x).numpy()
        out = OvRunner(_openvino_ir(q, card, tmp_path, name), precision="int8", threads=1)(x.numpy())
        err[name] = float(np.abs(out - ref).mean())
        if name == "fused":
            assert _agreement(out, ref) >= 0.99
            ort = OrtRunner(tmp_path / "fused.onnx", precision="int8", threads=1)
            assert ort.executed.startswith("int8: 11/20"), ort.executed  # the 9 convs into an add run in float
            assert _agreement(ort(x.numpy()), ref) >= 0.99
    assert err["fused"] < 0.3 * err["rounded"], err
    # W4A8: the residual convs have 4-bit weights, which OpenVINO runs in float with the rounding kept
    w4 = prepare(copy.deepcopy(module), plan(module, 4), unsigned=True, residual="fused")
    assert w4.edgekit_quant["tensors"] == _ptq(module, 4, calib, unsigned=True).edgekit_quant["tensors"]
    back = edgekit.load_model(edgekit.save_model(fused, card, tmp_path / "f.pt"))
    assert back.module.edgekit_quant["tensors"] == fs["tensors"]
    with torch.no_grad():
        assert torch.allclose(back.module.eval()(x), fused(x), atol=1e-5)
    assert residual_form("auto", ["torch", "openvino", "onnxruntime"]) == "fused"
    assert residual_form("auto", ["onnxruntime", "openvino"]) == "rounded"
    assert residual_form("rounded", ["openvino"]) == "rounded"
    with pytest.raises(InputError, match="--residual"):
        residual_form("exact", ["openvino"])


def test_w4a8_exports_smaller_and_runs(r20, tmp_path):
    module, card, _, calib, _, x = r20
    q8, q4 = _ptq(module, 8, calib), _ptq(module, 4, calib)
    f8 = export_qdq(q8, card, tmp_path / "int8.onnx", target="tensorrt")
    f4 = export_qdq(q4, card, tmp_path / "w4a8.onnx", target="tensorrt")
    # INT4 convolutions run nowhere in TensorRT (its INT4 is weight-only MatMul/Gemm) and need
    # opset 21, beyond 10.3's parser: the checker says both instead of passing the file
    found = check_tensorrt_rules(f4)
    assert any("[opset] opset 21" in f for f in found) and any("[qdq-type] INT4" in f for f in found)
    m4 = onnx.load(str(f4))
    assert max(o.version for o in m4.opset_import if o.domain in ("", "ai.onnx")) >= 21
    int4 = [t for t in m4.graph.initializer if t.data_type == onnx.TensorProto.INT4 and len(t.dims) >= 2]
    assert len(int4) == 18  # all but the first and last layer
    assert f4.stat().st_size < 0.65 * f8.stat().st_size
    with torch.no_grad():
        ref = q4(x).numpy()
    out = OrtRunner(f4, precision="w4a8", threads=1)(x.numpy())
    assert _agreement(out, ref) >= 0.95


def test_qat_beats_ptq_and_checkpoint_reloads(resnet20_path, cifar_dir, tmp_path):
    """A few hundred QAT steps on real images end at or above PTQ; the artifacts run and agree;
    the quantized checkpoint reloads bit-identically and benchmarks at its own precision."""
    cfg = TrainConfig(epochs=1, batch_size=32, lr=0.001, weight_decay=0.0, train_limit=6400, seed=0)
    res = edgekit.quantize(resnet20_path, arch="cifar_resnet20", data=cifar_dir, out=tmp_path / "q",
                                  mode="qat", bits=8, config=cfg, calibration_images=256, limit=1000,
                                  backends=("torch", "onnxruntime", "openvino"), progress=False,
                                  timing=TimingConfig(warmup=1, iters=5, passes=1, throughput_iters=1),
                                  # 200 QAT steps on a subset leave more low-margin images than the
                                  # benchmark's full epoch (99.1-99.4% there); integer rounding in the
                                  # runtimes flips some of them
                                  tolerance=Tolerance(min_agreement={"quantized": 0.97}))
    assert res.training is not None and len(res.training.history) == 1
    assert res.final_top1 >= res.ptq_top1, (res.ptq_top1, res.final_top1)
    rows = {r.backend: r for r in res.rows}
    for name in ("torch", "onnxruntime", "openvino"):
        assert rows[name].status == "ok", (name, rows[name].details.get("reason"))
        assert rows[name].precision == "int8"
        assert rows[name].agreement >= 0.97, (name, rows[name].agreement)
    assert rows["onnxruntime"].details["executed"].startswith("int8: 20/20")
    # no TensorRT among the backends: ReLU outputs were trained unsigned, which TensorRT cannot
    # take, and its rules row says so instead of writing a file that would not hold the grid
    trt = rows["onnxruntime (tensorrt-rules file)"]
    assert trt.status == "unsupported" and "signed INT8 only" in trt.details["reason"]
    assert not (tmp_path / "q" / "model_int8_tensorrt.onnx").exists()
    for f in ("model.pt", "model_int8.onnx", "model_int8_openvino.xml",
              "report.md", "quantize.json", "results.json"):
        assert (tmp_path / "q" / f).exists(), f
    # the checkpoint rebuilds the fake-quant model exactly
    again = edgekit.load_model(tmp_path / "q" / "model.pt")
    x = torch.randn(4, 3, 32, 32)
    assert again.card.notes["quantization"] == "int8" and again.card.notes["activations"] == "unsigned"
    original = edgekit.load_model(tmp_path / "q" / "model.pt").module
    assert torch.equal(again.module(x), original(x))
    bench = edgekit.benchmark(tmp_path / "q" / "model.pt", data=cifar_dir, out=tmp_path / "b", limit=200,
                              backends="onnxruntime", progress=False, tolerance=Tolerance(min_agreement={"quantized": 0.97}),
                              timing=TimingConfig(warmup=1, iters=5, passes=1, throughput_iters=1))
    assert [(r.backend, r.precision, r.status) for r in bench.rows] == [("onnxruntime", "int8", "ok")]
    # a float model has no w4a8 row to offer
    plain = edgekit.benchmark(resnet20_path, arch="cifar_resnet20", data=cifar_dir, out=tmp_path / "c", limit=50,
                              backends="onnxruntime", precisions="w4a8", progress=False)
    assert plain.rows[0].status == "unsupported" and "edgekit" in plain.rows[0].details["reason"]


def test_mixed_precision_within_budget(resnet20_path, cifar_dir, tmp_path):
    res = edgekit.quantize(resnet20_path, arch="cifar_resnet20", data=cifar_dir, out=tmp_path / "m",
                                  mode="ptq", bits=4, max_drop=1.0, calibration_images=128, limit=100,
                                  backends=("onnxruntime",), progress=False,
                                  timing=TimingConfig(warmup=1, iters=5, passes=1, throughput_iters=1))
    assert len(res.sensitivity) == 20 and all("drop" in s for s in res.sensitivity)
    assert res.raised, "W4 everywhere loses more than 1 point on ResNet-20: some layers must go up"
    assert res.label == "mixed"
    assert res.mixed_drop is not None and res.mixed_drop <= 1.0
    most = max(res.sensitivity, key=lambda s: s["drop"])["layer"]
    assert most in res.raised
    ort = next(r for r in res.rows if r.backend == "onnxruntime")
    assert ort.status == "ok" and ort.precision == "mixed"
    # TensorRT has no 4-bit convolutions: refused up front, and no file left behind
    trt = next(r for r in res.rows if "tensorrt" in r.backend)
    assert trt.status == "unsupported" and "4-bit weights" in trt.details["reason"]
    assert not list((tmp_path / "m").glob("*tensorrt*"))
    # the saved checkpoint gets the same answer from benchmark/export, before any export work
    again = edgekit.benchmark(res.model_path, data=cifar_dir, out=tmp_path / "b", limit=20,
                              backends="tensorrt,onnxruntime", progress=False,
                              timing=TimingConfig(warmup=1, iters=2, passes=1, throughput_iters=1))
    rows = {r.backend: r for r in again.rows}
    assert rows["tensorrt"].status == "unsupported" and "4-bit weights" in rows["tensorrt"].details["reason"]
    assert rows["onnxruntime"].status == "ok"


def test_tensorrt_bundle_is_the_only_tensorrt_row(resnet20_path, cifar_dir, tmp_path):
    """With TensorRT among the backends, its bundle (checked, and run here on the stand-in) is the
    TensorRT row; the separate TensorRT-rules file row appears only without it."""
    res = edgekit.quantize(resnet20_path, arch="cifar_resnet20", data=cifar_dir, out=tmp_path / "q", mode="ptq",
                           bits=8, calibration_images=128, limit=100, backends=("onnxruntime", "tensorrt"),
                           progress=False, timing=TimingConfig(warmup=1, iters=2, passes=1, throughput_iters=1))
    assert [r.backend for r in res.rows] == ["onnxruntime", "tensorrt"]
    trt = res.rows[1]
    assert trt.status == ("ok" if get_backend("tensorrt").unavailable() is None else "unavailable")
    assert trt.details["standin"]["passed"], trt.details
    assert (tmp_path / "q" / "model_tensorrt_int8" / "model.onnx").is_file()
    assert not (tmp_path / "q" / "model_int8_tensorrt.onnx").exists()


def test_unsupported_layer_is_named():
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3)
            self.up = torch.nn.ConvTranspose2d(4, 4, 2)
            self.fc = torch.nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(self.up(self.conv(x)).mean((2, 3)))

    with pytest.raises(InputError, match="up .ConvTranspose2d"):
        plan(Net(), 8)
    weights = plan(Net(), 8, keep_float=["up"])
    assert set(weights) == {"conv", "fc"}


@pytest.mark.parametrize("unsigned", [False, True], ids=["signed", "unsigned"])
def test_relu6_model_runs_in_integer_kernels(cifar_dir, tmp_path, unsigned):
    """MobileNetV2's ReLU6 (ONNX Clip) must not keep ONNX Runtime from fusing its convolutions:
    all but the last conv (which feeds the float average pool) run as QLinearConv. Unsigned,
    a ReLU6 output's scale is held at 6/255 at most, so the clip never acts inside the grid."""
    # a seeded init: this untrained model's logit margins are tiny (median about 0.05), and the
    # init that the tests before it left in the global RNG once put 4 of 64 answers within
    # rounding of a tie (93.75% agreement on an AVX-512/AMX Xeon; seeds 0-7 give 98.4-100% there)
    torch.manual_seed(0)
    module, card = get_model("cifar_mobilenet_v2:width=0.5", num_classes=10)
    ds = load_dataset(cifar_dir, input_size=tuple(card.input_size))
    calib = [x for x, _ in ds.calibration(128, seed=0).batches(64, mean=card.mean, std=card.std)]
    x = torch.cat([x for x, _ in ds.evaluation(64, seed=0).batches(64, mean=card.mean, std=card.std)])
    for m in module.modules():  # batch statistics from real images give unit-scale activations
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None
    with torch.no_grad():
        for xb in calib:
            module.train()(xb)
    q = prepare(copy.deepcopy(module).eval(), plan(module, 8), unsigned=unsigned)
    calibrate(q, calib)
    q.eval()
    capped = [a for a in act_quants(q).values() if a.cap is not None]
    assert len(capped) == (34 if unsigned else 0)  # ReLU6 outputs feeding a quantized conv
    for a in capped:  # as if QAT had pushed the scale up: the grid still ends at the clip
        with torch.no_grad():
            a.log_scale.add_(3.0)
        assert float(a.scale) == pytest.approx(6 / 255)
    path = export_qdq(q, card, tmp_path / "mbv2.onnx", target="onnxruntime")
    runner = OrtRunner(path, precision="int8", threads=1)
    fused, total = map(int, runner.executed.split()[1].split("/"))
    assert total == 53 and fused >= total - 2, runner.executed
    with torch.no_grad():
        ref = q(x).numpy()
    # writing ReLU6 as ReLU adds no error beyond integer rounding: the ONNX Runtime form is as
    # close to the fake-quant model as the exact-grid (TensorRT-rules) file run on the same runtime
    if unsigned:  # the ONNX Runtime form is the exact grid: every quantized ReLU6 folded
        g = onnx.load(str(path)).graph
        clips = {n.output[0] for n in g.node if n.op_type == "Clip"}
        assert len(clips) == 1  # the last one feeds the float average pool
        assert not [n for n in g.node if n.op_type == "QuantizeLinear" and n.input[0] in clips]
        # every bias is the torch model's, already on the INT32 grid in_scale * w_scale
        inits = {i.name: onnx.numpy_helper.to_array(i) for i in g.initializer}
        prod = {o: n for n in g.node for o in n.output}
        file_biases = [prod[n.input[2]] for n in g.node if n.op_type in ("Conv", "Gemm") and len(n.input) > 2]
        layers = list(quant_layers(q).values())
        assert len(file_biases) == len(layers) == 53
        for dq, layer in zip(file_biases, layers):
            assert inits[dq.input[0]].dtype == np.int32
            np.testing.assert_allclose(inits[dq.input[0]] * inits[dq.input[1]],
                                       layer.quant_bias().detach().numpy(), rtol=1e-6, atol=1e-9)
        # and closer to its torch model than the signed model's ONNX Runtime file is to its own
        signed = prepare(copy.deepcopy(module).eval(), plan(module, 8))
        calibrate(signed, calib)
        with torch.no_grad():
            ref_s = signed.eval()(x).numpy()
        s_file = export_qdq(signed, card, tmp_path / "mbv2_s.onnx", target="onnxruntime")
        err_s = np.abs(OrtRunner(s_file, precision="int8", threads=1)(x.numpy()) - ref_s).mean()
        assert np.abs(runner(x.numpy()) - ref).mean() < err_s
        return
    # Signed (TensorRT's grid): the exact-grid file, its biases on the INT32 grid the torch
    # model rounds them to, agrees with it (float biases here left it near 60% on this model)
    exact = export_qdq(q, card, tmp_path / "mbv2_trt.onnx", target="tensorrt")
    out_exact = OrtRunner(exact, precision="int8", threads=1)(x.numpy())
    assert (out_exact.argmax(1) == ref.argmax(1)).mean() >= 0.95
    # The ONNX Runtime form writes a ReLU6 -> signed quantizer as Relu -> UINT8 (zero point 0) to
    # get it fused: values the signed grid clips at 127 steps pass up to 255. That documented
    # change, made in a torch twin, accounts for nearly all of the file's difference.
    out_ort = runner(x.numpy())
    mods = dict(q.named_modules())
    for node in q.graph.nodes:
        aq = mods.get(node.target) if node.op == "call_module" else None
        src = node.args[0] if node.args else None
        clip = mods.get(src.target) if isinstance(src, torch.fx.Node) and src.op == "call_module" else None
        if isinstance(aq, ActQuant) and isinstance(clip, torch.nn.ReLU6) and round(6 / float(aq.scale)) >= 127:
            aq.qmin, aq.qmax, clip.max_val = 0, 255, math.inf
    with torch.no_grad():
        twin = q(x).numpy()
    err_ort, err_twin = np.abs(out_ort - ref).mean(), np.abs(out_ort - twin).mean()
    assert err_twin < err_ort / 5, (err_twin, err_ort)


def test_onnxruntime_form_rounds_conv_outputs_that_a_float_op_consumes():
    """ONNX Runtime runs a conv as QLinearConv only when its output is quantized: in its form a
    conv feeding HardSwish gets an output quantizer (a conv feeding ReLU does not need one: the
    quantizer after the ReLU serves); OpenVINO's and TensorRT's forms are left as they were."""
    from edgekit.quant import plan, prepare

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.c2, self.c3 = (torch.nn.Conv2d(3, 8, 3), torch.nn.Conv2d(8, 8, 3),
                                         torch.nn.Conv2d(8, 8, 3))
            self.act, self.relu = torch.nn.Hardswish(), torch.nn.ReLU()
            self.fc = torch.nn.Linear(8, 4)

        def forward(self, x):
            x = self.relu(self.c2(self.act(self.c1(x))))
            return self.fc(self.c3(x).mean((2, 3)))

    net = Net().eval()

    def tensors(**form):
        return prepare(copy.deepcopy(net), plan(net, 8), **form).edgekit_quant["tensors"]

    ort = tensors(unsigned=True, residual="rounded")
    assert "c1" in ort and "c2" not in ort and "c3" in ort, ort  # c3 -> mean: a float op
    for form in (dict(unsigned=True, residual="fused"), dict(unsigned=False, residual="rounded")):
        assert not {"c1", "c3"} & set(tensors(**form)), form
    assert set(tensors(unsigned=True, residual="rounded", conv_outputs=False)) == set(ort) - {"c1", "c3"}
    # the checkpoint's spec rebuilds the same model: HardSwish reads the rounded conv output there too
    from edgekit.quant import calibrate
    from edgekit.quant.prepare import rebuild

    torch.manual_seed(0)
    x = torch.randn(8, 3, 12, 12)
    q = prepare(copy.deepcopy(net), plan(net, 8), unsigned=True, residual="rounded")
    calibrate(q, [x])
    again = rebuild(copy.deepcopy(net), q.edgekit_quant)
    again.load_state_dict(q.state_dict())
    with torch.no_grad():
        assert torch.equal(again.eval()(x), q.eval()(x))


class _ChannelsLastMLP(torch.nn.Module):
    """A ConvNeXt-style block: Linear layers over the channels of an NHWC map, which both ONNX
    exporters write as MatMul with the weight pre-transposed into an anonymous initializer."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.fc1, self.act, self.fc2 = torch.nn.Linear(16, 48), torch.nn.GELU(), torch.nn.Linear(48, 16)
        self.head = torch.nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x).permute(0, 2, 3, 1)
        x = x + self.fc2(self.act(self.fc1(x)))
        return self.head(x.mean((1, 2)))


def test_linear_on_channels_last_maps_exports_integer_matmuls(r20, tmp_path):
    """Before: 'layer(s) fc1, fc2 not found in the ONNX graph' and no INT8 file at all."""
    from edgekit.backends.onnxruntime import executed_ops

    _, card, _, calib, _, x = r20
    torch.manual_seed(0)
    q = _ptq(_ChannelsLastMLP().eval(), 8, calib)
    with torch.no_grad():
        ref = q(x).numpy()
    scale = float(np.abs(ref).max())
    for target in ("onnxruntime", "tensorrt"):
        path = export_qdq(q, card, tmp_path / f"{target}.onnx", target=target)
        weights = [t for t in onnx.load(str(path)).graph.initializer
                   if t.data_type == onnx.TensorProto.INT8 and len(t.dims) >= 2]
        assert len(weights) == 4, target  # stem, fc1, fc2, head
        out = OrtRunner(path, precision="int8", threads=1)(x.numpy())
        assert np.abs(out - ref).max() < 0.05 * scale, (target, np.abs(out - ref).max(), scale)
        assert _agreement(out, ref) >= 0.97
    assert check_tensorrt_rules(tmp_path / "tensorrt.onnx") == []  # weight scales on axis 0
    # the MatMuls run in ONNX Runtime's integer kernel (MatMulIntegerToFloat): 3 of 4 layers at least
    int_ops, total = executed_ops(tmp_path / "onnxruntime.onnx", "int8").split(": ")[1].split(" ")[0].split("/")
    assert int(int_ops) >= 3 and int(total) == 4


class _EqualWeights(torch.nn.Module):
    """Two convs with equal weights and different biases (zero-initialised layers of an untrained
    RepViT look like this): both ONNX exporters store such weights once."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.b, self.c = torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.Conv2d(8, 8, 3, padding=1)
        self.head = torch.nn.Linear(8, 10)
        with torch.no_grad():
            self.c.weight.copy_(self.b.weight)
            self.c.bias.copy_(self.b.bias + 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        x = torch.relu(self.c(torch.relu(self.b(x))))
        return self.head(x.mean((2, 3)))


@pytest.mark.parametrize("exporter", ["dynamo", "legacy"])
def test_layers_with_equal_weights_export(r20, tmp_path, monkeypatch, exporter):
    """Before: a KeyError traceback (legacy: the weight behind an Identity) or 'layer c not found'
    (dynamo: one initializer for both convs)."""
    import edgekit.exporters.onnx as onnx_exporter

    if exporter == "legacy":  # as for a model the dynamo exporter cannot trace
        real = onnx_exporter._export

        def legacy_only(*args, dynamo, **kw):
            if dynamo:
                raise RuntimeError("dynamo refused")
            return real(*args, dynamo=dynamo, **kw)

        monkeypatch.setattr(onnx_exporter, "_export", legacy_only)
    _, card, _, calib, _, x = r20
    torch.manual_seed(0)
    q = _ptq(_EqualWeights().eval(), 8, calib)
    with torch.no_grad():
        ref = q(x).numpy()
    for target in ("onnxruntime", "tensorrt"):
        path = export_qdq(q, card, tmp_path / f"{target}.onnx", target=target)
        out = OrtRunner(path, precision="int8", threads=1)(x.numpy())
        # each conv keeps its own bias (the ONNX Runtime form re-grids it to INT32 per node)
        assert np.abs(out - ref).max() < 0.05 * float(np.abs(ref).max()), (target, np.abs(out - ref).max())


class _Gate(torch.nn.Module):
    """A block torch.fx cannot trace: Python control flow on a tensor's shape (as in timm's
    MobileViT and EfficientViT attention)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] > 4:
            x = x * 0.5
        return self.conv(x)


class _WithGate(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.gate = _Gate()
        self.conv = torch.nn.Conv2d(8, 16, 3, padding=1)
        self.head = torch.nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.relu(x + self.gate(x))  # the stem's output: quantized for the add, read by the gate
        return self.head(torch.relu(self.conv(x)).mean((2, 3)))


def test_untraceable_block_stays_float_and_the_rest_quantizes(r20, tmp_path):
    """Before: 'cannot quantize this model: torch.fx could not trace it' for the whole model."""
    from edgekit.quant import spec_of

    _, card, _, calib, _, x = r20
    torch.manual_seed(0)
    model = _WithGate().eval()
    q = _ptq(model, 8, calib)
    spec = spec_of(q)
    assert spec.opaque == ["gate"]
    assert sorted(spec.weights) == ["conv", "head", "stem"]  # gate.conv stays float
    # the float block reads the stem's output rounded, as the add does: OpenVINO mis-executed a
    # tensor quantized for an add and read unquantized by such a block (timm's EfficientViT-B0)
    (gate,) = [n for n in q.graph.nodes if n.op == "call_module" and n.target == "gate"]
    assert isinstance(q.get_submodule(gate.args[0].target), ActQuant)
    with torch.no_grad():
        ref = q(x).numpy()
    path = export_qdq(q, card, tmp_path / "g.onnx", target="onnxruntime")
    out = OrtRunner(path, precision="int8", threads=1)(x.numpy())
    assert np.abs(out - ref).max() < 0.05 * float(np.abs(ref).max())
    import openvino as ov
    ov.save_model(ov.convert_model(str(path)), str(tmp_path / "g.xml"), compress_to_fp16=False)
    out_ov = OvRunner(tmp_path / "g.xml", precision="int8", threads=1)(x.numpy())
    assert np.abs(out_ov - ref).max() < 0.05 * float(np.abs(ref).max())
    # the spec replays on a fresh model (how a checkpoint reloads): same graph, same outputs
    from edgekit.quant import rebuild
    again = rebuild(_WithGate().eval(), spec.model_dump())
    again.load_state_dict(q.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(again.eval()(x), q(x))
