"""timm classifiers as zoo archs (`timm/NAME`), at an input size other than their default: the card
options, a pruned checkpoint that reloads to the same model, BN folding that keeps the activation
timm fuses into its norm layers, and INT8 QAT deployed and verified on the runtimes."""

from __future__ import annotations

import copy
import re

import pytest
import torch

import edgekit
from edgekit.bench import TimingConfig
from edgekit.data import load_dataset
from edgekit.errors import InputError
from edgekit.models import get_model
from edgekit.train import TrainConfig

# MobileNetV3 in timm: BatchNormAct2d (BN + Hardswish in one module), squeeze-excite, timm's Linear
ARCH = "timm/mobilenetv3_small_050:input_size=64"


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cifar_dir):
    """A few hundred steps from random init on CIFAR-10 upscaled to 64x64: well above chance, so
    agreement between a runtime and torch means something."""
    from edgekit.stages import finetune

    cfg = TrainConfig(epochs=4, batch_size=64, lr=0.05, train_limit=6000, eval_limit=300)
    res = finetune(ARCH, data=cifar_dir, out=tmp_path_factory.mktemp("timm"), num_classes=10, config=cfg,
                   progress=False)
    assert res.best_top1 > 30, res.best_top1
    return res.best_path


def _images(cifar_dir, card, n=64):
    split = load_dataset(cifar_dir, input_size=card.input_size, resize=card.resize).evaluation(n)
    return next(iter(split.batches(n, mean=card.mean, std=card.std)))[0]


def test_timm_names_and_card_options():
    module, card = get_model(ARCH, num_classes=7)
    assert card.arch == "timm/mobilenetv3_small_050" and card.arch_kwargs == {"input_size": 64}
    assert card.input_size == (3, 64, 64) and card.resize is None  # a new size drops the 224/256 crop
    assert module(torch.zeros(1, 3, 64, 64)).shape == (1, 7)
    default = get_model("timm/mobilenetv3_small_050")[1]
    assert default.input_size == (3, 224, 224) and default.resize == 256  # timm's crop_pct 0.875
    card = get_model("resnet18:input_size=96x128,resize=160,mean=0.5,std=0.25", num_classes=3)[1]
    assert card.input_size == (3, 96, 128) and card.resize == 160 and card.mean == (0.5,) * 3
    with pytest.raises(InputError, match=r"unknown timm model 'mobilenetv3_smal_050' \(close: timm/mobilenetv3"):
        get_model("timm/mobilenetv3_smal_050")
    with pytest.raises(InputError, match="never downloads weights"):
        get_model("timm/resnet18:pretrained=True")
    with pytest.raises(InputError, match="input_size takes N or HxW"):
        get_model("timm/resnet18:input_size=64x")
    with pytest.raises(InputError, match=r"resize \(32\) must be >= the crop size 64x64"):
        get_model("resnet18:input_size=64,resize=32")


def test_bn_folding_keeps_timm_activations(trained, cifar_dir):
    """timm's BatchNormAct2d is BN + activation in one module: folding its BN into the conv keeps
    the activation, so the folded model computes what the float one does."""
    from timm.layers import BatchNormAct2d

    from edgekit.quant.prepare import fold_batchnorm

    loaded = edgekit.load_model(trained)
    model = loaded.module.eval()
    acts = sum(isinstance(m, BatchNormAct2d) for m in model.modules())
    folded_model = copy.deepcopy(model)
    folded = fold_batchnorm(folded_model)
    assert len(folded) >= acts > 0, (len(folded), acts)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded_model.modules())
    x = _images(cifar_dir, loaded.card)
    with torch.no_grad():
        torch.testing.assert_close(folded_model(x), model(x), atol=1e-4, rtol=1e-4)


def test_quantized_timm_model_rebuilds_the_same(trained, cifar_dir):
    """A quantized checkpoint stores its spec; rebuilding a fresh arch from it gives the same model
    (the quantizers on conv outputs before HardSwish and SE feed every consumer there too)."""
    from edgekit.quant import calibrate, plan, prepare
    from edgekit.quant.prepare import rebuild

    loaded = edgekit.load_model(trained)
    x = _images(cifar_dir, loaded.card)
    q = prepare(copy.deepcopy(loaded.module), plan(loaded.module, 8), unsigned=True, residual="rounded")
    calibrate(q, [x])
    assert q.edgekit_quant["conv_outputs"]
    fresh, _ = get_model(ARCH, num_classes=10)
    again = rebuild(fresh, q.edgekit_quant)
    again.load_state_dict(q.state_dict())
    with torch.no_grad():
        assert torch.equal(again.eval()(x), q.eval()(x))


