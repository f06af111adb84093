"""Turn a float classifier into a fake-quantized one: fold batch norms, pick the layers and their
bit widths, put activation quantizers on the tensors the deployed graph quantizes, calibrate.

- Batch norms are folded *before* quantization, so the weights QAT learns on the integer grid are
  exactly the ones the exported graph holds (a runtime folding BN later would move them off it).
  BatchNorm2d after a Conv2d always; BatchNorm1d after a Linear when the input size is given.
- Activation quantizers belong to tensors, not layers: every tensor that feeds a quantized layer
  or a residual add gets one ActQuant, shared by those consumers. Tensors computed from
  parameters alone (a bias table) are constants, not activations: they get none. That is the placement runtimes
  fuse: ONNX Runtime turns DQ -> Conv -> (Relu) -> Q into QLinearConv and quantized adds into
  QLinearAdd; OpenVINO and TensorRT run the add in INT8 instead of re-quantizing around it.
- With `unsigned=True` (the model is for ONNX Runtime / OpenVINO, not TensorRT), a tensor that
  cannot be negative (a ReLU's output, or a pool / flatten of one) gets an unsigned quantizer:
  the UINT8 grid those runtimes execute, with twice the steps of the signed one.
- The result is a torch.fx GraphModule with the original module hierarchy (so parameter names and
  the model card still apply) plus `aq_<tensor>` quantizers; `QuantSpec` records all of it, and
  `rebuild` redoes it on a freshly built arch to load a checkpoint.
"""

from __future__ import annotations

import math
import operator
from typing import Iterable, Literal, Sequence

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import fx, nn

from ..errors import InputError
from .fakequant import QUANT_LAYERS, ActQuant, QuantConv2d, QuantLinear

__all__ = ["QuantSpec", "fold_batchnorm", "link_bias_grid", "plan", "prepare", "calibrate", "is_quantized", "quant_layers",
           "act_quants", "int4_convolutions", "unsigned_tensors", "rebuild", "spec_of", "SPEC_ATTR"]

