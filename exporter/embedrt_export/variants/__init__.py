"""A text graph's variants (optimized, fp16, int8 per ISA, row-wise and blockwise int8) and their fidelity gates.

``build_text_variants`` turns the verified fp32 graph into candidate graphs; the export writes each
into the staging artifact, loads it through the runtime, measures it with :func:`measure` against
sentence-transformers' own embeddings of real texts, and writes only the variants whose
:class:`Gate` passes, recording the figures as the variant's parity.

This package's own module holds what every variant shares: the gates (:data:`GATES`), where each
variant runs (:data:`CPU_ISA`, :data:`DEVICES`), :class:`Candidate`, :func:`build_text_variants`,
:func:`with_variant` and :func:`measure`. Each recipe is a module of its own:

- :mod:`.optimize`: ONNX Runtime's transformer fusions (``optimized``) and the float16 conversion (``fp16``);
- :mod:`.quantize`: ONNX Runtime's dynamic per-ISA int8 (``int8_<isa>``) and blockwise int8 (``int8_blockwise``);
- :mod:`.rowwise`: row-wise int8 (``int8_rowwise``, and the quantized layers of ``int8_rowwise_fused``);
- :mod:`.kernel_fusion`: LayerNorm, GELU and attention folded into embedrt's kernels (``fp32_fused``,
  ``int8_rowwise_fused``);
- :mod:`.packing`: the ``_fused`` graphs' layers on packed rows, the batch's padding cut out.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import onnx
from embedrt.artifact import sha256_bytes
from embedrt.manifest import (
    FP16,
    FP32_FUSED,
    INT8_BLOCKWISE,
    INT8_DYNAMIC,
    INT8_ROWWISE,
    INT8_ROWWISE_FUSED,
    KERNELS_DOMAIN,
    OPTIMIZED,
    FileEntry,
    GraphVariant,
    Manifest,
)
from embedrt.selection import RANKING_GATE, Gate

from .. import fidelity
from ..fidelity import one_minus_cos
from ..onnx_edit import with_op_domains
from . import kernel_fusion, optimize, packing, quantize, rowwise

VARIANT_FILE = "text/model.{name}.onnx"
BATCH_PROBE = 32  # texts encoded one by one and as one batch to measure batch invariance


# optimized and fp32_fused: fusions only, so fp32 parity. fp16: the GPU check's bound (1e-3), far above what
# the benchmarked models measure (each variant's figures: its manifest, benchmarks/results/). int8_blockwise:
# the ranking- and batch-preserving int8. int8_<isa>: sentence-transformers' own dynamic int8, whose known
# loss is recorded, not hidden, and which a model whose ranking falls below the gate does not get.
GATES: dict[str, Gate] = {
    OPTIMIZED: Gate(max_one_minus_cos=1e-6),
    FP32_FUSED: Gate(max_one_minus_cos=1e-6),
    FP16: Gate(max_one_minus_cos=1e-3, min_spearman=0.999, min_top10_overlap=0.98),
    INT8_ROWWISE: RANKING_GATE,
    INT8_ROWWISE_FUSED: RANKING_GATE,
    INT8_BLOCKWISE: RANKING_GATE,
    **{name: Gate(min_spearman=0.98, min_top10_overlap=0.80) for name in INT8_DYNAMIC},
}

# Where each variant's int8 arithmetic is exact and fast (GraphVariant.cpu_isa): row-wise int8 multiplies
# u8 activations over their whole range by s8 weights, which needs a dot product that never saturates
# (VNNI's vpdpbusd, Arm's sdot/udot); ONNX Runtime's dynamic graphs are built per ISA: the s8-weight ones
# (avx512*, arm64) never for AVX2, whose vpmaddubsw saturates (the avx2 graph has u8 weights, the
# avx512 one reduced-range weights). int8_rowwise_fused's GEMMs are embedrt's, with a VNNI build only (its
# portable build is exact but slow), so on Arm int8_rowwise runs, on ONNX Runtime's GEMMs.
CPU_ISA: dict[str, tuple[str, ...]] = {
    INT8_ROWWISE: ("avx512_vnni", "arm64"),
    INT8_ROWWISE_FUSED: ("avx512_vnni",),
    "int8_avx512_vnni": ("avx512_vnni",),
    "int8_avx512": ("avx512_vnni", "avx512"),
    "int8_avx2": ("avx512_vnni", "avx512", "avx2"),
    "int8_arm64": ("arm64",),
}
# Providers each variant is built for: the int8 graphs and embedrt's kernels are CPU code; fp16 is for
# GPUs (ONNX Runtime's CPU fp16 kernels are slower than fp32); ONNX Runtime's fused com.microsoft ops
# (optimized) are not for TensorRT, which parses only standard ONNX.
DEVICES: dict[str, tuple[str, ...]] = {
    OPTIMIZED: ("cpu", "cuda"),
    FP16: ("cuda",),
    FP32_FUSED: ("cpu",),
    **{name: ("cpu",) for name in (INT8_ROWWISE, INT8_ROWWISE_FUSED, INT8_BLOCKWISE, *INT8_DYNAMIC)},
}
ALL_VARIANTS = tuple(GATES)


def default_variants() -> tuple[str, ...]:
    """What ``embedrt export`` writes unless told otherwise: every variant the runtime would pick, on CPU
    (``int8_rowwise_fused`` and ``fp32_fused`` where this install has embedrt's kernel library, the portable
    ``int8_rowwise``) and on GPU (``fp16``); each still written only if it meets its gate."""
    from embedrt import kernels

    return (*((INT8_ROWWISE_FUSED, FP32_FUSED) if kernels.available() else ()), INT8_ROWWISE, FP16)


@dataclass(frozen=True)
class Candidate:
    """A variant graph not yet verified, with its gate and facts about how it was built."""

    name: str
    onnx_bytes: bytes
    opset: int
    gate: Gate
    file: str  # artifact-relative path; variants with identical graphs share one file
    custom_ops: tuple[str, ...] = ()  # op domains only embedrt's kernel library provides
    packed_rows: bool = False  # its layers skip a batch's padding
    note: str = ""  # what the build could not do, for the export's log

    def graph_variant(self, base: GraphVariant, parity: Mapping[str, float] | None = None) -> GraphVariant:
        """The manifest entry: ``base``'s (the fp32 graph's) inputs and outputs, this graph's facts."""
        return GraphVariant(file=self.file, opset=self.opset, inputs=base.inputs, outputs=base.outputs,
                            precision="fp16" if self.name == FP16 else "int8" if self.name.startswith("int8")
                            else "fp32", devices=DEVICES.get(self.name, base.devices),
                            cpu_isa=CPU_ISA.get(self.name), custom_ops=self.custom_ops, packed_rows=self.packed_rows,
                            parity=dict(parity or {}))


