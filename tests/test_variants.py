"""Choosing and gating graph variants: ISA detection, gate failures, the rank measure, row-wise int8 on a
synthetic layer, and the real model's variants measured on real text at export.

The variants built from a tiny twin (loading, fusion, packed rows, batch invariance) are in
test_variant_graphs.py.
"""

from __future__ import annotations

import shutil

import embedrt
import numpy as np
import pytest
from embedrt import isa
from embedrt_dev.corpora import spread_english

VNNI_CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
flags\t\t: fpu vme sse sse2 ssse3 sse4_1 sse4_2 avx avx2 fma avx512f avx512dq avx512cd avx512bw avx512vl avx512_vnni
processor\t: 1
flags\t\t: fpu
"""
AVX512_CPUINFO = "flags\t\t: sse4_2 avx avx2 avx512f avx512dq avx512cd avx512bw avx512vl\n"
AVX512F_ONLY_CPUINFO = "flags\t\t: sse4_2 avx avx2 avx512f avx512pf avx512er\n"  # Xeon Phi: no BW
AVX2_CPUINFO = "flags\t\t: sse4_2 avx avx2 fma avx_vnni\n"
SSE_CPUINFO = "flags\t\t: fpu sse sse2 sse4_2\n"
ARM_CPUINFO = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics asimddp\n"

ROWWISE = ["int8_rowwise", "int8_rowwise_fused"]


# -- ISA detection and variant choice ----------------------------------------------------------------
@pytest.mark.parametrize(("cpuinfo", "machine", "expected"), [
    (VNNI_CPUINFO, "x86_64", "avx512_vnni"),
    (AVX512_CPUINFO, "x86_64", "avx512"),
    (AVX512F_ONLY_CPUINFO, "x86_64", "avx2"),
    (AVX2_CPUINFO, "x86_64", "avx2"),
    (SSE_CPUINFO, "x86_64", None),
    ("", "AMD64", None),
    (ARM_CPUINFO, "aarch64", "arm64"),
    ("", "arm64", "arm64"),  # macOS on Apple silicon: no /proc/cpuinfo
])
def test_detect_isa(cpuinfo, machine, expected):
    assert isa.detect_isa(cpuinfo, machine) == expected


def test_cpu_flags_reads_first_flags_line():
    flags = isa.cpu_flags(VNNI_CPUINFO)
    assert "avx512_vnni" in flags and "avx2" in flags
    assert isa.cpu_flags("model name\t: something\n") == frozenset()


def test_detect_isa_on_this_host_is_a_known_value():
    assert isa.detect_isa() in ("avx2", "avx512", "avx512_vnni", "arm64", None)


# -- gates and metrics -----------------------------------------------------------------------------
def test_every_isa_has_a_quantization_config_and_a_gate():
    from embedrt.manifest import INT8_DYNAMIC
    from embedrt_export import variants
    from embedrt_export.variants import quantize

    assert {f"int8_{i}" for i in quantize.ISA_CONFIGS} == set(INT8_DYNAMIC)
    assert set(INT8_DYNAMIC) <= set(variants.GATES)


def test_gate_failures_name_each_missed_limit():
    from embedrt.selection import Gate

    gate = Gate(max_one_minus_cos=1e-6, min_spearman=0.995, min_top10_overlap=0.95, max_batch_one_minus_cos=1e-4)
    good = {"max_one_minus_cos": 1e-7, "spearman": 0.999, "top10_overlap": 0.97, "batch_one_minus_cos": 0.0}
    assert gate.failures(good) == []
    bad = {"max_one_minus_cos": 1e-3, "spearman": 0.99, "top10_overlap": 0.9, "batch_one_minus_cos": 1e-2}
    reasons = gate.failures(bad)
    assert len(reasons) == 4 and reasons[1].startswith("spearman 0.99 < 0.995")


def test_spearman_is_rank_based():
    from embedrt_export.fidelity import spearman

    x = np.random.default_rng(0).normal(size=500)
    assert spearman(x, np.exp(x)) == pytest.approx(1.0)
    assert spearman(x, -x) == pytest.approx(-1.0)


def test_rowwise_outlier_channels_run_in_fp32_and_rows_quantize_alone():
    """A synthetic linear layer whose input has one huge channel: that channel is computed in fp32,
    the rest in int8 with per-row scales, and each row's result does not depend on the others. Its
    bias Add goes into the fp32 channels' Gemm."""
    import onnxruntime as ort
    from embedrt_export.variants import rowwise
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    k, n = 200, 48
    weight = rng.normal(size=(k, n)).astype(np.float32)
    bias = (50 + rng.normal(size=n)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["xw"], name="linear"),
         helper.make_node("Add", ["xw", "bias"], ["y"], name="linear_bias")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", "s", k]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["b", "s"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", "s", n])],
        [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "bias")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)

    def batch(rows):
        x = rng.normal(size=(rows, 5, k)).astype(np.float32)
        x[..., 7] *= 300.0  # the outlier channel
        return {"x": x, "attention_mask": np.ones((rows, 5), np.int64)}

    groups = rowwise.linear_groups(model)
    calibration = rowwise.calibrate(model, groups, [batch(4) for _ in range(3)])
    assert 7 in calibration.float_channels[0] and len(calibration.float_channels[0]) == 2
    int8 = rowwise.rewrite(model, groups, calibration)
    assert "Add" not in [node.op_type for node in int8.graph.node]
    session = ort.InferenceSession(int8.SerializeToString(), providers=["CPUExecutionProvider"])
    feed = batch(6)
    got = session.run(None, feed)[0]
    exact = feed["x"] @ weight + bias
    assert np.abs(got - exact).max() / np.abs(exact).max() < 0.02
    mask = feed["attention_mask"][:1]
    alone = np.concatenate([session.run(None, {"x": feed["x"][i:i + 1], "attention_mask": mask})[0] for i in range(6)])
    np.testing.assert_array_equal(alone, got)


