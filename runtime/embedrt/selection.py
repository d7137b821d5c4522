"""Which graph variant, how many threads and workers, how large a batch: the rule, in one place.

The exporter records per variant what it is and needs (:class:`~embedrt.manifest.GraphVariant`:
precision, devices, CPU instruction sets, embedrt's kernels, packed rows) and what it measured
against sentence-transformers (its ``parity``). The rule reads those facts; nothing here re-derives
them from variant names.

Variant, unless one is named (:func:`choose_variant`): the first of :data:`PREFERENCE` for the device
that the artifact holds and that can run here:

* built for the device (``devices``); on CPU, built for this CPU's int8 instruction set (``cpu_isa``,
  see :func:`embedrt.isa.detect_isa`; a graph built for VNNI's non-saturating u8×s8 dot product would
  lose accuracy on AVX2's saturating one);
* its op domains available (embedrt's kernel library is built in this install);
* for int8, fidelity recorded at export that passes :data:`RANKING_GATE`: ranking kept against
  sentence-transformers and an embedding that does not depend on its batch. sentence-transformers'
  dynamic int8 graphs fail the batch test, so they run only when named.

Not ``optimized`` on CPU: ONNX Runtime's CPU session fuses the plain graph itself. On TensorRT only
``fp32``: TensorRT builds its own fp16 engine and cannot parse ONNX Runtime's fused ops.
Measured speeds behind the order: ``benchmarks/results/``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from .manifest import (
    FP16,
    FP32,
    FP32_FUSED,
    INT8_DYNAMIC,
    INT8_ROWWISE,
    INT8_ROWWISE_FUSED,
    OPTIMIZED,
    GraphVariant,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Gate:
    """Limits a variant's fidelity figures must meet; ``None`` means not gated."""

    max_one_minus_cos: float | None = None
    min_spearman: float | None = None
    min_top10_overlap: float | None = None
    max_batch_one_minus_cos: float | None = None

    def failures(self, figures: Mapping[str, float]) -> list[str]:
        """Why ``figures`` miss this gate (a missing figure misses it); empty when they pass."""
        out = []
        for key, limit, upper in (("max_one_minus_cos", self.max_one_minus_cos, True),
                                  ("spearman", self.min_spearman, False),
                                  ("top10_overlap", self.min_top10_overlap, False),
                                  ("batch_one_minus_cos", self.max_batch_one_minus_cos, True)):
            if limit is None:
                continue
            value = figures.get(key)
            if value is None:
                out.append(f"{key} not measured")
            elif (value > limit) if upper else (value < limit):
                out.append(f"{key} {value:.4g} {'>' if upper else '<'} {limit:.4g}")
        return out


# An int8 graph that ranks like sentence-transformers and whose embeddings do not depend on the batch.
# The exporter writes int8_rowwise* and int8_blockwise only if they meet it, and the runtime picks an
# int8 graph unasked only if its recorded figures meet it.
RANKING_GATE = Gate(min_spearman=0.995, min_top10_overlap=0.95, max_batch_one_minus_cos=1e-4)

PREFERENCE: dict[str, tuple[str, ...]] = {
    "cpu": (INT8_ROWWISE_FUSED, INT8_ROWWISE, *INT8_DYNAMIC, FP32_FUSED, FP32),
    "cuda": (FP16, OPTIMIZED, FP32),
    "tensorrt": (FP32,),
}

# On CPU a batch is cut to this many padded tokens: attention memory grows with the square of the
# length, and smaller batches of long texts stay in cache (benchmarks/README.md, "batch tokens").
CPU_MAX_BATCH_TOKENS = 1024
# On GPU the budget only keeps one batch's activations bounded: 128 texts of 256 tokens.
GPU_MAX_BATCH_TOKENS = 32768

# Variants that run faster as two batches at once, each on half the threads, than as one batch on all
# of them: int8_rowwise's many small quantize/rescale ops each fork and join across ONNX Runtime's
# intra-op pool. Every other graph runs one batch at a time, which answers a single query sooner
# (benchmarks/README.md, "workers").
CPU_CONCURRENT_VARIANTS = {INT8_ROWWISE: 2}


