"""Builder for Transformer-based models: the whole sentence-transformers model (transformer → pooling →
Dense → LayerNorm → Normalize) traced to one ONNX text graph.

The wrapper calls the sentence-transformers modules themselves, so every head is computed by
the very code the reference uses; there is no re-implementation of pooling to drift from it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from embedrt.manifest import GraphVariant, TokenizerSpec, Tower

from ..source import SourceSpec
from .base import OPSET, OUTPUTS, TEXT_GRAPH, TOKENIZER, Built, tokenizer_json
from .trace import trace

TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


@dataclass(frozen=True)
class TextGraph:
    """A serialized text-tower graph and its interface."""

    onnx_bytes: bytes
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    opset: int


def graph_inputs(model: Any) -> tuple[str, ...]:
    """The tokenizer outputs the transformer consumes, in the graph's input order."""
    names = set(model[0].tokenizer.model_input_names)
    return tuple(n for n in TEXT_INPUTS if n in names)


@contextlib.contextmanager
def _eager_attention(model: Any) -> Iterator[None]:
    """Trace attention as MatMul/Softmax rather than one SDPA call: ORT's fusions and the int8
    rewrites match that pattern, and the dynamic int8 graph of an eager trace runs faster.
    The trace's per-layer mask and NaN-guard ``Where`` ops are removed afterwards (``simplify``)."""
    auto_model = getattr(model[0], "auto_model", None)
    previous = getattr(getattr(auto_model, "config", None), "_attn_implementation", "eager")
    if previous == "eager":  # MPNet supports only eager and warns on set_attn_implementation
        yield
        return
    auto_model.set_attn_implementation("eager")
    try:
        yield
    finally:
        auto_model.set_attn_implementation(previous)


def export_text_graph(model: Any) -> TextGraph:
    """Export ``model`` with dynamic batch and sequence axes; outputs sentence and token embeddings.

    The trace is simplified and its pooling sums made batch-invariant (:func:`.trace.trace`) before
    it is returned.
    """
    import torch

    inputs = graph_inputs(model)

    class _Wrapper(torch.nn.Module):
        def __init__(self, st_model: Any) -> None:
            super().__init__()
            self.st_model = st_model

        def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            out = self.st_model(dict(zip(inputs, tensors)))
            return out["sentence_embedding"], out["token_embeddings"]

    # Two texts of different lengths, so the traced graph sees padding and a real attention mask.
    features = model.preprocess(["embedrt traces this sentence to ONNX", "short"])
    args = tuple(features[n] for n in inputs)
    dynamic = {n: {0: "batch", 1: "sequence"} for n in inputs}
    dynamic["sentence_embedding"] = {0: "batch"}
    dynamic["token_embeddings"] = {0: "batch", 1: "sequence"}
    onnx_bytes = trace(_Wrapper(model), args, inputs, OUTPUTS, dynamic, within=_eager_attention(model))
    return TextGraph(onnx_bytes=onnx_bytes, inputs=inputs, outputs=OUTPUTS, opset=OPSET)


CALIBRATION_TEXTS = 256


def calibration_feeds(model: Any, texts: Sequence[str], batch_size: int = 32) -> list[dict[str, Any]]:
    """Graph feeds (numpy) for the first :data:`CALIBRATION_TEXTS` of ``texts``, tokenized as the model does."""
    inputs = graph_inputs(model)
    head = list(texts)[:CALIBRATION_TEXTS]
    feeds = []
    for start in range(0, len(head), batch_size):
        features = model.preprocess(head[start:start + batch_size])
        feeds.append({name: features[name].numpy() for name in inputs})
    return feeds


def position_limit(model: Any) -> int | None:
    """Longest sequence the transformer's position table allows (RoBERTa-style tables are offset)."""
    config = getattr(model[0].auto_model, "config", None)
    limit = getattr(config, "max_position_embeddings", None)
    if not isinstance(limit, int) or limit <= 0:
        return None
    embeddings = getattr(model[0].auto_model, "embeddings", None)
    position = getattr(embeddings, "position_embeddings", None)
    padding_idx = getattr(position, "padding_idx", None)
    return limit - (padding_idx + 1) if isinstance(padding_idx, int) else limit


def build(model: Any, source: SourceSpec) -> Built:
    """Builder for ``BUILDERS["Transformer"]``: one text graph with the whole module chain inside."""
    text_graph = export_text_graph(model)
    tokenizer_text, pad_id = tokenizer_json(model)
    return Built(
        files={TEXT_GRAPH: text_graph.onnx_bytes, TOKENIZER: tokenizer_text.encode("utf-8")},
        towers={"text": Tower(variants={"fp32": GraphVariant(
            file=TEXT_GRAPH, opset=text_graph.opset, inputs=text_graph.inputs, outputs=text_graph.outputs)})},
        tokenizer=TokenizerSpec(kind="hf", file=TOKENIZER, max_seq_length=int(model.max_seq_length),
                                pad_token_id=pad_id, model_max_length=position_limit(model)),
        embedding_dimension=int(model.get_embedding_dimension()),
    )