SPEC_ATTR = "edgekit_quant"
_UNSUPPORTED = (nn.Conv1d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_ADDS = (operator.add, operator.iadd, torch.add)


class QuantSpec(BaseModel):
    """Which layers and tensors are quantized and how: stored in checkpoints, enough to rebuild."""

    model_config = ConfigDict(extra="forbid")
    #: layer name -> weight bits (8 or 4); layers not listed stay float
    weights: dict[str, int]
    act_bits: int = 8
    #: fx node names of the quantized activation tensors
    tensors: list[str] = Field(default_factory=list)
    #: those of them quantized unsigned ([0, 2^bits - 1]); the rest are signed
    unsigned: list[str] = Field(default_factory=list)
    folded_bn: list[str] = Field(default_factory=list)
    #: the precision name in tables: int8, w4a8 or mixed
    label: str = "int8"
    #: biases on the INT32 grid in_scale * w_scale (False: float, how checkpoints before it were trained)
    int_bias: bool = False
    #: "fused": INT8 conv outputs that only a residual add consumes are not quantized, as
    #: OpenVINO's CPU plugin executes them (`_fused_into_add`); "rounded": they are, as ONNX
    #: Runtime (QLinearConv -> QLinearAdd) and TensorRT execute them
    residual: Literal["rounded", "fused"] = "rounded"
    #: blocks torch.fx cannot trace (control flow on tensors): traced as one node, kept float
    opaque: list[str] = Field(default_factory=list)
    #: INT8 conv outputs that a float op consumes are quantized, for all their consumers (ONNX
    #: Runtime's form: `_feeds_float_op`); False for checkpoints written before it
    conv_outputs: bool = False


class _Leaves(fx.Tracer):
    """Keeps every Conv2d, Linear and BatchNorm2d one node, subclasses included: timm's Linear
    and BatchNormAct2d would otherwise be traced into F.linear / F.batch_norm calls, which no
    quantizer or BN fold can be matched with. `opaque` modules (by identity) are one node too:
    blocks fx cannot trace, which then stay float."""

    def __init__(self, opaque: Iterable[nn.Module] = ()) -> None:
        super().__init__()
        self.opaque = {id(m) for m in opaque}

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return (id(m) in self.opaque or isinstance(m, (nn.Conv2d, nn.Linear, nn.BatchNorm2d))
                or super().is_leaf_module(m, qualname))


#: attribute of a traced GraphModule: the blocks traced as opaque nodes (kept float)
OPAQUE_ATTR = "edgekit_opaque"


#: subclasses whose forward is their base's, written differently (timm's Linear casts for TorchScript)
_SAME_FORWARD = {"timm.layers.linear.Linear"}


def _quant_class(layer: nn.Module) -> type[nn.Module] | None:
    """The fake-quant replacement of `layer`, or None where its forward is not a plain Conv2d or
    Linear (timm's Conv2dSame pads at run time, a weight-standardised conv rescales)."""
    for base, cls in QUANT_LAYERS.items():
        if isinstance(layer, base) and (type(layer).forward is base.forward
                                        or f"{type(layer).__module__}.{type(layer).__qualname__}" in _SAME_FORWARD):
            return cls
    return None


def _trace(model: nn.Module, opaque: Sequence[str] | None = None) -> fx.GraphModule:
    """The model as an fx graph; blocks fx cannot trace become opaque nodes (OPAQUE_ATTR).
    `opaque`: those blocks' names when already known (a stored spec, a second trace), else searched."""
    known = {} if opaque is None else {n: model.get_submodule(n) for n in opaque}
    try:
        gm = fx.GraphModule(model, _traced(model, known))
        setattr(gm, OPAQUE_ATTR, sorted(known))
        return gm
    except Exception as e:  # noqa: BLE001
        first = f"{type(e).__name__}: {str(e).splitlines()[0][:150] if str(e) else ''}"
    opaque = _untraceable(model) if opaque is None else {}
    if not opaque:
        raise InputError(f"cannot quantize this model: torch.fx could not trace it ({first}); edgekit "
                         "needs a traceable forward to fold batch norms and place quantizers")
    gm = fx.GraphModule(model, _traced(model, opaque))
    setattr(gm, OPAQUE_ATTR, sorted(opaque))
    return gm


def _traced(model: nn.Module, opaque: dict[str, nn.Module]) -> fx.Graph:
    from ..models.clone import drop_eval_caches

    drop_eval_caches(model)
    try:
        return _Leaves(opaque.values()).trace(model)
    finally:
        drop_eval_caches(model)  # a Proxy cached during the trace must not outlive it


def _untraceable(model: nn.Module, limit: int = 64) -> dict[str, nn.Module]:
    """The smallest submodules fx cannot trace (control flow on a tensor's value, dtype or shape:
    timm's MobileViT and EfficientViT attention blocks), so the rest of the model still traces
    around them. Found top-down: the first child that does not trace alone (with those already
    found opaque) is searched in turn; a module whose children all trace is the culprit. {} when
    the root itself is (nothing to keep float around)."""
    opaque: dict[str, nn.Module] = {}

    def traces(m: nn.Module) -> bool:
        try:
            _traced(m, opaque)
            return True
        except Exception:  # noqa: BLE001
            return False

    def culprit(name: str, m: nn.Module) -> str:
        for child_name, child in m.named_children():
            if any(child is o for o in opaque.values()):
                continue
            full = f"{name}.{child_name}" if name else child_name
            if not traces(child):
                return culprit(full, child)
        return name

    while len(opaque) < limit:  # the caller saw the whole model fail to trace
        name = culprit("", model)
        if not name:
            return {}
        opaque[name] = model.get_submodule(name)
        if traces(model):
            return opaque
    return {}


def _after_fold(bn: nn.BatchNorm2d) -> nn.Module | None:
    """What stays of `bn` once folded into its conv: nothing for a plain batch norm; the dropout and
    activation of a timm BatchNormAct2d; None (do not fold) for a subclass whose forward is unknown."""
    if type(bn).forward is nn.BatchNorm2d.forward:
        return nn.Identity()
    if isinstance(getattr(bn, "act", None), nn.Module) and isinstance(getattr(bn, "drop", None), nn.Module):
        return nn.Sequential(bn.drop, bn.act)
    return None


def fold_batchnorm(model: nn.Module) -> list[str]:
    """Fold every BatchNorm2d that directly follows a Conv2d (its only user) into the conv, in
    place; the BN becomes an Identity (or the activation a norm+act layer carries). Returns the
    folded BN names."""
    return _fold_batchnorm(model, _trace(model))


def _fold_batchnorm(model: nn.Module, gm: fx.GraphModule, input_size: Sequence[int] | None = None,
                    replay: Iterable[str] | None = None) -> list[str]:
    from torch.nn.utils.fusion import fuse_conv_bn_weights

    mods = dict(model.named_modules())
    folded = _fold_linear_bn(model, gm, input_size, replay)
    for node in gm.graph.nodes:
        if node.op != "call_module" or not isinstance(mods.get(node.target), nn.BatchNorm2d):
            continue
        src = node.args[0]
        if not (isinstance(src, fx.Node) and src.op == "call_module"
                and isinstance(mods.get(src.target), nn.Conv2d) and len(src.users) == 1):
            continue
        conv, bn = mods[src.target], mods[node.target]
        rest = _after_fold(bn)
        if rest is None:
            continue
        if bn.num_features != conv.out_channels:  # rebuilding a pruned checkpoint: weights come after
            bn = nn.BatchNorm2d(conv.out_channels)
        w, b = fuse_conv_bn_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps,
                                    bn.weight, bn.bias)
        conv.weight, conv.bias = w, b
        model.set_submodule(node.target, rest)
        folded.append(node.target)
    return folded


