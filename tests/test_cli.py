"""The CLI end to end (subprocess) and every bad input: one line, exit code 2, no traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from edgekit.cli import main
from edgekit.report import ROW_KEYS

EDGEKIT = [sys.executable, "-m", "edgekit.cli"]


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([*EDGEKIT, *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=600)


def run_inprocess(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["edgekit", *args])
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.slow
def test_benchmark_subprocess(tmp_path, resnet20_path, cifar_dir):
    out = tmp_path / "bench"
    p = run_cli("benchmark", str(resnet20_path), "--arch", "cifar_resnet20", "--data", str(cifar_dir),
                "--backends", "torch,onnxruntime", "--precisions", "fp32,int8", "--threads", "1",
                "--limit", "200", "--calib", "100", "--iters", "20", "--out", str(out))
    assert p.returncode == 0, p.stderr[-2000:]
    rows = json.loads((out / "results.json").read_text())
    assert [(r["backend"], r["precision"]) for r in rows] == [
        ("torch", "fp32"), ("torch", "int8"), ("onnxruntime", "fp32"), ("onnxruntime", "int8")]
    assert all(list(r) == list(ROW_KEYS) for r in rows)
    by = {(r["backend"], r["precision"]): r for r in rows}
    assert by[("onnxruntime", "fp32")]["status"] == "ok"
    assert by[("onnxruntime", "fp32")]["agreement"] >= 0.999
    assert by[("onnxruntime", "int8")]["status"] == "ok"
    assert by[("torch", "int8")]["status"] == "unsupported"
    assert "onnxruntime" in p.stdout and "results.json" in p.stdout


def _assert_clean_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for n in needles:
        assert n in err, (n, err)


class DeconvNet(torch.nn.Module):
    """A classifier with a layer edgekit does not quantize (ConvTranspose2d)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.up = torch.nn.ConvTranspose2d(8, 8, 2, stride=2)
        self.head = torch.nn.Linear(8, 10)

    def forward(self, x):
        return self.head(self.up(torch.relu(self.conv(x))).mean((2, 3)))


