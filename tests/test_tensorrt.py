"""TensorRT bundles: written for a profile's TensorRT, checked by its parser's rules before they
are written, and their runner run here on ONNX Runtime as a stand-in (TensorRT is not here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

import edgekit
from edgekit.backends import ExportContext, get_backend
from edgekit.cli import app
from edgekit.errors import ExportError
from edgekit.exporters.onnx import opset_of
from edgekit.models import get_model
from edgekit.profiles import get_profile
from edgekit.tensorrt import check_onnx, rules_for

pytestmark = pytest.mark.slow

HAVE_TRT = get_backend("tensorrt").unavailable() is None


def _export(model, tmp, data, profile, precisions="fp16,int8", arch=None):
    rows = edgekit.export(model, out=tmp, data=data, arch=arch, backends="tensorrt", precisions=precisions,
                          limit=200, calibration_images=128, progress=False, profile=profile)
    return {r.precision: r for r in rows}


@pytest.fixture(scope="module")
def r20_bundles(tmp_path_factory, resnet20_path, cifar_dir):
    """The shared ResNet-20 for the Jetson Orin Nano (JetPack 6.1: TensorRT 10.3)."""
    out = tmp_path_factory.mktemp("orin")
    return out, _export(resnet20_path, out, cifar_dir, "jetson-orin-nano", arch="cifar_resnet20")


@pytest.fixture(scope="module")
def nano_bundles(tmp_path_factory, resnet20_path, cifar_dir):
    """The shared ResNet-20 for the original Jetson Nano (JetPack 4.6: TensorRT 8.2, opset <= 13,
    a Maxwell GPU without INT8)."""
    out = tmp_path_factory.mktemp("nano")
    return out, _export(resnet20_path, out, cifar_dir, "jetson-nano", arch="cifar_resnet20")


@pytest.fixture(scope="module")
def student_bundles(tmp_path_factory, kd_student, cifar_dir):
    """The distilled MobileNetV2 student (x0.5, small input) for Orin (TensorRT 10.3)."""
    out = tmp_path_factory.mktemp("student")
    return out, _export(kd_student.best_path, out, cifar_dir, "jetson-orin-nano")


@pytest.mark.parametrize("which,version", [("r20", "10.3"), ("student", "10.3"), ("nano", "8.2")])
def test_bundles_pass_the_static_checker(which, version, r20_bundles, student_bundles, nano_bundles):
    out, rows = {"r20": r20_bundles, "student": student_bundles, "nano": nano_bundles}[which]
    if which == "nano":  # no INT8 bundle for a GPU without INT8: an honest "unsupported" row
        assert rows["int8"].status == "unsupported" and "jetson-nano runs fp32, fp16 only" in rows["int8"].details["reason"]
        assert not (out / "model_tensorrt_int8").exists()
    for prec in ("fp16",) if which == "nano" else ("fp16", "int8"):
        r = rows[prec]
        if HAVE_TRT:
            assert r.status == "ok", r.details
        else:  # honest: not ok, not an error, and the reason says the bundle was written
            assert r.status == "unavailable", r.details["reason"]
            assert r.details["reason"].startswith("unavailable: TensorRT not installed")
            assert "bundle written" in r.details["reason"]
            assert r.details["standin"]["passed"]
        folder = out / f"model_tensorrt_{prec}"
        assert check_onnx(folder / "model.onnx", version) == []
        for f in ("model.onnx", "build_engine.sh", "run_engine.py", "bundle.json", "model.onnx.card.json",
                  "README.md", "reference.json"):
            assert (folder / f).is_file(), f
        meta = json.loads((folder / "bundle.json").read_text())
        assert meta["tensorrt_version"] == version and meta["precision"] == prec
        assert opset_of(folder / "model.onnx") == rules_for(version).export_opset
        script = (folder / "build_engine.sh").read_text()
        assert f"--saveEngine=model_{prec}.engine" in script and "--timingCacheFile=" in script
        assert "--dumpProfile" in script and "--exportTimes=" in script
        assert ("--int8" in script) == (prec == "int8") and "--fp16" in script
        assert "--minShapes=input:1x3x32x32" in script and "--maxShapes=input:" in script
        assert "--useDLACore" not in script  # neither the Nano nor the Orin Nano has a DLA
    if which != "nano":
        qdq = onnx.load(str(out / "model_tensorrt_int8" / "model.onnx"))
        assert sum(n.op_type == "DequantizeLinear" for n in qdq.graph.node) > 10
    plain = onnx.load(str(out / "model_tensorrt_fp16" / "model.onnx"))
    assert not any(n.op_type == "QuantizeLinear" for n in plain.graph.node)


def test_static_profile_writes_fixed_shapes_and_dla_build(tmp_path, resnet20_path, cifar_dir):
    rows = _export(resnet20_path, tmp_path, cifar_dir, "jetson-agx-orin", precisions="int8", arch="cifar_resnet20")
    assert rows["int8"].status in ("unavailable", "ok"), rows["int8"].details
    folder = tmp_path / "model_tensorrt_int8"
    inp = onnx.load(str(folder / "model.onnx")).graph.input[0]
    assert [d.dim_value for d in inp.type.tensor_type.shape.dim] == [1, 3, 32, 32]
    assert check_onnx(folder / "model.onnx", "10.3", static_shapes=True) == []
    script = (folder / "build_engine.sh").read_text()
    assert "--useDLACore" in script and "--allowGPUFallback" in script and "--minShapes" not in script


def test_int8_qdq_for_tensorrt_8_2(r20_ptq, tmp_path):
    """The TorchScript exporter writes the QDQ graph at opset 13 for TensorRT 8.2 (JetPack 4.6 on
    Xavier/TX2 boards): same integer grid, parser rules met."""
    from edgekit.exporters.qdq import export_qdq

    q, card, x = r20_ptq
    path = export_qdq(q, card, tmp_path / "q13.onnx", target="tensorrt", opset=13)
    assert check_onnx(path, "8.2") == []
    import onnxruntime as ort
    out = ort.InferenceSession(str(path)).run(None, {"input": x.numpy()})[0]
    assert (out.argmax(1) == q(x).argmax(1).numpy()).mean() >= 0.95


@pytest.fixture(scope="module")
def r20_ptq(resnet20_path, cifar_dir):
    import copy

    from edgekit.data import load_dataset
    from edgekit.quant import calibrate, plan, prepare

    loaded = edgekit.load_model(resnet20_path, arch="cifar_resnet20")
    card = loaded.card
    ds = load_dataset(cifar_dir, input_size=tuple(card.input_size))
    module = loaded.module.eval()
    q = prepare(copy.deepcopy(module), plan(module, 8))
    calibrate(q, [x for x, _ in ds.calibration(128, seed=0).batches(64, mean=card.mean, std=card.std)])
    x = next(ds.evaluation(64, seed=0).batches(64, mean=card.mean, std=card.std))[0]
    return q.eval(), card, x


def test_build_script_calls_trtexec_as_written(r20_bundles, nano_bundles, tmp_path):
    """Run build_engine.sh with a stand-in `trtexec` that records its arguments (the real one
    needs a GPU): the script must run under bash -u with no accelerator flags and pass the ONNX."""
    out, _ = r20_bundles
    log = tmp_path / "args.txt"
    fake = tmp_path / "trtexec"
    fake.write_text(f"#!/usr/bin/env bash\necho \"$@\" >> {log}\n")
    fake.chmod(0o755)
    res = subprocess.run(["bash", str(out / "model_tensorrt_int8" / "build_engine.sh")], capture_output=True,
                         text=True, env={**os.environ, "TRTEXEC": str(fake)})
    assert res.returncode == 0, res.stderr
    build, prof = log.read_text().splitlines()
    assert build.split()[:3] == ["--onnx=model.onnx", "--saveEngine=model_int8.engine", "--int8"]
    assert "--maxShapes=input:8x3x32x32" in build  # the Orin Nano profile's throughput batch
    assert prof.startswith("--loadEngine=model_int8.engine") and "--exportProfile=layer_profile.json" in prof
    nano = (nano_bundles[0] / "model_tensorrt_fp16" / "build_engine.sh").read_text()
    assert "--fp16" in nano and "--maxShapes=input:4x3x32x32" in nano


def test_bundle_runner_matches_edgekit_on_the_standin(r20_bundles, cifar_dir, tmp_path):
    """The bundle's own runner (ONNX Runtime path) scores exactly the images edgekit checked and
    prints the benchmark row; its top-1 and agreement equal edgekit's stand-in check."""
    out, rows = r20_bundles
    folder = out / "model_tensorrt_int8"
    res = subprocess.run([sys.executable, str(folder / "run_engine.py"), "--data", str(cifar_dir),
                          "--backend", "onnxruntime", "--iters", "20", "--json", str(tmp_path / "r.json")],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "| backend | precision | status | size MB | top-1 % | agreement % | p50 ms | p90 ms | img/s |" in res.stdout
    row = json.loads((tmp_path / "r.json").read_text())["rows"][0]
    standin = rows["int8"].details["standin"]
    assert row["details"]["images"] == standin["n"] == 200
    assert row["details"]["reference_matched"] == 200
    assert row["top1"] == pytest.approx(standin["top1"], abs=1e-6)
    assert row["agreement"] == pytest.approx(standin["agreement"], abs=1e-4)
    assert row["status"] == "ok" and row["latency_ms_p50"] > 0


def test_export_refuses_a_graph_the_target_cannot_parse(tmp_path, cifar_dir):
    """torch.reciprocal exports as Reciprocal, which TensorRT 8.2's parser lacks (8.5 added it):
    the export fails naming the node and the rule, and no bundle folder is written."""
    class WithReciprocal(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3)
            self.fc = torch.nn.Linear(4, 10)

        def forward(self, x):
            return self.fc(torch.reciprocal(self.conv(x).abs() + 1).mean((2, 3)))

    _, card = get_model("cifar_resnet20", num_classes=10)
    ctx = ExportContext(WithReciprocal().eval(), card, tmp_path, profile=get_profile("jetson-nano"))
    with pytest.raises(ExportError, match=r"TensorRT 8\.2 rules: \S+: \[operator\] Reciprocal is not supported"):
        get_backend("tensorrt").export(ctx, "fp32")
    ctx.cleanup()
    assert not any(p.name.startswith(("model_tensorrt", ".model_tensorrt")) for p in tmp_path.iterdir())


# --- graphs built to break one rule each -------------------------------------------------------

def _graph(opset=13, zp=0, zp_type=TensorProto.INT8, act_scales=1, w_axis=0, extra_op=None, batch="N"):
    """input -> Q/DQ -> Conv(DQ'd INT8 weights) [-> extra_op] -> output."""
    w = np.random.default_rng(0).integers(-127, 127, (4, 3, 3, 3)).astype(np.int8)
    inits = [
        numpy_helper.from_array(np.full(act_scales, 0.02, np.float32) if act_scales > 1 else np.array(0.02, np.float32), "a_s"),
        helper.make_tensor("a_zp", zp_type, [act_scales] if act_scales > 1 else [], [zp] * act_scales),
        numpy_helper.from_array(w, "w"),
        numpy_helper.from_array(np.full(w.shape[w_axis], 0.01, np.float32), "w_s"),
        numpy_helper.from_array(np.zeros(w.shape[w_axis], np.int8), "w_zp"),
    ]
    nodes = [helper.make_node("QuantizeLinear", ["input", "a_s", "a_zp"], ["q"], name="act_q", axis=1),
             helper.make_node("DequantizeLinear", ["q", "a_s", "a_zp"], ["dq"], name="act_dq", axis=1),
             helper.make_node("DequantizeLinear", ["w", "w_s", "w_zp"], ["wdq"], name="weight_dq", axis=w_axis),
             helper.make_node("Conv", ["dq", "wdq"], ["conv"], name="conv")]
    last = "conv"
    if extra_op:
        nodes.append(helper.make_node(extra_op, ["conv"], ["extra"], name="odd_node"))
        last = "extra"
    nodes.append(helper.make_node("Identity", [last], ["logits"], name="out"))
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, 8, 8])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 4, 6, 6])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def _rules(model, version="8.2", static=False):
    return [(v.node, v.rule) for v in check_onnx(model, version, static_shapes=static)]


