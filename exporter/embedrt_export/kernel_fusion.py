"""Folds the steps after each row-wise rescale into embedrt's kernels (the ``int8_rowwise_fused`` graph).

After :func:`embedrt_export.rowwise.rewrite` with ``kernels=True`` every quantized MatMul ends in an
``ai.embedrt.RowDequantize``. Two patterns that follow it become one kernel that finishes the row
while it is in cache (``runtime/kernels/rowwise_ops.cc``):

* ``RowDequantize → Add(residual) → LayerNormalization`` over the last axis →
  ``RowDequantizeAddLayerNorm``: the attention and feed-forward outputs of a BERT-style layer;
* ``RowDequantize → GELU → RowQuantize``, where the GELU output feeds nothing else →
  ``RowDequantizeGeluQuantize``: the feed-forward block's wide activation is never written out.
  GELU is the erf form, as transformers' ``GELUActivation`` traces
  (``Div(√2) → Erf → Add(1) → Mul(x) → Mul(0.5)``) or one ONNX ``Gelu`` node without approximation.

Anything else (pre-LayerNorm blocks, other activations) keeps its plain ``RowDequantize``.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import onnx
from embedrt.kernels import DOMAIN
from onnx import helper, numpy_helper


class _Graph:
    """Producers, consumers and constant values of a graph's tensors."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.uses: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for node in graph.node:
            for name in node.input:
                self.uses[name].append(node)
        self.producer = {out: node for node in graph.node for out in node.output}
        self.constants = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
        for node in graph.node:
            if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
                self.constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        self.outputs = {o.name for o in graph.output}

    def only_use(self, name: str, op_type: str) -> onnx.NodeProto | None:
        """The single node reading ``name`` if it is an ``op_type`` and ``name`` is not a graph output."""
        uses = self.uses.get(name, [])
        if len(uses) == 1 and uses[0].op_type == op_type and name not in self.outputs:
            return uses[0]
        return None

    def scalar(self, name: str) -> float | None:
        value = self.constants.get(name)
        return float(value) if value is not None and value.size == 1 else None

    def other_input(self, node: onnx.NodeProto, name: str) -> str:
        return node.input[1] if node.input[0] == name else node.input[0]


def _attribute(node: onnx.NodeProto, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _gelu_output(g: _Graph, x: str) -> tuple[str, list[onnx.NodeProto]] | None:
    """The output of an exact GELU of ``x`` and its nodes, when ``x`` feeds only that GELU."""
    uses = g.uses.get(x, [])
    if x in g.outputs:
        return None
    if len(uses) == 1 and uses[0].op_type == "Gelu":
        exact = _attribute(uses[0], "approximate", b"none") in (b"none", "none")
        return (uses[0].output[0], uses) if exact else None
    if sorted(n.op_type for n in uses) != ["Div", "Mul"]:
        return None
    div = next(n for n in uses if n.op_type == "Div")
    mul = next(n for n in uses if n.op_type == "Mul")
    if div.input[0] != x or not np.isclose(g.scalar(div.input[1]) or 0.0, np.sqrt(2.0)):
        return None
    erf = g.only_use(div.output[0], "Erf")
    add = erf and g.only_use(erf.output[0], "Add")
    if add is None or g.scalar(g.other_input(add, erf.output[0])) != 1.0 or g.only_use(add.output[0], "Mul") is not mul:
        return None
    half = g.only_use(mul.output[0], "Mul")
    if half is None or g.scalar(g.other_input(half, mul.output[0])) != 0.5:
        return None
    return half.output[0], [div, erf, add, mul, half]


def fuse_epilogues(model: onnx.ModelProto) -> onnx.ModelProto:
    """Fold LayerNorm and GELU into the ``RowDequantize`` ops of ``model`` (in place; returns it)."""
    graph = model.graph
    new_constants: list[onnx.TensorProto] = []

    def rewrite(match) -> None:
        g = _Graph(graph)
        replaced: dict[int, onnx.NodeProto] = {}
        dropped: set[int] = set()
        for node in graph.node:
            if node.op_type == "RowDequantize" and node.domain == DOMAIN:
                found = match(g, node)
                if found is not None:
                    fused, gone = found
                    replaced[id(node)] = fused
                    dropped |= {id(n) for n in gone}
        nodes = [replaced.get(id(n), n) for n in graph.node if id(n) not in dropped]
        del graph.node[:]
        graph.node.extend(nodes)

    def layer_norm(g: _Graph, node: onnx.NodeProto):
        out = node.output[0]
        add = g.only_use(out, "Add")
        norm = add and g.only_use(add.output[0], "LayerNormalization")
        if norm is None or _attribute(norm, "axis", -1) != -1 or any(norm.output[1:]):
            return None
        gamma = norm.input[1]
        beta = norm.input[2] if len(norm.input) > 2 and norm.input[2] else None
        if beta is None:
            beta = node.name + "/zero_beta"
            new_constants.append(numpy_helper.from_array(np.zeros_like(g.constants[gamma]), beta))
        epsilon = node.name + "/epsilon"
        new_constants.append(numpy_helper.from_array(np.array(_attribute(norm, "epsilon", 1e-5), np.float32), epsilon))
        fused = helper.make_node(
            "RowDequantizeAddLayerNorm", [*node.input[:4], g.other_input(add, out), gamma, beta, epsilon],
            [norm.output[0]], domain=DOMAIN, name=node.name + "AddLayerNorm")
        return fused, [add, norm]

    def gelu_quantize(g: _Graph, node: onnx.NodeProto):
        found = _gelu_output(g, node.output[0])
        if found is None:
            return None
        gelu_out, gelu_nodes = found
        quantize = g.only_use(gelu_out, "RowQuantize")
        if quantize is None or quantize.input[0] != gelu_out:
            return None
        fused = helper.make_node(
            "RowDequantizeGeluQuantize", [*node.input[:4], *quantize.input[1:4]], list(quantize.output),
            domain=DOMAIN, name=node.name + "GeluQuantize")
        return fused, [*gelu_nodes, quantize]

    # LayerNorm first: it frees the GELU output from the next RowDequantize, which reads it as `like`.
    rewrite(layer_norm)
    rewrite(gelu_quantize)
    graph.initializer.extend(new_constants)
    used = {name for node in graph.node for name in node.input}
    kept = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return model
