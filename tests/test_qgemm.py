"""embedrt's int8 GEMM ops (``QMatMulRowDequantize*``, runtime/kernels/qgemm_ops.h) against ONNX Runtime's
``MatMulIntegerToFloat`` followed by the epilogue they fold in, and the exporter pass that writes them.
test_kernels.py runs this file again under each capped instruction set (the portable GEMM)."""

from __future__ import annotations

import copy

import numpy as np
import onnxruntime as ort
import pytest
from embedrt import kernels
from embedrt_export.variants.kernel_fusion import fuse_gemms
from onnx import TensorProto, helper, numpy_helper

from tests.test_kernels import F, _op, _quantize_constants


def _gemm_then(epilogue, m, k, n, rng):
    """MatMulIntegerToFloat then the RowDequantize* op `epilogue`, as int8_rowwise_fused's exporter writes
    them before fuse_gemms; and a feed."""
    U8 = TensorProto.UINT8
    consts = [numpy_helper.from_array(rng.integers(-127, 128, (k, n)).astype(np.int8), "w"),
              numpy_helper.from_array(np.array(1, np.float32), "one"),
              numpy_helper.from_array((rng.random(n) * 1e-3).astype(np.float32), "w_scale"),
              numpy_helper.from_array(np.array(77, np.uint8), "zp")]
    inputs = ["y_int", "scale", "xf", "w_float"]
    after = []  # a node after the epilogue: the next MatMul's RowQuantize of a LayerNorm's output
    if epilogue == "RowDequantize":
        inputs.append("like")
        outputs = [("y", F)]
    elif epilogue.startswith("RowDequantizeAddLayerNorm"):
        inputs += ["residual", "gamma", "beta", "epsilon"]
        outputs = [("y", F)]
        if epilogue.endswith("+RowQuantize"):
            epilogue = "RowDequantizeAddLayerNorm"
            q_consts, _ = _quantize_constants(rng, n, [1, 7], 128)
            q_consts[-1].name = "zp_next"
            consts += q_consts
            after = [_op("RowQuantize", ["y", "inv", "fc", "zp_next"], ["q_out", "s_out", "f_out"])]
            outputs += [("q_out", U8), ("s_out", F), ("f_out", F)]
    else:
        q_consts, _ = _quantize_constants(rng, n, [2, 9], 40)
        consts += q_consts
        inputs += ["inv", "fc", "zp"]
        outputs = [("q_out", U8), ("s_out", F), ("f_out", F)]
    nodes = [helper.make_node("MatMulIntegerToFloat", ["q", "w", "one", "w_scale", "zp"], ["y_int"],
                              domain="com.microsoft"),
             _op(epilogue, inputs, ["y"] if after else [name for name, _ in outputs]), *after]
    feed = {"q": rng.integers(0, 256, (m, k)).astype(np.uint8), "scale": (rng.random((m, 1)) * 0.05).astype(np.float32),
            "xf": np.concatenate([rng.standard_normal((m, 3)), np.ones((m, 1))], axis=1).astype(np.float32),
            "w_float": rng.standard_normal((4, n)).astype(np.float32), "like": np.zeros((m, 1), np.float32),
            "residual": rng.standard_normal((m, n)).astype(np.float32),
            "gamma": (rng.random(n) + 0.5).astype(np.float32), "beta": rng.standard_normal(n).astype(np.float32),
            "epsilon": np.array(1e-12, np.float32)}
    names = {name for node in nodes for name in node.input} - {c.name for c in consts} - {"y_int", "y"}
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n_, U8 if n_ == "q" else F, None)
                                           for n_ in sorted(names)],
                              [helper.make_tensor_value_info(name, t, None) for name, t in outputs], consts)
    model = helper.make_model(graph, ir_version=9, opset_imports=[
        helper.make_opsetid("", 17), helper.make_opsetid(kernels.DOMAIN, 1), helper.make_opsetid("com.microsoft", 1)])
    return model, {name: feed[name] for name in names}


def _run(model, feed):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    kernels.register(options, [kernels.DOMAIN])
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, feed)


@pytest.mark.parametrize("epilogue", ["RowDequantize", "RowDequantizeAddLayerNorm", "RowDequantizeGeluQuantize",
                                      "RowDequantizeAddLayerNorm+RowQuantize"])
@pytest.mark.parametrize("m, k, n", [(200, 384, 1536), (13, 20, 48), (71, 64, 80), (1, 8, 16)])
def test_qmatmul_ops_give_matmul_integer_to_float_and_the_epilogue_bit_for_bit(epilogue, m, k, n):
    """QMatMulRowDequantize* (embedrt's int8 GEMM, VPDPBUSD on AVX-512 VNNI) equals ONNX Runtime's
    MatMulIntegerToFloat followed by the same epilogue, to the bit: tiles of 6 rows x 64 columns, the
    narrower last column tiles (48, 80, 16) and row counts that leave a partial tile. A RowQuantize of the
    LayerNorm's output joins the op, which then writes the LayerNorm's output and the quantized rows."""
    model, feed = _gemm_then(epilogue, m, k, n, np.random.default_rng(m + k + n))
    fused = fuse_gemms(copy.deepcopy(model))
    op = "QMatMulRowDequantizeAddLayerNormQuantize" if "+" in epilogue else "QMatMul" + epilogue
    assert [node.op_type for node in fused.graph.node] == [op]
    for ours, reference in zip(_run(fused, feed), _run(model, feed), strict=True):
        np.testing.assert_array_equal(ours, reference)


def test_qmatmul_refuses_weights_not_packed_for_its_rows():
    model, feed = _gemm_then("RowDequantize", 5, 32, 16, np.random.default_rng(5))
    fused = fuse_gemms(copy.deepcopy(model))
    feed["q"] = feed["q"][:, :28]  # rows 28 wide against weights packed for 32
    with pytest.raises(Exception, match=r"ai.embedrt.QMatMulRowDequantize: the weights' depth 32 != row width 28"):
        _run(fused, feed)


def test_fuse_gemms_leaves_shapes_it_cannot_tile_to_onnxruntime():
    """An output width that is not a multiple of 16 keeps MatMulIntegerToFloat (and its RowDequantize)."""
    model, _ = _gemm_then("RowDequantize", 5, 32, 24, np.random.default_rng(6))
    assert [n.op_type for n in fuse_gemms(copy.deepcopy(model)).graph.node] == ["MatMulIntegerToFloat",
                                                                               "RowDequantize"]
