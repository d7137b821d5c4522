"""Row-wise int8: a batch-invariant, ranking-preserving int8 text graph that runs on MLAS's int8 GEMM.

ORT's dynamic quantization gives each MatMul input *one* scale per batch tensor, so an embedding
depends on its batch and BERT's outlier channels coarsen every row (MiniLM-L6: Spearman ~0.989,
top-10 ~0.86, 1−cos alone vs. in a batch ~1e-2). ORT has no kernel that quantizes per row, so this
rewrite builds it from standard ops around ``com.microsoft.MatMulIntegerToFloat``:

* **per-row (per-token) activation scales**, computed at run time from the row's own min/max: a
  token's quantization never sees the other texts or the padding in its batch;
* **SmoothQuant-style channel smoothing** (alpha 0.5, from real calibration text): each input channel
  j is divided by ``s_j = max|x_j|^a / max|W_j|^(1-a)`` and ``W``'s row j multiplied by it, so an
  outlier channel no longer sets the whole row's scale;
* **one calibrated zero point per MatMul input** (u8 activations), because
  ``MatMulIntegerToFloat`` takes a scalar zero point: ~128 for LayerNorm outputs, ~20-70 for the
  skewed GELU outputs. Each row's scale then covers its own range around that zero point;
* **the widest 1% of input channels in fp32** (LLM.int8()'s decomposition): after smoothing, the
  channels whose calibrated range is still the largest are zeroed in the int8 path and multiplied
  in fp32 by their weight rows (a small Gather + Gemm), which is what lifts top-10 overlap over the
  gate (benchmarks/README.md, "int8");
* per-output-channel symmetric int8 weights.

Its fidelity and speed against sentence-transformers fp32 and the dynamic int8 graph:
benchmarks/results/cpu-*.md; every export records its own figures in the manifest. Activations
are u8 and weights s8, so the graph is only for CPUs whose int8 dot product cannot saturate (VNNI,
Arm); see ``embedrt.isa``.

The sentence-embedding head (Dense layers after pooling) stays fp32.

``int8_rowwise_fused`` is this recipe on embedrt's own ONNX Runtime kernels (``runtime/kernels``,
``rewrite(..., kernels=True)`` + :mod:`.kernel_fusion`): the same constants, with each
group's quantization one op and each MatMul one op (embedrt's int8 GEMM and its rescale, with
LayerNorm or GELU folded in), attention one op. In standard ops those steps were a large share of the
graph's time, one small kernel at a time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from embedrt.manifest import KERNELS_DOMAIN
from onnx import TensorProto, helper, numpy_helper

from ..onnx_edit import (
    MS_DOMAIN,
    GraphIndex,
    NewInitializers,
    copy_model,
    head_nodes,
    keep_initializers,
    set_nodes,
    with_op_domains,
)
from .kernel_fusion import fuse_attention, fuse_epilogues, fuse_gemms

SMOOTH_ALPHA = 0.5
FLOAT_FRACTION = 0.01
_EPS = 1e-12  # smallest row scale: an all-zero row quantizes to its zero point


@dataclass(frozen=True)
class Group:
    """MatMuls with constant weights that share one activation input (e.g. Q, K and V)."""

    input: str
    matmuls: tuple[onnx.NodeProto, ...]
    weights: tuple[np.ndarray, ...]  # (K, N) float32 each

    @property
    def channels(self) -> int:
        return int(self.weights[0].shape[0])


def linear_groups(model: onnx.ModelProto) -> list[Group]:
    """MatMuls of the transformer whose second input is a 2-D float initializer, grouped by input;
    the sentence-embedding head (Dense layers after pooling) is left out and stays fp32."""
    initializers = GraphIndex(model.graph).initializers
    head = set(head_nodes(model))
    by_input: dict[str, list[tuple[onnx.NodeProto, np.ndarray]]] = {}
    for node in model.graph.node:
        init = initializers.get(node.input[1]) if node.op_type == "MatMul" else None
        if init is None or node.name in head or init.data_type != TensorProto.FLOAT or len(init.dims) != 2:
            continue
        by_input.setdefault(node.input[0], []).append((node, numpy_helper.to_array(init)))
    return [Group(input=name, matmuls=tuple(n for n, _ in pairs), weights=tuple(w for _, w in pairs))
            for name, pairs in by_input.items()]


def _probe_session(model: onnx.ModelProto, names: list[str]) -> Any:
    """A CPU session of ``model`` whose outputs are the tensors ``names``."""
    import onnxruntime as ort

    probe = copy_model(model)
    del probe.graph.output[:]
    probe.graph.output.extend(helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in names)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _slices(feed: Mapping[str, np.ndarray], max_tokens: int) -> Iterable[dict[str, np.ndarray]]:
    """``feed`` cut into runs of at most ``max_tokens`` padded tokens, each without the padding columns past
    its own longest text: the probe returns every captured tensor of a run at once, and one long text in a
    batch of 32 would otherwise pad it to gigabytes of captured activations on a base-sized model."""
    mask = np.asarray(feed["attention_mask"])
    step = max(1, max_tokens // mask.shape[1])
    for start in range(0, mask.shape[0], step):
        used = np.flatnonzero(mask[start:start + step].any(axis=0))
        width = int(used[-1]) + 1 if used.size else 1
        yield {name: (np.asarray(x)[start:start + step, :width] if np.ndim(x) >= 2 and np.shape(x)[:2] == mask.shape
                      else x) for name, x in feed.items()}


def _captured_rows(session: Any, names: list[str], feeds: Iterable[Mapping[str, np.ndarray]],
                   max_tokens: int = 512) -> Iterable[dict[str, np.ndarray]]:
    """Yield, per slice of a calibration batch (:func:`_slices`), each named tensor's rows at real (unpadded)
    tokens, as (rows, K)."""
    for feed in feeds:
        for part in _slices(feed, max_tokens):
            real = np.asarray(part["attention_mask"]).reshape(-1).astype(bool)
            outputs = session.run(names, part)
            rows = (out.reshape(-1, out.shape[-1]) for out in outputs)
            yield {n: (r[real] if len(r) == len(real) else r) for n, r in zip(names, rows)}


def _zero_point(lo: np.ndarray, hi: np.ndarray) -> int:
    """The u8 zero point that minimizes the mean squared row step ``max(hi/(255-z), -lo/z)`` (z in 1..254)."""
    z = np.arange(1, 255, dtype=np.float64)
    steps = np.maximum(hi[:, None] / (255 - z)[None, :], -lo[:, None] / z[None, :])
    return int(z[np.argmin((steps ** 2).mean(axis=0))])


@dataclass(frozen=True)
class Calibration:
    """Per group (by index): channel smoothing factors, the activation zero point, the fp32 channels."""

    smooth: list[np.ndarray]
    zero_point: list[int]
    float_channels: list[np.ndarray]  # input channels kept out of int8 (computed in fp32)


def calibrate(model: onnx.ModelProto, groups: list[Group], feeds: list[Mapping[str, np.ndarray]],
              alpha: float = SMOOTH_ALPHA, float_fraction: float = FLOAT_FRACTION) -> Calibration:
    """Smoothing factors from each input channel's max |x| on ``feeds``, then zero points from the
    smoothed rows' ranges (two passes of one probe session over the calibration batches)."""
    if not feeds:
        raise ValueError("row-wise int8 needs calibration batches of real text")
    names = sorted({g.input for g in groups})
    session = _probe_session(model, names)
    absmax = {g.input: np.zeros(g.channels) for g in groups}
    for rows in _captured_rows(session, names, feeds):
        for name, x in rows.items():
            absmax[name] = np.maximum(absmax[name], np.abs(x).max(axis=0))
    smooth = []
    for g in groups:
        w_max = np.max([np.abs(w).max(axis=1) for w in g.weights], axis=0)
        smooth.append(np.maximum(absmax[g.input], 1e-5) ** alpha / np.maximum(w_max, 1e-5) ** (1 - alpha))
    # The channels whose smoothed range is still the widest are computed in fp32 instead (LLM.int8()'s
    # decomposition): they would otherwise set every row's scale.
    float_channels = [np.sort(np.argsort(-(absmax[g.input] / smooth[i]))[:int(float_fraction * g.channels)])
                      for i, g in enumerate(groups)]
    lo: list[list[np.ndarray]] = [[] for _ in groups]
    hi: list[list[np.ndarray]] = [[] for _ in groups]
    for rows in _captured_rows(session, names, feeds):
        for i, g in enumerate(groups):
            scaled = rows[g.input] / smooth[i]
            scaled[:, float_channels[i]] = 0.0
            lo[i].append(np.minimum(scaled.min(axis=1), 0.0))
            hi[i].append(np.maximum(scaled.max(axis=1), 0.0))
    zero_point = [_zero_point(np.concatenate(lo[i]), np.concatenate(hi[i])) for i in range(len(groups))]
    return Calibration(smooth=[s.astype(np.float32) for s in smooth], zero_point=zero_point,
                       float_channels=float_channels)


