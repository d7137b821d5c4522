"""CPU instruction-set detection and the choice of graph variant for this machine (torch-free).

Variant names are defined here, in the runtime, so the exporter that writes them and the runtime
that picks them share one spelling.

The rule of :func:`best_variant`:

* on ``cpu``: ``int8_rowwise_fused``, then ``int8_rowwise``, where the CPU has a non-saturating int8
  dot product (AVX-512 VNNI, Arm); then the dynamic int8 variant built for the best
  integer-dot-product ISA this CPU has, trying the ladder below in order; else ``fp32_fused``, then
  ``fp32``. Not ``optimized``: ONNX Runtime's CPU session already fuses the plain graph itself,
  and the pre-fused one measured no faster (MiniLM 0.99×, mpnet 0.89× of fp32).

  =============== =====================================================================
  CPU has         int8 variants usable, best first
  =============== =====================================================================
  avx512_vnni     int8_avx512_vnni, int8_avx512, int8_avx2
  avx512 (BW)     int8_avx512, int8_avx2
  avx2            int8_avx2
  arm64           int8_arm64
  anything else   none
  =============== =====================================================================

  The s8-weight variants (avx512*, arm64) are never chosen for an AVX2-only CPU: there MLAS
  multiplies u8×s8 with ``vpmaddubsw``, whose 16-bit intermediate saturates; that is why the
  avx2 variant has u8 weights and the avx512 (non-VNNI) one reduced-range weights.
* on ``cuda``: ``fp16``, then ``optimized``, then ``fp32``.
* on ``tensorrt``: ``fp32`` only. TensorRT builds its own fp16 engine from the plain graph and
  cannot parse ONNX Runtime's fused ``com.microsoft`` ops.

``int8_rowwise`` multiplies u8 activations (per-row scales, any value 0..255) by s8 weights, so it
needs VNNI's ``vpdpbusd`` (32-bit accumulation) or Arm's dot product; never AVX2/AVX-512 without VNNI.
``int8_rowwise_fused`` is the same recipe on embedrt's own kernels (``embedrt.kernels``): the
quantize and rescale steps, LayerNorm and GELU each run as one pass over a row, and attention as one
op. ``fp32_fused`` is the fp32 graph with those attention, bias + LayerNorm and bias + GELU kernels
(fp32 arithmetic, parity gated like ``optimized``). Both run their layers on packed rows, the
batch's padding left out. Both need embedrt's kernel library, so the facade drops them, saying so,
where the library was not built.

``int8_blockwise`` (the batch-invariant, ranking-preserving int8) is never picked automatically:
on ONNX Runtime's x64 kernels it runs at fp32 speed, so it is a size/fidelity choice the user
makes by name.
"""

from __future__ import annotations

import platform
from collections.abc import Iterable
from pathlib import Path

FP32 = "fp32"
FP32_FUSED = "fp32_fused"
OPTIMIZED = "optimized"
FP16 = "fp16"
INT8_BLOCKWISE = "int8_blockwise"
INT8_ROWWISE = "int8_rowwise"
INT8_ROWWISE_FUSED = "int8_rowwise_fused"
_ROWWISE_ISAS = ("avx512_vnni", "arm64")
INT8_ISAS = ("avx2", "avx512", "avx512_vnni", "arm64")

# Which int8 variants each detected ISA may run, best first (see the module docstring).
_INT8_LADDER: dict[str, tuple[str, ...]] = {
    "avx512_vnni": ("avx512_vnni", "avx512", "avx2"),
    "avx512": ("avx512", "avx2"),
    "avx2": ("avx2",),
    "arm64": ("arm64",),
}


def int8_variant(isa: str) -> str:
    """Variant name of the dynamic int8 graph built for ``isa`` (one of :data:`INT8_ISAS`)."""
    if isa not in INT8_ISAS:
        raise ValueError(f"unknown ISA {isa!r}; expected one of {INT8_ISAS}")
    return f"int8_{isa}"


def cpu_flags(cpuinfo: str) -> frozenset[str]:
    """Feature flags of the first processor in a ``/proc/cpuinfo`` text (x86 ``flags``, Arm ``Features``)."""
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in ("flags", "features"):
            return frozenset(value.split())
    return frozenset()


def detect_isa(cpuinfo: str | None = None, machine: str | None = None) -> str | None:
    """The best int8-relevant ISA: ``avx512_vnni``, ``avx512``, ``avx2``, ``arm64`` or ``None``.

    ``cpuinfo`` and ``machine`` default to this host's ``/proc/cpuinfo`` and ``platform.machine()``;
    pass them to classify another machine. Without ``/proc/cpuinfo`` (macOS, Windows) an x86 CPU is
    reported as ``None``, so no int8 variant is chosen for it rather than a possibly wrong one.
    """
    machine = (machine if machine is not None else platform.machine()).lower()
    if machine in ("aarch64", "arm64", "armv8l", "armv9l"):
        return "arm64"
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return None
    flags = cpu_flags(cpuinfo)
    # MLAS's AVX-512 kernels need the byte/word instructions (BW), not just the foundation (F).
    avx512 = {"avx512f", "avx512bw"} <= flags
    if avx512 and "avx512_vnni" in flags:
        return "avx512_vnni"
    if avx512:
        return "avx512"
    if "avx2" in flags:
        return "avx2"
    return None


def best_variant(available: Iterable[str], *, device: str = "cpu", isa: str | None = "auto") -> str:
    """Pick the fastest usable variant among ``available`` for ``device`` (rule: module docstring).

    ``isa="auto"`` detects this host's ISA (:func:`detect_isa`); ``None`` means no int8-capable ISA.
    Raises ``ValueError`` when ``available`` holds none of the variants the rule can fall back to.
    """
    names = set(available)
    kind = device.lower().partition(":")[0]
    if kind == "tensorrt":
        order = [FP32]
    elif kind == "cuda":
        order = [FP16, OPTIMIZED, FP32]
    else:
        cpu_isa = detect_isa() if isa == "auto" else isa
        rowwise = [INT8_ROWWISE_FUSED, INT8_ROWWISE] if cpu_isa in _ROWWISE_ISAS else []
        order = rowwise + [int8_variant(i) for i in _INT8_LADDER.get(cpu_isa or "", ())] + [FP32_FUSED, FP32]
    for name in order:
        if name in names:
            return name
    raise ValueError(f"none of {order} in the available variants {sorted(names)}")