def test_pruned_timm_checkpoint_reloads_the_same_model(trained, cifar_dir, tmp_path):
    """A pruned checkpoint is arch + state_dict: reloading rebuilds each layer at its stored width
    in its own class (a plain BatchNorm2d in place of timm's BatchNormAct2d dropped the
    activation, and every output with it)."""
    from edgekit.models import save_model
    from edgekit.pruning import prune_channels

    loaded = edgekit.load_model(trained)
    pruned = prune_channels(loaded.module, loaded.card.input_size, 0.4).model.eval()
    assert pruned.bn1.num_features < loaded.module.bn1.num_features
    save_model(pruned, loaded.card, tmp_path / "pruned.pt")
    again = edgekit.load_model(tmp_path / "pruned.pt").module
    assert type(again.bn1) is type(pruned.bn1) and again.bn1.num_features == pruned.bn1.num_features
    x = _images(cifar_dir, loaded.card)
    with torch.no_grad():
        torch.testing.assert_close(again(x), pruned(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_timm_qat_deploys_and_verifies(trained, cifar_dir, tmp_path, runtime):
    """INT8 QAT of a timm model exports (the QDQ rewrite finds every quantized conv: folded BNs no
    longer rename their weights) and agrees with torch on real images, in the residual form of
    the runtime it is quantized for; the quantized checkpoint reloads to the same model. (In
    ONNX Runtime's form OpenVINO agreed on 96.3% of the images here, in its own 96.3-99.0%.)"""
    from edgekit.train import evaluate_top1
    from edgekit.verify import Tolerance

    cfg = TrainConfig(epochs=1, batch_size=64, lr=0.001, weight_decay=0.0, train_limit=1024, eval_limit=300)
    res = edgekit.quantize(trained, data=cifar_dir, out=tmp_path / "q", mode="qat", config=cfg,
                           calibration_images=128, limit=300, backends=("torch", runtime), progress=False,
                           timing=TimingConfig(warmup=1, iters=5, passes=1, throughput_iters=1),
                           # a few QAT steps from a 40% model leave many low-margin images: over
                           # runs OpenVINO agreed on 96.3-99.0% of them in its form, ONNX Runtime on 100%
                           tolerance=Tolerance(min_agreement={"quantized": 0.95}))
    rows = {r.backend: r for r in res.rows}
    for name in ("torch", runtime):
        assert rows[name].status == "ok", (name, rows[name].details.get("reason"), rows[name].agreement)
    assert res.final_top1 > 20, res.final_top1
    if runtime == "onnxruntime":  # conv outputs before HardSwish / SE are rounded: integer kernels
        done, total = map(int, re.match(r"int8: (\d+)/(\d+)", rows[runtime].details["executed"]).groups())
        assert done >= total - 1, rows[runtime].details["executed"]  # the classifier's logits stay float
    again = edgekit.load_model(tmp_path / "q" / "model.pt")
    split = load_dataset(cifar_dir, input_size=again.card.input_size, resize=again.card.resize).evaluation(300)
    assert evaluate_top1(again.module, split, again.card)[0] == pytest.approx(res.final_top1, abs=1e-6)


def test_a_conv_with_its_own_forward_is_refused_by_name():
    """timm's Conv2dSame pads at run time: quantizing it as a plain Conv2d would drop the padding,
    so the plan refuses it by name and says how to keep it in float."""
    from edgekit.quant.prepare import plan

    module, card = get_model("timm/tf_mobilenetv3_small_minimal_100:input_size=64", num_classes=10)
    assert card.arch_spec == "timm/tf_mobilenetv3_small_minimal_100:input_size=64"
    with pytest.raises(InputError, match=r"conv_stem \(Conv2dSame\).*--keep-float conv_stem"):
        plan(module, 8)


def test_safetensors_weights_load_with_arch(tmp_path, monkeypatch, capsys):
    """timm's weights come as model.safetensors: read with --arch (tensors only, nothing runs);
    without --arch, or cut short, one error line and exit 2."""
    from safetensors.torch import save_file
    from test_cli import _assert_clean_error, run_inprocess

    module, _ = get_model("timm/resnet10t", num_classes=5)
    save_file(module.state_dict(), str(tmp_path / "model.safetensors"))
    loaded = edgekit.load_model(tmp_path / "model.safetensors", arch="timm/resnet10t:input_size=64")
    assert loaded.card.num_classes == 5 and loaded.card.input_size == (3, 64, 64)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded.module(x), module.eval()(x))
    code, _, err = run_inprocess(monkeypatch, capsys, "eval", str(tmp_path / "model.safetensors"), "--data", "digits")
    _assert_clean_error(code, err, "holds weights only; pass --arch")
    data = (tmp_path / "model.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    code, _, err = run_inprocess(monkeypatch, capsys, "eval", str(tmp_path / "cut.safetensors"),
                                 "--arch", "timm/resnet10t", "--data", "digits")
    _assert_clean_error(code, err, "cannot read model file")


def test_grayscale_timm_model_trains_exports_and_verifies(tmp_path):
    """`in_chans=1`: the card says 1 channel (gray mean/std), images are decoded as gray, and the
    deployed files take the 1-channel input. The digits are gray images to begin with."""
    from edgekit.stages import finetune

    arch = "timm/resnet10t:in_chans=1,input_size=32"
    cfg = TrainConfig(epochs=2, batch_size=64, lr=0.05, augment=False)
    res = finetune(arch, data="digits", out=tmp_path / "ft", num_classes=10, config=cfg, progress=False)
    assert res.best_top1 > 50, res.best_top1  # chance is 10%
    loaded = edgekit.load_model(res.best_path)
    assert loaded.card.input_size == (1, 32, 32) and len(loaded.card.mean) == 1
    rows = edgekit.benchmark(res.best_path, data="digits", out=tmp_path / "b", backends="onnxruntime,openvino",
                             precisions="fp32", limit=None, progress=False,
                             timing=TimingConfig(warmup=1, iters=2, passes=1, throughput_iters=1)).rows
    assert [r.status for r in rows] == ["ok", "ok"], [(r.status, r.details.get("reason")) for r in rows]
    assert all(abs(r.top1 - res.best_top1) < 0.3 and r.agreement >= 0.999 for r in rows), ([(r.top1, r.agreement) for r in rows], res.best_top1)


def test_levit_prunes_saves_and_reloads_the_same(tmp_path):
    """timm's LeViT caches its attention biases on an eval forward (not a graph leaf when autograd
    was on, so deepcopy refuses it) and has BatchNorm1d layers that pruning narrows: the pruned
    model must copy, save as a checkpoint, and reload to the same outputs."""
    from edgekit.models import save_model
    from edgekit.pruning.structured import prune_channels

    module, card = get_model("timm/levit_128s", num_classes=5)
    module.eval()
    x = torch.randn(2, *card.input_size)
    module(x)  # autograd on: the bias cache is a non-leaf tensor
    outcome = prune_channels(module, card.input_size, 0.3)
    assert outcome.macs_after < 0.85 * outcome.macs_before
    pruned = outcome.model.eval()
    path = save_model(pruned, card, tmp_path / "levit.pt")
    loaded = edgekit.load_model(path).module
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), pruned(x), rtol=0, atol=1e-5)


