"""What the ONNX parser of each TensorRT version accepts, checked here before a bundle is written.

An engine is built on the device, with the device's TensorRT (JetPack fixes it: 8.2 on the
original Jetson Nano, 10.3 on Orin with JetPack 6.1), so a file that only a newer parser reads
fails there, far from the machine that wrote it. Each rule below names where it comes from;
a violation names the node and the rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError

__all__ = ["TrtRules", "Violation", "RULES", "DEFAULT_VERSION", "rules_for", "check_onnx"]

# The operators each parser imports ("Y" rows of onnx-tensorrt docs/operators.md). 8.2: the
# 8.4 list less Xor (added in 8.4, changelog). 8.5/8.6: additions per the changelog. 10.3: the
# 10.15 list less what 10.4-10.15 added (window functions, STFT, Attention, RMSNormalization...).
_OPS_8_2 = frozenset("""
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization Cast Ceil
Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DepthToSpace
DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten Floor GRU Gather
GatherElements GatherND Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool Greater GreaterOrEqual
HardSigmoid Identity If ImageScaler InstanceNormalization IsNaN LRN LSTM LeakyRelu Less LessOrEqual
Log LogSoftmax Loop LpNormalization LpPool MatMul Max MaxPool Mean Min Mul Neg NonMaxSuppression Not
Or PRelu Pad ParametricSoftplus Pow QuantizeLinear RNN RandomUniform RandomUniformLike Range ReduceL1
ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum
ReduceSumSquare Relu Reshape Resize ReverseSequence Round ScaledTanh Scan Scatter ScatterElements
ScatterND Selu Shape Sigmoid Sign Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split
Sqrt Squeeze Sub Sum Tan Tanh ThresholdedRelu Tile TopK Transpose Unsqueeze Upsample Where
""".split())
_OPS_8_5 = _OPS_8_2 | frozenset("""
GridSample HardSwish Mod NonZero OneHot Reciprocal RoiAlign MeanVarianceNormalization Xor
""".split())
_OPS_8_6 = _OPS_8_5 | frozenset("GroupNormalization IsInf LayerNormalization".split())
_OPS_10_3 = _OPS_8_6 | frozenset("""
CastLike DeformConv Gelu Hardmax Mish RandomNormal RandomNormalLike Shrink Trilu
""".split())


@dataclass(frozen=True)
class TrtRules:
    """One TensorRT version's parser, as far as a vision classifier's graph is concerned."""

    version: str
    min_opset: int
    max_opset: int
    ops: frozenset[str]
    #: weight-only INT4 DequantizeLinear feeding a MatMul/Gemm (TensorRT 10; not convolutions)
    int4_weights: bool
    source: str

    @property
    def export_opset(self) -> int:
        """The opset edgekit writes for this version: the newest it accepts, capped at 18 (the
        dynamo exporter's own; lower ones come from the TorchScript exporter)."""
        return min(self.max_opset, 18)


RULES: dict[str, TrtRules] = {r.version: r for r in (
    TrtRules("8.2", 7, 13, _OPS_8_2, False,
             "onnx-tensorrt operators.md: \"TensorRT 8.2 supports operators up to Opset 13\"; parser reads from opset 7"),
    TrtRules("8.5", 7, 17, _OPS_8_5, False,
             "onnx-tensorrt operators.md: \"TensorRT 8.5 supports operators up to Opset 17\""),
    TrtRules("8.6", 7, 17, _OPS_8_6, False,
             "onnx-tensorrt operators.md (8.6, also for DLA): opsets up to 17"),
    TrtRules("10.3", 9, 20, _OPS_10_3, True,
             "onnx-tensorrt 10.x operators.md: ONNX opsets 9 to 20 (no opset change before 10.6)"),
)}
#: Rules used when no profile names a TensorRT version (JetPack 6.1's).
DEFAULT_VERSION = "10.3"


def _key(v: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in v.split(".")[:2])
    except ValueError:
        raise InputError(f"TensorRT version {v!r} is not a version number like 8.2 or 10.3") from None


def rules_for(version: str | None) -> TrtRules:
    """The rules of `version`, or of the newest known version below it (a newer parser accepts
    what an older one does)."""
    version = version or DEFAULT_VERSION
    known = sorted(RULES, key=_key)
    below = [k for k in known if _key(k) <= _key(version)]
    if not below:
        raise InputError(f"TensorRT {version} is older than any version edgekit checks against "
                         f"({', '.join(known)}): use JetPack 4.6 (TensorRT 8.2) or newer")
    return RULES[below[-1]]


@dataclass(frozen=True)
class Violation:
    """A node (or graph input) that the target TensorRT would reject, and the rule it breaks."""

    node: str
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.node}: [{self.rule}] {self.message}"


