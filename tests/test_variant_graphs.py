"""Graph variants built from a tiny BERT twin (optimized, fp32_fused, fp16, int8 per ISA, row-wise and
blockwise int8): they load and run, fuse what they should, run packed rows on embedrt's kernels, stay
batch-invariant and thread-safe, and keep what must stay float32 in float32.

Choosing and gating variants (and the real model's variants) is test_variants.py.
"""

from __future__ import annotations

import json
import shutil

import embedrt
import numpy as np
import pytest

ALL = ["fp32", "optimized", "fp32_fused", "fp16", "int8_rowwise", "int8_rowwise_fused", "int8_blockwise", "int8_avx2",
       "int8_avx512", "int8_avx512_vnni", "int8_arm64"]
ROWWISE = ["int8_rowwise", "int8_rowwise_fused"]
CALIBRATION = ["A man is eating food.", "Ein Mann isst Brot.", "short", "", "a much longer sentence " * 9,
               "The quick brown fox jumps over the lazy dog."] * 6


# -- building and loading variants -----------------------------------------------------------------
@pytest.fixture(scope="module")
def twin_with_variants(twin_assets, tmp_path_factory, add_variants):
    """A tiny BERT twin exported, with every variant built and written into its artifact."""
    from embedrt_dev import twins
    from embedrt_export import export, variants
    from embedrt_export.builders.base import load_sentence_transformer
    from embedrt_export.builders.transformer import calibration_feeds
    from embedrt_export.variants import optimize

    root = tmp_path_factory.mktemp("variant-twin")
    src = twins.build_twin(root / "src", "bert", twins.HeadSpec(pooling="mean", normalize=True), twin_assets)
    export(src, root / "artifact", variants=())
    reference = load_sentence_transformer(str(src))
    facts = optimize.ArchFacts.from_config(reference[0].auto_model.config)
    candidates = list(variants.build_text_variants((root / "artifact" / "text" / "model.onnx").read_bytes(), facts,
                                                   calibration_feeds=calibration_feeds(reference, CALIBRATION)))
    add_variants(root / "artifact", candidates)
    return root / "artifact", reference, candidates


def test_twin_variants_build_load_and_run(twin_with_variants):
    artifact, reference, candidates = twin_with_variants
    assert sorted(c.name for c in candidates) == sorted(ALL[1:])
    texts = ["A man is eating food.", "Ein Mann isst.", "", "short", "a much longer sentence " * 8]
    ref = reference.encode(texts, convert_to_numpy=True)
    manifest = json.loads((artifact / "manifest.json").read_text())
    assert set(manifest["towers"]["text"]["variants"]) == set(ALL)
    for candidate in candidates:
        model = embedrt.SentenceTransformer(artifact, variant=candidate.name, threads=1)
        got = model.encode(texts)
        assert got.shape == ref.shape and got.dtype == np.float32, candidate.name
        cos = (got * ref).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)
        assert cos.min() > 0.95, (candidate.name, cos)


def test_exported_graph_has_no_softmax_guards_or_repeated_masks(twin_with_variants):
    """simplify(): the eager trace's per-layer NaN guards and mask copies are gone from the fp32 graph."""
    import onnx

    artifact, _, _ = twin_with_variants
    ops = [n.op_type for n in onnx.load(str(artifact / "text" / "model.onnx")).graph.node]
    # Two Wheres are left: one builds the boolean padding mask, one makes it additive for every layer.
    assert ops.count("Softmax") >= 2 and "IsNaN" not in ops and ops.count("Where") <= 2


def test_twin_optimized_keeps_fp32_parity_and_fuses(twin_with_variants):
    from embedrt_export.verify import measure, probe_texts

    artifact, reference, candidates = twin_with_variants
    optimized = next(c for c in candidates if c.name == "optimized")
    import onnx

    ops = [n.op_type for n in onnx.load_from_string(optimized.onnx_bytes).graph.node]
    assert ops.count("SkipLayerNormalization") >= 2, ops
    model = embedrt.SentenceTransformer(artifact, variant="optimized", threads=1)
    parity = measure(reference, model, probe_texts(model.max_seq_length), batch_size=4)
    assert parity.max_one_minus_cos <= 1e-6, parity


