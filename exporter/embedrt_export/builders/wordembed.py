"""Builder for average-word-embedding models: ``WordEmbeddings`` → ``Pooling`` → Dense / LayerNorm / Normalize.

The graph is written with ``onnx.helper`` rather than traced: it is one ``Gather`` on the embedding
matrix plus masked pooling, so there is nothing for a tracer to discover, and tracing would copy and
constant-fold a matrix of up to hundreds of MB for no gain. Each step follows the sentence-transformers
6.2 module it replaces (the comments name the quirk being reproduced); the export's parity check runs
the result through the runtime against sentence-transformers itself.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from embedrt.manifest import GraphVariant, TokenizerSpec, Tower
from embedrt.whitespace import WhitespaceTokenizer
from onnx import TensorProto, helper, numpy_helper

from .. import verify
from ..source import SourceError, SourceSpec
from .base import OPSET, OUTPUTS, TEXT_GRAPH, Built

TOKENIZER_FILE = "whitespace_tokenizer.json"
INPUTS = ("input_ids", "attention_mask")
# sentence-transformers' WordEmbeddings.preprocess pads with id 0 whatever the vocabulary holds.
PAD_TOKEN_ID = 0
# Protobuf cannot serialize a message of 2 GiB or more (keep a margin for the rest of the graph): a
# larger embedding matrix (glove.840B: 2.2M x 300, 2.6 GB) is stored beside the graph as external data.
MAX_INITIALIZER_BYTES = 2**31 - 2**24
DATA_FILE = "text/model.onnx.data"
# Probe texts are sized for this many tokens: the 1,000,000-token default would make multi-GB probes.
PROBE_TOKENS = 256
# Texts that become few or no ids: stop words only, punctuation only, unknown words, case variants.
WORD_PROBES = (
    "the and of a to in is it",
    "!!! ... ,,, ?!",
    "zzqxv blorptangle qqqwww",
    "THE Quick, BROWN fox... JUMPED!",
    "hello\u00a0world\u2003tabs\tand\nnewlines",
)
_ACTIVATIONS = {"Identity": None, "Tanh": "Tanh", "ReLU": "Relu", "Sigmoid": "Sigmoid"}


class _Graph:
    """Accumulates nodes and initializers; every value gets a fresh name."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0

    def _name(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def op(self, op_type: str, *inputs: str, output: str | None = None, **attrs: Any) -> str:
        out = output or self._name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], **attrs))
        return out

    def const(self, value: Any, hint: str, dtype: type = np.float32) -> str:
        name = self._name(hint)
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def external(self, value: np.ndarray, hint: str, location: str) -> str:
        """A float32 initializer whose bytes live in the file ``location`` beside the graph."""
        name = self._name(hint)
        tensor = onnx.TensorProto(name=name, data_type=TensorProto.FLOAT, dims=value.shape,
                                  data_location=onnx.TensorProto.EXTERNAL)
        for key, item in (("location", location), ("offset", "0"), ("length", str(value.nbytes))):
            tensor.external_data.add(key=key, value=item)
        self.initializers.append(tensor)
        return name


def _sequence_sum(g: _Graph, x: str) -> str:
    """Sum of [batch, seq, dim] over seq, position after position (:mod:`embedrt_export.passes.invariance`: a sum
    that does not depend on the batch)."""
    axis1 = g.const([1], "axis1", np.int64)
    running = g.op("CumSum", x, g.const(1, "axis", np.int64))
    last = g.op("Slice", running, g.const([-1], "last", np.int64), g.const([2 ** 62], "end", np.int64), axis1)
    return g.op("Squeeze", last, axis1)


def _pool(g: _Graph, mode: str, tokens: str, mask3: str, mask_ids: str) -> str:
    """One ``Pooling._forward_padded`` mode over right-padded [batch, seq, dim] tokens."""
    axis1 = g.const([1], "axis1", np.int64)
    if mode in ("mean", "mean_sqrt_len_tokens"):
        total = _sequence_sum(g, g.op("Mul", tokens, mask3))
        count = g.op("Max", g.op("ReduceSum", mask3, axis1, keepdims=0), g.const(1e-9, "eps"))
        return g.op("Div", total, count if mode == "mean" else g.op("Sqrt", count))
    if mode == "max":
        # An all-padding row (a text with no known words) gives -inf, as sentence-transformers does.
        keep = g.op("Cast", mask3, to=TensorProto.BOOL)
        return g.op("ReduceMax", g.op("Where", keep, tokens, g.const(-np.inf, "neg_inf")), axes=[1], keepdims=0)
    if mode == "weightedmean":
        # Weights are positions 1..seq; sentence-transformers shifts them by the left padding, and the
        # engine pads on the right, so the shift is always 0.
        seq = g.op("Gather", g.op("Shape", mask_ids), g.const(1, "one", np.int64), axis=0)
        stop = g.op("Add", g.op("Cast", seq, to=TensorProto.FLOAT), g.const(1.0, "one_f"))
        positions = g.op("Range", g.const(1.0, "start"), stop, g.const(1.0, "delta"))
        weights = g.op("Mul", mask3, g.op("Reshape", positions, g.const([1, -1, 1], "shape", np.int64)))
        total = _sequence_sum(g, g.op("Mul", tokens, weights))
        count = g.op("Max", g.op("ReduceSum", weights, axis1, keepdims=0), g.const(1e-9, "eps"))
        return g.op("Div", total, count)
    if mode == "lasttoken":
        # Last unmasked position; an empty text takes position 0 multiplied by its zero mask.
        last = g.op("Sub", g.op("ReduceSum", mask_ids, axis1, keepdims=1), g.const([1], "one", np.int64))
        last = g.op("Max", last, g.const([0], "zero", np.int64))
        return g.op("GatherND", g.op("Mul", tokens, mask3), last, batch_dims=1)
    if mode == "cls":
        raise SourceError("Pooling mode 'cls' has no CLS token to take: WordEmbeddings passes "
                          "cls_token_embeddings=None, and sentence-transformers itself fails on it")
    raise SourceError(f"Pooling mode {mode!r} is not supported for word-embedding models")


