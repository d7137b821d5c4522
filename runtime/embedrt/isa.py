"""CPU instruction-set detection (torch-free): which int8 arithmetic this CPU does well.

The choice of variant that reads it is :mod:`embedrt.selection`'s.

* ``avx512_vnni``: AVX-512 BW with VNNI's ``vpdpbusd`` (u8 x s8 with 32-bit accumulation, never saturating);
* ``avx512``: AVX-512 BW without VNNI;
* ``avx2``: AVX2, whose ``vpmaddubsw`` saturates its 16-bit intermediate, which is why ONNX Runtime's
  u8 x s8 int8 graphs lose accuracy there;
* ``arm64``: Arm's dot-product instructions;
* ``None``: none of these, or an x86 CPU whose flags cannot be read (macOS, Windows).
"""

from __future__ import annotations

import platform
from pathlib import Path


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