def test_twin_fp32_fused_keeps_fp32_parity_on_kernels(twin_with_variants):
    """fp32_fused: attention, bias + residual + LayerNorm and bias + GELU on embedrt's kernels, the
    MatMuls ONNX Runtime's; as close to sentence-transformers as the plain fp32 graph."""
    from collections import Counter

    import onnx
    from embedrt_export.verify import measure, probe_texts

    artifact, reference, candidates = twin_with_variants
    layers = sum(n.op_type == "Erf" for n in onnx.load(str(artifact / "text" / "model.onnx")).graph.node)
    fused = onnx.load_from_string(next(c for c in candidates if c.name == "fp32_fused").onnx_bytes)
    ops = Counter(f"{n.domain}:{n.op_type}" for n in fused.graph.node)
    assert ops["ai.embedrt:PackedAttention"] == layers and ops["ai.embedrt:BiasGelu"] == layers
    assert not [a for n in fused.graph.node if n.op_type == "PackedAttention" for a in n.attribute]  # fp32 operands
    assert ops["ai.embedrt:BiasAddLayerNorm"] == 2 * layers and ops[":LayerNormalization"] == 1  # embeddings'
    assert not ops[":Softmax"] and not ops[":Erf"] and not ops[":Transpose"]
    # packed after the embeddings, unpacked once for the token_embeddings output; the mean pooling's sum
    # of token embeddings on the packed rows (the mask's own sum stays a CumSum)
    assert ops["ai.embedrt:PackRows"] == 1 and ops["ai.embedrt:UnpackRows"] == 1
    assert ops["ai.embedrt:SumRows"] == 1 and ops[":CumSum"] == 1
    # the padding mask reaches the attentions as (batch, 1, 1, L): never expanded over the query axis
    producer = {o: n for n in fused.graph.node for o in n.output}
    masks = {n.input[7] for n in fused.graph.node if n.op_type == "PackedAttention"}
    expand = producer[producer[masks.pop()].input[0]]
    shape = next(onnx.numpy_helper.to_array(i) for i in fused.graph.initializer if i.name == expand.input[1])
    assert not masks and expand.op_type == "Expand" and shape.tolist() == [1, 1, 1, 1]
    model = embedrt.SentenceTransformer(artifact, variant="fp32_fused", threads=1)
    parity = measure(reference, model, probe_texts(model.max_seq_length), batch_size=4)
    assert parity.max_one_minus_cos <= 1e-6, parity


def test_calibration_runs_in_slices_without_padding_and_captures_the_same_rows(twin_with_variants):
    """The row-wise calibration probe runs each batch in slices of a few rows, cut to their own longest text
    (a whole padded batch of long texts held gigabytes of captured activations): the real tokens' rows it
    captures are those of whole padded batches, in the same order."""
    import onnx
    from embedrt_export.builders.transformer import calibration_feeds
    from embedrt_export.variants import rowwise

    artifact, reference, _ = twin_with_variants
    model = onnx.load_from_string((artifact / "text" / "model.onnx").read_bytes())
    names = sorted({g.input for g in rowwise.linear_groups(model)})
    session = rowwise._probe_session(model, names)
    feeds = calibration_feeds(reference, CALIBRATION, batch_size=12)
    assert any((f["attention_mask"] == 0).any() for f in feeds)  # there is padding to cut

    sliced = list(rowwise._captured_rows(session, names, feeds, max_tokens=8))
    whole = list(rowwise._captured_rows(session, names, feeds, max_tokens=10**9))
    assert len(sliced) > len(whole) == len(feeds)
    for name in names:
        got, want = (np.concatenate([rows[name] for rows in runs]) for runs in (sliced, whole))
        assert got.shape == want.shape == (sum(int(f["attention_mask"].sum()) for f in feeds), got.shape[1])
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("variant", ["fp32_fused", "int8_rowwise_fused"])
def test_packed_graph_equals_padded_and_refuses_a_mask_it_cannot_pack(twin_with_variants, variant):
    """The graph before packing (every row padded) and after (real rows only) give the same outputs on a
    batch with padding; a left-padded mask, which the engine never sends, is refused by name."""
    import onnx
    import onnxruntime as ort
    from embedrt import kernels
    from embedrt_export.builders.transformer import calibration_feeds
    from embedrt_export.variants import kernel_fusion, rowwise

    artifact, reference, candidates = twin_with_variants
    fp32 = (artifact / "text" / "model.onnx").read_bytes()
    if variant == "fp32_fused":
        padded_graph = kernel_fusion.fuse_fp32(onnx.load_from_string(fp32))
    else:
        calibration = rowwise.calibrate_graph(fp32, calibration_feeds(reference, CALIBRATION))
        padded_graph = onnx.load_from_string(rowwise.quantize_rowwise_int8(fp32, calibration, kernels=True))
    packed_graph = onnx.load_from_string(next(c for c in candidates if c.name == variant).onnx_bytes)
    assert "PackRows" not in {n.op_type for n in padded_graph.graph.node}
    assert "PackRows" in {n.op_type for n in packed_graph.graph.node}

    def session(model):
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        kernels.register(options, [kernels.DOMAIN])
        return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])

    model = embedrt.SentenceTransformer(artifact, variant=variant, threads=1)
    encoded = model.tokenizer.encode(["a", "a somewhat longer sentence than that", "mid length text", ""])
    feeds = model.engine._feeds(encoded)
    assert feeds["attention_mask"].min() == 0  # there is padding to leave out
    packed, padded = session(packed_graph), session(padded_graph)
    names = [o.name for o in packed.get_outputs()]
    for name, got, want in zip(names, packed.run(names, feeds), padded.run(names, feeds)):
        if name == "token_embeddings":  # padding rows: zeros when packed, never read by the engine
            got, want = got[feeds["attention_mask"] == 1], want[feeds["attention_mask"] == 1]
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6, err_msg=name)
    left = {k: np.ascontiguousarray(v[:, ::-1]) for k, v in feeds.items()}
    with pytest.raises(Exception, match="PackRows: attention_mask row 0 is not right-padded"):
        packed.run(None, left)


