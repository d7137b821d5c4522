"""Folds the steps after each row-wise rescale into embedrt's kernels (the ``int8_rowwise_fused`` graph).

After :func:`.rowwise.rewrite` with ``kernels=True`` every quantized MatMul ends in an
``ai.embedrt.RowDequantize``. Two patterns that follow it become one kernel that finishes the row
while it is in cache (``runtime/kernels/quantize_ops.h``):

* ``RowDequantize → Add(residual) → LayerNormalization`` over the last axis →
  ``RowDequantizeAddLayerNorm``: the attention and feed-forward outputs of a BERT-style layer;
* ``RowDequantize → GELU → RowQuantize``, where the GELU output feeds nothing else →
  ``RowDequantizeGeluQuantize``: the feed-forward block's wide activation is never written out.
  GELU is the erf form, as transformers' ``GELUActivation`` traces
  (``Div(√2) → Erf → Add(1) → Mul(x) → Mul(0.5)``) or one ONNX ``Gelu`` node without approximation.

Anything else (pre-LayerNorm blocks, other activations) keeps its plain ``RowDequantize``.

:func:`fuse_gemms` then folds each ``MatMulIntegerToFloat`` into the ``RowDequantize*`` that reads it
(``QMatMulRowDequantize*``, ``runtime/kernels/qgemm_ops.h``): embedrt's int8 GEMM (VPDPBUSD on AVX-512
VNNI) hands each few rows to the epilogue while they are in cache, so the GEMM's fp32 output is never
written out. Its weights are packed for the dot product, (k / 4, n, 4), with their sums times the zero
point beside them; the sums are MatMulIntegerToFloat's to the bit.

:func:`fuse_attention` replaces the traced attention: the head split (``Reshape`` + ``Transpose``) of
q, k and v, ``MatMul(q, kᵀ)``, its scale (``Mul`` or ``Div`` by a constant), the score biases
(``Add``: the padding mask, MPNet's relative-position bias), ``Softmax``, ``MatMul(·, v)`` and the head
merge, by one ``ai.embedrt.Attention`` on the projections' own (batch, length, hidden) rows.

:func:`fuse_fp32` makes the ``fp32_fused`` graph from the plain fp32 one: its attention so, and each
``Add(bias) → Add(residual) → LayerNormalization`` and ``Add(bias) → GELU`` after a MatMul as one
``BiasAddLayerNorm`` or ``BiasGelu``; the MatMuls stay ONNX Runtime's. All fp32: the outputs move
by float rounding only (GELU's erf is within 1.5e-7).
"""

from __future__ import annotations

import numpy as np
import onnx
from embedrt.manifest import KERNELS_DOMAIN as DOMAIN
from onnx import helper

from ..onnx_edit import (
    MS_DOMAIN,
    GraphIndex,
    NewInitializers,
    attribute,
    copy_model,
    splice,
    with_op_domains,
    without_dead_nodes,
)