def _quantize_weight(w: np.ndarray, smooth: np.ndarray, float_channels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scaled = w.astype(np.float64) * smooth[:, None].astype(np.float64)
    scaled[float_channels] = 0.0
    scale = np.maximum(np.abs(scaled).max(axis=0), _EPS) / 127.0
    return np.clip(np.round(scaled / scale), -127, 127).astype(np.int8), scale.astype(np.float32)


def _inv_smooth(calibration: Calibration, i: int) -> np.ndarray:
    """1 / group ``i``'s smoothing factors, zero at its fp32 channels (they leave the int8 path)."""
    inv = 1 / calibration.smooth[i]
    inv[calibration.float_channels[i]] = 0.0
    return inv


def _float_weights(group: Group, j: int, floats: np.ndarray, node: onnx.NodeProto,
                   biases: dict[str, tuple[onnx.NodeProto, np.ndarray]]) -> tuple[onnx.NodeProto | None, np.ndarray]:
    """MatMul ``j``'s weight rows for the fp32 channels plus its bias as one more row (zeros without
    one), and the bias ``Add`` this folds away, if any."""
    add, bias = biases.get(node.output[0], (None, np.zeros(group.weights[j].shape[1], np.float32)))
    return add, np.concatenate([group.weights[j][floats], bias[None, :]]).astype(np.float32)


def _bias_adds(graph: onnx.GraphProto,
               matmuls: list[onnx.NodeProto]) -> dict[str, tuple[onnx.NodeProto, np.ndarray]]:
    """For each MatMul output whose only use is ``Add(output, constant 1-D bias)``: that Add and its bias."""
    g = GraphIndex(graph)
    found = {}
    for matmul in matmuls:
        name = matmul.output[0]
        add = g.only_use(name, "Add")
        if add is None:
            continue
        other = g.initializers.get(g.other_input(add, name))
        weight = g.initializers.get(matmul.input[1])
        if other is not None and other.data_type == TensorProto.FLOAT and list(other.dims) == list(weight.dims[1:]):
            found[name] = (add, numpy_helper.to_array(other))
    return found


def rewrite(model: onnx.ModelProto, groups: list[Group], calibration: Calibration, *,
            kernels: bool = False) -> onnx.ModelProto:
    """Replace each group's MatMuls with per-row quantization + ``MatMulIntegerToFloat`` (in place).

    With ``kernels``, a group's quantization is one ``ai.embedrt.RowQuantize`` and each MatMul's
    rescale, fp32 channels and bias one ``ai.embedrt.RowDequantize`` (embedrt's kernel library,
    ``runtime/kernels``), on the same constants and arithmetic; the graph then needs that library.

    A group works on its input flattened to 2-D rows (tokens x channels) and each MatMul's result is
    reshaped back: QuantizeLinear's per-axis form needs 2-D rows anyway, and the fp32 channels can
    then be added by one ``Gemm`` (C = the int8 result) instead of a MatMul and an Add; that layout also
    ran faster than the 3-D one.
    A MatMul's bias Add rides in that Gemm too, as one more weight row against a column of ones.
    """
    graph = model.graph
    const = NewInitializers()
    eps = const(np.array(_EPS, np.float32), "rowwise/eps")
    one = const(np.array(1.0, np.float32), "rowwise/one")
    flat = const(np.array([-1], np.int64), "rowwise/flat")
    first = const(np.array([0], np.int64), "rowwise/first")
    replaced = {id(node): (i, j) for i, g in enumerate(groups) for j, node in enumerate(g.matmuls)}
    with_floats = [m for i, g in enumerate(groups) if kernels or calibration.float_channels[i].size for m in g.matmuls]
    biases = _bias_adds(graph, with_floats)
    folded = {id(add) for add, _ in biases.values()}
    quantized: set[int] = set()
    nodes: list[onnx.NodeProto] = []
    make = helper.make_node
    for node in graph.node:
        if id(node) in folded:
            continue
        if id(node) not in replaced:
            nodes.append(node)
            continue
        i, j = replaced[id(node)]
        group, p = groups[i], f"rowwise/{i}"
        zp, smooth, floats = calibration.zero_point[i], calibration.smooth[i], calibration.float_channels[i]
        if kernels:
            nodes += _kernel_nodes(group, i, j, node, calibration, biases, i not in quantized, const)
            quantized.add(i)
            continue
        if i not in quantized:
            quantized.add(i)
            # x/s per channel, then per row: scale = max(hi/(255-z), -lo/z), q = round(x/scale) + z.
            x, rows = p + "/x", p + "/rows_in"
            nodes += [
                make("Shape", [group.input], [p + "/in_shape"]),
                make("Slice", [p + "/in_shape", first, flat], [p + "/lead_dims"]),
                make("Reshape", [group.input, const(np.array([-1, group.channels], np.int64), p + "/rows_k")], [rows]),
            ]
            if floats.size:
                nodes += [make("Gather", [rows, const(floats.astype(np.int64), p + "/float_channels")],
                               [p + "/x_float"], axis=1),
                          make("Pad", [p + "/x_float", const(np.array([0, 0, 0, 1], np.int64), p + "/one_more"),
                                       one], [p + "/x_float_1"])]
            nodes += [
                make("Mul", [rows, const(_inv_smooth(calibration, i), p + "/inv_smooth")], [x]),
                make("ReduceMax", [x], [p + "/hi"], axes=[-1], keepdims=1),
                make("ReduceMin", [x], [p + "/lo"], axes=[-1], keepdims=1),
                make("Div", [p + "/hi", const(np.array(255 - zp, np.float32), p + "/hi_steps")], [p + "/s_hi"]),
                make("Div", [p + "/lo", const(np.array(-zp, np.float32), p + "/lo_steps")], [p + "/s_lo"]),
                make("Max", [p + "/s_hi", p + "/s_lo", eps], [p + "/scale"]),
                # QuantizeLinear's per-axis form wants a 1-D scale and zero point.
                make("Reshape", [p + "/scale", flat], [p + "/scale_1d"]),
                make("Shape", [p + "/scale_1d"], [p + "/n_rows"]),
                make("Expand", [const(np.array(zp, np.uint8), p + "/zp"), p + "/n_rows"], [p + "/zp_1d"]),
                make("QuantizeLinear", [x, p + "/scale_1d", p + "/zp_1d"], [p + "/q"], axis=0),
            ]
        weight, w_scale = _quantize_weight(group.weights[j], smooth, floats)
        q = f"{p}/{j}"
        nodes += [
            make("MatMulIntegerToFloat",
                 [p + "/q", const(weight, q + "/w"), one, const(w_scale, q + "/w_scale"), p + "/zp"],
                 [q + "/y_unscaled"], domain=MS_DOMAIN, name=q + "/MatMulIntegerToFloat"),
            make("Mul", [q + "/y_unscaled", p + "/scale"], [q + "/y_int8"], name=q + "/row_scale"),
        ]
        y, out = q + "/y_int8", node.output[0]
        if floats.size:
            add, w_float = _float_weights(group, j, floats, node, biases)
            nodes.append(make("Gemm", [p + "/x_float_1", const(w_float, q + "/w_float"), y], [q + "/y"],
                              name=q + "/float_part"))
            y, out = q + "/y", add.output[0] if add is not None else out
        nodes += [
            make("Concat", [p + "/lead_dims", const(np.array([group.weights[j].shape[1]], np.int64), q + "/n")],
                 [q + "/out_shape"], axis=0),
            make("Reshape", [y, q + "/out_shape"], [out]),
        ]
    set_nodes(graph, nodes)
    const.add_to(graph)
    keep_initializers(graph, {name for n in graph.node for name in n.input})
    return with_op_domains(model)


def _kernel_nodes(group: Group, i: int, j: int, node: onnx.NodeProto, calibration: Calibration,
                  biases: dict[str, tuple[onnx.NodeProto, np.ndarray]], first: bool,
                  const: NewInitializers) -> list[onnx.NodeProto]:
    """Group ``i``'s MatMul ``j`` on embedrt's kernels (and, for the group's first MatMul, its RowQuantize)."""
    p, q = f"rowwise/{i}", f"rowwise/{i}/{j}"
    zp, smooth, floats = calibration.zero_point[i], calibration.smooth[i], calibration.float_channels[i]
    nodes = []
    if first:
        inputs = [group.input, const(_inv_smooth(calibration, i), p + "/inv_smooth"),
                  const(floats.astype(np.int64), p + "/float_channels"), const(np.array(zp, np.uint8), p + "/zp")]
        nodes.append(helper.make_node("RowQuantize", inputs, [p + "/q", p + "/scale", p + "/x_float_1"],
                                      domain=KERNELS_DOMAIN, name=p + "/RowQuantize"))
    weight, w_scale = _quantize_weight(group.weights[j], smooth, floats)
    add, w_float = _float_weights(group, j, floats, node, biases)
    nodes += [
        helper.make_node("MatMulIntegerToFloat",
                         [p + "/q", const(weight, q + "/w"), "rowwise/one", const(w_scale, q + "/w_scale"), p + "/zp"],
                         [q + "/y_unscaled"], domain=MS_DOMAIN, name=q + "/MatMulIntegerToFloat"),
        helper.make_node("RowDequantize", [q + "/y_unscaled", p + "/scale", p + "/x_float_1",
                                           const(w_float, q + "/w_float"), group.input],
                         [add.output[0] if add is not None else node.output[0]], domain=KERNELS_DOMAIN,
                         name=q + "/RowDequantize"),
    ]
    return nodes


def calibrate_graph(onnx_bytes: bytes, feeds: list[Mapping[str, np.ndarray]]) -> Calibration:
    """:func:`calibrate` an fp32 text graph's linear groups on ``feeds`` (tokenized real text)."""
    model = onnx.load_from_string(onnx_bytes)
    groups = linear_groups(model)
    if not groups:
        raise ValueError("no MatMul with constant weights to quantize")
    return calibrate(model, groups, feeds)


def quantize_rowwise_int8(onnx_bytes: bytes, calibration: Calibration, *, kernels: bool = False) -> bytes:
    """The row-wise int8 graph of an fp32 text graph with ``calibration`` (:func:`calibrate_graph`).

    ``kernels``: on embedrt's kernel library (the ``int8_rowwise_fused`` variant), with LayerNorm and
    GELU folded into the rescale steps, attention in one op on bf16 operands (:mod:`.kernel_fusion`):
    attention, which the int8 GEMMs leave as the largest cost on long texts, at twice the rate, for
    ranking error well inside the gate (``benchmarks/README.md``, "bf16 attention"), and the int8 GEMMs
    embedrt's own, each with its rescale step in one op.
    """
    model = onnx.load_from_string(onnx_bytes)
    model = rewrite(model, linear_groups(model), calibration, kernels=kernels)
    if kernels:
        model = fuse_gemms(fuse_attention(fuse_epilogues(model), operands="bf16"))
    return model.SerializeToString()