def _linear_bn_pairs(gm: fx.GraphModule, mods: dict[str, nn.Module]) -> list[tuple[fx.Node, fx.Node]]:
    """(linear, batchnorm1d) nodes where the BN normalizes the Linear's output, directly or through
    `flatten(0, 1)` (tokens into the batch), and nothing else reads that output's values."""
    pairs = []
    for node in gm.graph.nodes:
        if node.op != "call_module" or type(mods.get(node.target)) is not nn.BatchNorm1d:
            continue
        src = node.args[0]
        if isinstance(src, fx.Node) and len(src.users) == 1 and _flattens_first_two(src):
            src = src.args[0]
        if not (isinstance(src, fx.Node) and src.op == "call_module" and isinstance(mods.get(src.target), nn.Linear)
                and _quant_class(mods[src.target]) is not None):
            continue
        if sum(not _reads_shape_only(u, src) for u in src.users) == 1:
            pairs.append((src, node))
    return pairs


def _flattens_first_two(node: fx.Node) -> bool:
    """x.flatten(0, 1) / torch.flatten(x, 0, 1), positional or by keyword."""
    if not ((node.op == "call_method" and node.target == "flatten")
            or (node.op == "call_function" and node.target is torch.flatten)) or not node.args:
        return False
    args = list(node.args[1:3])
    start = args[0] if args else node.kwargs.get("start_dim", 0)
    end = args[1] if len(args) > 1 else node.kwargs.get("end_dim", -1)
    return (start, end) == (0, 1)


def _reads_shape_only(user: fx.Node, src: fx.Node) -> bool:
    """Does `user` read only the shape of `src` (y.reshape_as(src), src.size(), src.shape)?"""
    if user.op == "call_method" and user.target in ("reshape_as", "view_as", "expand_as"):
        return user.args[0] is not src
    if user.op == "call_method" and user.target in ("size", "dim"):
        return True
    return user.op == "call_function" and user.target is getattr and user.args[1:] in (("shape",), ("ndim",))