def _dense(g: _Graph, module: Any, x: str) -> str:
    if module.module_input_name != "sentence_embedding" or module.module_output_name != "sentence_embedding":
        raise SourceError(f"Dense on {module.module_input_name!r} → {module.module_output_name!r} is not "
                          "supported; only Dense on the sentence embedding is")
    activation = type(module.activation_function)
    if not activation.__module__.startswith("torch.nn") or activation.__name__ not in _ACTIVATIONS:
        raise SourceError(f"Dense activation {activation.__module__}.{activation.__name__} is not supported "
                          f"(supported: torch.nn {', '.join(_ACTIVATIONS)})")
    linear = module.linear
    inputs = [x, g.const(_array(linear.weight), "dense_weight")]
    if linear.bias is not None:
        inputs.append(g.const(_array(linear.bias), "dense_bias"))
    out = g.op("Gemm", *inputs, transB=1)
    if _ACTIVATIONS[activation.__name__]:
        out = g.op(_ACTIVATIONS[activation.__name__], out)
    if module.use_residual:
        residual = x if module.in_features == module.out_features else \
            g.op("Gemm", x, g.const(_array(module.residual.weight), "residual_weight"), transB=1)
        out = g.op("Add", out, residual)
    return out


def _normalize(g: _Graph, module: Any, x: str) -> str:
    if module.module_input_name != "sentence_embedding" or module.module_output_name != "sentence_embedding":
        raise SourceError(f"Normalize on {module.module_input_name!r} is not supported; only on the sentence "
                          "embedding")
    # F.normalize: x / max(‖x‖₂, 1e-12), so an all-zero embedding stays zero.
    norm = g.op("ReduceL2", x, axes=[-1], keepdims=1)
    return g.op("Div", x, g.op("Max", norm, g.const(1e-12, "eps")))


def _array(tensor: Any) -> np.ndarray:
    return tensor.detach().cpu().numpy().astype(np.float32)


def build_graph(model: Any) -> tuple[bytes, bytes | None]:
    """The whole module chain of a loaded word-embedding ``SentenceTransformer`` as one ONNX graph, and
    the bytes of its :data:`DATA_FILE` when the embedding matrix is too large to sit inside it."""
    modules = list(model)
    matrix = _array(modules[0].emb_layer.weight)
    data = matrix.astype("<f4", copy=False).tobytes() if matrix.nbytes > MAX_INITIALIZER_BYTES else None
    g = _Graph()
    table = (g.external(matrix, "embeddings", Path(DATA_FILE).name) if data is not None
             else g.const(matrix, "embeddings"))
    del matrix
    tokens = g.op("Gather", table, "input_ids", axis=0, output="token_embeddings")
    mask3 = g.op("Unsqueeze", g.op("Cast", "attention_mask", to=TensorProto.FLOAT),
                 g.const([-1], "axis_last", np.int64))
    pooling, *heads = modules[1:]
    if type(pooling).__name__ != "Pooling":
        raise SourceError(f"module 1 must be Pooling after WordEmbeddings, got {type(pooling).__name__}")
    modes = (pooling.pooling_mode,) if isinstance(pooling.pooling_mode, str) else tuple(pooling.pooling_mode)
    pooled = [_pool(g, mode, tokens, mask3, "attention_mask") for mode in modes]
    x = pooled[0] if len(pooled) == 1 else g.op("Concat", *pooled, axis=-1)
    for module in heads:
        kind = type(module).__name__
        if kind == "Dense":
            x = _dense(g, module, x)
        elif kind == "LayerNorm":
            x = g.op("LayerNormalization", x, g.const(_array(module.norm.weight), "ln_weight"),
                     g.const(_array(module.norm.bias), "ln_bias"), axis=-1, epsilon=float(module.norm.eps))
        elif kind == "Normalize":
            x = _normalize(g, module, x)
        else:
            raise SourceError(f"module {kind} after Pooling is not supported for word-embedding models "
                              "(supported: Dense, LayerNorm, Normalize)")
    g.op("Identity", x, output="sentence_embedding")

    dim = int(modules[0].emb_layer.weight.shape[1])
    graph = helper.make_graph(
        g.nodes, "embedrt_word_embeddings",
        [helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", "sequence"]) for name in INPUTS],
        [helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT,
                                       ["batch", int(model.get_embedding_dimension())]),
         helper.make_tensor_value_info("token_embeddings", TensorProto.FLOAT, ["batch", "sequence", dim])],
        initializer=g.initializers,
    )
    opsets = [helper.make_opsetid("", OPSET)]
    # onnx stamps its own newest IR version by default, which older ONNX Runtime builds refuse to load.
    onnx_model = helper.make_model(graph, opset_imports=opsets, producer_name="embedrt_export",
                                   ir_version=helper.find_min_ir_version_for(opsets))
    graph_bytes = onnx_model.SerializeToString()
    if data is None:
        onnx.checker.check_model(onnx_model)
        return graph_bytes, None
    # The checker reads external data from files, so check the pair as the artifact will hold it.
    with tempfile.TemporaryDirectory(prefix="embedrt-wordembed-") as tmp:
        graph_file = Path(tmp) / Path(TEXT_GRAPH).name
        graph_file.write_bytes(graph_bytes)
        (Path(tmp) / Path(DATA_FILE).name).write_bytes(data)
        onnx.checker.check_model(str(graph_file))
    return graph_bytes, data