def check_onnx(model: Any, version: str | None = None, *, static_shapes: bool = False) -> list[Violation]:
    """Check an ONNX model (path or ModelProto) against TensorRT `version`'s parser: opset range,
    operators, explicit-quantization Q/DQ rules and input shapes. Empty list = nothing found."""
    import onnx

    from ..exporters.onnx import opset_of

    if isinstance(model, (str, Path)):
        model = onnx.load(str(model), load_external_data=False)
    rules = rules_for(version)
    g = model.graph
    out: list[Violation] = []
    opset = opset_of(model)
    if not rules.min_opset <= opset <= rules.max_opset:
        out.append(Violation("<model>", "opset", f"opset {opset} is outside TensorRT {rules.version}'s "
                             f"{rules.min_opset}-{rules.max_opset}: re-export with opset {rules.export_opset}"))
    for n in g.node:
        name = n.name or f"{n.op_type}({', '.join(n.output)})"
        if n.domain not in ("", "ai.onnx"):
            out.append(Violation(name, "operator", f"{n.domain}::{n.op_type} is a custom-domain operator "
                                 f"TensorRT {rules.version} has no importer for"))
        elif n.op_type not in rules.ops:
            out.append(Violation(name, "operator", f"{n.op_type} is not supported by TensorRT "
                                 f"{rules.version}'s ONNX parser"))
    out += _check_qdq(g, rules)
    out += _check_shapes(g, static_shapes)
    return out


def _check_qdq(g, rules: TrtRules) -> list[Violation]:
    """Explicit quantization (TensorRT developer guide, "Explicit Quantization"): signed INT8,
    zero point 0 (symmetric), activations per-tensor, weights per-tensor or per output channel."""
    from onnx import TensorProto, numpy_helper

    consts = {t.name: t for t in g.initializer}
    for n in g.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            consts[n.output[0]] = n.attribute[0].t
    users: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            users.setdefault(i, []).append(n)
    out = []
    for n in g.node:
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        name = n.name or n.output[0]
        weight = n.op_type == "DequantizeLinear" and n.input[0] in consts
        if len(n.input) < 3 or not n.input[2]:
            out.append(Violation(name, "qdq-type", "no zero point: ONNX then means UINT8, which TensorRT "
                                 "rejects; write an INT8 zero point of 0"))
        elif n.input[2] not in consts:
            out.append(Violation(name, "qdq-zero-point", "zero point is computed, not a constant"))
        else:
            zp = consts[n.input[2]]
            gemm = weight and all(u.op_type in ("MatMul", "Gemm") for u in users.get(n.output[0], []))
            allowed = {TensorProto.INT8} | ({TensorProto.INT4} if rules.int4_weights and gemm else set())
            if zp.data_type not in allowed:
                kind = TensorProto.DataType.Name(zp.data_type)
                hint = ((" (TensorRT 10 runs INT4 as weight-only MatMul/Gemm quantization, not in "
                         "convolutions: export int8)" if rules.int4_weights else " (INT4 weights need TensorRT 10)")
                        if zp.data_type == TensorProto.INT4 else
                        " (UINT8 activations are ONNX Runtime's form, not TensorRT's)" if zp.data_type == TensorProto.UINT8 else "")
                out.append(Violation(name, "qdq-type", f"{kind} quantization; TensorRT {rules.version} takes "
                                     f"signed INT8{' or INT4 weights' if rules.int4_weights else ''}{hint}"))
            elif numpy_helper.to_array(zp).astype(int).any():
                out.append(Violation(name, "qdq-zero-point", "non-zero zero point (asymmetric); TensorRT "
                                     "quantizes symmetrically: zero point must be 0"))
        if n.input[1] not in consts:
            out.append(Violation(name, "qdq-scale", "scale is computed, not a constant"))
            continue
        scale = numpy_helper.to_array(consts[n.input[1]])
        if (scale <= 0).any():
            out.append(Violation(name, "qdq-scale", "scale must be positive"))
        if scale.size <= 1:
            continue
        axis = next((a.i for a in n.attribute if a.name == "axis"), 1)
        if not weight:
            out.append(Violation(name, "qdq-per-tensor-activation", f"activation quantized per channel "
                                 f"({scale.size} scales on axis {axis}); TensorRT takes one scale per activation tensor"))
            continue
        consumer = next(iter(users.get(n.output[0], [])), None)
        want = 1 if consumer is not None and consumer.op_type == "ConvTranspose" else 0
        dims = list(consts[n.input[0]].dims)
        if axis != want or scale.size != dims[axis]:
            out.append(Violation(name, "qdq-weight-axis", f"weight scales on axis {axis} ({scale.size} of them, "
                                 f"weight {dims}); TensorRT wants one per output channel (axis {want})"))
    return out


def _check_shapes(g, static: bool) -> list[Violation]:
    """Static profiles (the DLA) need fixed inputs; elsewhere only the batch axis may vary: the
    bundle's build script gives min/opt/max for that axis alone."""
    init = {t.name for t in g.initializer}
    out = []
    for v in g.input:
        if v.name in init:
            continue
        dims = v.type.tensor_type.shape.dim
        free = [i for i, d in enumerate(dims) if not d.HasField("dim_value") or d.dim_value <= 0]
        if static and free:
            out.append(Violation(v.name, "static-shape", f"input has dynamic axes {free}; this profile needs a "
                                 "static shape (export with a fixed batch)"))
        elif [i for i in free if i != 0]:
            out.append(Violation(v.name, "dynamic-shape", f"input axes {[i for i in free if i]} are dynamic; "
                                 "only the batch axis (0) may be, with the build script's min/opt/max shapes"))
    return out