def _fold_linear_bn(model: nn.Module, gm: fx.GraphModule, input_size: Sequence[int] | None,
                    replay: Iterable[str] | None) -> list[str]:
    """Fold each BatchNorm1d that follows a Linear (timm's LeViT: Linear, then BN over the tokens
    flattened into the batch) into that Linear, as conv + BatchNorm2d are. Unfolded, OpenVINO's
    low-precision ReshapeTransformation fails to compile the INT8 graph once the BN's statistics
    differ per channel (any trained model). BN1d normalizes dim 1, so the fold is exact only where
    the BN's input is (N, C) with C the Linear's outputs: checked by running the graph at
    `input_size` (no fold without it), or `replay` names the BNs a stored spec folded."""
    from torch.nn.utils.fusion import fuse_linear_bn_weights

    mods = dict(model.named_modules())
    pairs = _linear_bn_pairs(gm, mods)
    if replay is not None:
        names = set(replay)
        pairs = [(lin, bn) for lin, bn in pairs if bn.target in names]
    elif input_size is None or not pairs:
        return []
    else:
        from torch.fx.passes.shape_prop import ShapeProp

        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                ShapeProp(gm).propagate(torch.zeros(2, *input_size))
        except Exception:  # noqa: BLE001 - no shapes, no fold: the graph stays as it is
            return []
        finally:
            model.train(was_training)

        def fits(lin: fx.Node, bn: fx.Node) -> bool:
            meta = bn.args[0].meta.get("tensor_meta")
            return meta is not None and len(meta.shape) == 2 and meta.shape[1] == mods[lin.target].out_features

        pairs = [(lin, bn) for lin, bn in pairs if fits(lin, bn)]
    folded = []
    for lin_node, bn_node in pairs:
        lin, bn = mods[lin_node.target], mods[bn_node.target]
        if bn.num_features != lin.out_features:  # rebuilding a pruned checkpoint: weights come after
            bn = nn.BatchNorm1d(lin.out_features)
        w, b = fuse_linear_bn_weights(lin.weight, lin.bias, bn.running_mean, bn.running_var, bn.eps,
                                      bn.weight, bn.bias)
        lin.weight, lin.bias = w, nn.Parameter(b.detach(), requires_grad=w.requires_grad)
        model.set_submodule(bn_node.target, nn.Identity())
        folded.append(bn_node.target)
    return folded


def _weight_layers(model: nn.Module) -> list[str]:
    names = []
    for name, m in model.named_modules():
        parent = name.rpartition(".")[0]
        owner = model.get_submodule(parent) if parent else model
        if isinstance(m, (nn.Conv2d, nn.Linear)) and not isinstance(owner, nn.MultiheadAttention):
            names.append(name)
    return names


def plan(model: nn.Module, bits: int, *, keep_float: Iterable[str] = (), first_last_8bit: bool = True,
         overrides: dict[str, int] | None = None) -> dict[str, int]:
    """Weight bits per quantizable layer, in definition order. Layers edgekit cannot quantize
    are an error unless kept float; `overrides` sets single layers (0 = float)."""
    if bits not in (4, 8):
        raise InputError(f"--bits {bits} is not supported: use 8 (INT8) or 4 (W4A8: 4-bit weights, "
                         "8-bit activations)")
    keep = set(keep_float)
    names = dict(model.named_modules())
    unknown = sorted(keep - set(names))
    if unknown:
        raise InputError(f"--keep-float names unknown layer(s) {', '.join(unknown[:5])}; layer names are "
                         "as in model.named_modules(), e.g. " + ", ".join(_weight_layers(model)[:3]))
    weighted = set(_weight_layers(model))
    bad = [f"{n} ({type(m).__name__})" for n, m in names.items() if n not in keep and (
        isinstance(m, _UNSUPPORTED) or (n in weighted and _quant_class(m) is None))]
    if bad:
        names = ",".join(b.split(" ")[0] for b in bad)
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise InputError(f"unsupported layer for quantization: {', '.join(bad[:3])}{more}; edgekit quantizes "
                         f"Conv2d and Linear layers that compute exactly that: keep these in float with "
                         f"--keep-float {names}")
    layers = [n for n in _weight_layers(model) if n not in keep]
    if not layers:
        raise InputError("the model has no Conv2d or Linear layer to quantize")
    weights = {n: bits for n in layers}
    if bits == 4 and first_last_8bit:
        weights[layers[0]] = weights[layers[-1]] = 8
    weights.update({k: v for k, v in (overrides or {}).items() if k in weights})
    return {n: b for n, b in weights.items() if b}