@pytest.mark.parametrize(("variant", "limit"), [
    ("int8_blockwise", 1e-4),
    # Per-row scales: only float32 rounding in the fp32 parts can move with the batch (dynamic int8: ~1e-2).
    ("int8_rowwise", 1e-6),
    ("int8_rowwise_fused", 1e-6),
    ("fp32_fused", 1e-6),
])
def test_twin_variant_is_batch_invariant(twin_with_variants, variant, limit):
    from embedrt_export.fidelity import one_minus_cos

    artifact, _, _ = twin_with_variants
    model = embedrt.SentenceTransformer(artifact, variant=variant, threads=1)
    texts = [f"sentence number {i} " + "word " * (i % 13) for i in range(32)]
    alone = np.stack([model.encode([t], batch_size=1)[0] for t in texts])
    for batch_size in (32, 7):
        assert float(one_minus_cos(alone, model.encode(texts, batch_size=batch_size)).max()) <= limit


@pytest.mark.parametrize("variant", [*ROWWISE, "fp32_fused"])
def test_twin_variant_eight_threads_match_serial(twin_with_variants, variant):
    from concurrent.futures import ThreadPoolExecutor

    artifact, _, _ = twin_with_variants
    model = embedrt.SentenceTransformer(artifact, variant=variant, threads=2)
    chunks = [[f"thread {i} text {j} " + "word " * ((i * j) % 11) for j in range(12)] for i in range(8)]
    serial = [model.encode(chunk) for chunk in chunks]
    with ThreadPoolExecutor(max_workers=8) as pool:
        parallel = list(pool.map(model.encode, chunks))
    for one, other in zip(serial, parallel):
        np.testing.assert_array_equal(one, other)


def test_rowwise_quantizes_the_encoder_once_per_input(twin_with_variants):
    """Every encoder MatMul becomes MatMulIntegerToFloat (Q, K and V share one quantizer); the head's
    Dense stays fp32; the widest 1% of input channels (at least none) run in fp32 beside it."""
    import onnx
    from embedrt_export.onnx_edit import head_nodes
    from embedrt_export.variants import rowwise

    artifact, _, candidates = twin_with_variants
    fp32 = onnx.load(str(artifact / "text" / "model.onnx"))
    initializers = {i.name for i in fp32.graph.initializer}
    head = set(head_nodes(fp32))
    linear = [n for n in fp32.graph.node if n.op_type == "MatMul" and n.input[1] in initializers and n.name not in head]
    groups = rowwise.linear_groups(fp32)
    assert sum(len(g.matmuls) for g in groups) == len(linear) and len(groups) < len(linear)
    int8 = onnx.load_from_string(next(c for c in candidates if c.name == "int8_rowwise").onnx_bytes).graph
    ops = [n.op_type for n in int8.node]
    assert ops.count("MatMulIntegerToFloat") == len(linear)
    assert ops.count("QuantizeLinear") == len(groups)
    float_parts = [n for n in int8.node if n.name.endswith("/float_part")]
    assert len(float_parts) == sum(len(g.matmuls) for g in groups if int(0.01 * g.channels) > 0)


