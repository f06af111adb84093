"""The training engine on real data: fine-tune, distill, exact resume after a kill, torchrun DDP."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import edgekit
from edgekit.errors import InputError
from edgekit.stages import distill, finetune
from edgekit.train import TrainConfig

pytestmark = pytest.mark.slow


def test_finetune_improves_heldout(tmp_path, resnet20_path, cifar_dir):
    cfg = TrainConfig(epochs=2, batch_size=64, lr=0.01, train_limit=4000, eval_limit=1000)
    res = finetune(resnet20_path, arch="cifar_resnet20", data=cifar_dir, out=tmp_path / "ft",
                   config=cfg, progress=False)
    assert len(res.history) == 2 and sum(1 for _ in open(tmp_path / "ft" / "metrics.jsonl")) == 2
    # the shared weights start ~10 points low on the JPEG copy; a few steps of train/ close some
    assert res.history[-1]["eval_top1"] > res.initial_top1 + 0.5, (res.initial_top1, res.history)
    loaded = edgekit.load_model(res.best_path)  # an edgekit checkpoint: no --arch needed
    assert loaded.card.arch == "cifar_resnet20" and "fine-tuned" in loaded.card.source


def test_distill_student_learns(tmp_path, kd_student, cifar_dir):
    res = kd_student
    assert res.history[-1]["eval_top1"] > res.initial_top1 + 10, (res.initial_top1, res.history)
    card = edgekit.load_model(res.best_path).card
    assert card.input_size == (3, 32, 32) and card.mean == (0.485, 0.456, 0.406)  # teacher's
    # the student goes straight into export: verified ONNX, no --arch needed
    (row,) = edgekit.export(res.best_path, data=cifar_dir, out=tmp_path / "exp", backends="onnxruntime",
                            precisions="fp32", limit=100, progress=False)
    assert row.status == "ok" and row.agreement >= 0.999


def test_distill_starts_from_student_weights(tmp_path, kd_student, resnet20_path, cifar_dir):
    """--student-weights: the run starts where the saved student is (same held-out images, same
    top-1 before training), and weights of another student are refused, naming both."""
    cfg = TrainConfig(epochs=1, batch_size=64, lr=0.01, train_limit=320, eval_limit=500)
    res = distill(resnet20_path, teacher_arch="cifar_resnet20", student="cifar_mobilenet_v2:width=0.5",
                  data=cifar_dir, out=tmp_path / "warm", config=cfg, student_weights=kd_student.best_path,
                  progress=False)
    assert res.initial_top1 == pytest.approx(kd_student.best_top1), (res.initial_top1, kd_student.best_top1)
    assert res.initial_top1 > 20  # not a fresh student (about 10% on 10 classes)
    with pytest.raises(InputError, match="do not fit student cifar_mobilenet_v2:width=1.0"):
        distill(resnet20_path, teacher_arch="cifar_resnet20", student="cifar_mobilenet_v2:width=1.0",
                data=cifar_dir, out=tmp_path / "wrong", config=cfg, student_weights=kd_student.best_path,
                progress=False)


def test_feature_pair_skips_a_global_pool_module():
    """torchvision's ResNet pools in an `avgpool` module (a 1x1 4-D map): auto must pair layer4."""
    import torchvision

    from edgekit.stages.distill import pick_feature_pair

    teacher = torchvision.models.resnet18(num_classes=4)
    student = torchvision.models.mobilenet_v2(num_classes=4)
    assert pick_feature_pair(student, teacher, (3, 96, 96)) == ("features", "layer4")  # both 3x3