def _is_add(node: fx.Node) -> bool:
    return ((node.op == "call_function" and node.target in _ADDS)
            or (node.op == "call_method" and node.target in ("add", "add_")))


_RELU_FNS = (torch.relu, torch.relu_, torch.nn.functional.relu, torch.nn.functional.relu6)
#: ops whose output is non-negative when their (first) input is
_KEEPS_SIGN_MODULES = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Flatten,
                       nn.Dropout)
_KEEPS_SIGN_FNS = (torch.flatten, torch.nn.functional.max_pool2d, torch.nn.functional.avg_pool2d,
                   torch.nn.functional.adaptive_avg_pool2d, torch.nn.functional.adaptive_max_pool2d,
                   torch.nn.functional.dropout, torch.mean)
_KEEPS_SIGN_METHODS = ("flatten", "view", "reshape", "mean", "squeeze", "contiguous")


def _clip_bounds(node: fx.Node, mods: dict[str, nn.Module]) -> tuple[float, float] | None:
    """(lower, upper) of a ReLU-like op (upper inf for a plain ReLU), else None."""
    if node.op == "call_module":
        m = mods.get(node.target)
        if isinstance(m, nn.ReLU6):
            return 0.0, 6.0
        if isinstance(m, nn.ReLU):
            return 0.0, math.inf
        if isinstance(m, nn.Hardtanh) and m.min_val >= 0:
            return float(m.min_val), float(m.max_val)
        return None
    if node.op == "call_function" and node.target in _RELU_FNS:
        return (0.0, 6.0) if node.target is torch.nn.functional.relu6 else (0.0, math.inf)
    if node.op == "call_method" and node.target in ("relu", "relu_"):
        return 0.0, math.inf
    if (node.op == "call_function" and node.target is torch.nn.functional.hardtanh) or (
            node.op in ("call_function", "call_method") and node.target in (torch.clamp, torch.clip, "clamp", "clip")):
        args = list(node.args[1:]) + [None, None]
        lo = node.kwargs.get("min", node.kwargs.get("min_val", args[0]))
        hi = node.kwargs.get("max", node.kwargs.get("max_val", args[1]))
        if node.target is torch.nn.functional.hardtanh:
            lo = -1.0 if lo is None else lo
            hi = 1.0 if hi is None else hi
        if isinstance(lo, (int, float)) and lo >= 0:
            return float(lo), float(hi) if isinstance(hi, (int, float)) else math.inf
    return None


def _non_negative(node: fx.Node, mods: dict[str, nn.Module]) -> bool:
    """Can this tensor never be negative? ReLU-like ops, and pools / reshapes of them."""
    if _clip_bounds(node, mods) is not None:
        return True
    src = node.args[0] if node.args and isinstance(node.args[0], fx.Node) else None
    keeps = ((node.op == "call_module" and isinstance(mods.get(node.target), _KEEPS_SIGN_MODULES))
             or (node.op == "call_function" and node.target in _KEEPS_SIGN_FNS)
             or (node.op == "call_method" and node.target in _KEEPS_SIGN_METHODS))
    return src is not None and keeps and _non_negative(src, mods)


