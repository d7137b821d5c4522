"""ONNX Runtime transformer fusions and fp16 conversion of an exported text graph.

Both steps are onnxruntime.transformers' own tools; this module only chooses their options:

* :func:`fuse` runs ``optimize_model`` at ``opt_level=0`` (its Python pattern fusions only), so the
  result stays provider-neutral and ONNX Runtime still applies its own graph optimizations when a
  session loads it. GELU stays exact (erf); the tanh approximation would change the numerics.
* :func:`to_fp16` converts a (fused) graph to float16 for GPUs, keeping the graph's inputs and
  outputs, every LayerNorm-family op, Softmax, the whole sentence-embedding head (pooling,
  Dense, Normalize: every node downstream of ``token_embeddings``) and the float arithmetic that
  computes integer indices (MPNet's relative-position buckets) in float32.

The fused graphs use the attention mask as given (``AttentionMaskFormat.AttentionMask``) rather
than ORT's default mask-index form, which silently assumes right padding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import onnx

from ..onnx_edit import GraphIndex, attribute, head_nodes, set_nodes, with_op_domains

# Ops the fusions produce; their counts say whether a fusion actually matched the traced graph.
FUSED_OP_TYPES = ("EmbedLayerNormalization", "Attention", "MultiHeadAttention", "SkipLayerNormalization",
                  "BiasGelu", "Gelu", "FastGelu", "LayerNormalization")

# Kept in float32 by the fp16 conversion: reductions over the hidden size and softmax lose too much
# in half precision, and ORT's GPU kernels for these take float32 islands cheaply.
FP16_BLOCKED_OPS = ("LayerNormalization", "SkipLayerNormalization", "EmbedLayerNormalization", "Softmax")

# onnxruntime.transformers' "bert" patterns match every BERT-like encoder we export (checked on
# bert, distilbert, roberta, xlm-roberta and mpnet twins); MPNet's relative position bias keeps
# its attention unfused, the rest of its layers fuse.
ORT_MODEL_TYPE = "bert"


@dataclass(frozen=True)
class ArchFacts:
    """What the fusions need to know about the transformer, from its Hugging Face config."""

    num_heads: int
    hidden_size: int

    @classmethod
    def from_config(cls, config: Any) -> ArchFacts:
        """Read ``model[0].auto_model.config`` (attribute maps cover DistilBERT's ``n_heads``/``dim``)."""
        return cls(num_heads=int(config.num_attention_heads), hidden_size=int(config.hidden_size))


@dataclass(frozen=True)
class Fused:
    """A fused graph and how many of each fused op the optimizer produced (non-zero counts only)."""

    onnx_bytes: bytes
    fused_ops: dict[str, int]


def fusion_options() -> Any:
    """Fusion settings: exact GELU, explicit 2-D attention mask, everything else ORT's bert defaults."""
    from onnxruntime.transformers.fusion_options import AttentionMaskFormat, FusionOptions

    options = FusionOptions("bert")
    options.enable_gelu_approximation = False
    options.attention_mask_format = AttentionMaskFormat.AttentionMask
    return options


def fuse(onnx_bytes: bytes, facts: ArchFacts) -> Fused:
    """Apply ORT's transformer fusions to an fp32 graph; numerics stay within float32 rounding."""
    from onnxruntime.transformers.optimizer import optimize_model

    optimizer = optimize_model(onnx.load_from_string(onnx_bytes), model_type=ORT_MODEL_TYPE,
                               num_heads=facts.num_heads, hidden_size=facts.hidden_size, opt_level=0,
                               optimization_options=fusion_options(), use_gpu=False)
    model = with_op_domains(optimizer.model)
    counts: dict[str, int] = {}
    for node in model.graph.node:
        if node.op_type in FUSED_OP_TYPES:
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return Fused(onnx_bytes=model.SerializeToString(), fused_ops=counts)


INTEGER_TYPES = frozenset({onnx.TensorProto.INT8, onnx.TensorProto.INT16, onnx.TensorProto.INT32,
                           onnx.TensorProto.INT64, onnx.TensorProto.UINT8, onnx.TensorProto.UINT16,
                           onnx.TensorProto.UINT32, onnx.TensorProto.UINT64})


def index_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of every node upstream of a Cast to an integer type: float arithmetic whose result is an
    index (MPNet's relative-position bucket goes through Log and Div). In float16 such a value can
    round across an integer and pick another bucket, which changed whole embeddings (mpnet-base's
    fp16 variant against sentence-transformers on 2,000 fortunes: worst 1−cos 3.6e-3, and 1.9e-5
    with these nodes kept in float32)."""
    produced = GraphIndex(model.graph).producer
    stack = [node.input[0] for node in model.graph.node
             if node.op_type == "Cast" and attribute(node, "to") in INTEGER_TYPES]
    seen: dict[str, onnx.NodeProto] = {}
    while stack:
        node = produced.get(stack.pop())
        # The walk stops at the encoder (an index read off the hidden states keeps only the arithmetic
        # after them in float32) and at Shape, whose output never depends on values.
        if node is not None and node.name not in seen and node.op_type != "MatMul" \
                and node.op_type not in FUSED_OP_TYPES:
            seen[node.name] = node
            if node.op_type != "Shape":
                stack.extend(node.input)
    if "" in seen:
        raise ValueError("a node computing an integer index has no name, so it cannot be kept in float32 by name")
    return sorted(seen)


def _drop_repeated_casts(model: onnx.ModelProto) -> None:
    # The converter inserts one Cast per kept-float32 consumer of a float16 tensor, all with the same
    # name and output when several consumers share it; they compute the same value, so one stays.
    outputs: set[str] = set()
    kept = []
    for node in model.graph.node:
        if node.op_type == "Cast" and node.output[0] in outputs:
            continue
        outputs.update(node.output)
        kept.append(node)
    set_nodes(model.graph, kept)


def to_fp16(onnx_bytes: bytes) -> bytes:
    """Convert a graph to float16 with float32 inputs/outputs, normalizations, softmax, head and
    index arithmetic (:func:`index_nodes`)."""
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = onnx.load_from_string(onnx_bytes)
    wrapped = OnnxModel(model)
    wrapped.convert_float_to_float16(keep_io_types=True, op_block_list=list(FP16_BLOCKED_OPS),
                                     node_block_list=head_nodes(model) + index_nodes(model))
    _drop_repeated_casts(wrapped.model)
    return with_op_domains(wrapped.model).SerializeToString()