def test_feature_distillation_auto_pair(tmp_path, resnet20_path, cifar_dir):
    from edgekit.stages.distill import _feature_maps, pick_feature_pair
    from edgekit.models import get_model, load_model

    teacher = load_model(resnet20_path, arch="cifar_resnet20").module
    student, _ = get_model("cifar_mobilenet_v2:width=0.5", num_classes=10)
    s_name, t_name = pick_feature_pair(student, teacher, (3, 32, 32))
    assert t_name == "layer3"  # the teacher's last map: 8x8
    assert dict(_feature_maps(student, torch.zeros(2, 3, 32, 32), 99))[s_name][2:] == (8, 8)
    cfg = TrainConfig(epochs=1, batch_size=64, lr=0.05, train_limit=640, eval_limit=200)
    res = distill(resnet20_path, teacher_arch="cifar_resnet20", student="cifar_mobilenet_v2:width=0.5",
                  data=cifar_dir, out=tmp_path / "fkd", feature="auto", config=cfg, progress=False)
    assert res.extra["objective"]["feature"] == f"{s_name}:{t_name}"
    # the feature term is relative (scale-free): about 1 for an untrained projection, not 1e3
    from edgekit.stages.distill import DistillObjective
    x, y, idx = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,)), torch.arange(8)
    torch.manual_seed(0)
    with_f = DistillObjective(student, teacher, feature=(s_name, t_name))(x, y, idx)[0]
    without = DistillObjective(student, teacher)(x, y, idx)[0]
    assert 0 < (with_f - without).item() < 5



def test_distill_teacher_cache_without_augmentation(tmp_path, resnet20_path, cifar_dir):
    from edgekit.stages.distill import DistillObjective
    from edgekit.models import get_model, load_model

    teacher = load_model(resnet20_path, arch="cifar_resnet20").module
    student, _ = get_model("cifar_mobilenet_v3_small:width=0.5", num_classes=10)
    obj = DistillObjective(student, teacher, cache_size=10)
    x, idx = torch.randn(4, 3, 32, 32), torch.arange(4)
    first = obj._teacher_logits(x, idx)
    again = obj._teacher_logits(torch.zeros_like(x), idx)  # served from the cache
    assert torch.equal(first, again) and len(obj._cache) == 4
    assert not any(p.requires_grad for p in obj.teacher.parameters())
    assert all(not k.startswith("_teacher") for k in obj.state_dict())


def _real_logits(resnet20_path, cifar_dir, n: int = 128):
    """The shared ResNet-20 (teacher) and a fresh MobileNetV2 (student) on n real test images."""
    from edgekit.data import load_dataset
    from edgekit.models import get_model

    loaded = edgekit.load_model(resnet20_path, arch="cifar_resnet20")
    teacher, card = loaded.module.eval(), loaded.card
    torch.manual_seed(0)
    student, _ = get_model("cifar_mobilenet_v2:width=0.5", num_classes=10)
    x, y = next(load_dataset(cifar_dir).evaluation(n, seed=1).batches(n, mean=card.mean, std=card.std))
    return teacher, student, x, y


def test_dkd_is_hinton_kd_decoupled(resnet20_path, cifar_dir):
    """Per image, Hinton's KD equals TCKD + (1 - p_target(teacher)) * NCKD (Zhao et al. 2022, eq. 7):
    dkd_loss with alpha 1 and that beta reproduces KD on real logits; the objective ramps its KD
    terms over the warm-up epochs and, with no KD weight, never runs the teacher."""
    import torch.nn.functional as F

    from edgekit.stages.distill import DistillObjective, dkd_loss

    teacher, student, x, y = _real_logits(resnet20_path, cifar_dir, 16)
    with torch.no_grad():
        t, s = teacher(x), student(x) * 3  # *3: a student with non-trivial logits
    T = 4.0
    for i in range(len(y)):
        kd = F.kl_div(F.log_softmax(s[i:i + 1] / T, 1), F.softmax(t[i:i + 1] / T, 1), reduction="batchmean") * T * T
        p_target = F.softmax(t[i] / T, 0)[y[i]].item()
        assert dkd_loss(s[i:i + 1], t[i:i + 1], y[i:i + 1], T, 1.0, 1 - p_target).item() == pytest.approx(kd.item(), rel=1e-4)

    obj = DistillObjective(student, teacher, loss="dkd", beta=2.0, warmup_epochs=4).eval()
    assert obj.alpha == 1.0  # DKD's own default, not Hinton's 0.9
    ce = F.cross_entropy(obj.model(x), y).item()
    full = dkd_loss(obj.model(x), t, y, T, 1.0, 2.0).item()
    obj.set_epoch(0)
    assert obj(x, y, torch.arange(len(y)))[0].item() == pytest.approx(ce + full / 4, rel=1e-4)
    obj.set_epoch(9)
    assert obj(x, y, torch.arange(len(y)))[0].item() == pytest.approx(ce + full, rel=1e-4)
    labels_only = DistillObjective(student, teacher, loss="dkd", alpha=0.0, beta=0.0)
    assert not labels_only.uses_teacher
    with pytest.raises(InputError, match="unknown distillation loss 'dk'"):
        DistillObjective(student, teacher, loss="dk")
    with pytest.raises(InputError, match="feature weight >= 0"):  # it would push the maps apart
        DistillObjective(student, teacher, feature_weight=-1.0)


