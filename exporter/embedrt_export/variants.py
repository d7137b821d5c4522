"""A text graph's variants (optimized, fp16, int8 per ISA, row-wise and blockwise int8) and their fidelity gates.

``build_text_variants`` turns the verified fp32 graph into candidate graphs; the export writes each
into the staging artifact, loads it through the runtime, measures it with :func:`measure` against
sentence-transformers' own embeddings of real texts, and writes only the variants whose
:class:`Gate` passes, recording the figures as the variant's parity.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import onnx
from embedrt.isa import (
    FP16,
    FP32_FUSED,
    INT8_BLOCKWISE,
    INT8_ISAS,
    INT8_ROWWISE,
    INT8_ROWWISE_FUSED,
    OPTIMIZED,
    int8_variant,
)
from embedrt.kernels import DOMAIN as KERNELS_DOMAIN
from embedrt.manifest import FileEntry, GraphVariant, Manifest, sha256_bytes

from . import kernel_fusion, optimize, packing, quantize, rowwise
from .verify import one_minus_cos

VARIANT_FILE = "text/model.{name}.onnx"
BATCH_PROBE = 32  # texts encoded one by one and as one batch to measure batch invariance


@dataclass(frozen=True)
class Gate:
    """Limits a variant must meet against sentence-transformers fp32; ``None`` means not gated."""

    max_one_minus_cos: float | None = None
    min_spearman: float | None = None
    min_top10_overlap: float | None = None
    max_batch_one_minus_cos: float | None = None

    def failures(self, figures: Mapping[str, float]) -> list[str]:
        """Why ``figures`` (from :func:`measure`) miss this gate; empty when they pass."""
        out = []
        for key, limit, worse in (("max_one_minus_cos", self.max_one_minus_cos, float.__gt__),
                                  ("spearman", self.min_spearman, float.__lt__),
                                  ("top10_overlap", self.min_top10_overlap, float.__lt__),
                                  ("batch_one_minus_cos", self.max_batch_one_minus_cos, float.__gt__)):
            if limit is not None and worse(float(figures[key]), limit):
                out.append(f"{key} {figures[key]:.4g} {'>' if worse is float.__gt__ else '<'} {limit:.4g}")
        return out


# optimized and fp32_fused: fusions only, so fp32 parity. fp16: the GPU check's bound (1e-3); measured on 2,000
# fortunes, mpnet-base's worst text is 1.9e-5 and MiniLM-L6's 3.5e-7. int8_blockwise: the
# ranking- and batch-preserving int8. int8_<isa>:
# sentence-transformers' own dynamic int8, whose known loss (batch-dependent, Spearman ~0.99 on
# MiniLM) is recorded, not hidden; on mpnet it falls far below and is refused.
GATES: dict[str, Gate] = {
    OPTIMIZED: Gate(max_one_minus_cos=1e-6),
    FP32_FUSED: Gate(max_one_minus_cos=1e-6),
    FP16: Gate(max_one_minus_cos=1e-3, min_spearman=0.999, min_top10_overlap=0.98),
    INT8_ROWWISE: Gate(min_spearman=0.995, min_top10_overlap=0.95, max_batch_one_minus_cos=1e-4),
    INT8_ROWWISE_FUSED: Gate(min_spearman=0.995, min_top10_overlap=0.95, max_batch_one_minus_cos=1e-4),
    INT8_BLOCKWISE: Gate(min_spearman=0.995, min_top10_overlap=0.95, max_batch_one_minus_cos=1e-4),
    **{int8_variant(isa): Gate(min_spearman=0.98, min_top10_overlap=0.80) for isa in INT8_ISAS},
}
DEFAULT_VARIANTS = tuple(GATES)


@dataclass(frozen=True)
class Candidate:
    """A variant graph not yet verified, with its gate and facts about how it was built."""

    name: str
    onnx_bytes: bytes
    opset: int
    gate: Gate
    file: str  # artifact-relative path; variants with identical graphs share one file
    build_info: dict[str, int] = field(default_factory=dict)  # fused-op counts of its source graph
    custom_ops: tuple[str, ...] = ()  # op domains only embedrt's kernel library provides
    note: str = ""  # what the build could not do, for the export's log


def _on_packed_rows(model: onnx.ModelProto) -> tuple[bytes, str]:
    """The graph with its layers on packed rows (:mod:`embedrt_export.packing`), and why not where it can't be."""
    packed, why = packing.pack(model)
    return optimize.with_op_domains(packed).SerializeToString(), f"layers left on padded rows: {why}" if why else ""