@dataclass(frozen=True)
class Choice:
    """A chosen variant and why: ``reasons`` has one line per variant considered before it."""

    variant: str
    reasons: tuple[str, ...] = field(default_factory=tuple)


def ineligible(name: str, variant: GraphVariant, device: str, isa: str | None, kernels_built: bool) -> str | None:
    """Why ``variant`` cannot run unasked on ``device`` here, or ``None`` when it can."""
    if device not in variant.devices:
        return f"built for {'/'.join(variant.devices)}, not {device}"
    if device == "cpu" and variant.cpu_isa is not None and isa not in variant.cpu_isa:
        return f"built for {'/'.join(variant.cpu_isa)} int8 arithmetic; this CPU has {isa or 'none of them'}"
    if variant.custom_ops and not kernels_built:
        return ("needs embedrt's kernel library, which this install lacks (compiled at install time with a "
                "C++17 compiler)")
    if variant.precision == "int8":
        failures = RANKING_GATE.failures(variant.parity)
        if failures:
            return f"int8 fidelity recorded at export misses the ranking gate ({'; '.join(failures)})"
    return None


def choose_variant(variants: Mapping[str, GraphVariant], device: str, *, isa: str | None,
                   kernels_built: bool, requested: str | None = None) -> Choice:
    """The variant to run on ``device`` (``cpu``, ``cuda`` or ``tensorrt``); see the module docstring.

    ``requested`` is taken as it is if the artifact holds it (the caller asked for it by name), with a
    warning when it would not have been picked unasked and why (another CPU's int8 arithmetic, a missed gate).
    Raises ``ValueError`` for a requested variant the artifact lacks, or when none can run.
    """
    if requested is not None:
        if not isinstance(requested, str) or not requested:
            raise ValueError(f"variant must be a non-empty str, got {requested!r}")
        if requested not in variants:
            raise ValueError(f"variant {requested!r} not in artifact; available: {sorted(variants)}")
        why = ineligible(requested, variants[requested], device, isa, kernels_built)
        if why is None:
            return Choice(requested, (f"{requested}: asked for by name",))
        logger.warning("variant %r runs because it was asked for by name; unasked it would be skipped: %s",
                       requested, why)
        return Choice(requested, (f"{requested}: asked for by name; unasked it would be skipped: {why}",))
    reasons = []
    for name in PREFERENCE[device]:
        if name not in variants:
            continue
        why = ineligible(name, variants[name], device, isa, kernels_built)
        if why is None:
            return Choice(name, (*reasons, f"{name}: the fastest variant in this artifact that runs here"))
        reasons.append(f"{name}: skipped, {why}")
    for name in (FP32, *variants):  # a graph every provider runs, if the artifact has nothing better
        if name in variants and device in variants[name].devices:
            return Choice(name, (*reasons, f"{name}: none of the preferred variants runs here"))
    raise ValueError(f"no variant of this artifact runs on {device}: {sorted(variants)}")


def available_cpus() -> int:
    """The cores this process may use (affinity/cgroup-aware where the OS says)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def bounded(name: str, value: int, limit: int) -> int:
    """``value``, or ``limit`` with a warning when ``value`` asks for more threads than there are cores:
    extra ONNX Runtime threads only contend for the same cores, and each costs memory."""
    if value > limit:
        logger.warning("%s=%d is more than the %d cores this process may use; using %d", name, value, limit, limit)
        return limit
    return value


def cpu_threads(variant: str, threads: int | None, workers: int | None) -> tuple[int, int]:
    """``(intra-op threads per batch, batches at once)`` for a CPU engine.

    ``threads`` (default: every core this process may use) is spent on ``workers`` batches at once, each
    on ``threads // workers`` threads. Without ``workers``: :data:`CPU_CONCURRENT_VARIANTS`'s count for
    ``variant``, else 1. Both are capped at the cores this process may use, with a warning.
    """
    cores = available_cpus()
    total = cores if threads is None else bounded("threads", threads, cores)
    if workers is None:
        workers = min(CPU_CONCURRENT_VARIANTS.get(variant, 1), total)
    else:
        workers = bounded("workers", workers, total)
    return max(1, total // workers), workers
