"""The work in an exported ONNX graph, layer by layer: what the latency model prices.

Each compute node becomes a `LayerWork`: its kind (conv, depthwise, gemm, memory), MACs and the
activation/weight elements it moves, per image. Runtimes fuse activations and BatchNorm into
the convolution before them and drop shape plumbing, so those cost nothing here. In a QDQ graph
the Quantize/DequantizeLinear pairs are read as "this layer runs in integer" and then dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["LayerWork", "GraphWork", "graph_work"]

#: folded into the producing conv/gemm by ONNX Runtime, OpenVINO and TensorRT
_FUSABLE = {"Relu", "Clip", "LeakyRelu", "HardSigmoid", "HardSwish", "Sigmoid", "Tanh",
            "BatchNormalization", "PRelu", "Elu"}
#: no data movement at run time (views, shapes, constants)
_FREE = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Shape", "Constant", "Dropout",
         "Cast", "ConstantOfShape", "Gather", "Range", "Size", "QuantizeLinear", "DequantizeLinear"}
_CONV = {"Conv", "ConvTranspose", "QLinearConv", "ConvInteger"}
_GEMM = {"Gemm", "MatMul", "QGemm", "MatMulInteger", "QLinearMatMul"}


@dataclass
class LayerWork:
    name: str
    op: str
    kind: str                 # conv | depthwise | grouped | gemm | memory
    macs: int                 # per image
    act_elems: int            # activation elements read + written, per image
    weight_elems: int         # read once per call, whatever the batch
    quantized: bool | None    # from Q/DQ in the graph; None: the graph does not say (float file)
    fused: tuple[str, ...] = ()
    out_elems: int = 0        # what a fused activation reads and writes, per image
    cout: int = 0             # output channels (conv/gemm), what vector kernels block
    cin: int = 0              # input channels per group (1 for depthwise)

    def to_dict(self) -> dict:
        return {"name": self.name, "op": self.op, "kind": self.kind, "macs": self.macs,
                "act_elems": self.act_elems, "weight_elems": self.weight_elems,
                "quantized": self.quantized, "fused": list(self.fused), "out_elems": self.out_elems,
                "cout": self.cout, "cin": self.cin}


def _numel(shape) -> int:
    return int(np.prod(shape)) if shape else 1


def _load(model):
    import onnx

    m = onnx.load(str(model)) if isinstance(model, (str, Path)) else model
    m = onnx.ModelProto.FromString(m.SerializeToString())  # a copy: shapes are pinned below
    for inp in m.graph.input:  # batch 1: every count is per image
        dims = inp.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_value = 1
    return onnx.shape_inference.infer_shapes(m)


def _run_shapes(m, missing: set[str]) -> dict[str, list[int]]:
    """Shapes ONNX's inference leaves unknown (a Pad whose pads a subgraph computes, as the legacy
    exporter writes F.pad): read off one batch-1 run in ONNX Runtime. {} if it cannot run."""
    import onnx

    try:
        import onnxruntime as ort

        m = onnx.ModelProto.FromString(m.SerializeToString())
        known = {o.name for o in m.graph.output}
        m.graph.output.extend(onnx.helper.make_empty_tensor_value_info(n) for n in sorted(missing - known))
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        so.log_severity_level = 3
        sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
        inits = {t.name for t in m.graph.initializer}
        feed = {}
        for i in m.graph.input:
            if i.name in inits:
                continue
            t = i.type.tensor_type
            dims = [d.dim_value if d.HasField("dim_value") else 1 for d in t.shape.dim]
            feed[i.name] = np.zeros(dims, dtype=onnx.helper.tensor_dtype_to_np_dtype(t.elem_type))
        names = [o.name for o in sess.get_outputs()]
        return {n: list(v.shape) for n, v in zip(names, sess.run(names, feed)) if n in missing}
    except Exception:  # noqa: BLE001 - a model ORT cannot run keeps the shapes inference found
        return {}


class GraphWork(list):
    """The layers, plus the elements of the graph's inputs and outputs (what a runtime converts
    on every call: layout reorders, copies)."""

    io_elems: int = 0


def graph_work(model) -> "GraphWork":
    """Per-layer work of an ONNX model (path or ModelProto), per image at batch 1."""
    from onnx import numpy_helper

    m = _load(model)
    g = m.graph
    shapes: dict[str, list[int]] = {}
    for vi in list(g.value_info) + list(g.input) + list(g.output):
        dims = vi.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            shapes[vi.name] = [d.dim_value for d in dims]
    inits = {t.name: t for t in g.initializer}
    for t in inits.values():
        shapes[t.name] = list(t.dims)
    for n in g.node:
        if n.op_type == "Constant" and n.output:
            for a in n.attribute:
                if a.name == "value":
                    inits[n.output[0]] = a.t
                    shapes[n.output[0]] = list(a.t.dims)
    # a node computed from constants only (pads, shapes) is folded before the first run: free
    folded: set[str] = set()
    graph_inputs = {i.name for i in g.input if i.name not in inits}
    for n in g.node:
        if n.op_type != "Constant" and n.input and all(
                not i or i in inits or i in folded for i in n.input) and not graph_inputs & set(n.input):
            folded.update(n.output)
    missing = {o for n in g.node if n.op_type not in _FREE for o in n.output[:1]
               if o and o not in shapes and o not in folded}
    if missing:
        shapes.update(_run_shapes(m, missing))
    # Q/DQ: DequantizeLinear(QuantizeLinear(x)) is x, marked integer
    alias: dict[str, str] = {}
    integer: set[str] = set()
    for n in g.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            alias[n.output[0]] = n.input[0]
            integer.add(n.output[0])

    def root(x: str) -> str:
        while x in alias:
            x = alias[x]
        return x

    consumers: dict[str, int] = {}
    for n in g.node:
        for i in n.input:
            consumers[root(i)] = consumers.get(root(i), 0) + 1
    has_qdq = bool(integer)

    def is_const(x: str) -> bool:
        return root(x) in inits or root(x) in folded or x in folded

    layers = GraphWork()
    layers.io_elems = sum(_numel(shapes.get(v.name, [])) for v in list(g.output) + [
        i for i in g.input if i.name not in inits])
    producer: dict[str, LayerWork] = {}
    for idx, n in enumerate(g.node):
        op, name = n.op_type, n.name or f"{n.op_type}_{idx}"
        out = root(n.output[0]) if n.output else None
        if op in _FREE or (n.output and n.output[0] in folded):
            continue
        data_in = [i for i in n.input if i and not is_const(i)]
        src = root(data_in[0]) if data_in else None
        if op in _FUSABLE and src in producer and consumers.get(src, 0) == 1:
            prod = producer.pop(src)
            prod.fused = prod.fused + (op,)
            if out:
                producer[out] = prod
            continue
        out_elems = _numel(shapes.get(n.output[0], shapes.get(out, []))) if n.output else 0
        in_elems = sum(_numel(shapes.get(i, shapes.get(root(i), []))) for i in data_in)
        weight = sum(_numel(shapes.get(root(i), [])) for i in n.input if i and is_const(i))
        quant = (any(i in integer for i in n.input if i) if has_qdq else None)
        kind, macs, cout, cin = "memory", 0, 0, 0
        if op in _CONV:
            w = shapes.get(root(n.input[1]), [])
            group = next((a.i for a in n.attribute if a.name == "group"), 1)
            if len(w) >= 3:
                k = _numel(w[2:])
                cin_per_group = w[1]
                macs = out_elems * cin_per_group * k if op != "ConvTranspose" else in_elems * w[1] * k
                kind = "conv" if group == 1 else ("depthwise" if cin_per_group == 1 else "grouped")
                cout, cin = (w[0], cin_per_group) if op != "ConvTranspose" else (w[1] * group, w[0] // group)
        elif op in _GEMM:
            a = shapes.get(root(n.input[0]), [])
            b = shapes.get(root(n.input[1]), [])
            if a and b:
                kdim = a[-1] if not (op == "Gemm" and any(x.name == "transA" and x.i for x in n.attribute)) else a[0]
                macs = out_elems * kdim
                kind = "gemm"
        layer = LayerWork(name, op, kind, int(macs), int(in_elems + out_elems), int(weight), quant,
                          out_elems=int(out_elems), cout=int(cout), cin=int(cin))
        layers.append(layer)
        if out:  # Add + Relu fuse too (elementwise chains run as one kernel)
            producer[out] = layer
    return layers