def test_rowwise_fused_runs_on_kernels_with_layernorm_and_gelu_folded(twin_with_variants):
    """int8_rowwise_fused: int8_rowwise's int8 GEMM per linear layer, on embedrt's kernels, each with its
    rescale in the same op. Quantized inputs written by the op before them where it is one of these (the
    GELU's, the LayerNorms'); the residual Add + LayerNorm after attention and after the feed-forward block
    folded into the rescale;
    each layer's attention (head split, scores, mask, softmax, context, merge) one op, on bf16 operands.
    Same calibration as int8_rowwise, so the two graphs agree up to float rounding and bf16 attention."""
    from collections import Counter

    import onnx
    from embedrt_export.fidelity import one_minus_cos
    from embedrt_export.variants import rowwise

    artifact, _, candidates = twin_with_variants
    by_name = {c.name: c for c in candidates}
    fp32 = onnx.load(str(artifact / "text" / "model.onnx"))
    groups = rowwise.linear_groups(fp32)
    layers = sum(n.op_type == "Erf" for n in fp32.graph.node)
    assert layers >= 2
    fused = onnx.load_from_string(by_name["int8_rowwise_fused"].onnx_bytes)
    ops = Counter(f"{n.domain}:{n.op_type}" for n in fused.graph.node)
    # The twin's widths (32, 64) tile, so every int8 GEMM is embedrt's, with its epilogue in the same op.
    assert not ops["com.microsoft:MatMulIntegerToFloat"] and not ops["ai.embedrt:RowDequantize"]
    assert ops["ai.embedrt:QMatMulRowDequantizeGeluQuantize"] == layers
    # RowQuantize: the embeddings' LayerNorm output and each attention output; the other LayerNorm outputs
    # that a MatMul reads are quantized by the op that writes them (all but the last layer's).
    assert len(groups) == 4 * layers
    assert ops["ai.embedrt:RowQuantize"] == 1 + layers
    assert ops["ai.embedrt:QMatMulRowDequantizeAddLayerNormQuantize"] == 2 * layers - 1
    assert ops["ai.embedrt:QMatMulRowDequantizeAddLayerNorm"] == 1
    assert ops["ai.embedrt:QMatMulRowDequantize"] == sum(len(g.matmuls) for g in groups) - 3 * layers
    assert ops[":LayerNormalization"] == 1 and not ops[":Erf"] and not ops[":QuantizeLinear"]  # embeddings' LN
    assert ops["ai.embedrt:PackedAttention"] == layers and not ops[":Softmax"] and not ops[":Transpose"]
    assert {onnx.helper.get_attribute_value(a) for n in fused.graph.node if n.op_type == "PackedAttention"
            for a in n.attribute if a.name == "operands"} == {b"bf16"}
    assert ops["ai.embedrt:PackRows"] == ops["ai.embedrt:UnpackRows"] == ops["ai.embedrt:SumRows"] == 1
    assert "ai.embedrt" in {o.domain for o in fused.opset_import}
    assert by_name["int8_rowwise_fused"].custom_ops == ("ai.embedrt",) and not by_name["int8_rowwise"].custom_ops
    texts = [f"sentence number {i} " + "word " * (i % 13) for i in range(24)]
    portable, kernels = (embedrt.SentenceTransformer(artifact, variant=v, threads=1).encode(texts) for v in ROWWISE)
    assert float(one_minus_cos(portable, kernels).max()) < 1e-3


def test_without_the_kernel_library_the_fused_graph_is_skipped_aloud_or_refused(twin_with_variants, tmp_path,
                                                                                monkeypatch, caplog):
    import logging

    from embedrt import kernels

    artifact = tmp_path / "artifact"
    shutil.copytree(twin_with_variants[0], artifact)
    manifest = json.loads((artifact / "manifest.json").read_text())
    for name in ROWWISE:  # as if both had passed their gates at export
        manifest["towers"]["text"]["variants"][name]["parity"] = {"spearman": 1.0, "top10_overlap": 1.0,
                                                                  "batch_one_minus_cos": 0.0}
    (artifact / "manifest.json").write_text(json.dumps(manifest))
    import embedrt.loader

    monkeypatch.setattr(embedrt.loader, "detect_isa", lambda *args, **kwargs: "avx512_vnni")
    assert embedrt.SentenceTransformer(artifact, threads=1).variant == "int8_rowwise_fused"
    monkeypatch.setattr(kernels, "library_path", lambda: None)
    with caplog.at_level(logging.WARNING, logger="embedrt.loader"):
        model = embedrt.SentenceTransformer(artifact, threads=1)
    assert model.variant == "int8_rowwise"
    assert "int8_rowwise_fused: skipped" in caplog.text and "kernel library" in caplog.text
    with pytest.raises(kernels.KernelLibraryError, match="C\\+\\+17 compiler.*variant='int8_rowwise'"):
        embedrt.SentenceTransformer(artifact, variant="int8_rowwise_fused", threads=1)