def _levit_as_trained(num_classes=4):
    """timm's LeViT-128S with per-channel BatchNorm1d statistics, as any trained one has (at
    random init they are uniform, which hides what OpenVINO trips on)."""
    torch.manual_seed(0)
    module, card = get_model("timm/levit_128s", num_classes=num_classes)
    g = torch.Generator().manual_seed(0)
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            n = m.num_features
            m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
            m.running_var.copy_(0.5 + torch.rand(n, generator=g))
            m.weight.data.copy_(0.5 + torch.rand(n, generator=g))
            m.bias.data.copy_(0.1 * torch.randn(n, generator=g))
    return module.eval(), card


def _reads_input(node) -> bool:
    """Is this fx node computed from the model's input (not from parameters and buffers alone)?"""
    seen, todo = set(), [node]
    while todo:
        n = todo.pop()
        if n.op == "placeholder":
            return True
        if n not in seen:
            seen.add(n)
            todo.extend(n.all_input_nodes)
    return False


def _linear_norm_bns(module):
    """The BatchNorm1d of every LinearNorm (Linear, then BN over the flattened tokens): 46 here."""
    names = [f"{n}.bn" for n, m in module.named_modules() if type(m).__name__ == "LinearNorm"]
    assert len(names) == 46
    return names


def test_levit_int8_compiles_and_runs_on_openvino(tmp_path):
    """Two OpenVINO compile failures of an INT8 LeViT, in both QDQ forms. (1) Its attention logits
    get a bias table (a parameter gathered by an index buffer); quantized as an activation, that
    constant made AddTransformation throw ('index 0 out of range'): a constant add is a bias, so
    it stays float. (2) Its Linear + BatchNorm1d (over tokens flattened into the batch) made
    ReshapeTransformation throw once BN statistics differ per channel: the BN is folded into the
    Linear, as conv + BN are. Both forms now compile, run INT8 and match the fake-quant model;
    ONNX Runtime still runs the same 52 layers in integer kernels, also where folding left
    several Linears with equal weights."""
    import numpy as np

    from edgekit.backends.onnxruntime import OrtRunner, executed_ops
    from edgekit.backends.openvino import OvRunner
    from edgekit.exporters.qdq import export_qdq
    from edgekit.quant import ActQuant, calibrate, plan, prepare, spec_of

    module, card = _levit_as_trained()
    x = torch.randn(4, *card.input_size)
    with torch.no_grad():
        y = module(x)
    for form, kw in {"ort": {"unsigned": True}, "ov": {"unsigned": False, "residual": "fused"}}.items():
        q = prepare(copy.deepcopy(module), plan(module, 8), label="int8", input_size=card.input_size, **kw)
        assert set(_linear_norm_bns(module)) <= set(spec_of(q).folded_bn)
        with torch.no_grad():
            calibrate(q, [x])
            ref = q.eval()(x).numpy()
        assert np.abs(ref - y.numpy()).max() / np.abs(y.numpy()).max() < 0.1  # the fold kept the model
        quantized = [n.args[0] for n in q.graph.nodes
                     if n.op == "call_module" and isinstance(q.get_submodule(n.target), ActQuant)]
        assert quantized and all(_reads_input(n) for n in quantized), form  # no constant quantized
        path = export_qdq(q, card, tmp_path / f"levit_{form}.onnx", target="onnxruntime")
        runner = OvRunner(path, precision="int8", threads=2)
        err = np.abs(runner(x.numpy()) - ref).max() / np.abs(ref).max()
        assert err < 0.1, (form, err)
        assert "u8" in runner.executed or "i8" in runner.executed, runner.executed
        if form == "ort":
            assert np.abs(OrtRunner(path, precision="int8", threads=2)(x.numpy()) - ref).max() / np.abs(ref).max() < 0.1
            assert re.search(r"(\d+)/\d+ conv/matmul in integer", executed_ops(path, "int8")).group(1) == "52"
    # as built, the residual branches' BNs have weight 0: folded, 14 Linears hold equal (zero)
    # weights, which the exporter shares through Identity nodes; each MatMul still gets INT8
    module, card = get_model("timm/levit_128s", num_classes=4)
    q = prepare(module.eval(), plan(module, 8), label="int8", input_size=card.input_size, unsigned=True)
    with torch.no_grad():
        calibrate(q, [x])
    path = export_qdq(q.eval(), card, tmp_path / "levit_as_built.onnx", target="onnxruntime")
    assert re.search(r"(\d+)/\d+ conv/matmul in integer", executed_ops(path, "int8")).group(1) == "52"


