"""embedrt's ONNX Runtime kernels (``ai.embedrt``) against the standard ops and numpy they replace."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from embedrt import kernels
from onnx import TensorProto, helper, numpy_helper
from scipy.special import erf

F = TensorProto.FLOAT


def _session(nodes, inputs, outputs, initializers=()):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, t, None) for n, t in inputs],
                              [helper.make_tensor_value_info(n, t, None) for n, t in outputs], list(initializers))
    model = helper.make_model(graph, ir_version=9, opset_imports=[helper.make_opsetid("", 17),
                                                                   helper.make_opsetid(kernels.DOMAIN, 1)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    kernels.register(options, [kernels.DOMAIN])
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _op(name, inputs, outputs):
    return helper.make_node(name, inputs, outputs, domain=kernels.DOMAIN)


def _quantize_constants(rng, k, float_channels, zero_point):
    inv_smooth = rng.uniform(0.5, 2.0, k).astype(np.float32)
    inv_smooth[float_channels] = 0.0
    return [numpy_helper.from_array(inv_smooth, "inv"),
            numpy_helper.from_array(np.array(float_channels, np.int64), "fc"),
            numpy_helper.from_array(np.array(zero_point, np.uint8), "zp")], inv_smooth


def test_the_library_is_built_in_this_install():
    assert kernels.available(), "runtime/kernels was not compiled: pip install -e . needs a C++17 compiler"
    assert kernels.isa() in kernels.ISAS


@pytest.mark.skipif(bool(os.environ.get(kernels.ISA_ENV)), reason="this run is the one under a capped instruction set")
@pytest.mark.parametrize("cap", ["avx2", "generic"])
def test_every_instruction_set_passes_these_tests(cap):
    """This file's tests and test_qgemm.py's again, in a process whose kernels are capped at `cap`: the
    paths a CPU without AVX-512 (or x86) runs are checked on this one."""
    env = {**os.environ, kernels.ISA_ENV: cap}
    probe = subprocess.run([sys.executable, "-c", "from embedrt import kernels; print(kernels.isa())"], env=env,
                           capture_output=True, text=True, check=True)
    isa = probe.stdout.strip()
    if kernels.ISAS.index(isa) > kernels.ISAS.index(cap):
        pytest.skip(f"this CPU has no {cap}")
    assert isa == cap
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__,
                          str(Path(__file__).with_name("test_qgemm.py"))],  # the int8 GEMM's portable build
                         env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-4000:]


def test_a_bad_instruction_set_cap_is_refused(monkeypatch):
    monkeypatch.setenv(kernels.ISA_ENV, "AVX2")
    with pytest.raises(ValueError, match="EMBEDRT_KERNELS_ISA='AVX2': expected one of avx512, avx2, generic"):
        kernels.register(ort.SessionOptions(), [kernels.DOMAIN])


@pytest.mark.parametrize("k", [384, 37])  # AVX2 rows, and rows that are not whole vectors
def test_row_quantize_is_bit_exact_with_the_standard_ops(k):
    """RowQuantize gives exactly what int8_rowwise's Mul/ReduceMax/ReduceMin/Div/Max/QuantizeLinear give."""
    rng = np.random.default_rng(0)
    zp = 120
    consts, _ = _quantize_constants(rng, k, [3, 20], zp)
    consts += [numpy_helper.from_array(np.array([-1, k], np.int64), "rows_k"),
               numpy_helper.from_array(np.array([-1], np.int64), "flat"),
               numpy_helper.from_array(np.array(255 - zp, np.float32), "hi_steps"),
               numpy_helper.from_array(np.array(-zp, np.float32), "lo_steps"),
               numpy_helper.from_array(np.array(1e-12, np.float32), "eps")]
    make = helper.make_node
    reference = [make("Reshape", ["x", "rows_k"], ["rows"]), make("Mul", ["rows", "inv"], ["xs"]),
                 make("ReduceMax", ["xs"], ["hi"], axes=[-1], keepdims=1),
                 make("ReduceMin", ["xs"], ["lo"], axes=[-1], keepdims=1),
                 make("Div", ["hi", "hi_steps"], ["s_hi"]), make("Div", ["lo", "lo_steps"], ["s_lo"]),
                 make("Max", ["s_hi", "s_lo", "eps"], ["scale_ref"]), make("Reshape", ["scale_ref", "flat"], ["s1"]),
                 make("Shape", ["s1"], ["n"]), make("Expand", ["zp", "n"], ["zp1"]),
                 make("QuantizeLinear", ["xs", "s1", "zp1"], ["q_ref"], axis=0)]
    session = _session([_op("RowQuantize", ["x", "inv", "fc", "zp"], ["q", "scale", "xf"]), *reference],
                       [("x", F)], [("q", TensorProto.UINT8), ("scale", F), ("xf", F),
                                    ("q_ref", TensorProto.UINT8), ("scale_ref", F)], consts)
    x = (rng.standard_normal((6, 7, k)) * 3).astype(np.float32)
    x[..., 3] *= 50
    x[0, 0] = 0.0  # an all-zero row quantizes to its zero point
    q, scale, xf, q_ref, scale_ref = session.run(None, {"x": x})
    np.testing.assert_array_equal(scale, scale_ref)
    np.testing.assert_array_equal(q, q_ref)
    assert (q[0] == zp).all()
    np.testing.assert_array_equal(xf, np.concatenate([x.reshape(-1, k)[:, [3, 20]], np.ones((42, 1))], axis=1))