def _gelu_output(g: GraphIndex, x: str) -> tuple[str, list[onnx.NodeProto]] | None:
    """The output of an exact GELU of ``x`` and its nodes, when ``x`` feeds only that GELU."""
    uses = g.uses.get(x, [])
    if x in g.outputs:
        return None
    if len(uses) == 1 and uses[0].op_type == "Gelu":
        exact = attribute(uses[0], "approximate", b"none") in (b"none", "none")
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
    const = NewInitializers()

    def rewrite(match) -> None:
        g = GraphIndex(graph)
        replaced: dict[int, list[onnx.NodeProto]] = {}
        dropped: set[int] = set()
        for node in graph.node:
            if node.op_type == "RowDequantize" and node.domain == DOMAIN:
                found = match(g, node)
                if found is not None:  # the fused node goes where the pattern's last node was
                    fused, gone = found
                    replaced[id(gone[-1])] = [fused]
                    dropped |= {id(node), *(id(n) for n in gone)}
        splice(graph, replaced, dropped)

    def layer_norm(g: GraphIndex, node: onnx.NodeProto):
        out = node.output[0]
        add = g.only_use(out, "Add")
        norm = add and g.only_use(add.output[0], "LayerNormalization")
        if norm is None or attribute(norm, "axis", -1) != -1 or any(norm.output[1:]) or \
                norm.input[1] not in g.constants:
            return None
        gamma = norm.input[1]
        beta = norm.input[2] if len(norm.input) > 2 and norm.input[2] else None
        if beta is None:
            beta = node.name + "/zero_beta"
            const(np.zeros_like(g.constants[gamma]), beta)
        epsilon = node.name + "/epsilon"
        const(np.array(attribute(norm, "epsilon", 1e-5), np.float32), epsilon)
        fused = helper.make_node(
            "RowDequantizeAddLayerNorm", [*node.input[:4], g.other_input(add, out), gamma, beta, epsilon],
            [norm.output[0]], domain=DOMAIN, name=node.name + "AddLayerNorm")
        return fused, [add, norm]

    def gelu_quantize(g: GraphIndex, node: onnx.NodeProto):
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
    const.add_to(graph)
    return without_dead_nodes(model)


_EPILOGUES = ("RowDequantize", "RowDequantizeAddLayerNorm", "RowDequantizeGeluQuantize")


def _packable_weight(g: GraphIndex, node: onnx.NodeProto) -> tuple[np.ndarray, int] | None:
    """(w, zero point) of a ``MatMulIntegerToFloat`` the QMatMul ops can run: s8 weights (k, n) without a
    zero point, k a multiple of 4 and n of 16 (the dot product's and the vectors' widths), a scale of 1 on
    the u8 rows and a scalar zero point."""
    if node.domain != MS_DOMAIN or node.op_type != "MatMulIntegerToFloat" or len(node.input) != 5:
        return None
    w, zero_point = g.constants.get(node.input[1]), g.constants.get(node.input[4])
    if w is None or w.dtype != np.int8 or w.ndim != 2 or w.shape[0] % 4 or w.shape[1] % 16:
        return None
    if g.scalar(node.input[2]) != 1.0 or zero_point is None or zero_point.size != 1 or zero_point.dtype != np.uint8:
        return None
    return w, int(zero_point.reshape(-1)[0])


def _quantize_after(g: GraphIndex, y: str) -> onnx.NodeProto | None:
    """The one ``RowQuantize`` that quantizes ``y`` (the next MatMul's input), if it has one."""
    quantizers = [n for n in g.uses.get(y, []) if n.domain == DOMAIN and n.op_type == "RowQuantize"]
    return quantizers[0] if len(quantizers) == 1 and quantizers[0].input[0] == y else None