def test_checker_passes_a_conforming_graph():
    m = _graph()
    onnx.checker.check_model(m)
    assert _rules(m) == [] and _rules(m, "10.3") == []


@pytest.mark.parametrize("kwargs,version,static,expected", [
    (dict(zp=3), "8.2", False, [("act_q", "qdq-zero-point"), ("act_dq", "qdq-zero-point")]),
    (dict(zp_type=TensorProto.UINT8), "10.3", False, [("act_q", "qdq-type"), ("act_dq", "qdq-type")]),
    (dict(extra_op="Unique", opset=13), "10.3", False, [("odd_node", "operator")]),
    (dict(extra_op="HardSwish", opset=14), "10.3", False, []),
    (dict(extra_op="Mod", opset=13), "8.2", False, [("odd_node", "operator")]),
    (dict(opset=18), "8.2", False, [("<model>", "opset")]),
    (dict(opset=18), "10.3", False, []),
    (dict(), "10.3", True, [("input", "static-shape")]),
    (dict(batch=1), "10.3", True, []),
    (dict(act_scales=3), "10.3", False, [("act_q", "qdq-per-tensor-activation"), ("act_dq", "qdq-per-tensor-activation")]),
    (dict(w_axis=1), "10.3", False, [("weight_dq", "qdq-weight-axis")]),
], ids=["asymmetric-zero-point", "uint8", "unsupported-op", "hardswish-on-10", "mod-on-8.2", "opset-too-new",
        "opset-18-on-10", "dynamic-where-static", "static-ok", "per-channel-activation", "weight-axis"])