def test_rowwise_needs_calibration_text():
    from embedrt_export.variants import rowwise

    with pytest.raises(ValueError, match="calibration"):
        rowwise.calibrate(None, [], [])


def test_rowwise_zero_point_fits_the_rows():
    from embedrt_export.variants.rowwise import _zero_point

    rng = np.random.default_rng(0)
    symmetric = rng.normal(size=(500, 64))
    assert 118 <= _zero_point(symmetric.min(1), symmetric.max(1)) <= 138
    gelu_like = np.maximum(rng.normal(size=(500, 64)) * 3, -0.17)  # GELU's floor is about -0.17
    assert _zero_point(np.minimum(gelu_like.min(1), 0), gelu_like.max(1)) < 40


# -- real model: the fidelity gates on real text --------------------------------------------------------
@pytest.mark.slow
def test_minilm_variants_meet_their_gates(exported, reference_model, fortunes, tmp_path, add_variants):
    from embedrt_export import variants
    from embedrt_export.builders.transformer import calibration_feeds
    from embedrt_export.variants import optimize

    artifact = tmp_path / "minilm"
    shutil.copytree(exported("all-MiniLM-L6-v2")[0], artifact)  # the exported artifact is shared
    reference = reference_model("all-MiniLM-L6-v2")
    facts = optimize.ArchFacts.from_config(reference[0].auto_model.config)
    # Calibration text for int8_rowwise: English records none of which are measured below.
    measured = set(spread_english(fortunes, 1200))
    calibration = [r["text"] for r in fortunes if r["lang"] == "en" and r["text"] not in measured][::5]
    candidates = list(variants.build_text_variants((artifact / "text" / "model.onnx").read_bytes(), facts,
                                                   calibration_feeds=calibration_feeds(reference, calibration)))
    add_variants(artifact, candidates)
    # 1,200 English texts (200 queries against 1,000) plus ~80 multilingual ones for max 1-cos.
    texts = spread_english(fortunes, 1200)
    texts += [r["text"] for r in fortunes if r["lang"] != "en"][::800][:100]
    ref = reference.encode(texts, batch_size=32, convert_to_numpy=True)
    missed = {}
    for candidate in candidates:
        figures = variants.measure(ref, embedrt.SentenceTransformer(artifact, variant=candidate.name, threads=2),
                                   texts)
        print(f"\n{candidate.name}: " + ", ".join(f"{k} {v:.4g}" for k, v in figures.items()))
        if candidate.gate.failures(figures):
            missed[candidate.name] = candidate.gate.failures(figures)
    assert not missed, missed


def test_export_writes_gated_variants_and_runtime_picks_a_safe_one(model_path, corpus_1000, tmp_path):
    """Through export(): each variant measured on real text, gated, recorded. int8_rowwise(_fused) keeps
    ranking and is batch-invariant, so on a VNNI/Arm CPU the fused one is the default; dynamic int8 is written
    (named on request) but never picked automatically."""
    import embedrt
    from embedrt_export import export
    from embedrt_export.variants import GATES

    said: list[str] = []
    manifest = export(model_path("all-MiniLM-L6-v2"), tmp_path / "a",
                      variants=["optimized", "fp32_fused", "int8_avx512_vnni", "int8_rowwise", "int8_rowwise_fused"],
                      fidelity_texts=corpus_1000[:400], log=said.append)
    variants = manifest.towers["text"].variants
    assert variants["optimized"].parity["max_one_minus_cos"] <= 1e-6
    for name in ROWWISE:
        assert name in variants, said
        assert variants[name].parity["batch_one_minus_cos"] <= 1e-6
    assert variants["int8_rowwise_fused"].custom_ops == ("ai.embedrt",) and not variants["int8_rowwise"].custom_ops
    assert variants["fp32_fused"].parity["max_one_minus_cos"] <= 1e-6
    for name in ("optimized", "int8_avx512_vnni"):
        if name in variants:
            assert not GATES[name].failures(variants[name].parity)
        else:
            assert any(line.startswith(f"variant {name} not written") for line in said), said
    expected = {"avx512_vnni": "int8_rowwise_fused", "arm64": "int8_rowwise"}.get(isa.detect_isa(), "fp32_fused")
    assert embedrt.SentenceTransformer(tmp_path / "a").variant == expected
    assert embedrt.SentenceTransformer(tmp_path / "a", variant="optimized").variant == "optimized"
