"""Fake-quant torch model -> QDQ ONNX with the learned scales, for a named target runtime.

The exporter sees a plain model: dequantized weights, and activation quantizers as
`fake_quantize_per_tensor_affine` (which it writes as QuantizeLinear -> DequantizeLinear with
the learned scale, zero point 0). Each quantized Conv/Gemm then gets its integer weight
initializer + DequantizeLinear (per output channel, axis 0, zero point 0).

Targets differ only in how the same integer grid is written down:
- "tensorrt": TensorRT's explicit-quantization rules: signed INT8 activations, zero point 0,
  symmetric per-channel weights, float bias. This is exactly the torch model's grid. A model
  trained with unsigned activations (prepare(unsigned=True)) has no such form and is refused.
- "onnxruntime": activations as UINT8 and an INT32 bias, the form ONNX Runtime's x86 kernels fuse
  (U8S8 QLinearConv; with signed activations it fused 9 of 20 ResNet-20 convs and ran 2.5x
  slower). Unsigned tensors are written as they are (UINT8, zero point 0): exact. Signed tensors
  shift to zero point 128 (same values), except after a ReLU, where zero point 0 lets ONNX
  Runtime drop the ReLU into the conv but saturates at 255 steps instead of 127: outliers the
  signed torch model clips pass here (why a model for these runtimes is trained unsigned). A
  ReLU6 whose bound lies at or beyond the grid's last step is written as a ReLU for the same
  fusion. OpenVINO converts this form too. Measured top-1 agreement with the torch model is
  reported for every artifact.
4-bit weights are written as opset-21 INT4 initializers.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import ExportError
from ..models.clone import clone_module

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

    from ..models import ModelCard

__all__ = ["export_qdq", "TARGETS", "float_twin", "check_tensorrt_rules"]

TARGETS = ("tensorrt", "onnxruntime")
UNSIGNED_FOR_TENSORRT = ("this model was quantized with unsigned activations (for ONNX Runtime / OpenVINO) and "
                         "TensorRT takes signed INT8 only: quantize again with --activations signed (or a "
                         "TensorRT profile)")


def float_twin(qmodel: "nn.Module") -> tuple["nn.Module", dict[str, dict]]:
    """A copy whose quantized layers are plain layers holding the dequantized weights and whose
    activation quantizers export as QuantizeLinear/DequantizeLinear, plus each layer's record:
    {name: {"bits", "int_weight", "w_scale", "bias"}}."""
    import torch
    from torch import nn

    from ..quant import QuantConv2d, act_quants, quant_layers

    twin = clone_module(qmodel)
    records = {}
    for name, q in quant_layers(twin).items():
        iw, s = q.int_weight()
        bias = q.quant_bias()  # on the INT32 grid where the torch model puts it there
        if isinstance(q, QuantConv2d):
            plain = nn.Conv2d(q.in_channels, q.out_channels, q.kernel_size, q.stride, q.padding,
                              q.dilation, q.groups, q.bias is not None, q.padding_mode)
        else:
            plain = nn.Linear(q.in_features, q.out_features, q.bias is not None)
        with torch.no_grad():
            plain.weight.copy_(iw * s.view((-1,) + (1,) * (iw.ndim - 1)))
            if bias is not None:
                plain.bias.copy_(bias)
        records[name] = {"bits": q.w_bits, "int_weight": iw.to(torch.int8).numpy(),
                         "w_scale": s.detach().float().numpy(),
                         "bias": bias.detach().float().numpy() if bias is not None else None}
        twin.set_submodule(name, plain)
    for a in act_quants(twin).values():
        a.export_scale = float(a.scale)
    return twin.eval(), records


def export_qdq(qmodel: "nn.Module", card: "ModelCard", path: Path, *, target: str = "tensorrt",
               work: Path | None = None, opset: int | None = None, dynamic_batch: bool = True) -> Path:
    """Write the QDQ ONNX of a fake-quant model for `target` (see module docstring); `opset`
    and `dynamic_batch` as in `export_onnx` (a device's TensorRT may need both fixed)."""
    import onnx

    from .onnx import attach_card, export_onnx

    from ..quant import unsigned_tensors

    if target not in TARGETS:
        raise ExportError(f"unknown QDQ target {target!r}; valid: {', '.join(TARGETS)}")
    if target == "tensorrt" and unsigned_tensors(qmodel):
        raise ExportError(UNSIGNED_FOR_TENSORRT)
    twin, records = float_twin(qmodel)
    int4 = any(r["bits"] == 4 for r in records.values())
    path = Path(path)
    float_path = (work or path.parent) / f".{path.stem}.float.onnx"
    export_onnx(twin, card, float_path, opset=21 if int4 else opset, dynamic_batch=dynamic_batch)
    model = onnx.load(str(float_path))
    float_path.unlink(missing_ok=True)
    _Rewriter(model, records, target).run()
    _compact_names(model.graph)
    if int4:
        _set_opset(model, 21)
    try:
        onnx.checker.check_model(model)
    except Exception as e:  # noqa: BLE001
        raise ExportError(f"QDQ graph for {target} failed onnx.checker: {str(e).splitlines()[0][:200]}") from None
    tmp = path.with_name(f".{path.name}.tmp")
    onnx.save(model, str(tmp))
    tmp.replace(path)
    attach_card(path, card)
    return path


def _compact_names(graph) -> None:
    """Short tensor and node names. The exporter's module-path names were ~15% of a small
    model's file (MobileNetV2 x0.5: 90 KB of 560 KB at W4A8); the graph's inputs and outputs
    keep their names."""
    keep = {v.name for v in graph.input} | {v.name for v in graph.output}
    new: dict[str, str] = {}

    def short(name: str) -> str:
        if not name or name in keep:
            return name
        return new.setdefault(name, f"t{len(new)}")

    for t in graph.initializer:
        t.name = short(t.name)
    for i, n in enumerate(graph.node):
        n.name = f"n{i}"
        n.input[:] = [short(x) for x in n.input]
        n.output[:] = [short(x) for x in n.output]
    del graph.value_info[:]


def _set_opset(model, version: int) -> None:
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx") and o.version < version:
            o.version = version


class _Rewriter:
    def __init__(self, model, records: dict[str, dict], target: str) -> None:
        from onnx import numpy_helper

        self.graph, self.records, self.target = model.graph, records, target
        self._constants_to_initializers()
        self.inits = {t.name: t for t in self.graph.initializer}
        self.values = lambda name: numpy_helper.to_array(self.inits[name])
        self.producer = {o: n for n in self.graph.node for o in n.output}
        self.new_nodes: list = []
        self._n = 0

    def _constants_to_initializers(self) -> None:
        """Scales and zero points as initializers (the legacy exporter writes Constant nodes)."""
        qdq_inputs = {i for n in self.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")
                      for i in n.input[1:]}
        for n in [n for n in self.graph.node if n.op_type == "Constant" and n.output[0] in qdq_inputs]:
            t = n.attribute[0].t
            t.name = n.output[0]
            self.graph.initializer.append(t)
            self.graph.node.remove(n)

    def _name(self, base: str) -> str:
        self._n += 1
        return f"{base}__q{self._n}"

    def _const(self, name: str, array: np.ndarray, dtype=None) -> str:
        from onnx import TensorProto, helper, numpy_helper

        if dtype == TensorProto.INT4:  # two signed nibbles per byte, low nibble first
            flat = array.astype(np.int8).flatten()
            if flat.size % 2:
                flat = np.append(flat, 0).astype(np.int8)
            packed = ((flat[0::2] & 0x0F) | ((flat[1::2] & 0x0F) << 4)).astype(np.uint8)
            t = helper.make_tensor(name, TensorProto.INT4, list(array.shape), packed.tobytes(), raw=True)
        else:
            t = numpy_helper.from_array(array, name)
        self.graph.initializer.append(t)
        return name

    def _weight(self, node, rec: dict, transposed: bool = False) -> None:
        """Replace `node`'s float weight by integer weight + DequantizeLinear (per output channel:
        axis 0, or axis 1 for a MatMul's pre-transposed (in, out) weight)."""
        from onnx import TensorProto, helper

        wname = node.input[1]
        iw, s = rec["int_weight"], rec["w_scale"]
        # a MatMul's (in, out) weight: scales on axis 1 for ONNX Runtime (MatMulIntegerToFloat
        # takes them), but TensorRT takes axis 0 only: there (out, in) weights, then a Transpose
        transpose_after = transposed and self.target == "tensorrt"
        if transposed and not transpose_after:
            iw = np.ascontiguousarray(iw.T)
        src = self._source(wname)
        if src not in self.inits:
            raise ExportError(f"weight {wname} is not a constant in the ONNX graph")
        stored = self.inits[src]
        onnx_shape = tuple(stored.dims)[::-1] if transpose_after else tuple(stored.dims)
        if onnx_shape != iw.shape:
            raise ExportError(f"weight {wname}: ONNX shape {tuple(stored.dims)} does not fit model weight {iw.shape}")
        dtype = TensorProto.INT4 if rec["bits"] == 4 else TensorProto.INT8
        q = self._const(self._name(f"{wname}_int{rec['bits']}"), iw, dtype)
        sc = self._const(self._name(f"{wname}_scale"), s.astype(np.float32))
        zp = self._const(self._name(f"{wname}_zp"), np.zeros(len(s), np.int8), dtype)
        dq = self._name(f"{wname}_dq")
        self.new_nodes.append(helper.make_node("DequantizeLinear", [q, sc, zp], [dq], name=dq,
                                               axis=1 if transposed and not transpose_after else 0))
        if transpose_after:
            t = self._name(f"{wname}_t")
            self.new_nodes.append(helper.make_node("Transpose", [dq], [t], name=t, perm=[1, 0]))
            dq = t
        node.input[1] = dq
        in_dq = self.producer.get(node.input[0])
        if (self.target == "onnxruntime" and rec["bias"] is not None and len(node.input) > 2
                and in_dq is not None and in_dq.op_type == "DequantizeLinear"):
            # ONNX Runtime's integer conv wants an INT32 bias on the grid in_scale * w_scale; the
            # node's own bias (the twin's quantized one): its weight may be another layer's equal one
            bias = self._constant(self._source(node.input[2]))
            bias = rec["bias"] if bias is None else bias
            bscale = (float(self.values(in_dq.input[1])) * s).astype(np.float32)
            bq = np.clip(np.round(bias / bscale), -2**31, 2**31 - 1).astype(np.int32)
            bi = self._const(self._name(f"{wname}_bias_int32"), bq)
            bs = self._const(self._name(f"{wname}_bias_scale"), bscale)
            bdq = self._name(f"{wname}_bias_dq")
            self.new_nodes.append(helper.make_node("DequantizeLinear", [bi, bs], [bdq], name=bdq, axis=0))
            node.input[2] = bdq

    def _source(self, name: str) -> str:
        """The tensor behind a chain of Identity nodes (how the legacy exporter shares equal weights)."""
        while name not in self.inits and name in self.producer and self.producer[name].op_type == "Identity":
            name = self.producer[name].input[0]
        return name

    def _transposed_matmuls(self, rec: dict) -> list:
        """The MatMuls holding a Linear layer's weight as an anonymous (in, out) initializer: both
        exporters write a Linear on a 3-D+ input (ConvNeXt's, a ViT's MLP) as MatMul with W^T
        constant-folded, so the name is gone; the values are the twin's dequantized weight,
        transposed, bit for bit. Every MatMul reading it, directly or through Identity nodes: the
        exporter shares equal weights that way (LeViT's zero-initialised residual BNs, folded,
        give several all-zero weights; only the first was rewritten, the others ran in float)."""
        iw = rec["int_weight"]
        if iw.ndim != 2:
            return []
        want = (iw.astype(np.float32) * rec["w_scale"].astype(np.float32)[:, None]).T
        found = []
        for node in self.graph.node:
            src = self._source(node.input[1]) if node.op_type == "MatMul" and len(node.input) == 2 else None
            if (src in self.inits and tuple(self.inits[src].dims) == want.shape
                    and np.array_equal(self.values(src), want)):
                found.append(node)
        return found

    def _constant(self, name: str) -> np.ndarray | None:
        from onnx import numpy_helper

        if name in self.inits:
            return self.values(name)
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant" and node.attribute:
            return numpy_helper.to_array(node.attribute[0].t)
        return None

    def _clip_to_relu(self, q) -> bool:
        """Clip(0, c) -> QuantizeLinear where c rounds to >= 127 steps (ReLU6 in MobileNets): the
        torch quantizer saturates where the clip does, so the clip's upper bound never acts on
        the grid; written as a Relu, ONNX Runtime folds it into the conv (it cannot fold a Clip whose
        bound lies inside the UINT8 range, and then leaves the conv in float)."""
        clip = self.producer.get(q.input[0])
        if clip is None or clip.op_type != "Clip" or len(clip.input) < 3:
            return False
        lo, hi = self._constant(clip.input[1]), self._constant(clip.input[2])
        scale = self._constant(q.input[1])
        users = [n for n in self.graph.node if clip.output[0] in n.input]
        last_step = 255 if self._unsigned(q) else 127
        if (lo is None or hi is None or scale is None or float(lo) != 0.0
                or round(float(hi) / float(scale)) < last_step or any(u.op_type != "QuantizeLinear" for u in users)):
            return False
        clip.op_type = "Relu"
        del clip.input[1:]
        return True

    def _unsigned(self, q) -> bool:
        zp = self._constant(q.input[2]) if len(q.input) > 2 else None
        return zp is not None and zp.dtype == np.uint8

    def _retype_activations(self) -> None:
        """INT8 zero point 0 -> UINT8 zero point 0 (after a ReLU) or 128 (signed tensors): the
        same grid, in the form ONNX Runtime's x86 kernels fuse. Unsigned tensors already are."""
        for q in [n for n in self.graph.node if n.op_type == "QuantizeLinear"]:
            if self._unsigned(q):
                self._clip_to_relu(q)
                continue
            src = self.producer.get(q.input[0])
            relu = (src is not None and src.op_type == "Relu") or self._clip_to_relu(q)
            zp = np.array(0 if relu else 128, np.uint8)
            z = self._const(self._name(f"{q.input[0]}_zp_u8"), zp)
            for n in [q] + [d for d in self.graph.node if d.op_type == "DequantizeLinear" and d.input[0] == q.output[0]]:
                if len(n.input) < 3:
                    n.input.append(z)
                else:
                    n.input[2] = z

    def run(self) -> None:
        from ..backends.onnxruntime import _toposort

        if self.target == "onnxruntime":
            self._retype_activations()
        by_weight = {f"{name}.weight": (name, rec) for name, rec in self.records.items()}
        done = set()
        for node in list(self.graph.node):
            if node.op_type not in ("Conv", "Gemm", "MatMul") or len(node.input) < 2:
                continue
            hit = by_weight.get(node.input[1])
            if hit is None:
                continue
            name, rec = hit
            if node.op_type == "Gemm" and not any(a.name == "transB" and a.i == 1 for a in node.attribute):
                raise ExportError(f"{name}: Gemm without transB cannot take per-output-channel weights")
            self._weight(node, rec)
            done.add(name)
        for name in sorted(set(self.records) - done):
            rec = self.records[name]
            nodes = self._transposed_matmuls(rec)
            for node in nodes:
                self._weight(node, rec, transposed=True)
            if nodes or any(_same_weight(rec, self.records[d]) for d in done):
                done.add(name)  # (or an exporter merged its weight with an equal one, already in integers)
        missing = sorted(set(self.records) - done)
        if missing:
            raise ExportError(f"QDQ export: layer(s) {', '.join(missing[:3])} not found in the ONNX graph "
                              "(the exporter renamed or fused their weights)")
        self.graph.node.extend(self.new_nodes)
        _toposort(self.graph)
        used = {i for n in self.graph.node for i in n.input}
        for n in [n for n in self.graph.node if n.op_type == "Constant" and n.output[0] not in used]:
            self.graph.node.remove(n)  # e.g. the bounds of a Clip written as a Relu
        for n in [n for n in self.graph.node if n.op_type == "Identity" and n.output[0] not in used]:
            self.graph.node.remove(n)  # an alias of a float weight now stored in integers
        used = {i for n in self.graph.node for i in n.input}  # float weights go here too
        for t in [t for t in self.graph.initializer if t.name not in used]:
            self.graph.initializer.remove(t)


def _same_weight(a: dict, b: dict) -> bool:
    return (a["bits"] == b["bits"] and a["int_weight"].shape == b["int_weight"].shape
            and np.array_equal(a["int_weight"], b["int_weight"]) and np.array_equal(a["w_scale"], b["w_scale"]))


def check_tensorrt_rules(path: Path, version: str | None = None) -> list[str]:
    """What keeps a QDQ ONNX from TensorRT `version` (default: the newest edgekit knows), as
    one "node: [rule] message" line each; empty = nothing. See edgekit.tensorrt.rules."""
    from ..tensorrt.rules import check_onnx

    return [str(v) for v in check_onnx(path, version)]