def test_checker_names_node_and_rule(kwargs, version, static, expected):
    assert _rules(_graph(**kwargs), version, static) == expected


def test_hardswish_needs_tensorrt_8_5():
    m = _graph(extra_op="HardSwish", opset=14)
    assert ("odd_node", "operator") in _rules(m, "8.2")
    assert _rules(m, "8.5") == [] and rules_for("8.4").version == "8.2" and rules_for("10.8").version == "10.3"


def test_check_tensorrt_command(tmp_path):
    bad = tmp_path / "bad.onnx"
    onnx.save(_graph(zp=5, opset=18), str(bad))
    res = CliRunner().invoke(app, ["check-tensorrt", str(bad), "--profile", "jetson-nano"])
    assert res.exit_code == 1
    assert "act_q: [qdq-zero-point]" in res.output and "<model>: [opset] opset 18" in res.output
    good = tmp_path / "good.onnx"
    onnx.save(_graph(batch=1), str(good))
    res = CliRunner().invoke(app, ["check-tensorrt", str(good), "--profile", "agx-orin"])
    assert res.exit_code == 0 and "passes TensorRT 10.3 rules" in res.output
    res = CliRunner().invoke(app, ["check-tensorrt", str(tmp_path / "missing.onnx")])
    assert res.exit_code != 0