def _dequantize_inputs(rng, m, n, nf):
    return {"y_int": (rng.standard_normal((m, n)) * 40).astype(np.float32),
            "scale": (rng.random((m, 1)) * 0.05).astype(np.float32),
            "xf": np.concatenate([rng.standard_normal((m, nf - 1)), np.ones((m, 1))], axis=1).astype(np.float32),
            "w": rng.standard_normal((nf, n)).astype(np.float32)}


def _dequantized(feed):
    return feed["y_int"].astype(np.float64) * feed["scale"] + feed["xf"].astype(np.float64) @ feed["w"]


@pytest.mark.parametrize("n", [384, 100])
def test_row_dequantize_rescales_and_adds_the_fp32_channels(n):
    rng = np.random.default_rng(1)
    session = _session([_op("RowDequantize", ["y_int", "scale", "xf", "w", "like"], ["y"])],
                       [(name, F) for name in ("y_int", "scale", "xf", "w", "like")], [("y", F)])
    feed = _dequantize_inputs(rng, 30, n, 5)
    feed["like"] = np.zeros((5, 6, 7), np.float32)
    y = session.run(None, feed)[0]
    assert y.shape == (5, 6, n)
    np.testing.assert_allclose(y.reshape(30, n), _dequantized(feed), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n", [384, 100])
def test_row_dequantize_add_layer_norm(n):
    rng = np.random.default_rng(2)
    names = ("y_int", "scale", "xf", "w", "residual", "gamma", "beta", "epsilon")
    session = _session([_op("RowDequantizeAddLayerNorm", list(names), ["y"])], [(name, F) for name in names],
                       [("y", F)])
    feed = _dequantize_inputs(rng, 30, n, 5)
    feed |= {"residual": rng.standard_normal((3, 10, n)).astype(np.float32),
             "gamma": (rng.random(n) + 0.5).astype(np.float32), "beta": rng.standard_normal(n).astype(np.float32),
             "epsilon": np.array(1e-12, np.float32)}
    y = session.run(None, feed)[0]
    z = _dequantized(feed) + feed["residual"].reshape(30, n)
    expected = (z - z.mean(1, keepdims=True)) / np.sqrt(z.var(1, keepdims=True) + 1e-12) * feed["gamma"] + feed["beta"]
    assert y.shape == (3, 10, n)
    np.testing.assert_allclose(y.reshape(30, n), expected, atol=1e-5)


@pytest.mark.parametrize("n", [1536, 100])
def test_row_dequantize_gelu_quantize_is_gelu_then_row_quantize(n):
    """The fused op equals exact GELU (erf form) followed by RowQuantize, up to a rare one-step flip
    where GELU's ~1e-7 erf error lands on a rounding boundary."""
    rng = np.random.default_rng(3)
    consts, _ = _quantize_constants(rng, n, [1, 7, 50], 30)
    session = _session([_op("RowDequantizeGeluQuantize", ["y_int", "scale", "xf", "w", "inv", "fc", "zp"],
                            ["q", "s", "f"]),
                        _op("RowQuantize", ["gelu", "inv", "fc", "zp"], ["q_ref", "s_ref", "f_ref"])],
                       [(name, F) for name in ("y_int", "scale", "xf", "w", "gelu")],
                       [("q", TensorProto.UINT8), ("s", F), ("f", F), ("q_ref", TensorProto.UINT8), ("s_ref", F),
                        ("f_ref", F)], consts)
    feed = _dequantize_inputs(rng, 40, n, 4)
    pre = _dequantized(feed)
    feed["gelu"] = (0.5 * pre * (1 + erf(pre / np.sqrt(2)))).astype(np.float32)
    q, s, f, q_ref, s_ref, f_ref = session.run(None, feed)
    np.testing.assert_allclose(s, s_ref, rtol=1e-5)
    np.testing.assert_allclose(f, f_ref, rtol=1e-5, atol=1e-5)
    steps = np.abs(q.astype(int) - q_ref.astype(int))
    assert steps.max() <= 1 and (steps > 0).mean() < 1e-3


def test_kernels_name_the_op_and_the_mismatch():
    rng = np.random.default_rng(4)
    session = _session([_op("RowDequantize", ["y_int", "scale", "xf", "w", "like"], ["y"])],
                       [(name, F) for name in ("y_int", "scale", "xf", "w", "like")], [("y", F)])
    feed = _dequantize_inputs(rng, 8, 16, 3)
    feed["like"] = np.zeros((3, 3), np.float32)  # 3 rows, not 8
    with pytest.raises(Exception, match="ai.embedrt.RowDequantize: `like` has another row count"):
        session.run(None, feed)


def test_register_refuses_unknown_domains_and_a_missing_library(monkeypatch):
    options = ort.SessionOptions()
    with pytest.raises(ValueError, match="com.example"):
        kernels.register(options, ["com.example"])
    kernels.register(options, [])  # a graph without custom ops needs nothing
    monkeypatch.setattr(kernels, "library_path", lambda: None)
    assert not kernels.available()
    with pytest.raises(kernels.KernelLibraryError, match="no kernel library"):
        kernels.register(options, [kernels.DOMAIN])


@pytest.mark.parametrize(("batch", "length", "head_size", "position_bias", "projection_bias"), [
    (3, 45, 32, False, True),  # MiniLM-like; length not a whole number of vectors nor of query blocks
    (2, 13, 64, True, True),   # MPNet-like: a relative-position bias per head besides the padding mask
    (1, 70, 64, False, True),  # keys and head channels in tiles of three vectors and a remainder
    (2, 9, 32, False, False),  # int8_rowwise_fused: the projections' biases are already in q, k and v
    (2, 7, 24, False, True),   # a head size that is no whole number of AVX-512 vectors: the portable path
])
def test_attention_matches_the_traced_ops(batch, length, head_size, position_bias, projection_bias):
    """Attention on (batch, length, hidden) rows equals the traced bias Adds of q, k and v, Reshape/Transpose,
    MatMul, scale, score bias Adds, Softmax, MatMul and head merge, to float32 rounding; padded keys get
    no weight."""
    rng = np.random.default_rng(5)
    heads = 4
    hidden = heads * head_size
    make = helper.make_node
    consts = [numpy_helper.from_array(np.array(1 / np.sqrt(head_size), np.float32), "scale"),
              numpy_helper.from_array(np.array(head_size, np.int64), "head_size"),
              numpy_helper.from_array(np.array([0, 0, heads, head_size], np.int64), "split"),
              numpy_helper.from_array(np.array([0, 0, hidden], np.int64), "merge")]
    biases = ["mask", "position"] if position_bias else ["mask"]
    qkv_bias = rng.standard_normal(3 * hidden).astype(np.float32) * projection_bias
    consts += [numpy_helper.from_array(qkv_bias, "qkv_bias")]
    consts += [numpy_helper.from_array(part, f"b{x}") for x, part in zip("qkv", np.split(qkv_bias, 3))]
    reference = [make("Add", [x, f"b{x}"], [f"{x}b"]) for x in "qkv"]
    reference += [make("Reshape", ["qb", "split"], ["q4"]), make("Transpose", ["q4"], ["qt"], perm=[0, 2, 1, 3]),
                  make("Reshape", ["kb", "split"], ["k4"]), make("Transpose", ["k4"], ["kt"], perm=[0, 2, 3, 1]),
                  make("Reshape", ["vb", "split"], ["v4"]), make("Transpose", ["v4"], ["vt"], perm=[0, 2, 1, 3]),
                 make("MatMul", ["qt", "kt"], ["s"]), make("Mul", ["s", "scale"], ["s0"])]
    for i, bias in enumerate(biases):
        reference.append(make("Add", [f"s{i}", bias], [f"s{i + 1}"]))
    reference += [make("Softmax", [f"s{len(biases)}"], ["p"], axis=-1), make("MatMul", ["p", "vt"], ["c"]),
                  make("Transpose", ["c"], ["ct"], perm=[0, 2, 1, 3]), make("Reshape", ["ct", "merge"], ["y_ref"])]
    session = _session([_op("Attention", ["q", "k", "v", "qkv_bias", "scale", "head_size", *biases], ["y"]),
                        *reference],
                       [(name, F) for name in ("q", "k", "v", *biases)], [("y", F), ("y_ref", F)], consts)
    feed = {name: rng.standard_normal((batch, length, hidden)).astype(np.float32) for name in "qkv"}
    mask = np.zeros((batch, 1, 1, length), np.float32)
    mask[-1, ..., length - 3:] = np.finfo(np.float32).min  # the last text is 3 tokens shorter
    feed["mask"] = mask
    if position_bias:
        feed["position"] = rng.standard_normal((1, heads, length, length)).astype(np.float32)
    y, y_ref = session.run(None, feed)
    np.testing.assert_allclose(y, y_ref, atol=2e-6)
    feed["v"][-1, length - 3:] = 1e6  # values at padded keys must not leak into any row
    np.testing.assert_allclose(session.run(["y"], feed)[0][-1], y_ref[-1], atol=2e-6)


def test_attention_refuses_a_bias_of_another_shape():
    session = _session([_op("Attention", ["q", "k", "v", "qkv_bias", "scale", "head_size", "mask"], ["y"])],
                       [(name, F) for name in ("q", "k", "v", "mask")], [("y", F)],
                       [numpy_helper.from_array(np.array(0.1, np.float32), "scale"),
                        numpy_helper.from_array(np.array(8, np.int64), "head_size"),
                        numpy_helper.from_array(np.zeros(48, np.float32), "qkv_bias")])
    x = np.zeros((2, 5, 16), np.float32)
    with pytest.raises(Exception, match="ai.embedrt.Attention: a score bias does not broadcast"):
        session.run(None, {"q": x, "k": x, "v": x, "mask": np.zeros((2, 1, 1, 4), np.float32)})


def _item_heads(lengths, heads, head_size):
    """(rows, columns, length, head) of each head of each item in packed rows of items of ``lengths``."""
    start = 0
    for n in lengths:
        for h in range(heads if n else 0):
            yield slice(start, start + n), slice(h * head_size, (h + 1) * head_size), n, h
        start += n


@pytest.mark.parametrize(("lengths", "head_size", "position_bias"), [
    ((45, 3, 17, 0, 30), 32, False),  # MiniLM-like; an empty item; lengths off the vector and block sizes
    ((13, 9, 1), 64, True),           # MPNet-like: a relative-position bias read at each item's own positions
    ((7, 5), 24, False),              # a head size that is no whole number of AVX-512 vectors: the portable path
])
def test_packed_attention_attends_within_each_item(lengths, head_size, position_bias):
    """PackedAttention on packed rows (no padding) equals, item by item, softmax attention over that item's
    keys alone, with the position bias's top-left corner; rows of other items never leak in."""
    rng = np.random.default_rng(7)
    heads, width = 4, max(lengths) + 3  # the bias's padded width exceeds the longest item
    hidden = heads * head_size
    scale = 1 / np.sqrt(head_size)
    inputs = ["q", "k", "v", "qkv_bias", "scale", "head_size", "lengths"] + (["position"] if position_bias else [])
    qkv_bias = rng.standard_normal(3 * hidden).astype(np.float32)
    session = _session([_op("PackedAttention", inputs, ["y"])],
                       [("q", F), ("k", F), ("v", F), ("lengths", TensorProto.INT64), ("position", F)][
                           :5 if position_bias else 4], [("y", F)],
                       [numpy_helper.from_array(np.array(scale, np.float32), "scale"),
                        numpy_helper.from_array(np.array(head_size, np.int64), "head_size"),
                        numpy_helper.from_array(qkv_bias, "qkv_bias")])
    tokens = sum(lengths)
    feed = {x: rng.standard_normal((1, tokens, hidden)).astype(np.float32) for x in "qkv"}
    feed["lengths"] = np.array(lengths, np.int64)
    position = rng.standard_normal((1, heads, width, width)).astype(np.float32)
    if position_bias:
        feed["position"] = position
    y = session.run(None, feed)[0]
    assert y.shape == (1, tokens, hidden)
    bq, bk, bv = np.split(qkv_bias, 3)
    for rows, cols, n, h in _item_heads(lengths, heads, head_size):
        q, k, v = (feed[x][0, rows, cols] + b[cols] for x, b in (("q", bq), ("k", bk), ("v", bv)))
        s = q.astype(np.float64) @ k.T * scale + (position[0, h, :n, :n] if position_bias else 0)
        p = np.exp(s - s.max(axis=1, keepdims=True))
        np.testing.assert_allclose(y[0, rows, cols], (p / p.sum(axis=1, keepdims=True)) @ v, atol=2e-6)


def _bf16(x):
    """x rounded to the nearest bf16 (ties to even), as float32."""
    u = np.ascontiguousarray(x, np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000).astype(np.uint32).view(np.float32)


@pytest.mark.parametrize(("lengths", "head_size", "position_bias"), [
    ((45, 3, 17, 0, 30, 200), 32, False),  # MiniLM-like: VDPBF16PS where the CPU has AVX-512 BF16
    ((13, 9, 1), 64, True),                 # MPNet-like, with a position bias: tiles of three and one vectors
    ((21, 6), 48, False),                   # not whole pairs of AVX-512 vectors: AVX-512 on rounded operands
    ((7, 5), 24, False),                    # the portable path
])
def test_bf16_attention_is_attention_on_bf16_rounded_operands(lengths, head_size, position_bias):
    """operands="bf16": the two products run on (q + bq) * scale, k + bk, the weights exp(s - max) and v
    rounded to bf16, summed in float32. Against float64 on those rounded operands its error is under 2% of
    its error against exact attention (what bf16 rounding costs), which stays at bf16's scale;
    the weights' own rounding, at 2^-9, is where the two can differ. A padding mask on packed rows is
    zero where items read it and changes nothing."""
    rng = np.random.default_rng(11)
    heads = 4
    hidden, scale = heads * head_size, np.float32(1 / np.sqrt(head_size))
    tokens, width = sum(lengths), max(lengths) + 3
    inputs = ["q", "k", "v", "qkv_bias", "scale", "head_size", "lengths", "mask"] + (["position"] * position_bias)
    node = helper.make_node("PackedAttention", inputs, ["y"], domain=kernels.DOMAIN, operands="bf16")
    qkv_bias = rng.standard_normal(3 * hidden).astype(np.float32)
    session = _session([node], [("q", F), ("k", F), ("v", F), ("lengths", TensorProto.INT64), ("mask", F),
                                ("position", F)][:6 if position_bias else 5], [("y", F)],
                       [numpy_helper.from_array(scale, "scale"),
                        numpy_helper.from_array(np.array(head_size), "head_size"),
                        numpy_helper.from_array(qkv_bias, "qkv_bias")])
    feed = {x: rng.standard_normal((1, tokens, hidden)).astype(np.float32) for x in "qkv"}
    feed["lengths"] = np.array(lengths, np.int64)
    mask = np.zeros((len(lengths), 1, width, width), np.float32)  # transformers' expanded padding mask
    for b, n in enumerate(lengths):
        mask[b, ..., n:] = np.finfo(np.float32).min
    feed["mask"] = mask
    position = rng.standard_normal((1, heads, width, width)).astype(np.float32)
    if position_bias:
        feed["position"] = position
    y = session.run(None, feed)[0]
    bq, bk, bv = np.split(qkv_bias, 3)
    exact, rounded = np.zeros_like(y, np.float64), np.zeros_like(y, np.float64)
    for rows, cols, n, h in _item_heads(lengths, heads, head_size):
        q, k, v = (feed[x][0, rows, cols] + b[cols] for x, b in (("q", bq), ("k", bk), ("v", bv)))
        bias = position[0, h, :n, :n] if position_bias else 0
        s = q.astype(np.float64) @ k.T * scale + bias
        p = np.exp(s - s.max(axis=1, keepdims=True))
        exact[0, rows, cols] = (p / p.sum(axis=1, keepdims=True)) @ v
        s = _bf16(q * scale).astype(np.float64) @ _bf16(k).T + bias
        p = np.exp(s - s.max(axis=1, keepdims=True))
        v_rounded = _bf16(feed["v"][0, rows, cols]).astype(np.float64)
        rounded[0, rows, cols] = _bf16(p) @ v_rounded / p.sum(axis=1, keepdims=True) + bv[cols]
    error, cost = np.abs(y - rounded), np.abs(y - exact)
    assert error.mean() < 0.02 * cost.mean(), (error.mean(), cost.mean())
    assert error.max() < 4e-3 and 1e-4 < cost.max() < 4e-2, (error.max(), cost.max())


@pytest.mark.parametrize("operands", ["fp32", "bf16"])
def test_a_row_with_every_key_masked_weighs_them_equally(operands):
    """A query row whose keys all carry float's lowest as bias has equal scores, so Softmax weighs every key
    alike and the row is the keys' mean value, finite (the bf16 kernel takes exp as 2^(s log2 e - max log2 e),
    where max log2 e would overflow)."""
    rng = np.random.default_rng(3)
    heads, head_size, length = 2, 32, 20
    hidden = heads * head_size
    node = helper.make_node("Attention", ["q", "k", "v", "qkv_bias", "scale", "head_size", "mask"], ["y"],
                            domain=kernels.DOMAIN, operands=operands)
    session = _session([node], [(name, F) for name in ("q", "k", "v", "mask")], [("y", F)],
                       [numpy_helper.from_array(np.array(1 / np.sqrt(head_size), np.float32), "scale"),
                        numpy_helper.from_array(np.array(head_size, np.int64), "head_size"),
                        numpy_helper.from_array(np.zeros(3 * hidden, np.float32), "qkv_bias")])
    feed = {name: rng.standard_normal((1, length, hidden)).astype(np.float32) for name in "qkv"}
    mask = np.zeros((1, 1, length, length), np.float32)
    mask[0, 0, 4, :] = np.finfo(np.float32).min
    feed["mask"] = mask
    y = session.run(None, feed)[0]
    assert np.isfinite(y).all()
    v = _bf16(feed["v"][0]) if operands == "bf16" else feed["v"][0]
    np.testing.assert_allclose(y[0, 4], v.mean(axis=0), atol=1e-2 if operands == "bf16" else 1e-5)


def test_attention_refuses_an_unknown_operand_precision():
    node = helper.make_node("PackedAttention", ["q", "k", "v", "qkv_bias", "scale", "head_size", "lengths"], ["y"],
                            domain=kernels.DOMAIN, operands="int4")
    session = _session([node], [("q", F), ("k", F), ("v", F), ("lengths", TensorProto.INT64)], [("y", F)],
                       [numpy_helper.from_array(np.array(0.1, np.float32), "scale"),
                        numpy_helper.from_array(np.array(8, np.int64), "head_size"),
                        numpy_helper.from_array(np.zeros(48, np.float32), "qkv_bias")])
    x = np.zeros((1, 4, 16), np.float32)
    with pytest.raises(Exception, match="PackedAttention: attribute operands='int4': expected 'fp32' or 'bf16'"):
        session.run(None, {"q": x, "k": x, "v": x, "lengths": np.array([4], np.int64)})


def test_packed_attention_refuses_lengths_that_do_not_cover_the_rows():
    session = _session([_op("PackedAttention", ["q", "k", "v", "qkv_bias", "scale", "head_size", "lengths"], ["y"])],
                       [("q", F), ("k", F), ("v", F), ("lengths", TensorProto.INT64)], [("y", F)],
                       [numpy_helper.from_array(np.array(0.1, np.float32), "scale"),
                        numpy_helper.from_array(np.array(8, np.int64), "head_size"),
                        numpy_helper.from_array(np.zeros(48, np.float32), "qkv_bias")])
    x = np.zeros((1, 9, 16), np.float32)
    with pytest.raises(Exception, match="ai.embedrt.PackedAttention: lengths sum to 8 but q has 9 rows"):
        session.run(None, {"q": x, "k": x, "v": x, "lengths": np.array([5, 3], np.int64)})
    with pytest.raises(Exception, match="PackedAttention: q, k and v must be packed rows"):
        session.run(None, {"q": x[0].reshape(3, 3, 16), "k": x[0].reshape(3, 3, 16), "v": x[0].reshape(3, 3, 16),
                           "lengths": np.array([9], np.int64)})


def test_sum_rows_is_the_masked_cumsum_of_the_unpacked_rows_to_the_bit():
    """SumRows(packed, mask) against the ops it replaces in a packed mean pooling's numerator."""
    i64 = TensorProto.INT64
    constants = [numpy_helper.from_array(np.array(v, np.int64), n) for n, v in
                 (("minus1", [-1]), ("axis", 1), ("last", [-1]), ("end", [2 ** 62]), ("axes", [1]))]
    traced = _session([_op("UnpackRows", ["p", "mask"], ["x"]),
                       helper.make_node("Unsqueeze", ["mask", "minus1"], ["m1"]),
                       helper.make_node("Cast", ["m1"], ["mf"], to=F),
                       helper.make_node("Mul", ["x", "mf"], ["xm"]),
                       helper.make_node("CumSum", ["xm", "axis"], ["run"]),
                       helper.make_node("Slice", ["run", "last", "end", "axes"], ["s1"]),
                       helper.make_node("Squeeze", ["s1", "axes"], ["sums"])],
                      [("p", F), ("mask", i64)], [("sums", F)], constants)
    ours = _session([_op("SumRows", ["p", "mask"], ["sums"])], [("p", F), ("mask", i64)], [("sums", F)])
    rng = np.random.default_rng(7)
    lengths = [300, 1, 0, 57, 128]
    mask = (np.arange(300)[None, :] < np.array(lengths)[:, None]).astype(np.int64)
    packed = (rng.standard_normal((1, sum(lengths), 384)) * rng.uniform(0.1, 30, 384)).astype(np.float32)
    want = traced.run(None, {"p": packed, "mask": mask})[0]
    got = ours.run(None, {"p": packed, "mask": mask})[0]
    assert got.shape == (5, 384) and np.array_equal(got, want) and not got[2].any()
    with pytest.raises(Exception, match="SumRows: attention_mask has 486 tokens but packed has 487 rows"):
        ours.run(None, {"p": np.zeros((1, 487, 384), np.float32), "mask": mask})
    mask[1, 5] = 1
    with pytest.raises(Exception, match="SumRows: attention_mask row 1 is not right-padded"):
        ours.run(None, {"p": packed, "mask": mask})


def test_the_attention_benchmark_times_the_kernel_against_onnxruntime_ops():
    """benchmarks/attention.py as its users run it, tiny: one row per length, outputs that agree."""
    root = Path(__file__).resolve().parents[1]
    run = subprocess.run([sys.executable, str(root / "benchmarks" / "attention.py"), "--lengths", "5,40",
                          "--rounds", "1", "--min-s", "0.001", "--threads", "1"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = [line.split(" | ") for line in run.stdout.splitlines() if line.startswith(("| 5 |", "| 40 |"))]
    assert [row[1] for row in rows] == ["32", "25"]  # the engine's 1,024-token budget, at most 32 texts
    assert all(float(row[-1].rstrip(" |")) < 1e-5 for row in rows), run.stdout