def _fused_into_add(node: fx.Node, mods: dict[str, nn.Module]) -> bool:
    """Is this an INT8 convolution's output whose one consumer is a residual add? OpenVINO's CPU
    plugin fuses such a conv, its output quantizer and the add into one kernel, and there (a
    FakeQuantize as the conv's first post-op, followed by the sum and another FakeQuantize)
    replaces the quantizer by its scale: the conv output enters the add unrounded."""
    m = mods.get(node.target) if node.op == "call_module" else None
    return (isinstance(m, QuantConv2d) and m.w_bits == 8 and len(node.users) == 1
            and _is_add(next(iter(node.users))))


def _feeds_float_op(node: fx.Node, mods: dict[str, nn.Module]) -> bool:
    """Is this an INT8 convolution's output that an op other than a ReLU-like one consumes
    (HardSwish, SiLU, a squeeze-excite gate)? ONNX Runtime runs such a conv as QLinearConv only
    when its output is quantized; otherwise it dequantizes the weights and convolves in float."""
    m = mods.get(node.target) if node.op == "call_module" else None
    return (isinstance(m, QuantConv2d) and m.w_bits == 8 and bool(node.users)
            and all(u.op != "output" for u in node.users)
            and any(_clip_bounds(u, mods) is None for u in node.users))


def _constant_nodes(gm: fx.GraphModule) -> set[fx.Node]:
    """Nodes computed from parameters and buffers alone, not from the input (LeViT's attention-bias
    table: a parameter gathered by an index buffer). An add of such a constant is a bias, not a
    residual: quantizing it as an activation buys no integer kernel, and OpenVINO's low-precision
    AddTransformation fails to compile a dequantized constant entering an add ('index 0 out of range')."""
    const: set[fx.Node] = set()
    for node in gm.graph.nodes:  # topological order
        if node.op == "get_attr" or (node.op in ("call_function", "call_method", "call_module")
                                     and node.all_input_nodes and all(a in const for a in node.all_input_nodes)):
            const.add(node)
    return const


def _quantize_tensors(gm: fx.GraphModule, layers: set[str], act_bits: int,
                      tensors: list[str] | None, unsigned: bool | list[str],
                      fused_residual: bool = False, conv_outputs: bool = False) -> tuple[list[str], list[str]]:
    """Insert one ActQuant per chosen tensor, used by its quantized consumers. `tensors` replays
    a stored choice (by node name); None chooses: inputs of quantized layers and of adds
    (`fused_residual`: not an INT8 conv output that only a residual add consumes, as OpenVINO
    executes it, see `_fused_into_add`), and with `conv_outputs` also INT8 conv outputs that a
    float op consumes (`_feeds_float_op`). `unsigned`: True quantizes the non-negative ones
    unsigned; a list replays a stored choice. Returns (tensors, unsigned tensors)."""
    const = _constant_nodes(gm)

    def consumers(node: fx.Node) -> list[fx.Node]:
        return [u for u in node.users
                if (u.op == "call_module" and u.target in layers and u.args and u.args[0] is node)
                or (_is_add(u) and not any(a in const for a in u.args))]

    nodes = {n.name: n for n in gm.graph.nodes}
    mods = dict(gm.named_modules())
    if tensors is None:
        chosen = [n for n in gm.graph.nodes if n.op not in ("output", "get_attr") and n not in const and consumers(n)
                  and not (fused_residual and _fused_into_add(n, mods))]
        if conv_outputs:
            chosen = [n for n in gm.graph.nodes if n in chosen or _feeds_float_op(n, mods)]
    else:
        missing = [t for t in tensors if t not in nodes]
        if missing:
            raise InputError(f"the quantized checkpoint does not match this model's graph (no tensor "
                             f"{missing[0]!r}): was it saved by another edgekit or model version?")
        chosen = [nodes[t] for t in tensors]
    # a conv output rounded for the integer kernel: every consumer sees the rounded tensor (a
    # stored choice replays this too: the float op must read what it read in training)
    rounded_out = {n.name for n in chosen if conv_outputs and _feeds_float_op(n, mods)}
    # a block kept float (opaque) reads the rounded tensor too: OpenVINO mis-executes a tensor that
    # is quantized for an add and read unquantized by such a block (EfficientViT-B0: the add lost
    # its other input, 31% logit error; rounded for both, 0.9%, the rounding)
    opaque = set(getattr(gm, OPAQUE_ATTR, []))
    rounded_out |= {n.name for n in chosen if any(u.op == "call_module" and u.target in opaque for u in n.users)}
    if isinstance(unsigned, bool):
        unsigned = [n.name for n in chosen if _non_negative(n, mods)] if unsigned else []
    for node in chosen:
        users = list(node.users) if node.name in rounded_out else consumers(node)
        name = f"aq_{node.name}"
        bounds = _clip_bounds(node, mods)
        cap = bounds[1] if node.name in unsigned and bounds and math.isfinite(bounds[1]) else None
        gm.add_submodule(name, ActQuant(act_bits, unsigned=node.name in unsigned, cap=cap))
        with gm.graph.inserting_after(node):
            q = gm.graph.call_module(name, (node,))
        for u in users:
            u.replace_input_with(node, q)
    gm.graph.lint()
    gm.recompile()
    return [n.name for n in chosen], list(unsigned)