def _on_packed_rows(model: onnx.ModelProto) -> tuple[bytes, str]:
    """The graph with its layers on packed rows (:mod:`.packing`), and why not where it can't be
    (empty when it could)."""
    packed, why = packing.pack(model)
    return with_op_domains(packed).SerializeToString(), f"layers left on padded rows: {why}" if why else ""


def _default_opset(onnx_bytes: bytes) -> int:
    # The quantizers may raise the opset (e.g. for per-channel QuantizeLinear), so read it back.
    model = onnx.load_from_string(onnx_bytes)
    return next(int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx"))


def build_text_variants(fp32_onnx: bytes, facts: optimize.ArchFacts, names: Iterable[str] = ALL_VARIANTS,
                        calibration_feeds: Sequence[Mapping[str, np.ndarray]] = ()) -> Iterator[Candidate]:
    """Build the requested variants of an fp32 text graph, one at a time: a caller that measures each
    before asking for the next holds one candidate graph (a base model's graphs are hundreds of MB each).

    ``int8_rowwise`` and ``int8_rowwise_fused`` are calibrated on ``calibration_feeds`` (tokenized
    batches of real text; their smoothing and zero points come from them, computed once for both),
    so they need them.
    ``optimized``, ``fp16`` and ``int8_blockwise`` start from the fused graph (blockwise int8 keeps
    a fused Attention's QKV projection in fp32, which is where its ranking margin comes from);
    the dynamic ``int8_<isa>`` graphs start from the plain fp32 graph. ``fp32_fused`` and
    ``int8_rowwise_fused`` run their layers on packed rows, padding left out (a candidate's ``note``
    says where that could not be done).
    """
    names = list(names)
    unknown = sorted(set(names) - set(GATES))
    if unknown:
        raise ValueError(f"unknown variant(s) {unknown}; known: {sorted(GATES)}")
    fused = None  # ORT's fused graph, built when a variant first needs it
    files: dict[str, str] = {}  # sha256 of a graph -> the file it was written as
    calibration = None
    for name in names:
        custom_ops: tuple[str, ...] = ()
        note = ""
        if name in (OPTIMIZED, FP16, INT8_BLOCKWISE) and fused is None:
            fused = optimize.fuse(fp32_onnx, facts)
        if name == OPTIMIZED:
            data = fused.onnx_bytes
        elif name == FP32_FUSED:
            data, note = _on_packed_rows(kernel_fusion.fuse_fp32(onnx.load_from_string(fp32_onnx)))
            custom_ops = (KERNELS_DOMAIN,)
        elif name == FP16:
            data = optimize.to_fp16(fused.onnx_bytes)
        elif name in (INT8_ROWWISE, INT8_ROWWISE_FUSED):
            calibration = calibration or rowwise.calibrate_graph(fp32_onnx, list(calibration_feeds))
            data = rowwise.quantize_rowwise_int8(fp32_onnx, calibration, kernels=name == INT8_ROWWISE_FUSED)
            if name == INT8_ROWWISE_FUSED:
                data, note = _on_packed_rows(onnx.load_from_string(data))
                custom_ops = (KERNELS_DOMAIN,)
        elif name == INT8_BLOCKWISE:
            data = quantize.quantize_blockwise_int8(fused.onnx_bytes)
        else:
            # From the unfused graph: ORT's CPU session fuses LayerNorm/GELU around the quantized
            # MatMuls itself, and QAttention measured slower than DynamicQuantizeMatMul + fp32 attention.
            data = quantize.quantize_dynamic_int8(fp32_onnx, name.removeprefix("int8_"))
        # int8_avx512_vnni and int8_arm64 use the same settings, hence the same bytes: one file.
        file = files.setdefault(sha256_bytes(data), VARIANT_FILE.format(name=name))
        yield Candidate(name=name, onnx_bytes=data, opset=_default_opset(data), gate=GATES[name], file=file,
                        custom_ops=custom_ops, packed_rows=bool(custom_ops) and not note, note=note)


def with_variant(manifest: Manifest, candidate: Candidate, parity: Mapping[str, float] | None = None,
                 tower: str = "text") -> Manifest:
    """``manifest`` listing ``candidate`` (its inputs and outputs are the fp32 variant's)."""
    variant = candidate.graph_variant(manifest.towers[tower].variants["fp32"], parity)
    towers = dict(manifest.towers)
    towers[tower] = replace(towers[tower], variants={**towers[tower].variants, candidate.name: variant})
    files = {**manifest.files, candidate.file: FileEntry(sha256=sha256_bytes(candidate.onnx_bytes),
                                                         size=len(candidate.onnx_bytes))}
    return replace(manifest, towers=towers, files=files)


def measure(reference: np.ndarray, candidate: Any, texts: Sequence[str], *, n_pairs: int = 2000,
            n_queries: int = 200, corpus_size: int = 1000, top_k: int = 10, seed: int = 0) -> dict[str, float]:
    """Fidelity of ``candidate`` (an embedrt model) against ``reference`` = ST's embeddings of ``texts``.

    Returns ``max_one_minus_cos``; ``spearman`` of ``n_pairs`` random pairwise cosine similarities;
    ``top10_overlap``, the mean share of each query's top-``top_k`` corpus hits that agree (queries:
    the first ``n_queries`` texts, corpus: up to ``corpus_size`` after them); and
    ``batch_one_minus_cos``, the worst change of a text's embedding between encoding it alone and
    in one batch with the other first :data:`BATCH_PROBE` texts.
    """
    texts = list(texts)
    if len(texts) < BATCH_PROBE:
        raise ValueError(f"need at least {BATCH_PROBE} texts to measure ranking and batch fidelity, got {len(texts)}")
    got = candidate.encode(texts, batch_size=32, show_progress_bar=False)
    ranks = fidelity.ranking(reference, got, n_pairs=n_pairs, n_queries=n_queries, corpus_size=corpus_size,
                             top_k=top_k, seed=seed)

    probe = texts[:BATCH_PROBE]
    alone = np.stack([candidate.encode([t], batch_size=1, show_progress_bar=False)[0] for t in probe])
    together = candidate.encode(probe, batch_size=BATCH_PROBE, show_progress_bar=False)
    return {
        "max_one_minus_cos": float(one_minus_cos(reference, got).max()),
        **ranks,
        "batch_one_minus_cos": float(one_minus_cos(alone, together).max()),
        "n_texts": float(len(texts)),
    }
