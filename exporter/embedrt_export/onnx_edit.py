"""The ONNX graph-editing helpers every pass shares: the trace clean-up (:mod:`embedrt_export.passes`) and
the variant rewrites (:mod:`embedrt_export.variants`).

A pass reads a graph through a :class:`GraphIndex` (who produces and who reads each tensor, its
constant values), records the initializers it creates in :class:`NewInitializers`, writes its nodes
back with :func:`set_nodes` or :func:`splice` and leaves no dead node behind
(:func:`without_dead_nodes`). Passes work on ``onnx.ModelProto`` objects, in place unless they say
otherwise; a graph's nodes are identified by ``id()`` while a pass runs, which holds because protobuf
hands out the same node object every time the graph is read.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection
from functools import cached_property
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

MS_DOMAIN = "com.microsoft"
# The text graphs' token-level output: everything downstream of it is the sentence-embedding head.
TOKEN_OUTPUT = "token_embeddings"


def attribute(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    """The value of ``node``'s attribute ``name``, or ``default`` when it has none."""
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def constant_values(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    """Every tensor whose value is known without running the graph: initializers and ``Constant`` outputs."""
    values = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return values


class GraphIndex:
    """Producers, consumers and constant values of a graph's tensors, as the graph is when it is indexed
    (the constants and initializers when first read)."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.graph = graph
        self.uses: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for node in graph.node:
            for name in node.input:
                self.uses[name].append(node)
        self.producer = {out: node for node in graph.node for out in node.output}
        self.outputs = {o.name for o in graph.output}

    @cached_property
    def constants(self) -> dict[str, np.ndarray]:
        """:func:`constant_values` of the graph."""
        return constant_values(self.graph)

    @cached_property
    def initializers(self) -> dict[str, onnx.TensorProto]:
        """The graph's initializers by name."""
        return {init.name: init for init in self.graph.initializer}

    def only_use(self, name: str, op_type: str) -> onnx.NodeProto | None:
        """The single node reading ``name`` if it is an ``op_type`` and ``name`` is not a graph output."""
        uses = self.uses.get(name, [])
        if len(uses) == 1 and uses[0].op_type == op_type and name not in self.outputs:
            return uses[0]
        return None

    def scalar(self, name: str) -> float | None:
        """The value of a one-element constant, else None."""
        value = self.constants.get(name)
        return float(value) if value is not None and value.size == 1 else None

    def other_input(self, node: onnx.NodeProto, name: str) -> str:
        """The input of a two-input ``node`` that is not ``name``."""
        return node.input[1] if node.input[0] == name else node.input[0]


class NewInitializers:
    """The initializers a pass creates, in order, for :meth:`add_to` to put into the graph when it is done."""

    def __init__(self) -> None:
        self.tensors: list[onnx.TensorProto] = []

    def __call__(self, value: Any, name: str) -> str:
        """Record ``value`` (an array) as the initializer ``name``; returns ``name``."""
        self.tensors.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def add_to(self, graph: onnx.GraphProto) -> None:
        graph.initializer.extend(self.tensors)


def copy_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """A deep copy of ``model``, for a pass that must leave its input as it was."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return copy


def set_nodes(graph: onnx.GraphProto, nodes: list[onnx.NodeProto]) -> None:
    """Make ``nodes`` the graph's nodes, in that order."""
    del graph.node[:]
    graph.node.extend(nodes)


def splice(graph: onnx.GraphProto, placed: dict[int, list[onnx.NodeProto]], dropped: set[int]) -> None:
    """Put the new nodes where the node of that ``id`` was and remove the ``dropped`` ones."""
    set_nodes(graph, [new for n in graph.node if id(n) in placed or id(n) not in dropped
                      for new in placed.get(id(n), [n])])


def keep_initializers(graph: onnx.GraphProto, names: Collection[str]) -> None:
    """Remove every initializer not named in ``names``."""
    kept = [init for init in graph.initializer if init.name in names]
    del graph.initializer[:]
    graph.initializer.extend(kept)


def without_dead_nodes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Drop nodes (and initializers) nothing reads, e.g. the shape arithmetic of a replaced head merge
    (in place; returns ``model``)."""
    graph = model.graph
    live = {o.name for o in graph.output}
    kept = []
    for node in reversed(graph.node):
        if any(out in live for out in node.output):
            kept.append(node)
            live.update(node.input)
    set_nodes(graph, list(reversed(kept)))
    keep_initializers(graph, live)
    return model


def head_nodes(model: onnx.ModelProto, token_output: str = TOKEN_OUTPUT) -> list[str]:
    """Names of the nodes downstream of ``token_output``: pooling, Dense, LayerNorm, Normalize."""
    uses = GraphIndex(model.graph).uses
    seen: dict[int, onnx.NodeProto] = {}
    stack = [token_output]
    while stack:
        for node in uses.get(stack.pop(), []):
            if id(node) not in seen:
                seen[id(node)] = node
                stack.extend(node.output)
    if any(not node.name for node in seen.values()):
        raise ValueError("a sentence-embedding head node has no name, so it cannot be kept in float32 by name")
    return sorted(node.name for node in seen.values())


def with_op_domains(model: onnx.ModelProto) -> onnx.ModelProto:
    """Add an opset import for each op domain besides ONNX's that the graph uses, e.g. com.microsoft's
    contrib ops or embedrt's ``ai.embedrt`` kernels (in place; returns ``model``)."""
    # optimize_model only adds the com.microsoft opset import when it saves to a file; graphs
    # passed around as bytes need it too, or onnx shape inference (used by the quantizer) fails.
    imported = {o.domain for o in model.opset_import}
    for domain in sorted({n.domain for n in model.graph.node} - imported - {"", "ai.onnx"}):
        model.opset_import.append(onnx.helper.make_opsetid(domain, 1))
    return model
