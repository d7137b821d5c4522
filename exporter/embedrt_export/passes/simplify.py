"""Remove work from a traced fp32 graph that cannot change its output for the inputs the runtime feeds.

The TorchScript trace of transformers' eager attention carries, per layer, (1) a NaN guard after the
softmax, ``Where(IsNaN(p), 0, p)``, for rows whose keys are all masked, and (2) its own copy of the
``Where(mask, 0, -inf)`` that turns the boolean padding mask into an additive one. The runtime
always feeds at least one real token per text ([CLS]/<s> is never masked, and CLIP's causal rows
always see their BOS), so no softmax row is ever all ``-inf`` and the guard is the identity; the
mask copies are all equal. These ops run on batch × heads × seq × seq tensors, a visible share of
the fp32 time and more of the int8 time. The export's parity check runs
on the simplified graph, so a pattern that did matter would fail the export, not ship.
"""

from __future__ import annotations

from collections.abc import Hashable

import numpy as np
import onnx

from ..onnx_edit import GraphIndex, set_nodes


def _key(array: np.ndarray) -> Hashable:
    """A constant's value as a dict key: equal keys, equal tensors."""
    return array.dtype.str, array.shape, array.tobytes()


def simplify(onnx_bytes: bytes) -> tuple[bytes, dict[str, int]]:
    """Drop softmax NaN guards and duplicate mask ``Where`` nodes; returns the graph and what was removed."""
    model = onnx.load_from_string(onnx_bytes)
    graph = model.graph
    index = GraphIndex(graph)
    producer, constants = index.producer, index.constants
    replace: dict[str, str] = {}
    dropped: set[int] = set()
    removed = {"softmax_nan_guards": 0, "duplicate_mask_wheres": 0}
    first_where: dict[tuple[Hashable, ...], str] = {}
    for node in graph.node:
        if node.op_type != "Where":
            continue
        cond = producer.get(node.input[0])
        guarded = producer.get(node.input[2])
        if (cond is not None and cond.op_type == "IsNaN" and cond.input[0] == node.input[2]
                and guarded is not None and guarded.op_type == "Softmax"):
            replace[node.output[0]] = node.input[2]
            dropped.update((id(node), id(cond)))
            removed["softmax_nan_guards"] += 1
        elif all(name in constants for name in node.input[1:]):
            key = (node.input[0], *(_key(constants[name]) for name in node.input[1:]))
            if key in first_where:
                replace[node.output[0]] = first_where[key]
                dropped.add(id(node))
                removed["duplicate_mask_wheres"] += 1
            else:
                first_where[key] = node.output[0]
    if not dropped:
        return onnx_bytes, removed
    kept = [node for node in graph.node if id(node) not in dropped]
    for node in kept:
        for i, name in enumerate(node.input):
            while name in replace:
                name = replace[name]
            node.input[i] = name
    # Constants only the dropped nodes read would be left dangling (ORT warns about each).
    used = {name for node in kept for name in node.input} | {out.name for out in graph.output}
    set_nodes(graph, [node for node in kept if node.op_type != "Constant" or node.output[0] in used])
    onnx.checker.check_model(model)
    return model.SerializeToString(), removed
