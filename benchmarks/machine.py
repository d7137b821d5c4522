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


def describe(cores: int) -> dict[str, object]:
    """The machine facts every results file starts with: CPU, cores used, GEMM rates on that many threads."""
    return {"cpu": cpu_model(), "cores": cores, **gemm_rates(cores)}


def header(machine: dict[str, object]) -> str:
    """``describe``'s facts as the sentence a results file opens with."""
    return (f"{machine['cpu']}, {machine['cores']} cores; GEMM (ONNX Runtime MLAS, {machine['cores']} threads): "
            f"fp32 {machine['fp32_gflops']:.0f} GFLOP/s, int8 {machine['int8_gops']:.0f} GOP/s.")


def gemm_rates(threads: int, m: int = 1024, k: int = 384, n: int = 1536, seconds: float = 1.0,
               bf16: bool = False) -> dict[str, float]:
    """The machine's GEMM rates through ONNX Runtime's MLAS on ``threads`` threads, at an ``m x k x n`` shape
    (default: a MiniLM feed-forward layer over 1,024 tokens): fp32 ``MatMul`` (GFLOP/s) and int8
    ``MatMulInteger``, u8 activations x s8 weights into s32, the arithmetic of the row-wise int8 graphs
    (GOP/s, on VNNI where the CPU has it). Every results file carries both: ratios mean little without them.
    With ``bf16``, where the CPU multiplies bf16 (AVX-512 BF16 or AMX) and torch is installed, also
    ``bf16_gflops``: torch's bf16 ``matmul`` (oneDNN) at the same shape, the rate int8_rowwise_fused's bf16
    attention could reach (asked only by the int8 ceilings: torch's threads would stay in the process)."""
    import time

    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    cases = {
        "fp32_gflops": (helper.make_node("MatMul", ["x", "w"], ["y"]), TensorProto.FLOAT, TensorProto.FLOAT,
                        rng.normal(size=(k, n)).astype(np.float32), rng.normal(size=(m, k)).astype(np.float32)),
        "int8_gops": (helper.make_node("MatMulInteger", ["x", "w"], ["y"]), TensorProto.UINT8, TensorProto.INT32,
                      rng.integers(-127, 128, size=(k, n), dtype=np.int8),
                      rng.integers(0, 256, size=(m, k), dtype=np.uint8)),
    }
    rates = {}
    for key, (node, input_type, output_type, weight, x) in cases.items():
        graph = helper.make_graph([node], "gemm", [helper.make_tensor_value_info("x", input_type, [m, k])],
                                  [helper.make_tensor_value_info("y", output_type, [m, n])],
                                  [numpy_helper.from_array(weight, "w")])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        session.run(None, {"x": x})
        runs, began = 0, time.perf_counter()
        while time.perf_counter() - began < seconds:
            session.run(None, {"x": x})
            runs += 1
        rates[key] = 2 * m * k * n * runs / (time.perf_counter() - began) / 1e9
    if bf16 and cpu_flags() & {"avx512_bf16", "amx_bf16"}:
        rate = _torch_bf16_gflops(threads, m, k, n, seconds)
        if rate:
            rates["bf16_gflops"] = rate
    return rates


def _torch_bf16_gflops(threads: int, m: int, k: int, n: int, seconds: float) -> float | None:
    """torch's bf16 ``matmul`` rate on ``threads`` threads, the median of three timings after a warm-up
    (oneDNN compiles its kernels on first use), or None without torch."""
    import statistics
    import time

    try:
        import torch
    except ImportError:
        return None
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        x, w = torch.randn(m, k, dtype=torch.bfloat16), torch.randn(k, n, dtype=torch.bfloat16)
        rates = []
        for _ in range(4):  # the first is the warm-up
            runs, began = 0, time.perf_counter()
            while time.perf_counter() - began < seconds / 3:
                x @ w
                runs += 1
            rates.append(2 * m * k * n * runs / (time.perf_counter() - began) / 1e9)
        return statistics.median(rates[1:])
    finally:
        torch.set_num_threads(before)
