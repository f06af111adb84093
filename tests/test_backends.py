"""Real exports of the shared ResNet-20 through every runtime, checked on real CIFAR-10 images."""

from __future__ import annotations

import json

import numpy as np
import pytest

import edgekit
from edgekit.bench import TimingConfig
from edgekit.report import ROW_KEYS

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bench(tmp_path_factory, resnet20_path, cifar_dir):
    out = tmp_path_factory.mktemp("bench")
    res = edgekit.benchmark(resnet20_path, arch="cifar_resnet20", data=cifar_dir, out=out,
                            backends="torch,onnxruntime,openvino",
                            precisions="fp32,fp16,int8", threads=1, limit=500,
                            calibration_images=300, timing=TimingConfig(warmup=3, iters=20, passes=2,
                                                                        throughput_iters=2),
                            progress=False, profile="jetson")
    return res, {(r.backend, r.precision): r for r in res.rows}


def test_float_exports_agree_with_torch(bench):
    _, rows = bench
    torch_row = rows[("torch", "fp32")]
    assert torch_row.status == "ok" and torch_row.details["images"] == 500
    assert torch_row.top1 > 70  # the shared ResNet-20 scores ~81% on the JPEG copy
    for b in ("onnxruntime", "openvino"):
        r = rows[(b, "fp32")]
        assert r.status == "ok", r.details
        assert r.agreement >= 0.999
        assert r.details["max_abs_diff"] < 1e-2
        assert abs(r.top1 - torch_row.top1) <= 0.2
    assert "f32" in rows[("openvino", "fp32")].details["executed"]


def test_int8_within_two_points(bench):
    _, rows = bench
    fp32 = rows[("torch", "fp32")].top1
    for b in ("onnxruntime", "openvino"):
        r = rows[(b, "int8")]
        assert r.status == "ok", r.details
        assert r.top1 >= fp32 - 2.0
        assert r.size_mb < rows[(b, "fp32")].size_mb * 0.6
    # the ORT INT8 configuration is the fused one: integer kernels, not float convs in Q/DQ
    executed = rows[("onnxruntime", "int8")].details["executed"]
    n_int, n_all = map(int, executed.split(":")[1].split()[0].split("/"))
    assert n_int >= n_all - 1, executed
    assert any(p in rows[("openvino", "int8")].details["executed"] for p in ("u8", "i8"))


def test_rows_are_honest(bench):
    res, rows = bench
    assert rows[("torch", "int8")].status == "unsupported"  # TensorRT's rows: tests/test_tensorrt.py
    for r in res.rows:
        if r.status == "ok":
            assert 0 < r.latency_ms_p50 <= r.latency_ms_p90
            assert r.throughput_ips > 0 and r.threads == 1
        else:
            assert r.latency_ms_p50 is None or r.status == "verification failed"


def test_predicted_latency_is_labelled(bench):
    """--profile adds the profile's predicted latency next to the measured one, per precision."""
    res, rows = bench
    md = (res.out / "results.md").read_text()
    assert "predicted ms (jetson-orin-nano)" in md
    pred = {p: rows[("onnxruntime", p)].details["predicted_ms"] for p in ("fp32", "fp16", "int8")}
    # tiny ResNet-20: per-layer costs dominate, so INT8 and FP16 are close; both beat FP32
    assert 0 < pred["int8"] < pred["fp32"] and 0 < pred["fp16"] < pred["fp32"]
    assert rows[("onnxruntime", "int8")].details["predicted_runtime"] == "tensorrt"


def test_results_files(bench):
    res, _ = bench
    data = json.loads((res.out / "results.json").read_text())
    assert data and all(list(d) == list(ROW_KEYS) for d in data)
    for name in ("results.md", "results.csv", "environment.json", "details.json"):
        assert (res.out / name).is_file()
    env = json.loads((res.out / "environment.json").read_text())
    assert env["versions"]["onnxruntime"] and env["threads"] == [1]
    # every artifact carries its model card
    for d in json.loads((res.out / "details.json").read_text()):
        if d["artifact"]:
            card = json.loads(open(d["artifact"] + ".card.json").read())
            assert card["input_size"] == [3, 32, 32] and card["notes"]["precision"] == d["precision"]
    assert not list(res.out.parent.glob(f".{res.out.name}.partial-*"))


def test_eval_artifact_matches_benchmark(bench, cifar_dir):
    res, rows = bench
    onnx_path = rows[("onnxruntime", "int8")].details["artifact"]
    r = edgekit.evaluate(onnx_path, data=cifar_dir, limit=500)
    assert r.backend == "onnxruntime" and r.precision == "int8"
    assert r.top1 == pytest.approx(rows[("onnxruntime", "int8")].top1, abs=0.01)


def test_failed_verification_is_reported(tmp_path, resnet20_path, cifar_dir):
    """A tolerance nothing can meet must turn rows into "verification failed", never ok."""
    from edgekit.verify import Tolerance

    tol = Tolerance(min_agreement={"fp32": 1.01})
    res = edgekit.benchmark(resnet20_path, arch="cifar_resnet20", data=cifar_dir, out=tmp_path / "b",
                            backends="onnxruntime", precisions="fp32", limit=50, tolerance=tol,
                            timing=TimingConfig(warmup=1, iters=2, passes=1, throughput_iters=1),
                            progress=False)
    (row,) = res.rows
    assert row.status == "verification failed" and "agreement" in row.details["reason"]