def test_benchmark_prints_the_unavailable_row(tmp_path, resnet20_path, cifar_dir):
    res = CliRunner().invoke(app, ["benchmark", str(resnet20_path), "--arch", "cifar_resnet20", "--data", str(cifar_dir),
                                   "--out", str(tmp_path / "b"), "--backends", "torch,tensorrt", "--precisions", "fp16",
                                   "--limit", "64", "--iters", "10"])
    assert res.exit_code == 0, res.output
    if HAVE_TRT:
        pytest.skip("TensorRT is installed here: the row is measured, not unavailable")
    assert "tensorrt" in res.output and "unavailable" in res.output and "TensorRT not installed" in res.output
    row = next(r for r in json.loads((tmp_path / "b" / "results.json").read_text()) if r["backend"] == "tensorrt")
    assert row["status"] == "unavailable" and row["latency_ms_p50"] is None
    assert (tmp_path / "b" / "model_tensorrt_fp16" / "build_engine.sh").is_file()


@pytest.mark.skipif(not HAVE_TRT, reason="TensorRT not installed (or no CUDA GPU)")
def test_engine_built_and_measured(tmp_path, resnet20_path, cifar_dir):
    """Where TensorRT and a GPU exist: engines are built from the bundles, verified and timed,
    with CUDA-event compute and transfer times apart."""
    from edgekit.bench import TimingConfig

    res = edgekit.benchmark(resnet20_path, arch="cifar_resnet20", data=cifar_dir, out=tmp_path, backends="tensorrt",
                            precisions="fp32,fp16,int8", limit=500, progress=False,
                            timing=TimingConfig(warmup=20, iters=200))
    for r in res.rows:
        assert r.status == "ok", r.details
        assert r.latency_ms_p50 > 0 and r.details["timing"]["split_ms_p50"]["compute"] > 0
    assert (tmp_path / "model_tensorrt_fp16" / "model_fp16.engine").is_file()
