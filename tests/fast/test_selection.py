"""The selection rule (embedrt.selection): variant from the facts the exporter records, threads, workers."""

from __future__ import annotations

import logging

import pytest
from embedrt import selection
from embedrt.manifest import GraphVariant
from embedrt.selection import RANKING_GATE, choose_variant
from embedrt_export.variants import CPU_ISA, DEVICES

ALL = ["fp32", "optimized", "fp32_fused", "fp16", "int8_rowwise", "int8_rowwise_fused", "int8_blockwise", "int8_avx2",
       "int8_avx512", "int8_avx512_vnni", "int8_arm64"]
ROWWISE = ["int8_rowwise", "int8_rowwise_fused"]
RANKS = {"spearman": 0.9995, "top10_overlap": 0.97, "batch_one_minus_cos": 1e-15}
BATCH_DEPENDENT = {"spearman": 0.999, "top10_overlap": 0.96, "batch_one_minus_cos": 2e-3}


def facts(name: str, parity: dict | None = None) -> GraphVariant:
    """A manifest entry with the facts the exporter records for ``name`` (embedrt_export.variants)."""
    dynamic = name.startswith("int8_") and name not in (*ROWWISE, "int8_blockwise")
    return GraphVariant(
        file=f"text/{name}.onnx", opset=17, inputs=("input_ids", "attention_mask"), outputs=("sentence_embedding",),
        precision="fp16" if name == "fp16" else "int8" if name.startswith("int8") else "fp32",
        devices=DEVICES.get(name, ("cpu", "cuda", "tensorrt")), cpu_isa=CPU_ISA.get(name),
        custom_ops=("ai.embedrt",) if name.endswith("_fused") else (), packed_rows=name.endswith("_fused"),
        parity=parity if parity is not None else BATCH_DEPENDENT if dynamic else RANKS)


def pick(names, device="cpu", isa="avx512_vnni", kernels_built=True, **parity) -> str:
    variants = {n: facts(n, parity.get(n)) for n in names}
    return choose_variant(variants, device, isa=isa, kernels_built=kernels_built).variant


@pytest.mark.parametrize(("cpu_isa", "available", "expected"), [
    ("avx512_vnni", ALL, "int8_rowwise_fused"),
    ("arm64", ALL, "int8_rowwise"),  # the fused graph's int8 GEMMs are embedrt's, fast on VNNI only
    ("avx512_vnni", ["fp32", "int8_rowwise", "int8_avx512_vnni"], "int8_rowwise"),
    # u8 activations x s8 weights saturate in vpmaddubsw: row-wise int8 needs VNNI (or Arm).
    ("avx512", ["fp32", *ROWWISE], "fp32"),
    ("avx2", ["fp32", *ROWWISE], "fp32"),
    ("avx2", ["fp32", "fp32_fused", "int8_avx512"], "fp32_fused"),  # on embedrt's kernels, same fp32 arithmetic
    # sentence-transformers' dynamic int8 depends on the batch: never picked unasked.
    ("avx512_vnni", [v for v in ALL if v not in ROWWISE], "fp32_fused"),
    ("avx512", ["fp32", "int8_avx512"], "fp32"),
    (None, ["fp32", "optimized"], "fp32"),  # ORT's pre-fused graph is not faster on CPU
    (None, ALL, "fp32_fused"),
    ("avx512_vnni", ["fp32", "int8_blockwise", "fp16"], "fp32"),  # neither is an automatic CPU choice
])
def test_cpu_choice(cpu_isa, available, expected):
    assert pick(available, isa=cpu_isa) == expected


@pytest.mark.parametrize(("isa", "available", "expected"), [
    ("avx512_vnni", ["fp32", "int8_avx2", "int8_avx512_vnni"], "int8_avx512_vnni"),
    ("avx512", ["fp32", "int8_avx512_vnni", "int8_avx2"], "int8_avx2"),
    # s8-weight graphs are never chosen for an AVX2-only CPU (vpmaddubsw saturation).
    ("avx2", ["fp32", "int8_avx512_vnni", "int8_arm64"], "fp32"),
    ("arm64", ["fp32", "int8_arm64"], "int8_arm64"),
    ("arm64", ["fp32", "int8_avx2"], "fp32"),
])
def test_dynamic_int8_follows_the_isa_ladder_where_it_passes_the_gate(isa, available, expected):
    passing = {name: RANKS for name in available}
    assert pick(available, isa=isa, **passing) == expected