def fuse_gemms(model: onnx.ModelProto) -> onnx.ModelProto:
    """Fold each ``MatMulIntegerToFloat`` of ``model`` whose only reader is a ``RowDequantize*`` (as its
    GEMM output) into one ``QMatMulRowDequantize*`` (in place; returns it); a ``RowQuantize`` of a
    LayerNorm's output then goes into the same op (``QMatMulRowDequantizeAddLayerNormQuantize``), which
    writes both. Others stay as they are."""
    graph = model.graph
    g = GraphIndex(graph)
    const = NewInitializers()
    placed: dict[int, list[onnx.NodeProto]] = {}
    dropped: set[int] = set()
    for node in graph.node:
        found = _packable_weight(g, node)
        uses = g.uses.get(node.output[0], [])
        if found is None or len(uses) != 1 or node.output[0] in g.outputs:
            continue
        epilogue = uses[0]
        if epilogue.domain != DOMAIN or epilogue.op_type not in _EPILOGUES or list(epilogue.input).index(
                node.output[0]) != 0:
            continue
        (w, zero_point), (k, n) = found, found[0].shape
        name = node.name or node.output[0]
        packed = const(np.ascontiguousarray(w.reshape(k // 4, 4, n).transpose(0, 2, 1)), name + "/w_packed")
        zero_sum = const(zero_point * w.astype(np.int32).sum(axis=0, dtype=np.int32), name + "/w_zero_sum")
        op, inputs, outputs = "QMatMul" + epilogue.op_type, [node.input[0], packed, node.input[3], zero_sum,
                                                             *epilogue.input[1:]], list(epilogue.output)
        quantize = _quantize_after(g, epilogue.output[0]) if epilogue.op_type == "RowDequantizeAddLayerNorm" else None
        if quantize is not None:
            op, inputs, outputs = op + "Quantize", inputs + list(quantize.input[1:]), outputs + list(quantize.output)
            dropped.add(id(quantize))
        placed[id(epilogue)] = [helper.make_node(op, inputs, outputs, domain=DOMAIN, name=epilogue.name + "/QMatMul")]
        dropped |= {id(node), id(epilogue)}
    splice(graph, placed, dropped)
    const.add_to(graph)
    return without_dead_nodes(model)


def _perm(node: onnx.NodeProto) -> list[int]:
    return list(attribute(node, "perm", []))


def _head_split(g: GraphIndex, name: str, perm: list[int]) -> tuple[str, int, list[onnx.NodeProto]] | None:
    """``name`` = Transpose(perm)(Reshape(x, (batch, length, heads, head_size))): (x, head_size, nodes)."""
    transpose = g.producer.get(name)
    if transpose is None or transpose.op_type != "Transpose" or _perm(transpose) != perm:
        return None
    reshape = g.producer.get(transpose.input[0])
    if reshape is None or reshape.op_type != "Reshape" or len(g.uses[transpose.input[0]]) != 1:
        return None
    head_size = _shape_entry(g, reshape.input[1], 3)
    return (reshape.input[0], head_size, [transpose, reshape]) if head_size else None


def _shape_entry(g: GraphIndex, name: str, index: int) -> int | None:
    """Entry ``index`` of a shape tensor that is a constant or a Concat whose entry there is one."""
    value = g.constants.get(name)
    if value is not None:
        return int(value.reshape(-1)[index]) if value.size > index and int(value.reshape(-1)[index]) > 0 else None
    concat = g.producer.get(name)
    if concat is None or concat.op_type != "Concat" or len(concat.input) <= index:
        return None
    part = g.constants.get(concat.input[index])
    return int(part.reshape(-1)[0]) if part is not None and part.size == 1 and int(part.reshape(-1)[0]) > 0 else None


def _attention(g: GraphIndex, scores: onnx.NodeProto, const: NewInitializers, operands: str):
    """For the attention whose ``MatMul(q, kᵀ)`` is ``scores``: ([(node whose place it takes, new nodes)],
    the nodes it replaces), or None."""
    q = _head_split(g, scores.input[0], [0, 2, 1, 3])
    k = _head_split(g, scores.input[1], [0, 2, 3, 1])
    scaled = g.only_use(scores.output[0], "Mul") or g.only_use(scores.output[0], "Div")
    if q is None or k is None or scaled is None or scaled.input[0] != scores.output[0] or q[1] != k[1]:
        return None
    factor = g.scalar(scaled.input[1])
    if not factor:
        return None
    chain, biases, node = [scores, scaled], [], scaled
    while (add := g.only_use(node.output[0], "Add")) is not None:
        biases.append(g.other_input(add, node.output[0]))
        chain.append(add)
        node = add
    softmax = g.only_use(node.output[0], "Softmax")
    context = softmax and g.only_use(softmax.output[0], "MatMul")
    if not biases or len(biases) > 2 or context is None or attribute(softmax, "axis", -1) not in (-1, 3):
        return None
    v = _head_split(g, context.input[1], [0, 2, 1, 3])
    merge = g.only_use(context.output[0], "Transpose")
    reshape = merge and next((n for n in g.uses[merge.output[0]] if n.op_type == "Reshape"), None)
    if v is None or v[1] != q[1] or context.input[0] != softmax.output[0] or reshape is None:
        return None
    # The merge's other readers may only be Shape nodes (MPNet sizes its Reshape from them).
    if _perm(merge) != [0, 2, 1, 3] or any(n.op_type not in ("Reshape", "Shape") for n in g.uses[merge.output[0]]):
        return None
    name = context.name + "/embedrt_attention"
    scale = factor if scaled.op_type == "Mul" else 1.0 / factor
    const(np.array(scale, np.float32), name + "/scale")
    const(np.array(q[1], np.int64), name + "/head_size")
    projections = [_projection(g, t) for t in (q[0], k[0], v[0])]
    if any(p is None for p in projections):
        return None
    const(np.concatenate([p[1] for p in projections]), name + "/qkv_bias")
    fused = helper.make_node("Attention", [*(p[0] for p in projections), name + "/qkv_bias", name + "/scale",
                                           name + "/head_size", *biases], [reshape.output[0]], domain=DOMAIN, name=name,
                             **({"operands": operands} if operands != "fp32" else {}))
    gone = [*chain, softmax, context, merge, *q[2], *k[2], *v[2]]
    return [(reshape, [fused])], gone + [node for p in projections for node in p[2]]


def _projection(g: GraphIndex, name: str) -> tuple[str, np.ndarray, list[onnx.NodeProto]] | None:
    """How attention reads q, k or v: (the tensor, the bias to add inside the op, the nodes that go).
    A projection's bias ``Add(MatMul(x, W), b)`` moves into the attention op; a row-wise int8
    projection has its bias in the rescale already. None when the hidden size cannot be read."""
    node = g.producer.get(name)
    found = _bias_add(g, node) if node is not None and len(g.uses[name]) == 1 else None
    if found is not None and g.producer[found[0]].op_type == "MatMul" and len(g.uses[found[0]]) == 1:
        return found[0], g.constants[found[1]].astype(np.float32), [node]
    width = None
    if node is not None and node.op_type == "RowDequantize" and node.input[3] in g.constants:
        width = g.constants[node.input[3]].shape[1]
    elif node is not None and node.op_type == "MatMul" and node.input[1] in g.constants:
        width = g.constants[node.input[1]].shape[1]
    return (name, np.zeros(width, np.float32), []) if width else None


def fuse_attention(model: onnx.ModelProto, operands: str = "fp32") -> onnx.ModelProto:
    """Replace each traced attention of ``model`` by ``ai.embedrt.Attention``; ``model`` itself when a
    replaced tensor is still read elsewhere (then nothing is fused).

    ``operands``: the precision of the two products' operands, the op's attribute: ``"fp32"``, or
    ``"bf16"`` (rounded to bf16, summed in fp32: twice the multiply-adds per instruction on CPUs with
    AVX-512 BF16, for graphs whose gate is on ranking rather than float32 rounding).
    """
    if operands not in ("fp32", "bf16"):
        raise ValueError(f"operands={operands!r}: expected 'fp32' or 'bf16'")
    fused_model = copy_model(model)
    graph = fused_model.graph
    g = GraphIndex(graph)
    const = NewInitializers()
    placed: dict[int, list[onnx.NodeProto]] = {}
    dropped: set[int] = set()
    for node in graph.node:
        if node.op_type == "MatMul":
            found = _attention(g, node, const, operands)
            if found is not None:
                # The attention goes where the head merge ended: q, k, v and the biases exist by then.
                placements, gone = found
                for anchor, nodes in placements:
                    placed[id(anchor)] = nodes
                dropped |= {id(n) for n in gone}
    splice(graph, placed, dropped)
    _unexpanded_biases(fused_model, const)
    const.add_to(graph)
    without_dead_nodes(fused_model)
    known = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    for node in graph.node:
        if not set(node.input) <= known:
            return model
        known.update(node.output)
    return fused_model


def _unexpanded_biases(model: onnx.ModelProto, const: NewInitializers) -> None:
    """Stop the ``Expand`` that blows a score bias up to the whole score shape, in place.

    transformers builds its padding mask as (batch, 1, 1, L), expands it over the query axis and turns
    it into a float bias with ``Where``; MPNet expands its (1, heads, L, L) position bias over the batch.
    The attention ops broadcast a bias themselves, so the bias as it was before its ``Expand`` gives the
    same sums without copies of it being written (MPNet's: 226 MB for a batch of 32 × 384), and
    PackedAttention's check that an item's mask values are zero reads one row per item instead of L.
    The ``Expand`` stays, to shape (1, 1, 1, 1): its input broadcast to the attention's rank 4 (its rank
    is at most 4, as it broadcasts to a bias of rank 4), its shape arithmetic gone.
    """
    g = GraphIndex(model.graph)
    attentions = [n for n in model.graph.node if n.domain == DOMAIN and n.op_type == "Attention"]
    ids = {id(n) for n in attentions}
    for bias in {b for n in attentions for b in n.input[6:]}:
        if bias in g.outputs or not all(id(n) in ids and bias not in n.input[:6] for n in g.uses[bias]):
            continue
        expand = g.producer.get(bias)
        # a Where choosing between single constants has its condition's shape
        if expand is not None and expand.op_type == "Where" and all(
                g.constants.get(v) is not None and g.constants[v].size == 1 for v in expand.input[1:]):
            expand = g.producer.get(expand.input[0])
            if expand is not None and len(g.uses[expand.output[0]]) != 1:
                continue
        if expand is not None and expand.op_type == "Expand":
            expand.input[1] = const(np.ones(4, np.int64), expand.output[0] + "/rank4")


def _bias_add(g: GraphIndex, node: onnx.NodeProto) -> tuple[str, str] | None:
    """(x, bias) when ``node`` is ``Add(x, b)`` with ``b`` a 1-D constant."""
    if node.op_type != "Add":
        return None
    for x, b in (node.input, node.input[::-1]):
        value = g.constants.get(b)
        if value is not None and value.ndim == 1 and g.producer.get(x) is not None:
            return x, b
    return None


def fuse_fp32(model: onnx.ModelProto) -> onnx.ModelProto:
    """The ``fp32_fused`` graph of a plain fp32 text graph (in place; returns the fused model)."""
    graph = model.graph
    g = GraphIndex(graph)
    const = NewInitializers()
    placed: dict[int, list[onnx.NodeProto]] = {}
    dropped: set[int] = set()
    for node in graph.node:
        found = _bias_add(g, node)
        if found is None or id(node) in dropped:
            continue
        x, bias = found
        residual_add = g.only_use(node.output[0], "Add")
        norm = residual_add and g.only_use(residual_add.output[0], "LayerNormalization")
        if norm is not None and attribute(norm, "axis", -1) == -1 and not any(norm.output[1:]) and \
                len(norm.input) > 2 and norm.input[2]:
            epsilon = node.name + "/epsilon"
            const(np.array(attribute(norm, "epsilon", 1e-5), np.float32), epsilon)
            placed[id(norm)] = [helper.make_node(
                "BiasAddLayerNorm", [x, bias, g.other_input(residual_add, node.output[0]), norm.input[1],
                                     norm.input[2], epsilon], [norm.output[0]], domain=DOMAIN, name=node.name + "LN")]
            dropped |= {id(node), id(residual_add), id(norm)}
            continue
        gelu = _gelu_output(g, node.output[0])
        if gelu is not None:
            gelu_out, gelu_nodes = gelu
            placed[id(gelu_nodes[-1])] = [helper.make_node("BiasGelu", [x, bias], [gelu_out], domain=DOMAIN,
                                                           name=node.name + "Gelu")]
            dropped |= {id(node), *(id(n) for n in gelu_nodes)}
    splice(graph, placed, dropped)
    const.add_to(graph)
    return with_op_domains(fuse_attention(without_dead_nodes(model)))