def _drop_identities(gm: fx.GraphModule) -> None:
    """Bypass Identity and empty Sequential calls (folded BNs, plain shortcuts). Otherwise a
    tensor and its identity alias get two quantizers whose scales drift apart in QAT, the
    producing conv then feeds two QuantizeLinear nodes, and ONNX Runtime no longer fuses it."""
    mods = dict(gm.named_modules())
    for node in list(gm.graph.nodes):
        m = mods.get(node.target) if node.op == "call_module" else None
        if isinstance(m, nn.Identity) or (isinstance(m, nn.Sequential) and len(m) == 0):
            node.replace_all_uses_with(node.args[0])
            gm.graph.erase_node(node)
    gm.recompile()


def link_bias_grid(gm: fx.GraphModule) -> None:
    """Put each quantized layer's bias on the INT32 grid of the ActQuant feeding it (what
    `prepare(int_bias=True)` does; for re-scoring a checkpoint trained before that default)."""
    mods = dict(gm.named_modules())
    for node in gm.graph.nodes:
        if node.op == "call_module" and isinstance(mods.get(node.target), (QuantConv2d, QuantLinear)) and node.args:
            src = node.args[0]
            if isinstance(src, fx.Node) and src.op == "call_module" and isinstance(mods.get(src.target), ActQuant):
                mods[node.target].link_input(mods[src.target])


