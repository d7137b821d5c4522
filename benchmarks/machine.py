"""What the benchmarks say about the machine they ran on (CPU, its int8 flags, GPUs), and how they print numbers."""

from __future__ import annotations

import platform
import shutil
import subprocess

# int8 variants are named int8_<isa>; these are the /proc/cpuinfo flags each ISA needs.
ISA_FLAGS = {"avx512_vnni": ("avx512_vnni",), "avx512": ("avx512f", "avx512bw"), "avx2": ("avx2",),
             "avx_vnni": ("avx_vnni",), "vnni": ("avx512_vnni",), "amx": ("amx_int8",),
             # u8 x s8 with any u8 value: on x86 only VNNI accumulates without saturating (embedrt.isa).
             "rowwise": ("avx512_vnni",), "rowwise_fused": ("avx512_vnni",), "blockwise": ()}


def cpu_flags() -> set[str]:
    """CPU feature flags the kernel reports (empty where /proc/cpuinfo is absent)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_model() -> str:
    """The CPU's marketing name, as far as the OS says."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def isa_note(variant: str, flags: set[str]) -> str | None:
    """Why an ``int8_<isa>`` variant's numbers may not be representative on this CPU, or None."""
    isa = variant.removeprefix("int8").lstrip("_")
    if not isa:
        return None
    needed = ISA_FLAGS.get(isa)
    if needed is None:
        return f"ISA {isa!r} unknown to this benchmark: not checked against this CPU"
    missing = [f for f in needed if f not in flags]
    if missing:
        # ORT still runs the graph (the int8 kernels exist for every x86 CPU), but a graph quantized
        # for VNNI can saturate without it, which the fidelity column then shows.
        return f"this CPU lacks {', '.join(missing)}: {variant} timings/fidelity are not what its target sees"
    return None


def gpu_names() -> list[str]:
    """GPU names from ``nvidia-smi`` where it exists (ONNX Runtime does not report them)."""
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        return [f"nvidia-smi failed: {exc}"]
    return [line.strip() for line in out.splitlines() if line.strip()]


def fmt(value: float | None, digits: int = 3) -> str:
    """A number for a report cell: ``digits`` significant digits under 100, whole numbers under 10,000, then
    ``12.3k``; ``–`` for none."""
    if value is None:
        return "–"
    if value >= 10_000:
        return f"{value / 1000:,.1f}k"
    return f"{value:,.{digits}g}" if value < 100 else f"{value:,.0f}"

