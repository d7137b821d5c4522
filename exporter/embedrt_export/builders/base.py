"""What every builder shares: the :class:`Built` it returns, the artifact's file names, the opset, the
reference model's loader and the Hugging Face tokenizer it writes.

A builder is ``build(model, source) -> Built``: ``model`` the loaded sentence-transformers reference
(:func:`load_sentence_transformer`), ``source`` its :class:`~embedrt_export.source.SourceSpec`. It
returns file contents and manifest parts; everything after that (staging, hashing, parity through the
runtime, variants, the atomic rename) is :mod:`embedrt_export.export`'s, which this module never imports.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from embedrt.manifest import TokenizerSpec, Tower

TEXT_GRAPH = "text/model.onnx"
TOKENIZER = "tokenizer.json"
OPSET = 17
# The text graphs' outputs (transformer and word-embedding models; CLIP's towers have no token outputs).
OUTPUTS = ("sentence_embedding", "token_embeddings")


@dataclass
class Built:
    """What a builder produces: file contents, towers, tokenizer, and how to measure parity.

    ``measure(reference, runtime_model)`` returns per-tower parity figures, each with at least
    ``max_one_minus_cos``; the default measures the text tower on the probe texts.
    """

    files: dict[str, bytes]
    towers: dict[str, Tower]
    tokenizer: TokenizerSpec
    embedding_dimension: int
    extra: dict[str, Any] = field(default_factory=dict)
    measure: Callable[[Any, Any], dict[str, dict[str, float]]] | None = None


def load_sentence_transformer(path: str) -> Any:
    """Load the reference model on CPU in fp32, eval mode."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
    return model.eval()


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