def prepare(model: nn.Module, weights: dict[str, int], *, act_bits: int = 8, label: str = "int8",
            tensors: list[str] | None = None, unsigned: bool | list[str] = False,
            int_bias: bool = True, residual: str = "rounded", conv_outputs: bool | None = None,
            opaque: list[str] | None = None, input_size: Sequence[int] | None = None,
            folded_bn: list[str] | None = None) -> fx.GraphModule:
    """Fold BN, swap the planned layers for fake-quant ones, quantize their input tensors (and
    residual adds'). The caller calibrates. `model` itself is modified (BN folded).
    `unsigned=True`: non-negative tensors on the unsigned grid (not for TensorRT).
    `int_bias`: biases on the INT32 grid the integer kernels add (see fakequant.py).
    `residual`: "fused" for OpenVINO (see QuantSpec.residual); "rounded" with `unsigned=True` is
    ONNX Runtime's form, which also quantizes INT8 conv outputs that a float op consumes
    (`conv_outputs`: None follows the form; True / False forces it, to compare). `opaque`: the
    blocks to keep float as fx cannot trace them, when known (a stored spec); None searches.
    `input_size` (C, H, W) also folds BatchNorm1d into a Linear before it (`_fold_linear_bn`);
    `folded_bn` replays a stored spec's folds instead."""
    gm = _trace(model, opaque)  # the search for untraceable blocks runs once, here
    opaque = getattr(gm, OPAQUE_ATTR)
    folded = _fold_batchnorm(model, gm, input_size, folded_bn)
    gm = _trace(model, opaque)  # the folded batch norms are gone from the graph
    # layers inside a block fx cannot trace stay float: no quantizer can be placed around them
    weights = {n: b for n, b in weights.items() if not any(n == o or n.startswith(f"{o}.") for o in opaque)}
    if not weights:
        raise InputError(f"nothing to quantize: every Conv2d/Linear is inside blocks torch.fx cannot trace "
                         f"({', '.join(opaque[:3])})")
    _drop_identities(gm)
    for name, b in weights.items():
        layer = gm.get_submodule(name)
        cls = _quant_class(layer)
        if cls is None:
            raise InputError(f"layer {name} ({type(layer).__name__}) cannot be quantized: keep it in float "
                             f"with --keep-float {name}")
        gm.set_submodule(name, cls.from_float(layer, b))
    if residual not in ("rounded", "fused"):
        raise InputError(f"residual form {residual!r} is not supported: use rounded or fused")
    # ONNX Runtime's form (the only runtime taking rounded residuals on an unsigned grid) also
    # rounds conv outputs that a float op consumes, so those convs run in integer kernels
    if conv_outputs is None:
        conv_outputs = residual == "rounded" and unsigned is True
    chosen, uns = _quantize_tensors(gm, set(weights), act_bits, tensors, unsigned, residual == "fused",
                                    conv_outputs=conv_outputs)
    if int_bias:
        link_bias_grid(gm)
    spec = QuantSpec(weights=dict(weights), act_bits=act_bits, tensors=chosen, unsigned=uns, folded_bn=folded, opaque=opaque,
                     label=label, int_bias=int_bias, residual=residual, conv_outputs=conv_outputs)
    setattr(gm, SPEC_ATTR, spec.model_dump())
    return gm


def rebuild(model: nn.Module, spec: dict) -> fx.GraphModule:
    """A freshly built float arch -> the quantized structure a stored spec describes (load its
    state_dict afterwards)."""
    s = QuantSpec.model_validate(spec)
    return prepare(model, s.weights, act_bits=s.act_bits, label=s.label, tensors=s.tensors, unsigned=s.unsigned,
                   int_bias=s.int_bias, residual=s.residual, conv_outputs=s.conv_outputs, opaque=s.opaque,
                   folded_bn=s.folded_bn)


def spec_of(model: nn.Module) -> QuantSpec | None:
    raw = getattr(model, SPEC_ATTR, None)
    return QuantSpec.model_validate(raw) if isinstance(raw, dict) else None


def is_quantized(model: nn.Module) -> bool:
    return spec_of(model) is not None


def quant_layers(model: nn.Module) -> dict[str, QuantConv2d | QuantLinear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, (QuantConv2d, QuantLinear))}


def unsigned_tensors(model: nn.Module | None) -> list[str]:
    """The activation tensors quantized unsigned: TensorRT takes signed INT8 only."""
    spec = spec_of(model) if model is not None else None
    return list(spec.unsigned) if spec else []


def int4_convolutions(model: nn.Module | None) -> list[str]:
    """The convolutions with 4-bit weights: no TensorRT runs them (its INT4 is weight-only
    MatMul/Gemm), so every TensorRT path refuses such a model up front."""
    if model is None:
        return []
    return [n for n, m in quant_layers(model).items() if isinstance(m, QuantConv2d) and m.w_bits == 4]


def act_quants(model: nn.Module) -> dict[str, ActQuant]:
    return {n: m for n, m in model.named_modules() if isinstance(m, ActQuant)}


@torch.no_grad()
def calibrate(model: nn.Module, batches: Iterable[torch.Tensor]) -> None:
    """Set every activation scale from real images (MSE-optimal clipping on observed values)."""
    aqs = list(act_quants(model).values())
    was = model.training
    model.eval()
    for a in aqs:
        a.observing = True
    try:
        for x in batches:
            model(x)
    finally:
        for a in aqs:
            a.calibrate()
        model.train(was)
