"""Make a graph's sums over the sequence independent of the batch the text is in.

ONNX Runtime's ``ReduceSum`` over the sequence axis of a (batch, length, hidden) tensor picks its loop
by the tensor's whole shape, so a text's pooled sum is rounded differently when the batch holds more
texts or more padding (a few 1e-7 on an all-MiniLM-L6-v2 embedding); so does a ``MatMul`` by a row of
ones (ONNX Runtime's one-row GEMM sums along the sequence in vector lanes). ``CumSum`` adds position
after position, in order: its last position is the sum, padding adds exact zeros after the text's
own tokens, and neither the batch nor its padded length changes a bit. With this, the graphs whose
layers run on packed rows give an embedding bit-identical whatever it was batched with.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from ..onnx_edit import NewInitializers, attribute, constant_values, set_nodes


def _axes(node: onnx.NodeProto, constants: dict[str, np.ndarray]) -> list[int] | None:
    attr = attribute(node, "axes")
    if attr is not None:
        return list(attr)
    if len(node.input) > 1 and node.input[1] in constants:
        return constants[node.input[1]].reshape(-1).tolist()
    return None


def sequential_sums(model: onnx.ModelProto) -> int:
    """Rewrite, in place, every float ``ReduceSum`` over axis 1 of a rank-3 tensor as the last position of
    a ``CumSum`` along it; returns how many were rewritten."""
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {vi.name: vi.type.tensor_type for vi in (*inferred.graph.value_info, *inferred.graph.input)}
    graph = model.graph
    constants = constant_values(graph)
    const = NewInitializers()
    nodes: list[onnx.NodeProto] = []
    count = 0
    for node in graph.node:
        tensor = types.get(node.input[0]) if node.op_type == "ReduceSum" else None
        rank = len(tensor.shape.dim) if tensor is not None and tensor.HasField("shape") else None
        if tensor is None or rank != 3 or tensor.elem_type != TensorProto.FLOAT or _axes(node, constants) not in (
                [1], [-2]):
            nodes.append(node)
            continue
        keep = attribute(node, "keepdims", 1)
        x, out, p = node.input[0], node.output[0], f"{node.name or node.output[0]}/sequential"
        for name, value in ((f"{p}/axis", np.array(1, np.int64)), (f"{p}/axes", np.array([1], np.int64)),
                            (f"{p}/last", np.array([-1], np.int64)), (f"{p}/end", np.array([2 ** 62], np.int64))):
            const(value, name)
        nodes += [
            helper.make_node("CumSum", [x, f"{p}/axis"], [f"{p}/running"], name=f"{p}/CumSum"),
            helper.make_node("Slice", [f"{p}/running", f"{p}/last", f"{p}/end", f"{p}/axes"],
                             [out if keep else f"{p}/sum"], name=f"{p}/Slice"),
        ]
        if not keep:
            nodes.append(helper.make_node("Squeeze", [f"{p}/sum", f"{p}/axes"], [out], name=f"{p}/Squeeze"))
        count += 1
    set_nodes(graph, nodes)
    const.add_to(graph)
    onnx.checker.check_model(model)
    return count


def batch_invariant(onnx_bytes: bytes) -> bytes:
    """The graph with its sums over the sequence made independent of the batch (:func:`sequential_sums`)."""
    model = onnx.load_from_string(onnx_bytes)
    return model.SerializeToString() if sequential_sums(model) else onnx_bytes