def test_bf16_teacher_gives_the_same_soft_targets(resnet20_path, cifar_dir):
    """--teacher-bf16 runs the teacher in bfloat16 autocast: its T=4 soft targets stay within a
    small KL of float32's and the objective records the precision that ran."""
    import torch.nn.functional as F

    from edgekit.stages.distill import DistillObjective

    teacher, student, x, y = _real_logits(resnet20_path, cifar_dir, 256)
    idx = torch.arange(len(y))
    fp32 = DistillObjective(student, teacher)._teacher_logits(x, idx)
    obj = DistillObjective(student, teacher, teacher_bf16=True)
    bf16 = obj._teacher_logits(x, idx)
    assert bf16.dtype == torch.float32 and not torch.equal(bf16, fp32)  # bf16 really ran
    kl = F.kl_div(F.log_softmax(bf16 / 4, 1), F.softmax(fp32 / 4, 1), reduction="batchmean").item()
    assert kl < 1e-3, kl
    assert (bf16.argmax(1) == fp32.argmax(1)).float().mean() >= 0.98
    assert obj.describe()["teacher_precision"] == "bf16" and "teacher_precision" not in DistillObjective(
        student, teacher).describe()


def test_dkd_with_a_bf16_teacher_trains_from_the_cli(tmp_path, resnet20_path, cifar_dir):
    out = tmp_path / "dkd"
    r = subprocess.run(_cli("distill", "--teacher", str(resnet20_path), "--teacher-arch", "cifar_resnet20",
                            "--student", "cifar_mobilenet_v2:width=0.5", "--data", str(cifar_dir), "--out", str(out),
                            "--loss", "dkd", "--beta", "2", "--kd-warmup", "2", "--teacher-bf16", "--epochs", "3", "--warmup-epochs", "1",
                            "--batch-size", "64", "--lr", "0.05", "--train-limit", "2000", "--eval-limit", "300"),
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["objective"] | {"loss": "dkd", "beta": 2.0, "alpha": 1.0, "teacher_precision": "bf16"} == summary["objective"]
    assert summary["history"][-1]["eval_top1"] > summary["initial_top1"] + 5, summary["history"]
    # each epoch names the machine it ran on (its seconds mean nothing without it)
    assert all(h["cpu"] and h["threads"] >= 1 for h in summary["history"]), summary["history"]


def _cli(*args: str, env: dict | None = None) -> list[str]:
    return [sys.executable, "-m", "edgekit.cli", *args]


def _finetune_args(weights, data, out) -> list[str]:
    return ["finetune", str(weights), "--arch", "cifar_resnet20", "--data", str(data), "--out", str(out),
            "--epochs", "3", "--batch-size", "64", "--train-limit", "640", "--eval-limit", "200"]


def test_resume_after_kill_matches_uninterrupted(tmp_path, resnet20_path, cifar_dir):
    """SIGKILL in the middle of epoch 2, resume, and end with bit-identical weights."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ref = subprocess.run(_cli(*_finetune_args(resnet20_path, cifar_dir, tmp_path / "ref")),
                         capture_output=True, text=True, env=env, timeout=600)
    assert ref.returncode == 0, ref.stderr[-2000:]
    run = tmp_path / "killed"
    proc = subprocess.Popen(_cli(*_finetune_args(resnet20_path, cifar_dir, run)), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (run / "metrics.jsonl").exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # into epoch 2
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1, "the kill should land in epoch 2"
    # a kill between a checkpoint's write and its rename leaves the temporary; resume removes it
    (run / ".state.pt.k1ll3d.tmp.pt").write_bytes(b"half a checkpoint")
    res = subprocess.run(_cli(*_finetune_args(resnet20_path, cifar_dir, run), "--resume"),
                         capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    a = torch.load(tmp_path / "ref" / "last.pt", weights_only=True)["state_dict"]
    b = torch.load(run / "last.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 3
    assert not list(run.glob(".*.tmp*"))
    # a finished run is not silently overwritten
    again = subprocess.run(_cli(*_finetune_args(resnet20_path, cifar_dir, run)), capture_output=True,
                           text=True, env=env, timeout=600)
    assert again.returncode == 2 and "--resume" in again.stderr


def test_torchrun_two_processes(tmp_path, resnet20_path, cifar_dir):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
           "-m", "edgekit.cli", *_finetune_args(resnet20_path, cifar_dir, out)]
    cmd[cmd.index("--epochs") + 1] = "1"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    rec = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert rec["world_size"] == 2
    # each process trained on its half; the counts reduced across ranks cover the whole subset
    assert rec["train_images"] == 640 and rec["images_per_s"] > 0
    loaded = edgekit.load_model(out / "last.pt")
    assert loaded.card.arch == "cifar_resnet20"
    assert p.stdout.count("best checkpoint") == 1  # rank 0 alone reports


def test_bad_training_input(tmp_path, resnet20_path, cifar_dir):
    with pytest.raises(InputError, match="train"):
        finetune(resnet20_path, arch="cifar_resnet20", data=cifar_dir / "test", out=tmp_path / "x",
                 config=TrainConfig(epochs=1), progress=False)
    with pytest.raises(Exception, match="temperature"):
        distill(resnet20_path, teacher_arch="cifar_resnet20", student="cifar_mobilenet_v3_small",
                data=cifar_dir, out=tmp_path / "y", temperature=0, progress=False,
                config=TrainConfig(epochs=1, train_limit=64, eval_limit=64))
    r = subprocess.run(_cli("distill", "--teacher", str(resnet20_path), "--teacher-arch", "cifar_resnet20",
                            "--student", "cifar_mobilenet_v2", "--data", str(cifar_dir), "--out",
                            str(tmp_path / "z"), "--loss", "dk"), capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "unknown distillation loss 'dk': use one of kd, dkd" in r.stderr and not (tmp_path / "z").exists()


def test_fresh_weights_come_from_the_seed(cifar_dir):
    """A student or a new head starts from the run's seed, whatever used torch's RNG before
    (a weak 3-epoch student once crossed a verification threshold only inside the full suite)."""
    from edgekit.stages._common import load_for_training

    def weights(model, seed, **kw):
        torch.rand(int(torch.randint(1, 1000, (1,)))) if seed else None  # disturb the global RNG
        module = load_for_training(model, data=cifar_dir, trust_pickle=False, seed=seed, **kw)[0]
        return {k: v.clone() for k, v in module.state_dict().items()}

    a, b = weights("cifar_mobilenet_v2:width=0.5", 3, arch=None, num_classes=None), \
        weights("cifar_mobilenet_v2:width=0.5", 3, arch=None, num_classes=None)
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = weights("cifar_mobilenet_v2:width=0.5", 4, arch=None, num_classes=None)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    # a 100-class model on 10-class data: the new head is the same for the same seed
    h1 = weights("cifar_resnet20", 5, arch=None, num_classes=100)
    h2 = weights("cifar_resnet20", 5, arch=None, num_classes=100)
    assert torch.equal(h1["linear.weight"], h2["linear.weight"]) and h1["linear.weight"].shape[0] == 10


def test_channels_last_trains_the_same_model(tmp_path, resnet20_path, cifar_dir):
    """NHWC is a speed setting only: the same steps in either layout end at the same weights (to
    float summation order), the checkpoint is saved in the default layout, and a run saved before
    the setting existed resumes (a missing setting counts as its default)."""
    base = dict(epochs=1, batch_size=64, lr=0.01, train_limit=256, eval_limit=200)
    runs = {}
    for cl in (True, False):
        res = finetune(resnet20_path, arch="cifar_resnet20", data=cifar_dir, out=tmp_path / f"cl{cl}",
                       config=TrainConfig(**base, channels_last=cl), progress=False)
        runs[cl] = torch.load(res.last_path, weights_only=True)["state_dict"]
    assert all(v.is_contiguous() for v in runs[True].values())
    diff = max((runs[True][k].float() - runs[False][k].float()).abs().max().item() for k in runs[True])
    assert diff < 1e-3, diff
    assert max((runs[True][k].float() - edgekit.load_model(resnet20_path, arch="cifar_resnet20")
                .module.state_dict()[k].float()).abs().max().item() for k in runs[True]) > 1e-3  # it trained

    from edgekit.train.engine import _same_config
    old = TrainConfig(**base).model_dump()
    old.pop("channels_last")
    assert _same_config(old, TrainConfig(**base)) == []
    assert _same_config(old, TrainConfig(**base, channels_last=False)) == ["channels_last"]


def test_a_streamed_train_split_trains_the_same_model(tmp_path, resnet20_path, cifar_dir, monkeypatch):
    """A train/ too large to keep decoded is read from its files batch by batch (the next batch
    decoded in a thread): the same pixels, augmentation and order, so bit-identical weights and
    held-out scores. EDGEKIT_MAX_MEMORY_GB=0 makes every split "too large"."""
    cfg = TrainConfig(epochs=1, batch_size=64, lr=0.01, train_limit=320, eval_limit=200)
    runs = {}
    for budget in (None, "0"):
        if budget is None:
            monkeypatch.delenv("EDGEKIT_MAX_MEMORY_GB", raising=False)
        else:
            monkeypatch.setenv("EDGEKIT_MAX_MEMORY_GB", budget)
        res = finetune(resnet20_path, arch="cifar_resnet20", data=cifar_dir, out=tmp_path / f"m{budget}",
                       config=cfg, progress=False)
        runs[budget] = (res, torch.load(res.last_path, weights_only=True)["state_dict"])
    (mem, w_mem), (stream, w_stream) = runs[None], runs["0"]
    summary = {b: json.loads((r.run_dir / "summary.json").read_text()) for b, (r, _) in runs.items()}
    assert summary[None]["streamed"] == {"train": False, "eval": False}
    assert summary["0"]["streamed"] == {"train": True, "eval": True}
    assert all(torch.equal(w_mem[k], w_stream[k]) for k in w_mem)
    assert [h["eval_top1"] for h in mem.history] == [h["eval_top1"] for h in stream.history]
    assert mem.initial_top1 == stream.initial_top1
    assert not all(torch.equal(w_mem[k], v) for k, v in edgekit.load_model(
        resnet20_path, arch="cifar_resnet20").module.state_dict().items())  # it trained


def test_bf16_precision_trains_in_bf16_and_saves_float32(tmp_path, resnet20_path, cifar_dir, monkeypatch):
    """--precision bf16 runs the training forward in bfloat16 (seen at a conv's output), keeps
    weights and losses float32, improves held-out accuracy like fp32, and a resume with the other
    precision is refused; QAT refuses bf16 before loading any data."""
    import edgekit.models
    from edgekit.stages import quantize

    seen = set()
    load = edgekit.models.load_model

    def load_and_watch(*a, **k):  # the real loader; records the first conv's output dtype in training
        loaded = load(*a, **k)
        loaded.module.conv1.register_forward_hook(lambda m, i, o: seen.add(o.dtype) if m.training else None)
        return loaded

    monkeypatch.setattr(edgekit.models, "load_model", load_and_watch)
    cfg = TrainConfig(epochs=2, batch_size=64, lr=0.01, train_limit=2000, eval_limit=1000, precision="bf16")
    res = finetune(resnet20_path, arch="cifar_resnet20", data=cifar_dir, out=tmp_path / "bf16",
                   config=cfg, progress=False)
    assert seen == {torch.bfloat16}, seen
    assert all(math.isfinite(h["train_loss"]) for h in res.history), res.history
    assert res.history[-1]["eval_top1"] > res.initial_top1 + 0.5, (res.initial_top1, res.history)
    sd = torch.load(res.last_path, weights_only=True)["state_dict"]
    assert {v.dtype for v in sd.values() if v.is_floating_point()} == {torch.float32}
    assert json.loads((tmp_path / "bf16" / "summary.json").read_text())["config"]["precision"] == "bf16"
    with pytest.raises(InputError, match="precision"):
        finetune(resnet20_path, arch="cifar_resnet20", data=cifar_dir, out=tmp_path / "bf16", resume=True,
                 config=cfg.model_copy(update={"precision": "fp32"}), progress=False)
    with pytest.raises(InputError, match="QAT trains in fp32"):
        quantize(resnet20_path, arch="cifar_resnet20", data=tmp_path / "no-such-folder", out=tmp_path / "q",
                 mode="qat", config=TrainConfig(epochs=1, precision="bf16"), backends="onnxruntime")
    assert not (tmp_path / "q").exists()


def test_unknown_precision_is_one_line(tmp_path, resnet20_path, cifar_dir):
    r = subprocess.run(_cli(*_finetune_args(resnet20_path, cifar_dir, tmp_path / "p"), "--precision", "fp16"),
                       capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "--precision" in r.stderr and "'fp32' or 'bf16'" in r.stderr, r.stderr
    assert not (tmp_path / "p").exists()


def test_bf16_policy_keeps_depthwise_convolutions_in_float32():
    """Under bf16 on the CPU the engine runs depthwise convolutions in float32, the rest in bf16
    (oneDNN's bf16 depthwise kernels made a MobileNetV2 step run at 0.71x of fp32); an fp32
    forward inside the policy (evaluation) is untouched, and the hooks leave with it."""
    from edgekit.models import get_model
    from edgekit.train.engine import precision_policy

    model, _ = get_model("cifar_mobilenet_v2:width=0.5", num_classes=10)
    dw = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and 1 < m.groups == m.in_channels)
    pw = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.groups == 1
              and m.kernel_size == (1, 1))
    seen = {}
    for name, m in (("dw", dw), ("pw", pw)):
        m.register_forward_hook(lambda _m, _i, o, name=name: seen.__setitem__(name, o.dtype))
    x = torch.randn(2, 3, 32, 32)
    with precision_policy(model, "bf16", torch.device("cpu")) as autocast:
        with autocast:
            out = model(x)
            assert torch.is_autocast_enabled("cpu")  # restored after each depthwise conv
        assert seen == {"dw": torch.float32, "pw": torch.bfloat16} and out.dtype == torch.bfloat16
        model(x)  # as evaluation runs: no autocast, all float32, autocast still off after it
        assert seen == {"dw": torch.float32, "pw": torch.float32} and not torch.is_autocast_enabled("cpu")
    assert not torch.is_autocast_enabled("cpu")
    assert not dw._forward_pre_hooks and len(dw._forward_hooks) == 1  # only the test's own