def _default_opset(onnx_bytes: bytes) -> int:
    # The quantizers may raise the opset (e.g. for per-channel QuantizeLinear), so read it back.
    model = onnx.load_from_string(onnx_bytes)
    return next(int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx"))


def build_text_variants(fp32_onnx: bytes, facts: optimize.ArchFacts, names: Iterable[str] = DEFAULT_VARIANTS,
                        calibration_feeds: Sequence[Mapping[str, np.ndarray]] = ()) -> list[Candidate]:
    """Build the requested variants of an fp32 text graph.

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
    fused = optimize.fuse(fp32_onnx, facts)
    built: list[Candidate] = []
    calibration = None
    for name in names:
        info = dict(fused.fused_ops)
        custom_ops: tuple[str, ...] = ()
        note = ""
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
            data, info = quantize.quantize_dynamic_int8(fp32_onnx, name.removeprefix("int8_")), {}
        # int8_avx512_vnni and int8_arm64 use the same settings, hence the same bytes: one file.
        file = next((c.file for c in built if c.onnx_bytes == data), VARIANT_FILE.format(name=name))
        built.append(Candidate(name=name, onnx_bytes=data, opset=_default_opset(data), gate=GATES[name],
                               file=file, build_info=info, custom_ops=custom_ops, note=note))
    return built


def with_variant(manifest: Manifest, candidate: Candidate, parity: Mapping[str, float] | None = None,
                 tower: str = "text") -> Manifest:
    """``manifest`` listing ``candidate`` (its inputs and outputs are the fp32 variant's)."""
    base = manifest.towers[tower].variants["fp32"]
    variant = GraphVariant(file=candidate.file, opset=candidate.opset, inputs=base.inputs, outputs=base.outputs,
                           parity=dict(parity or {}), custom_ops=candidate.custom_ops)
    towers = dict(manifest.towers)
    towers[tower] = replace(towers[tower], variants={**towers[tower].variants, candidate.name: variant})
    files = {**manifest.files, candidate.file: FileEntry(sha256=sha256_bytes(candidate.onnx_bytes),
                                                         size=len(candidate.onnx_bytes))}
    return replace(manifest, towers=towers, files=files)


def _ranks(values: np.ndarray) -> np.ndarray:
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[np.argsort(values, kind="stable")] = np.arange(len(values))
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (cosine similarities are continuous, so ties are ignored)."""
    return float(np.corrcoef(_ranks(a), _ranks(b))[0, 1])


def _unit(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-300)


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
    n_queries = min(n_queries, len(texts) // 5)
    if n_queries < 1 or len(texts) < BATCH_PROBE:
        raise ValueError(f"need at least {BATCH_PROBE} texts to measure ranking and batch fidelity, got {len(texts)}")
    got = candidate.encode(texts, batch_size=32, show_progress_bar=False)
    ref_unit, got_unit = _unit(reference), _unit(got)

    rng = np.random.default_rng(seed)
    left, right = rng.integers(0, len(texts), (2, n_pairs))
    keep = left != right
    left, right = left[keep], right[keep]
    rho = spearman((ref_unit[left] * ref_unit[right]).sum(1), (got_unit[left] * got_unit[right]).sum(1))

    queries, corpus = slice(0, n_queries), slice(n_queries, n_queries + corpus_size)
    k = min(top_k, len(texts[corpus]))
    ref_top = np.argsort(-(ref_unit[queries] @ ref_unit[corpus].T), axis=1)[:, :k]
    got_top = np.argsort(-(got_unit[queries] @ got_unit[corpus].T), axis=1)[:, :k]
    overlap = float(np.mean([len(set(r) & set(g)) / k for r, g in zip(ref_top, got_top)]))

    probe = texts[:BATCH_PROBE]
    alone = np.stack([candidate.encode([t], batch_size=1, show_progress_bar=False)[0] for t in probe])
    together = candidate.encode(probe, batch_size=BATCH_PROBE, show_progress_bar=False)
    return {
        "max_one_minus_cos": float(one_minus_cos(reference, got).max()),
        "spearman": rho,
        "top10_overlap": overlap,
        "batch_one_minus_cos": float(one_minus_cos(alone, together).max()),
        "n_texts": float(len(texts)),
    }