def test_info_names_the_kernels_a_variant_needs_and_where_they_run(twin_with_variants, capsys, monkeypatch):
    from embedrt import kernels
    from embedrt.cli import main

    assert main(["info", str(twin_with_variants[0])]) == 0
    out = capsys.readouterr().out
    assert "int8_rowwise_fused" in out and f"needs {kernels.DOMAIN} (embedrt's kernels)" in out
    assert f"embedrt kernels     {kernels.isa()}" in out
    monkeypatch.setattr(kernels, "library_path", lambda: None)
    assert main(["info", str(twin_with_variants[0])]) == 0
    assert "embedrt kernels     not built in this install" in capsys.readouterr().out


def test_fp16_keeps_head_and_io_in_float32(twin_with_variants):
    import onnx
    from embedrt_export.onnx_edit import head_nodes

    _, _, candidates = twin_with_variants
    by_name = {c.name: c for c in candidates}
    head = set(head_nodes(onnx.load_from_string(by_name["optimized"].onnx_bytes)))
    assert head, "the mean-pooling/normalize head was not found"
    model = onnx.load_from_string(by_name["fp16"].onnx_bytes)
    assert {i.type.tensor_type.elem_type for i in model.graph.output} == {onnx.TensorProto.FLOAT}
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)
    produced = {o: n for n in model.graph.node for o in n.output}
    for node in model.graph.node:
        if node.op_type in ("LayerNormalization", "SkipLayerNormalization") or node.name in head:
            for name in node.input:
                src = produced.get(name)
                assert src is None or src.op_type != "Cast" or \
                    next(a.i for a in src.attribute if a.name == "to") != onnx.TensorProto.FLOAT16, node.name



def test_fp16_keeps_index_arithmetic_in_float32(twin_assets, tmp_path):
    """MPNet computes its relative-position buckets with float Log/Div before a Cast to int64; in
    float16 a bucket can flip (real mpnet-base: 1−cos up to 3.6e-3). Every node upstream of an
    integer Cast must see float32 inputs, and the fp16 twin must stay close to its fp32 graph."""
    import onnx
    from embedrt_dev import twins
    from embedrt_export import export
    from embedrt_export.builders.base import load_sentence_transformer
    from embedrt_export.variants import optimize

    src = twins.build_twin(tmp_path / "src", "mpnet", twins.HeadSpec(pooling="mean", normalize=True), twin_assets)
    export(src, tmp_path / "artifact", variants=())
    facts = optimize.ArchFacts.from_config(load_sentence_transformer(str(src))[0].auto_model.config)
    fused = optimize.fuse((tmp_path / "artifact" / "text" / "model.onnx").read_bytes(), facts).onnx_bytes
    fused_model = onnx.load_from_string(fused)
    kept = optimize.index_nodes(fused_model)
    assert {"Log", "Div"} <= {n.op_type for n in fused_model.graph.node if n.name in kept}
    fp16 = onnx.load_from_string(optimize.to_fp16(fused))
    by_name = {n.name: n for n in fp16.graph.node}
    kept = [name for name in kept if by_name.get(name, onnx.NodeProto()).op_type in ("Log", "Div", "Abs", "Mul")]
    assert len(kept) >= 3
    half = {t.name for t in fp16.graph.initializer if t.data_type == onnx.TensorProto.FLOAT16}
    half |= {n.output[0] for n in fp16.graph.node if n.op_type == "Cast"
             and next(a.i for a in n.attribute if a.name == "to") == onnx.TensorProto.FLOAT16}
    for name in kept:
        assert not half & set(by_name[name].input), f"{name} reads a float16 tensor"
    outputs = [out for n in fp16.graph.node for out in n.output]
    assert len(set(outputs)) == len(outputs), "a tensor is produced twice"

    import onnxruntime

    feeds = {"input_ids": np.array([[0, 31, 7, 99, 12, 2] + [1] * 10]),
             "attention_mask": np.array([[1] * 6 + [0] * 10])}
    outputs = []
    for data in (fused, fp16.SerializeToString()):
        session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
        outputs.append(session.run(["sentence_embedding"], feeds)[0][0])
    assert 1 - float(np.dot(*outputs) / np.linalg.norm(outputs[0]) / np.linalg.norm(outputs[1])) < 1e-4


def test_identical_graphs_share_a_file(twin_with_variants):
    _, _, candidates = twin_with_variants
    by_name = {c.name: c for c in candidates}
    assert by_name["int8_arm64"].file == by_name["int8_avx512_vnni"].file
    assert len({c.file for c in candidates}) == len(candidates) - 1
