"""A tiny, real artifact built in a second: a WordPiece tokenizer and a mean-pooling graph, no torch.

The fast tier runs the runtime end to end on it (artifact checks, selection, tokenizer, engine,
facade, CLI): every layer is exercised without the exporter's torch stack or the fetched models.
Its graph is a Gather of random token vectors and a masked mean, like an average-word-embedding
model, with the inputs and outputs of a transformer graph.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import numpy as np
import onnx
from embedrt.artifact import sha256_bytes
from embedrt.manifest import SCHEMA, FileEntry, GraphVariant, Manifest, TokenizerSpec, Tower
from onnx import TensorProto, helper, numpy_helper
from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import WordPiece

DIM = 8
MAX_SEQ_LENGTH = 32
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
WORDS = ["the", "a", "man", "is", "eating", "food", "cat", "dog", "hello", "world", "quick", "brown", "fox"]


def tokenizer_json() -> str:
    """A BERT-like WordPiece tokenizer over ASCII: every word splits into known pieces, none is [UNK]."""
    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    vocab = {tok: i for i, tok in enumerate(SPECIALS + WORDS + chars + [f"##{c}" for c in chars])}
    tok = Tokenizer(WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    tok.decoder = decoders.WordPiece()
    return tok.to_str()


def graph(vocab_size: int, seed: int = 0, layers: int = 0) -> bytes:
    """input_ids, attention_mask, token_type_ids -> token_embeddings (Gather, then ``layers`` wide ReLU
    layers that make each token cost ~1 MFLOP: a model slow enough to keep a server busy), sentence_embedding
    (masked mean)."""
    rng = np.random.default_rng(seed)
    table = rng.normal(size=(vocab_size, DIM)).astype(np.float32)
    nodes = [helper.make_node("Gather", ["table", "input_ids"], ["token_embeddings" if not layers else "h0"])]
    weights = []
    for i in range(layers):
        up, down = f"up{i}", f"down{i}"
        weights += [numpy_helper.from_array(rng.normal(size=(DIM, 4096)).astype(np.float32) / 8, up),
                    numpy_helper.from_array(rng.normal(size=(4096, DIM)).astype(np.float32) / 64, down)]
        last = f"h{i + 1}" if i + 1 < layers else "token_embeddings"
        nodes += [helper.make_node("MatMul", [f"h{i}", up], [f"wide{i}"]),
                  helper.make_node("Relu", [f"wide{i}"], [f"act{i}"]),
                  helper.make_node("MatMul", [f"act{i}", down], [last])]
    nodes += [
        helper.make_node("Cast", ["attention_mask"], ["mask_f"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["mask_f", "axis2"], ["mask3"]),
        helper.make_node("Mul", ["token_embeddings", "mask3"], ["masked"]),
        # The sum over the sequence position after position, as the exporter writes it (batch-invariant).
        helper.make_node("CumSum", ["masked", "axis"], ["running"]),
        helper.make_node("Slice", ["running", "last", "end", "axis1"], ["summed3"]),
        helper.make_node("Squeeze", ["summed3", "axis1"], ["summed"]),
        helper.make_node("ReduceSum", ["mask_f", "axis1"], ["count"], keepdims=1),
        helper.make_node("Max", ["count", "one"], ["safe_count"]),
        helper.make_node("Div", ["summed", "safe_count"], ["sentence_embedding"]),
        # token_type_ids only checked for shape: the graph takes what a BERT graph takes.
        helper.make_node("Shape", ["token_type_ids"], ["unused_shape"]),
    ]
    inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "sequence"])
              for n in ("input_ids", "attention_mask", "token_type_ids")]
    outputs = [helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT, ["batch", DIM]),
               helper.make_tensor_value_info("token_embeddings", TensorProto.FLOAT, ["batch", "sequence", DIM])]
    inits = [*weights, numpy_helper.from_array(table, "table"),
             numpy_helper.from_array(np.array([2], np.int64), "axis2"),
             numpy_helper.from_array(np.array([1], np.int64), "axis1"),
             numpy_helper.from_array(np.array(1, np.int64), "axis"),
             numpy_helper.from_array(np.array([-1], np.int64), "last"),
             numpy_helper.from_array(np.array([2 ** 62], np.int64), "end"),
             numpy_helper.from_array(np.array([1.0], np.float32), "one")]
    model = helper.make_model(helper.make_graph(nodes, "tiny", inputs, outputs, inits),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def build(out: Path, *, name: str = "tiny", prompts: dict[str, str] | None = None, pairs: bool = False,
          similarity: str = "cosine", layers: int = 0) -> Path:
    """Write the tiny artifact folder at ``out`` and return it (``layers``: see :func:`graph`)."""
    tok = tokenizer_json()
    vocab_size = Tokenizer.from_str(tok).get_vocab_size()
    files = {"text/model.onnx": graph(vocab_size, layers=layers), "tokenizer.json": tok.encode("utf-8")}
    for rel, data in files.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(data)
    io = ("input_ids", "attention_mask", "token_type_ids"), ("sentence_embedding", "token_embeddings")
    manifest = Manifest(
        schema=SCHEMA, name=name, embedding_dimension=DIM, similarity_fn_name=similarity, normalized=False,
        tokenizer=TokenizerSpec(kind="hf", file="tokenizer.json", max_seq_length=MAX_SEQ_LENGTH, pad_token_id=0,
                                model_max_length=64),
        towers={"text": Tower(variants={"fp32": GraphVariant(file="text/model.onnx", opset=17, inputs=io[0],
                                                             outputs=io[1], parity={"max_one_minus_cos": 0.0})})},
        files={rel: FileEntry(sha256=sha256_bytes(data), size=len(data)) for rel, data in files.items()},
        source={"path": "tests/fast/tiny.py",
                "modules": [{"type": "Transformer"}, {"type": "Pooling", "mode": "mean"}]},
        prompts=dict(prompts or {}), input_kinds=("text", "pair") if pairs else ("text",))
    (out / "manifest.json").write_text(manifest.to_json(), encoding="utf-8")
    return out


def manifest_data(folder: Path) -> dict:
    """The artifact's manifest as JSON data."""
    return json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