def test_more_threads_than_cores_is_flagged(tmp_path, resnet20_path, cifar_dir):
    """A row timed at more threads than this host has cores (a Pi 5 profile's 4 on a 2-core
    machine) says it is oversubscribed, in the note the tables show; a row within the cores does not."""
    from edgekit.env import usable_cores

    n = usable_cores()
    res = edgekit.benchmark(resnet20_path, arch="cifar_resnet20", data=cifar_dir, out=tmp_path / "b",
                            backends="onnxruntime", precisions="fp32", threads=f"1,{n + 1}", limit=20,
                            timing=TimingConfig(warmup=1, iters=4, passes=1, throughput_iters=1), progress=False)
    by = {r.threads: r for r in res.rows}
    assert by[1].status == by[n + 1].status == "ok"
    assert "oversubscribed" not in by[1].details and "oversubscribed" not in by[1].details["executed"]
    assert f"{n + 1} threads on {n} core(s)" in by[n + 1].details["oversubscribed"]
    assert "oversubscribed" in by[n + 1].details["executed"] and "f32" in by[n + 1].details["executed"]
    assert "oversubscribed" in (tmp_path / "b" / "results.md").read_text()


def test_a_benchmark_leaves_torch_threads_as_they_were(tmp_path, resnet20_path, cifar_dir):
    """torch's thread count is process-wide: timing torch at 1 thread must not leave a later
    training in the same process (the Python API, the test suite) on 1 thread."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        res = edgekit.benchmark(resnet20_path, arch="cifar_resnet20", data=cifar_dir, out=tmp_path / "b",
                                backends="torch", precisions="fp32", threads=1, limit=20,
                                timing=TimingConfig(warmup=1, iters=4, passes=1, throughput_iters=1), progress=False)
        assert res.rows[0].status == "ok" and res.rows[0].threads == 1
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_timing_groups_runtimes_and_keeps_order(bench):
    """time_runners interleaves runners of one runtime and thread count only (alternating two
    runtimes' thread pools slowed OpenVINO 1.6x here), and only at 1 thread; it returns timings
    in input order."""
    import time

    from edgekit.backends.onnxruntime import OrtRunner
    from edgekit.backends.openvino import OvRunner
    from edgekit.bench import time_runners

    _, rows = bench
    log: list[str] = []

    class Logged:  # a real runner that records its calls; `pause` marks it in the results
        def __init__(self, runner, name, pause=0.0):
            self.runner, self.name, self.pause = runner, name, pause
            self.backend, self.threads = runner.backend, runner.threads

        def __call__(self, x):
            log.append(self.name)
            time.sleep(self.pause)
            return self.runner(x)

    onnx, xml = (rows[(b, "fp32")].details["artifact"] for b in ("onnxruntime", "openvino"))
    runners = [Logged(OrtRunner(onnx, precision="fp32", threads=1), "ort-a"),
               Logged(OvRunner(xml, precision="fp32", threads=1), "ov-a", pause=0.003),
               Logged(OrtRunner(onnx, precision="fp32", threads=1), "ort-b"),
               Logged(OvRunner(xml, precision="fp32", threads=1), "ov-b")]
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    res = time_runners(runners, x, TimingConfig(warmup=2, iters=8, passes=4, throughput_batch=2, throughput_iters=0))
    runtimes = [n.split("-")[0] for n in log]
    assert sum(a != b for a, b in zip(runtimes, runtimes[1:])) == 1  # one switch: ORT, then OpenVINO
    assert "ort-a" in log[log.index("ort-b"):]  # inside a group the passes still alternate
    assert res[1].latency_ms_p50 >= 3.0 > max(res[i].latency_ms_p50 for i in (0, 2, 3))
    # at 2 threads even one runtime's sessions do not alternate: each is timed in one block
    log.clear()
    pooled = [Logged(OrtRunner(onnx, precision="fp32", threads=2), n) for n in ("two-a", "two-b")]
    time_runners(pooled, x, TimingConfig(warmup=2, iters=8, passes=4, throughput_batch=2, throughput_iters=0))
    assert log.index("two-b") > len(log) - 1 - log[::-1].index("two-a")


def test_export_cache_reuses_only_the_same_model(tmp_path):
    """A model exported again in the same process is copied from the first export (the pipeline
    exports one model several times); any change to a weight or a plain attribute is a new export,
    never a stale file."""
    import onnx
    import onnxruntime as ort
    import torch

    from edgekit.exporters.onnx import _CACHE, _cache_key, export_onnx
    from edgekit.models import get_model

    torch.manual_seed(0)
    module, card = get_model("cifar_resnet20", num_classes=10)
    module.eval()
    x = torch.randn(2, *card.input_size)

    def run(path):
        return ort.InferenceSession(str(path)).run(None, {"input": x.numpy()})[0]

    a = export_onnx(module, card, tmp_path / "a.onnx")
    key = _cache_key(module, tuple(card.input_size), None, True)
    assert key in _CACHE.files
    b = export_onnx(module, card.with_(source="renamed"), tmp_path / "b.onnx")
    np.testing.assert_array_equal(run(a), run(b))
    meta = {p.key: p.value for p in onnx.load(str(b)).metadata_props}
    assert json.loads(meta["edgekit_card"])["source"] == "renamed"  # the new card, not the cached one
    with torch.no_grad():
        module.linear.weight[0, 0] += 1.0
    assert _cache_key(module, tuple(card.input_size), None, True) != key
    c = export_onnx(module, card, tmp_path / "c.onnx")
    with torch.no_grad():
        ref = module(x).numpy()
    assert np.abs(run(c) - ref).max() < 1e-4 and np.abs(run(a) - ref).max() > 1e-3
    module.layer1[0].conv1.stride = (2, 2)  # a plain attribute changes the graph: a new key
    assert _cache_key(module, tuple(card.input_size), None, True) not in (key, None)