@pytest.fixture(scope="module")
def broken_artifacts(tmp_path_factory, resnet20_path):
    """Artifacts cut short: a half-written ONNX file and an IR whose .bin is gone (card sidecars intact)."""
    import openvino as ov

    from edgekit.exporters.onnx import export_onnx
    from edgekit.models import load_model
    tmp = tmp_path_factory.mktemp("art")
    loaded = load_model(resnet20_path, arch="cifar_resnet20")
    onnx_path = export_onnx(loaded.module, loaded.card, tmp / "full.onnx")
    trunc_onnx = tmp / "trunc.onnx"
    trunc_onnx.write_bytes(onnx_path.read_bytes()[: onnx_path.stat().st_size // 2])
    ov_xml = tmp / "model.xml"
    ov.save_model(ov.convert_model(str(onnx_path)), str(ov_xml))
    ov_xml.with_suffix(".bin").unlink()
    for art in (trunc_onnx, ov_xml):
        Path(f"{art}.card.json").write_text(loaded.card.to_json())
    return dict(trunc_onnx=trunc_onnx, ov_xml=ov_xml)


@pytest.fixture
def bad_inputs(tmp_path, resnet20_path, cifar_dir, broken_artifacts):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(os.urandom(2048))
    empty = tmp_path / "empty"
    empty.mkdir()
    noimg = tmp_path / "noimg"
    (noimg / "cat").mkdir(parents=True)
    (noimg / "dog").mkdir()
    badimg = tmp_path / "badimg"
    for c in ("a", "b"):
        (badimg / c).mkdir(parents=True)
    (badimg / "a" / "broken.jpg").write_bytes(b"not a jpeg at all")
    (badimg / "b" / "also.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "report.json").write_text('{"stages": [')  # edited by hand, cut short
    badprof = tmp_path / "board.yaml"
    badprof.write_text((Path(__file__).resolve().parents[1] / "profiles" / "raspberry-pi-5.yaml").read_text()
                       .replace("bandwidth_gbs: 17.1", "bandwidth_gbs: fast"))
    deconv = tmp_path / "deconv.pt"
    torch.save(DeconvNet(), deconv)
    from edgekit.models import get_model
    student = tmp_path / "student.pt"
    torch.save(get_model("cifar_mobilenet_v2:width=0.5", num_classes=10)[0].state_dict(), student)
    return dict(deconv=deconv, student=student, badprof=badprof, garbage=garbage, empty=empty, noimg=noimg, badimg=badimg, a_file=a_file,
                w=str(resnet20_path), data=str(cifar_dir), tmp=tmp_path, **broken_artifacts)


CASES = {
    "missing model": (["eval", "{tmp}/nope.pt", "--data", "digits"], ["not found", "nope.pt"]),
    "corrupt model": (["eval", "{garbage}", "--arch", "cifar_resnet20", "--data", "digits"], ["garbage.pt"]),
    "wrong arch": (["eval", "{w}", "--arch", "cifar_resnet32", "--data", "digits"], ["missing", "cifar_resnet32"]),
    "weights without arch": (["eval", "{w}", "--data", "digits"], ["--arch"]),
    "unknown arch": (["eval", "{w}", "--arch", "resnet_9000", "--data", "digits"], ["resnet_9000"]),
    "unknown backend": (["benchmark", "{w}", "--arch", "cifar_resnet20", "--data", "digits",
                         "--backends", "tflite", "--out", "{tmp}/o"], ["tflite", "onnxruntime"]),
    "unknown precision": (["benchmark", "{w}", "--arch", "cifar_resnet20", "--data", "digits",
                           "--precisions", "int3", "--out", "{tmp}/o"], ["int3", "fp32"]),
    "unknown profile": (["compress", "{w}", "--arch", "cifar_resnet20", "--data", "digits",
                         "--profile", "pentium", "--out", "{tmp}/o"], ["pentium", "x86"]),
    "missing data": (["eval", "{w}", "--arch", "cifar_resnet20", "--data", "{tmp}/nodata"], ["nodata"]),
    "no classes": (["eval", "{w}", "--arch", "cifar_resnet20", "--data", "{empty}"], ["no class folders"]),
    "no images": (["eval", "{w}", "--arch", "cifar_resnet20", "--data", "{noimg}"], ["noimg"]),
    "unreadable image": (["eval", "cifar_resnet20", "--num-classes", "2", "--data", "{badimg}"],
                         ["unreadable image", ".jpg"]),
    "class count mismatch": (["eval", "{w}", "--arch", "cifar_resnet20", "--data", "{badimg}"],
                             ["10 outputs", "2 classes"]),
    "quantize 3 bits": (["quantize", "{w}", "--arch", "cifar_resnet20", "--data", "digits", "--bits", "3",
                         "--out", "{tmp}/o"], ["--bits 3", "INT8", "W4A8"]),
    "quantize unknown activations": (["quantize", "{w}", "--arch", "cifar_resnet20", "--data", "digits",
                                      "--activations", "fp8", "--out", "{tmp}/o"], ["--activations", "signed", "unsigned"]),
    "quantize unknown residual form": (["quantize", "{w}", "--arch", "cifar_resnet20", "--data", "digits",
                                        "--residual", "exact", "--out", "{tmp}/o"], ["--residual", "rounded", "fused"]),
    "quantize unknown mode": (["quantize", "{w}", "--arch", "cifar_resnet20", "--data", "digits", "--mode", "fp8",
                               "--out", "{tmp}/o"], ["--mode", "ptq", "qat"]),
    "quantize without images": (["quantize", "{w}", "--arch", "cifar_resnet20", "--data", "{empty}",
                                 "--out", "{tmp}/o"], ["no class folders"]),
    "quantize unsupported layer": (["quantize", "{deconv}", "--trust-pickle", "--arch", "cifar_resnet20", "--data", "digits", "--mode", "ptq",
                                    "--out", "{tmp}/o"], ["unsupported layer", "ConvTranspose2d", "--keep-float"]),
    "prune ratio 1": (["prune", "{w}", "--arch", "cifar_resnet20", "--data", "{data}", "--ratio", "1.0",
                       "--out", "{tmp}/p"], ["--ratio", "between 0 and 1"]),
    "prune two goals": (["prune", "{w}", "--arch", "cifar_resnet20", "--data", "{data}", "--ratio", "0.3",
                         "--target-macs", "0.5", "--out", "{tmp}/p"], ["exactly one of", "--ratio", "--target-macs"]),
    "prune unknown importance": (["prune", "{w}", "--arch", "cifar_resnet20", "--data", "{data}", "--ratio", "0.3",
                                  "--importance", "random", "--out", "{tmp}/p"], ["--importance", "l1", "taylor"]),
    "student weights of another student": (["distill", "--teacher", "{w}", "--teacher-arch", "cifar_resnet20",
                                            "--student", "cifar_mobilenet_v2:width=1.0", "--student-weights",
                                            "{student}", "--data", "{data}", "--out", "{tmp}/o"],
                                           ["student.pt", "do not match", "cifar_mobilenet_v2", "shape mismatches"]),
    "predict a precision the device lacks": (["profiles", "predict", "cifar_resnet20", "--profile", "jetson-nano",
                                              "--precision", "int8"], ["jetson-nano", "int8", "fp16"]),
    "profile with a wrong field": (["profiles", "show", "{badprof}"], ["board.yaml", "memory.bandwidth_gbs"]),
    "benchmark with a wrong profile": (["benchmark", "{w}", "--arch", "cifar_resnet20", "--data", "digits",
                                        "--profile", "{badprof}", "--out", "{tmp}/o"], ["memory.bandwidth_gbs"]),
    "calibrate an unknown runtime": (["profiles", "calibrate", "--runtimes", "tflite"], ["tflite"]),
    # usage errors come from typer's vendored click, whose classes are not click's
    "unknown option": (["eval", "{w}", "--arch", "cifar_resnet20", "--data", "digits", "--bogus"],
                       ["No such option: --bogus", "eval --help"]),
    "missing --out": (["benchmark", "{w}", "--arch", "cifar_resnet20", "--data", "digits"],
                      ["Missing option '--out'", "benchmark --help"]),
    "option value of the wrong type": (["eval", "{w}", "--arch", "cifar_resnet20", "--data", "digits", "--limit", "many"],
                                       ["--limit", "integer"]),
    "unknown command": (["benchmrk", "{w}"], ["No such command 'benchmrk'"]),
    "model that cannot take its input size": (["eval", "timm/vit_tiny_patch16_224:input_size=64", "--data", "digits"],
                                              ["does not run on a 3x64x64 input", "input_size"]),
    "timm in_chans edgekit cannot feed": (["eval", "timm/resnet10t:in_chans=4", "--data", "digits"],
                                          ["in_chans must be 1 (grayscale) or 3 (RGB)"]),
    "negative image count": (["eval", "{w}", "--arch", "cifar_resnet20", "--data", "digits", "--limit", "-5"],
                             ["--limit", "got -5"]),
    "truncated ONNX artifact": (["eval", "{trunc_onnx}", "--data", "digits"], ["onnxruntime cannot load", "trunc.onnx"]),
    "OpenVINO IR without its .bin": (["eval", "{ov_xml}", "--data", "digits"], ["openvino cannot load", "model.xml"]),
    "corrupt run report": (["report", "{tmp}/run"], ["cannot read the run's report", "report.json"]),
    "out is a file": (["benchmark", "{w}", "--arch", "cifar_resnet20", "--data", "digits",
                       "--out", "{a_file}"], ["a_file", "is a file"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input(case, bad_inputs, monkeypatch, capsys):
    args, needles = CASES[case]
    args = [a.format(**bad_inputs) for a in args]
    code, _, err = run_inprocess(monkeypatch, capsys, *args)
    _assert_clean_error(code, err, *needles)
    # nothing half-written next to the requested output
    assert not list(Path(bad_inputs["tmp"]).glob(".o.partial-*"))
    assert not (Path(bad_inputs["tmp"]) / "o").exists()


def test_bad_input_subprocess_has_no_traceback(tmp_path):
    p = run_cli("eval", str(tmp_path / "missing.pt"), "--data", "digits")
    _assert_clean_error(p.returncode, p.stderr, "missing.pt")
    p = run_cli("--debug", "eval", str(tmp_path / "missing.pt"), "--data", "digits")
    assert p.returncode != 0 and "Traceback" in p.stderr
    p = run_cli("benchmark", str(tmp_path / "missing.pt"), "--data", "digits")  # no --out
    _assert_clean_error(p.returncode, p.stderr, "Missing option '--out'")


def test_hostile_pickle_refused(tmp_path, monkeypatch, capsys):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pt"
    torch.save({"state_dict": Evil()}, path)
    code, _, err = run_inprocess(monkeypatch, capsys, "eval", str(path), "--arch", "cifar_resnet20",
                                 "--data", "digits")
    _assert_clean_error(code, err, "--trust-pickle")
    assert not marker.exists()


def test_models_and_profiles(monkeypatch, capsys):
    code, out, _ = run_inprocess(monkeypatch, capsys, "models")
    assert code == 0
    for name in ("cifar_resnet56", "cifar_mobilenet_v2", "resnet18", "efficientnet_b0"):
        assert name in out
    assert "[cifar_resnet; input 3x32x32]" in " ".join(out.split())  # not eaten as console markup
    code, out, _ = run_inprocess(monkeypatch, capsys, "models", "timm/resnet1*")
    assert code == 0 and "timm/resnet18 " in out and "[timm; input 3x224x224, resize 235]" in out
    code, out, _ = run_inprocess(monkeypatch, capsys, "profiles", "show", "x86")
    assert code == 0 and "onnxruntime" in out and "name: x86-avx2" in out
    code, out, _ = run_inprocess(monkeypatch, capsys, "profiles", "list")
    assert code == 0 and all(n in out for n in ("jetson-orin-nano", "raspberry-pi-4", "x86-avx512", "host", "rpi5"))
    code, out, _ = run_inprocess(monkeypatch, capsys, "profiles", "predict", "cifar_resnet20", "--profile", "jetson",
                                 "--json")
    r = json.loads(out.strip().splitlines()[-1])
    assert code == 0 and r["label"] == "predicted" and r["profile"] == "jetson-orin-nano" and r["latency_ms"] > 0


def test_eval_zoo_model_on_digits(monkeypatch, capsys):
    code, out, _ = run_inprocess(monkeypatch, capsys, "eval", "cifar_resnet20", "--data", "digits", "--json")
    assert code == 0
    r = json.loads(out.strip().splitlines()[-1])
    assert r["images"] == 360 and r["backend"] == "torch"


def test_runtime_reason_drops_openvino_source_locations(bad_inputs, monkeypatch, capsys):
    """OpenVINO prefixes its reason with nested 'Exception from src/...cpp:N:' lines; the error
    line (and a table's 'could not run' reason) keeps the reason itself."""
    code, _, err = run_inprocess(monkeypatch, capsys, "eval", str(bad_inputs["ov_xml"]), "--data", "digits")
    _assert_clean_error(code, err, "openvino cannot load", "bin file cannot be found")
    assert "Exception from" not in err, err
