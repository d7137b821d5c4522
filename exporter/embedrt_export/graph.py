"""Trace a whole sentence-transformers model (transformer → pooling → Dense → LayerNorm → Normalize) to ONNX.

The wrapper calls the sentence-transformers modules themselves, so every head is computed by
the very code the reference uses; there is no re-implementation of pooling to drift from it.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

OPSET = 17
TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
OUTPUTS = ("sentence_embedding", "token_embeddings")


@dataclass(frozen=True)
class TextGraph:
    """A serialized text-tower graph and its interface."""

    onnx_bytes: bytes
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    opset: int


def load_sentence_transformer(path: str) -> Any:
    """Load the reference model on CPU in fp32, eval mode."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
    return model.eval()


def graph_inputs(model: Any) -> tuple[str, ...]:
    """The tokenizer outputs the transformer consumes, in the graph's input order."""
    names = set(model[0].tokenizer.model_input_names)
    return tuple(n for n in TEXT_INPUTS if n in names)


@contextlib.contextmanager
def _eager_attention(model: Any) -> Iterator[None]:
    """Trace attention as MatMul/Softmax rather than one SDPA call: ORT's fusions and the int8
    rewrites match that pattern, and the dynamic int8 graph of an eager trace runs ~1.5× faster.
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

    The trace is simplified (:func:`embedrt_export.simplify.simplify`) and its pooling sums made
    batch-invariant (:func:`batch_invariant`) before it is returned.
    """
    import torch

    from .simplify import simplify

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
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings(), _eager_attention(model):
        # The TorchScript exporter is deprecated but stable and exact for these graphs; its
        # tracer warnings are about shape-dependent Python branches that are constant here.
        warnings.simplefilter("ignore")
        torch.onnx.export(_Wrapper(model).eval(), args, buffer, input_names=list(inputs),
                          output_names=list(OUTPUTS), dynamic_axes=dynamic, opset_version=OPSET,
                          do_constant_folding=True, dynamo=False)
    onnx_bytes, _ = simplify(buffer.getvalue())
    return TextGraph(onnx_bytes=batch_invariant(onnx_bytes), inputs=inputs, outputs=OUTPUTS, opset=OPSET)


def batch_invariant(onnx_bytes: bytes) -> bytes:
    """The graph with its sums over the sequence made independent of the batch (:mod:`embedrt_export.invariance`)."""
    import onnx

    from .invariance import sequential_sums

    model = onnx.load_from_string(onnx_bytes)
    return model.SerializeToString() if sequential_sums(model) else onnx_bytes


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


def tokenizer_json(model: Any) -> tuple[str, int]:
    """The tokenizer sentence-transformers uses (normalizers included), without padding/truncation."""
    from tokenizers import Tokenizer

    hf_tokenizer = model[0].tokenizer
    backend = Tokenizer.from_str(hf_tokenizer.backend_tokenizer.to_str())
    backend.no_padding()
    backend.no_truncation()
    pad_id = hf_tokenizer.pad_token_id
    if pad_id is None:
        raise ValueError("the source tokenizer has no pad token; cannot batch inputs")
    return backend.to_str(), int(pad_id)
