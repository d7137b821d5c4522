"""Runs a fused text graph's transformer layers on packed rows: real tokens only, never padding.

A batch of texts padded to its longest is (batch, length, hidden); every MatMul, GELU and LayerNorm
of a layer works on rows, so the padding rows cost as much as real ones (more in mixed batches than in
length-sorted ones) and buy nothing. :func:`pack`
inserts ``ai.embedrt.PackRows`` where the layers' stream of rows begins, so that everything
row-wise after it runs on (1, tokens, hidden), turns each ``ai.embedrt.Attention`` into
``PackedAttention`` (attention within each text's own rows; its score biases keep their padded
layout and are read at the text's positions), and puts ``UnpackRows`` back wherever a padded tensor
is read: the pooling, a graph output. Each row's arithmetic is unchanged, so outputs move by float
rounding at most. A mean pooling's sum over the sequence (the unpacked rows times the mask, summed as
:mod:`..passes.invariance` writes it) becomes ``SumRows`` of the packed rows: the same additions in the
same order, without the padding.

The graph's inputs stay as they were (padded ``input_ids`` and ``attention_mask``); the packed graph
needs the mask right-padded, which the engine always does, and refuses any other by name.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import onnx
from embedrt.manifest import KERNELS_DOMAIN as DOMAIN
from onnx import TensorProto, helper

from ..onnx_edit import GraphIndex, attribute, copy_model, set_nodes, splice, without_dead_nodes

MASK = "attention_mask"
PACKED = "/packed"

# Ops that compute each row from that row alone, when their other inputs are constants.
_ELEMENTWISE = {"Add", "Sub", "Mul", "Div", "Pow", "Erf", "Tanh", "Sqrt", "Relu", "Sigmoid", "Neg", "Cast",
                "Gelu", "Identity", "Exp", "Reciprocal", "Softplus"}
# Ops whose first input is the rows and whose other inputs are weights (any constant shape).
_ROW_WEIGHTED = {("", "MatMul"), ("", "LayerNormalization"), ("com.microsoft", "MatMulIntegerToFloat"),
                 ("", "MatMulInteger"), ("com.microsoft", "SimplifiedLayerNormalization"),
                 ("", "RMSNormalization")}
# embedrt's row kernels: every input is rows or a constant.
_ROW_KERNELS = {"RowQuantize", "RowDequantize", "RowDequantizeAddLayerNorm", "RowDequantizeGeluQuantize",
                "QMatMulRowDequantize", "QMatMulRowDequantizeAddLayerNorm", "QMatMulRowDequantizeGeluQuantize",
                "QMatMulRowDequantizeAddLayerNormQuantize", "BiasAddLayerNorm", "BiasGelu"}


def _last_axis_only(node: onnx.NodeProto) -> bool:
    return attribute(node, "axis", -1) == -1


class _Plan:
    """Which tensors are packed when rows are packed from ``entry`` on."""

    def __init__(self, g: GraphIndex, nodes: list[onnx.NodeProto], entry: str) -> None:
        self.g = g
        self.entry = entry
        self.packed: set[str] = {entry}
        self.row_nodes: list[onnx.NodeProto] = []  # nodes that run on packed rows
        self.unpacked: set[str] = set()  # packed tensors something reads padded
        for node in nodes:
            reads = [i for i in node.input if i in self.packed]
            if not reads:
                continue
            if self._row_wise(node):
                self.row_nodes.append(node)
                self.packed.update(o for o in node.output if o)
            else:
                self.unpacked.update(reads)
        self.unpacked.update(o for o in g.outputs if o in self.packed)

    def _constant(self, name: str) -> bool:
        return name == "" or name in self.g.constants

    def _row_wise(self, node: onnx.NodeProto) -> bool:
        rows = [i in self.packed for i in node.input]
        others = [i for i, r in zip(node.input, rows) if not r]
        if node.domain == DOMAIN and node.op_type == "Attention":
            return all(rows[:3]) and not any(rows[3:])
        if node.domain == DOMAIN and node.op_type in _ROW_KERNELS:
            return all(map(self._constant, others))
        if (node.domain, node.op_type) in _ROW_WEIGHTED:
            return rows[0] and not any(rows[1:]) and all(map(self._constant, others)) and _last_axis_only(node)
        if node.domain == "" and node.op_type in _ELEMENTWISE:
            # a constant may only broadcast along the hidden axis: one value, or one row of values
            return all(self._constant(i) and (i == "" or int(np.prod(self.g.constants[i].shape[:-1])) == 1)
                       for i in others)
        return False

    def cost(self) -> int:
        """How many UnpackRows the plan needs."""
        return len(self.unpacked - {self.entry})

    def attentions(self) -> list[onnx.NodeProto]:
        return [n for n in self.row_nodes if n.domain == DOMAIN and n.op_type == "Attention"]


def _entries(g: GraphIndex, attention: onnx.NodeProto) -> Iterator[str]:
    """Where rows could be packed: the first attention's query, then each producer's first input in turn
    (the tensors the query is computed from), nearest first."""
    name = attention.input[0]
    seen = set()
    while name in g.producer and name not in seen:
        seen.add(name)
        yield name
        node = g.producer[name]
        name = node.input[0] if node.input else ""


def pack(model: onnx.ModelProto) -> tuple[onnx.ModelProto, str | None]:
    """``model`` with its layers on packed rows (a new model), and None; or ``model`` itself and why not."""
    graph = model.graph
    mask = next((i for i in graph.input if i.name == MASK), None)
    if mask is None or mask.type.tensor_type.elem_type != TensorProto.INT64:
        return model, f"no int64 {MASK} input"
    g = GraphIndex(graph)
    nodes = list(graph.node)
    attentions = [n for n in nodes if n.domain == DOMAIN and n.op_type == "Attention"]
    if not attentions:
        return model, "no ai.embedrt.Attention to pack"
    # Of the entries from which every attention runs packed, the one with the fewest tensors to unpack
    # again, then the furthest (the more row ops packed the better).
    plan = None
    for entry in _entries(g, attentions[0]):
        candidate = _Plan(g, nodes, entry)
        if len(candidate.attentions()) == len(attentions) and (
                plan is None or candidate.cost() <= plan.cost()):
            plan = candidate
    if plan is None:
        return model, "no point in the graph from which every attention runs on packed rows"
    packed_model = copy_model(model)
    graph = packed_model.graph
    row_ids = {id(n) for n in plan.row_nodes}
    lengths = plan.entry + "/lengths"

    def rows(name: str) -> str:
        return name + PACKED if name in plan.packed else name

    new_nodes: list[onnx.NodeProto] = []
    for original, node in zip(nodes, graph.node):
        if id(original) in row_ids:
            inputs = [rows(i) for i in node.input]
            if node.op_type == "Attention":
                node.op_type = "PackedAttention"
                inputs = [*inputs[:6], lengths, *inputs[6:]]
            del node.input[:]
            node.input.extend(inputs)
            outputs = [rows(o) for o in node.output]
            del node.output[:]
            node.output.extend(outputs)
        new_nodes.append(node)
        for out in original.output:
            if out == plan.entry:
                new_nodes.append(helper.make_node("PackRows", [out, MASK], [out + PACKED, lengths],
                                                  domain=DOMAIN, name=out + "/PackRows"))
            if out in plan.unpacked and out != plan.entry:
                new_nodes.append(helper.make_node("UnpackRows", [out + PACKED, MASK], [out],
                                                  domain=DOMAIN, name=out + "/UnpackRows"))
    set_nodes(graph, new_nodes)
    _packed_sums(packed_model)
    return packed_model, None


def _packed_sums(model: onnx.ModelProto) -> None:
    """Replace, in place, each ``Squeeze(Slice(CumSum(Mul(UnpackRows(p, mask), mask as float column)),
    last position))`` along the sequence (Casts to float between them) by ``SumRows(p, mask)``."""
    g = GraphIndex(model.graph)
    placed: dict[int, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        if node.op_type != "CumSum" or _value(g, node.input[1]) != [1] or attribute(node, "exclusive", 0) or \
                attribute(node, "reverse", 0):
            continue
        mul = g.producer.get(_through_float_casts(g, node.input[0]))
        unpack = next((g.producer[i] for i in (mul.input if mul is not None and mul.op_type == "Mul" else [])
                       if i in g.producer and g.producer[i].op_type == "UnpackRows"), None)
        last = g.only_use(node.output[0], "Slice")
        squeeze = last and g.only_use(last.output[0], "Squeeze")
        if unpack is None or not _mask_column(g, g.other_input(mul, unpack.output[0])) or squeeze is None or \
                _value(g, squeeze.input[1] if len(squeeze.input) > 1 else "") != [1] or not _last_position(g, last):
            continue
        placed[id(squeeze)] = [helper.make_node("SumRows", [unpack.input[0], MASK], [squeeze.output[0]],
                                                domain=DOMAIN, name=squeeze.output[0] + "/SumRows")]
    if placed:
        splice(model.graph, placed, set())
        without_dead_nodes(model)


def _value(g: GraphIndex, name: str) -> list | None:
    value = g.constants.get(name)
    return value.reshape(-1).tolist() if value is not None else None


def _through_float_casts(g: GraphIndex, name: str) -> str:
    """``name``'s source through any ``Cast`` to float32 (identities here: their inputs are float32)."""
    while (cast := g.producer.get(name)) is not None and cast.op_type == "Cast" and \
            attribute(cast, "to") == TensorProto.FLOAT:
        name = cast.input[0]
    return name


def _mask_column(g: GraphIndex, name: str) -> bool:
    """Whether ``name`` is the attention mask as float32, unsqueezed to (batch, length, 1)."""
    cast = g.producer.get(name)
    if cast is None or cast.op_type != "Cast" or attribute(cast, "to") != TensorProto.FLOAT:
        return False
    unsqueeze = g.producer.get(cast.input[0])
    if unsqueeze is None or unsqueeze.op_type != "Unsqueeze" or unsqueeze.input[0] != MASK:
        return False
    axes = attribute(unsqueeze, "axes") or _value(g, unsqueeze.input[1] if len(unsqueeze.input) > 1 else "")
    return list(axes or []) in ([-1], [2])


def _last_position(g: GraphIndex, node: onnx.NodeProto) -> bool:
    """Whether the ``Slice`` ``node`` keeps the last position of axis 1, and only it."""
    starts, ends, axes = (_value(g, i) for i in node.input[1:4])
    steps = _value(g, node.input[4]) if len(node.input) > 4 and node.input[4] else [1]
    return starts == [-1] and axes == [1] and steps == [1] and ends is not None and ends[0] >= 2 ** 31 - 1