@pytest.mark.parametrize(("device", "available", "expected"), [
    ("cuda", ALL, "fp16"), ("cuda", ["fp32", "optimized"], "optimized"), ("tensorrt", ALL, "fp32"),
    ("cuda", ["fp32", "int8_rowwise_fused", "fp32_fused"], "fp32"),  # CPU kernels never on a GPU
])
def test_gpu_choice(device, available, expected):
    assert pick(available, device=device) == expected


def test_int8_fidelity_below_the_gate_is_not_picked():
    worse = {"spearman": 0.99, "top10_overlap": 0.97, "batch_one_minus_cos": 0.0}
    choice = choose_variant({n: facts(n, worse if n.startswith("int8") else None) for n in ALL}, "cpu",
                            isa="avx512_vnni", kernels_built=True)
    assert choice.variant == "fp32_fused"
    assert any("spearman 0.99 < 0.995" in r for r in choice.reasons)
    assert RANKING_GATE.failures({}) == ["spearman not measured", "top10_overlap not measured",
                                         "batch_one_minus_cos not measured"]


def test_without_the_kernel_library_the_portable_graph_runs_and_the_reason_says_why():
    choice = choose_variant({n: facts(n) for n in ALL}, "cpu", isa="avx512_vnni", kernels_built=False)
    assert choice.variant == "int8_rowwise"
    assert "kernel library" in choice.reasons[0]


def test_a_named_variant_runs_but_says_why_it_would_not_run_unasked(caplog):
    """int8_rowwise_fused on AVX-512 without VNNI runs its int8 GEMM in portable code: it runs when named,
    and says so; a named variant that would be picked anyway runs without a word."""
    variants = {n: facts(n) for n in ("fp32", "int8_rowwise_fused")}
    with caplog.at_level(logging.WARNING, logger="embedrt.selection"):
        choice = choose_variant(variants, "cpu", isa="avx512", kernels_built=True, requested="int8_rowwise_fused")
    assert choice.variant == "int8_rowwise_fused"
    assert "built for avx512_vnni int8 arithmetic; this CPU has avx512" in choice.reasons[0]
    assert "asked for by name" in caplog.text and "avx512_vnni" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="embedrt.selection"):
        choose_variant(variants, "cpu", isa="avx512_vnni", kernels_built=True, requested="int8_rowwise_fused")
    assert not caplog.records


def test_named_variant_and_errors():
    variants = {n: facts(n) for n in ("fp32", "int8_avx2")}
    assert choose_variant(variants, "cpu", isa=None, kernels_built=True, requested="int8_avx2").variant == "int8_avx2"
    with pytest.raises(ValueError, match="variant 'fp16' not in artifact"):
        choose_variant(variants, "cpu", isa=None, kernels_built=True, requested="fp16")
    with pytest.raises(ValueError, match="non-empty str"):
        choose_variant(variants, "cpu", isa=None, kernels_built=True, requested="")
    with pytest.raises(ValueError, match="no variant of this artifact runs on cuda"):
        choose_variant({"int8_avx2": facts("int8_avx2")}, "cuda", isa=None, kernels_built=True)


def test_threads_and_workers(monkeypatch, caplog):
    monkeypatch.setattr(selection, "available_cpus", lambda: 8)
    assert selection.cpu_threads("fp32", 4, None) == (4, 1)
    assert selection.cpu_threads("int8_rowwise", 4, None) == (2, 2)
    assert selection.cpu_threads("int8_rowwise", 1, None) == (1, 1)
    assert selection.cpu_threads("int8_rowwise", 4, 1) == (4, 1)
    assert selection.cpu_threads("fp32", 4, 4) == (1, 4)
    assert selection.cpu_threads("fp32", None, None) == (8, 1)
    with caplog.at_level(logging.WARNING):  # more than the cores: capped, and said
        assert selection.cpu_threads("fp32", 10 ** 6, None) == (8, 1)
        assert selection.cpu_threads("fp32", 2, 3) == (1, 2)
    assert "threads=1000000 is more than the 8 cores" in caplog.text and "workers=3" in caplog.text