def test_levit_ptq_deploys_on_openvino_and_reloads(tmp_path, cifar_dir):
    """The quantize stage folds LeViT's BatchNorm1d layers (it knows the input size), OpenVINO
    runs the result in INT8 and verifies it on real images, and the checkpoint replays the folds
    on reload: the same top-1 on the same images."""
    from edgekit.models import save_model
    from edgekit.quant import spec_of
    from edgekit.train import evaluate_top1

    module, card = _levit_as_trained(num_classes=10)
    src = save_model(module, card, tmp_path / "levit.pt")
    res = edgekit.quantize(src, data=cifar_dir, out=tmp_path / "q", mode="ptq", calibration_images=32, limit=48,
                           backends=("torch", "openvino"), progress=False,
                           timing=TimingConfig(warmup=1, iters=3, passes=1, throughput_iters=1))
    rows = {r.backend: r for r in res.rows}
    assert rows["openvino"].status == "ok", rows["openvino"].details.get("reason")
    assert re.search(r"[ui]8 x\d+", rows["openvino"].details["executed"]), rows["openvino"].details["executed"]
    again = edgekit.load_model(res.model_path)
    assert set(_linear_norm_bns(module)) <= set(spec_of(again.module).folded_bn)
    split = load_dataset(cifar_dir, input_size=card.input_size, resize=card.resize).evaluation(48)
    assert evaluate_top1(again.module, split, again.card)[0] == pytest.approx(res.final_top1, abs=1e-6)


def test_levit_quantizes(tmp_path):
    """torch.fx traces LeViT twice (BN folding, then quantizer placement); its attention-bias
    cache kept a Proxy of the first trace, which broke the second ('does not belong to this Graph')."""
    from edgekit.quant import calibrate, plan, prepare

    module, card = get_model("timm/levit_128s", num_classes=5)
    module.eval()
    x = torch.randn(2, *card.input_size)
    with torch.no_grad():
        module(x)  # a cached bias table, as after any evaluation
        q = prepare(copy.deepcopy(module), plan(module, 8), label="int8")
        calibrate(q, [x])
        assert q.eval()(x).shape == (2, 5)
        module(x)  # the float model still runs: no Proxy left in its cache
