"""The device-side runner copied into TensorRT bundles (edgekit/tensorrt/device/run_engine.py).

A tiny classifier is exported to ONNX and packed into a bundle folder with the script; the script is
then run as the device user would (a subprocess, the bundle's own copy) with the ONNX Runtime
stand-in backend. Reference predictions come from torch with torchvision's preprocessing, so any
difference in image listing, resizing, cropping or normalization shows up as agreement < 100%.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torchvision.transforms import InterpolationMode

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "edgekit" / "tensorrt" / "device" / "run_engine.py"
CLASSES = ["bird", "cat", "frog"]
SIZES = [(24, 30), (40, 20), (16, 16), (33, 17)]  # (W, H): portrait, landscape, exact, odd
INPUT_SIZE = [3, 16, 16]
MEAN, STD = [0.5, 0.45, 0.4], [0.25, 0.2, 0.3]
HEADER = ("| backend | precision | status | size MB | top-1 % | agreement % | p50 ms | p90 ms | img/s | "
          "threads | executed / notes |")


def _trt_available() -> bool:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available()


def _load_script():
    spec = importlib.util.spec_from_file_location("edgekit_run_engine_under_test", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                               torch.nn.Flatten(), torch.nn.Linear(4, 3)).eval()


def _torch_input(path: Path, resize: int | None, size=INPUT_SIZE) -> torch.Tensor:
    """Independent preprocessing: torchvision's functional ops on PIL, as edgekit does."""
    c, h, w = size
    with Image.open(path) as im:
        img = im.convert("L" if c == 1 else "RGB")
    if resize is not None:
        img = TF.center_crop(TF.resize(img, resize, interpolation=InterpolationMode.BILINEAR, antialias=True), [h, w])
    elif img.size != (w, h):
        img = TF.resize(img, [h, w], interpolation=InterpolationMode.BILINEAR, antialias=True)
    return TF.normalize(TF.to_tensor(img), MEAN[:c], STD[:c])


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
        torch.onnx.export(_tiny_model(), torch.zeros(1, *INPUT_SIZE), str(out), dynamo=False,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    return out


def make_bundle(tmp_path: Path, onnx_file: Path, *, resize: int | None = 20, split: bool = False,
                reference: str | None = "good"):
    """(bundle dir, data dir, {key: (label, torch prediction)}) for 3 classes x 4 random-colored PNGs."""
    data = tmp_path / "data"
    folder = data / "test" if split else data
    if split:  # a train split beside test/ is ignored (other classes on purpose)
        (data / "train" / "dog").mkdir(parents=True)
    rng = np.random.default_rng(0)
    model, truth = _tiny_model(), {}
    for label, name in enumerate(CLASSES):
        for i, (w, h) in enumerate(SIZES):
            rel = f"{name}/extra/img{i}.png" if i == 3 else f"{name}/img{i}.png"  # sub-folders are walked too
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            color = rng.integers(0, 256, 3)
            pixels = np.clip(color + rng.integers(-60, 60, (h, w, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / rel)
            with torch.no_grad():
                pred = int(model(_torch_input(folder / rel, resize)[None]).argmax(1))
            truth[rel] = (label, pred)
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    shutil.copy(onnx_file, bundle / "model.onnx")
    shutil.copy(SCRIPT, bundle / "run_engine.py")
    preds = {k: p for k, (_, p) in truth.items()}
    if reference == "half-wrong":
        preds = {k: (p + 1) % 3 if i % 2 else p for i, (k, p) in enumerate(sorted(preds.items()))}
    if reference:
        (bundle / "reference.json").write_text(json.dumps(
            {"source": "torch fp32 source model", "dataset": "tiny/test", "predictions": preds}))
    (bundle / "bundle.json").write_text(json.dumps({
        "format": "edgekit-tensorrt-bundle/1", "model": "tiny.pt", "arch": "tiny", "precision": "fp32",
        "onnx": "model.onnx", "engine": "model_fp32.engine", "input_name": "input", "output_name": "logits",
        "input_size": INPUT_SIZE, "resize": resize, "mean": MEAN, "std": STD, "class_names": CLASSES,
        "batch": {"min": 1, "opt": 1, "max": 4}, "throughput_batch": 16, "min_agreement": 0.95,
        "profile": "jetson-orin-nano", "tensorrt_version": "10.3",
        "reference": "reference.json" if reference else None}))
    return bundle, data, truth


def run(bundle: Path, *args: str, backend: str = "onnxruntime") -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(bundle / "run_engine.py"), "--backend", backend, "--warmup", "1", "--iters", "3",
           *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=str(bundle.parent))


def _row_cells(stdout: str) -> list[str]:
    lines = stdout.splitlines()
    row = lines[lines.index(HEADER) + 2]
    return [c.strip() for c in row.strip("|").split("|")]


def test_onnxruntime_standin_matches_torch(tmp_path, onnx_file):
    bundle, data, truth = make_bundle(tmp_path, onnx_file)
    out = tmp_path / "res" / "out.json"
    p = run(bundle, "--data", str(data), "--json", str(out), "--threads", "2")
    assert p.returncode == 0, p.stderr
    top1 = sum(label == pred for label, pred in truth.values()) / len(truth) * 100
    cells = _row_cells(p.stdout)
    assert cells[:6] == ["onnxruntime (stand-in)", "fp32", "ok", f"{(bundle / 'model.onnx').stat().st_size / 1e6:.2f}",
                         f"{top1:.2f}", "100.00"]
    assert cells[9] == "2" and cells[10].startswith("onnxruntime ") and "stand-in" in cells[10]
    assert float(cells[6]) > 0 and float(cells[7]) >= float(cells[6]) and float(cells[8]) > 0
    assert f"12 images from {data}" in p.stdout
    res = json.loads(out.read_text())
    row = res["rows"][0]
    assert set(row) == {"backend", "precision", "status", "size_mb", "top1", "agreement", "latency_ms_p50",
                        "latency_ms_p90", "throughput_ips", "threads", "details"}
    assert row["agreement"] == 1.0 and row["top1"] == round(top1, 2) and row["threads"] == 2
    assert row["details"]["images"] == 12 and row["details"]["reference_matched"] == 12
    assert row["details"]["timing"]["throughput_batch"] == 4  # throughput_batch 16 clamped to batch.max
    assert {"python", "numpy", "runtime", "device"} <= set(res["environment"])
    assert not list(out.parent.glob(".*"))  # no temp file left behind


def test_split_layout_without_resize_and_limit(tmp_path, onnx_file):
    bundle, data, truth = make_bundle(tmp_path, onnx_file, resize=None, split=True)
    out = tmp_path / "out.json"
    p = run(bundle, "--data", str(data), "--limit", "5", "--seed", "3", "--json", str(out))
    assert p.returncode == 0, p.stderr
    row = json.loads(out.read_text())["rows"][0]
    assert row["details"]["images"] == 5 and row["details"]["reference_matched"] == 5
    assert row["agreement"] == 1.0 and row["details"]["dataset"] == str(data / "test")
    p2 = run(bundle, "--data", str(data), "--limit", "5", "--seed", "3", "--json", str(out))
    assert json.loads(out.read_text())["rows"][0]["top1"] == row["top1"] and p2.returncode == 0


def test_wrong_reference_fails_verification(tmp_path, onnx_file):
    bundle, data, _ = make_bundle(tmp_path, onnx_file, reference="half-wrong")
    out = tmp_path / "out.json"
    p = run(bundle, "--data", str(data), "--json", str(out), "--bundle", str(bundle))
    assert p.returncode == 1, p.stderr
    cells = _row_cells(p.stdout)
    assert cells[2] == "verification failed" and cells[5] == "50.00"
    row = json.loads(out.read_text())["rows"][0]
    assert row["status"] == "verification failed" and row["agreement"] == 0.5


def test_no_reference_is_ok_with_a_note(tmp_path, onnx_file):
    bundle, data, _ = make_bundle(tmp_path, onnx_file, reference=None)
    p = run(bundle, "--data", str(data))
    assert p.returncode == 0, p.stderr
    cells = _row_cells(p.stdout)
    assert cells[2] == "ok" and cells[5] == "-" and "no reference predictions for these images" in cells[10]


def _missing_engine_message() -> str:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "tensorrt not installed"
    return "build_engine.sh" if torch.cuda.is_available() else "no CUDA GPU"


@pytest.mark.parametrize("case", ["missing data", "class mismatch", "unreadable image", "missing engine"])
def test_errors_are_one_line(tmp_path, onnx_file, case):
    bundle, data, _ = make_bundle(tmp_path, onnx_file)
    backend, expect = "onnxruntime", ""
    if case == "missing data":
        data, expect = tmp_path / "nope", "dataset folder not found"
    elif case == "class mismatch":
        (data / "cat").rename(data / "dog")
        expect = "only in the folder: dog; only in bundle.json: cat"
    elif case == "unreadable image":
        (data / "frog" / "broken.jpg").write_text("this is not a JPEG")
        expect = "unreadable image"
    else:
        backend, expect = "tensorrt", _missing_engine_message()
    p = run(bundle, "--data", str(data), "--limit", "0", backend=backend)
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and expect in lines[0], p.stderr
    assert "Traceback" not in p.stderr


@pytest.mark.parametrize("size,resize,mode", [((3, 16, 12), 20, "RGB"), ((3, 16, 16), None, "RGB"),
                                              ((1, 12, 12), 13, "L")])
def test_preprocess_is_pixel_identical_to_torchvision(tmp_path, size, resize, mode):
    mod = _load_script()
    rng = np.random.default_rng(1)
    for w, h in [(37, 23), (23, 37), (50, 31)]:
        path = tmp_path / f"{w}x{h}.png"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).convert(mode).save(path)
        ours = mod.preprocess(path, size, resize, MEAN[:size[0]], STD[:size[0]])
        assert ours.dtype == np.float32 and ours.shape == size
        np.testing.assert_array_equal(ours, _torch_input(path, resize, size).numpy())


def test_script_runs_on_python38_with_only_stdlib_numpy_pillow_at_import():
    tree = ast.parse(SCRIPT.read_text(), feature_version=(3, 8))
    top = {a.name.split(".")[0] for n in tree.body if isinstance(n, ast.Import) for a in n.names}
    top |= {n.module.split(".")[0] for n in tree.body if isinstance(n, ast.ImportFrom)}
    assert top - set(sys.stdlib_module_names) - {"__future__"} == {"numpy", "PIL"}


@pytest.mark.skipif(not _trt_available(), reason="TensorRT not installed")
def test_tensorrt_backend_runs_a_built_engine(tmp_path, onnx_file):
    import tensorrt as trt

    bundle, data, _ = make_bundle(tmp_path, onnx_file)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0 if hasattr(trt, "__version__") and int(trt.__version__.split(".")[0]) >= 10 else \
        1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    assert parser.parse((bundle / "model.onnx").read_bytes()), parser.get_error(0)
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    profile.set_shape("input", (1, *INPUT_SIZE), (1, *INPUT_SIZE), (4, *INPUT_SIZE))
    config.add_optimization_profile(profile)
    (bundle / "model_fp32.engine").write_bytes(bytes(builder.build_serialized_network(network, config)))
    out = tmp_path / "out.json"
    p = run(bundle, "--data", str(data), "--json", str(out), backend="tensorrt")
    assert p.returncode == 0, p.stderr
    row = json.loads(out.read_text())["rows"][0]
    assert row["backend"] == "tensorrt" and row["agreement"] == 1.0 and row["threads"] is None
    assert row["details"]["timing"]["compute_ms_p50"] > 0 and "compute p50" in row["details"]["executed"]