def runtime_tokenizer(model: Any) -> WhitespaceTokenizer:
    """The runtime's tokenizer for the model, refusing tokenizers other than sentence-transformers' whitespace one."""
    from sentence_transformers.sentence_transformer.modules.tokenizer import WhitespaceTokenizer as STWhitespace

    module = model[0]
    tokenizer = module.tokenizer
    # Exact type: PhraseTokenizer, HF tokenizer wrappers and subclasses split text differently.
    if type(tokenizer) is not STWhitespace:
        raise SourceError(f"WordEmbeddings tokenizer {type(tokenizer).__module__}.{type(tokenizer).__name__} is not "
                          "supported; embedrt reproduces only sentence-transformers' WhitespaceTokenizer")
    max_seq_length = module.max_seq_length
    if isinstance(max_seq_length, bool) or not isinstance(max_seq_length, int) or max_seq_length < 1:
        raise SourceError(f"WordEmbeddings max_seq_length must be a positive int, got {max_seq_length!r}")
    ours = WhitespaceTokenizer(list(tokenizer.vocab), tokenizer.stop_words, tokenizer.do_lower_case,
                               max_seq_length, PAD_TOKEN_ID)
    if ours.word2idx != dict(tokenizer.word2idx):
        raise SourceError("WhitespaceTokenizer.vocab does not match its word2idx (set_vocab with a one-shot "
                          "iterable?); cannot write the vocabulary")
    rows = module.emb_layer.weight.shape[0]
    if len(ours.vocab) > rows:
        raise SourceError(f"vocabulary has {len(ours.vocab)} words but the embedding matrix only {rows} rows")
    return ours


def measure(reference: Any, ours: Any) -> dict[str, dict[str, float]]:
    """Parity on the shared probe texts (sized for :data:`PROBE_TOKENS`) plus word-level probes.

    Texts without known words pool to zeros (or -inf under max pooling); ``fidelity.one_minus_cos``
    scores those 0 only where embedrt's row is exactly sentence-transformers'.
    """
    texts = verify.probe_texts(min(ours.max_seq_length, PROBE_TOKENS)) + list(WORD_PROBES)
    return {"text": verify.measure(reference, ours, texts).as_dict()}


def build(model: Any, source: SourceSpec) -> Built:
    """Builder for ``BUILDERS["WordEmbeddings"]``: the graph, the whitespace tokenizer and their parity."""
    tokenizer = runtime_tokenizer(model)
    graph_bytes, data = build_graph(model)
    files = {TEXT_GRAPH: graph_bytes, TOKENIZER_FILE: tokenizer.to_json().encode("utf-8")}
    if data is not None:
        files[DATA_FILE] = data
    return Built(
        files=files,
        towers={"text": Tower(variants={"fp32": GraphVariant(
            file=TEXT_GRAPH, opset=OPSET, inputs=INPUTS, outputs=OUTPUTS,
            external_data=DATA_FILE if data is not None else None)})},
        tokenizer=TokenizerSpec(kind="whitespace", file=TOKENIZER_FILE, max_seq_length=tokenizer.max_seq_length,
                                pad_token_id=PAD_TOKEN_ID),
        embedding_dimension=int(model.get_embedding_dimension()),
        measure=measure,
    )
