"""Execution-provider choice and ONNX Runtime session options.

What was asked for and what is active are both kept, and nothing falls back silently: a
missing provider is a logged warning naming the reason, or an error with ``strict=True``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from . import kernels
from .checks import check_positive_int
from .isa import INT8_ROWWISE

logger = logging.getLogger(__name__)

ProviderSpec = str | tuple[str, dict[str, Any]]

_DEVICE_PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}


# Two of ORT's CPU fusions are slower than the ops they replace (all-MiniLM-L6-v2, ORT 1.31-1.32):
# its BiasGelu kernel took 2.7x the time of its Gelu on the same elements (fp32 MiniLM-L6 1.037x,
# mpnet-base 1.019x without it), and SkipLayerNormalization, which the dynamic int8 graphs get,
# took 0.22 s where the Add + LayerNormalization it replaces take ~0.06 s (those graphs 1.11x).
CPU_DISABLED_OPTIMIZERS = ("BiasGeluFusion", "SkipLayerNormFusion")


class ProviderUnavailableError(RuntimeError):
    """The requested execution provider cannot be used and ``strict=True`` was given."""


def import_onnxruntime() -> Any:
    """Import onnxruntime, or explain which extra installs it."""
    try:
        import onnxruntime
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "embedrt needs ONNX Runtime: `pip install 'embedrt[cpu]'` (or 'embedrt[gpu]' for "
            "onnxruntime-gpu; never both, they share the module name)"
        ) from exc
    return onnxruntime


@dataclass(frozen=True)
class SessionPlan:
    """The providers asked for, as ORT provider specs, before a session exists."""

    requested: tuple[ProviderSpec, ...]
    threads: int | None
    device: str = "cpu"  # cpu, cuda, tensorrt, or "custom" for an explicit providers list
    device_id: int = 0

    @property
    def on_gpu(self) -> bool:
        """Whether the first requested provider runs on an NVIDIA GPU."""
        return _provider_name(self.requested[0]) in ("CUDAExecutionProvider", "TensorrtExecutionProvider")


def cuda_options(device_id: int = 0) -> dict[str, Any]:
    """CUDA EP options: the arena grows by what is requested, not in powers of two (onnxruntime#11118,
    triton onnxruntime_backend#102), and copies share the compute stream. fp32 stays fp32, as torch
    (so sentence-transformers) keeps it: with ORT's default TF32 GEMMs, mpnet-base's fp32 graph read
    1.2e-4 (1−cos) off the CPU on an H200, the size of error TF32's 10-bit mantissa gives (not yet
    re-measured with TF32 off). The fast path on a GPU is the fp16 variant."""
    return {"device_id": device_id, "arena_extend_strategy": "kSameAsRequested",
            "cudnn_conv_algo_search": "HEURISTIC", "do_copy_in_default_stream": True, "use_tf32": 0}


@dataclass(frozen=True)
class ShapeProfile:
    """TensorRT optimization profile for [batch, sequence] inputs."""

    max_batch: int
    opt_seq: int
    max_seq: int

    def shapes(self, inputs: tuple[str, ...]) -> dict[str, str]:
        """``trt_profile_{min,opt,max}_shapes`` option strings for the given inputs."""
        def fmt(batch: int, seq: int) -> str:
            return ",".join(f"{name}:{batch}x{seq}" for name in inputs)
        return {"trt_profile_min_shapes": fmt(1, 1),
                "trt_profile_opt_shapes": fmt(self.max_batch, self.opt_seq),
                "trt_profile_max_shapes": fmt(self.max_batch, self.max_seq)}


def tensorrt_options(device_id: int, graph_sha256: str, inputs: tuple[str, ...], profile: ShapeProfile,
                     cache_root: str | os.PathLike[str], fp16: bool = True) -> dict[str, Any]:
    """TensorRT EP options: one explicit profile covering every bucket (so no engine is rebuilt when
    the length changes) and an engine cache keyed by the graph's sha256 and the profile (so a changed
    graph or profile never reuses a stale engine)."""
    key = f"{graph_sha256[:16]}-b{profile.max_batch}-s{profile.max_seq}-{'fp16' if fp16 else 'fp32'}"
    cache = os.path.join(os.fspath(cache_root), key)
    return {"device_id": device_id, "trt_fp16_enable": fp16, "trt_layer_norm_fp32_fallback": True,
            "trt_engine_cache_enable": True, "trt_engine_cache_path": cache,
            "trt_timing_cache_enable": True, "trt_timing_cache_path": cache,
            "trt_builder_optimization_level": 3, **profile.shapes(inputs)}


def default_trt_cache() -> str:
    """``$EMBEDRT_TRT_CACHE``, else ``~/.cache/embedrt/trt``: engines persist across processes."""
    return os.environ.get("EMBEDRT_TRT_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "embedrt", "trt"))


def plan_providers(device: str | None = None, providers: list[ProviderSpec] | None = None,
                   threads: int | None = None) -> SessionPlan:
    """Turn ``device`` ("cpu", "cuda", "cuda:1", "tensorrt", "tensorrt:1") or an explicit providers list
    into ORT specs. TensorRT options that depend on the graph are added by :func:`specialize`."""
    if providers is not None and device is not None:
        raise ValueError("give either device= or providers=, not both")
    if threads is not None:
        check_positive_int("threads", threads)
    if providers is not None:
        if not providers:
            raise ValueError("providers must not be empty")
        return SessionPlan(tuple(providers), threads, device="custom")
    device = (device or "cpu").lower()
    name, _, index = device.partition(":")
    if name not in _DEVICE_PROVIDERS:
        raise ValueError(f"unknown device {device!r}; use 'cpu', 'cuda', 'cuda:N', 'tensorrt' or 'tensorrt:N'")
    if index and not index.isdigit():
        raise ValueError(f"device index must be an integer in {device!r}")
    device_id = int(index) if index else 0
    if name == "cpu":
        return SessionPlan(("CPUExecutionProvider",), threads)
    cuda: ProviderSpec = ("CUDAExecutionProvider", cuda_options(device_id))
    if name == "cuda":
        return SessionPlan((cuda, "CPUExecutionProvider"), threads, device="cuda", device_id=device_id)
    trt: ProviderSpec = ("TensorrtExecutionProvider", {"device_id": device_id})
    return SessionPlan((trt, cuda, "CPUExecutionProvider"), threads, device="tensorrt", device_id=device_id)


def specialize(plan: SessionPlan, graph_sha256: str, inputs: tuple[str, ...], profile: ShapeProfile,
               trt_cache: str | None = None, fp16: bool = True) -> SessionPlan:
    """Fill in the graph-dependent TensorRT options (profile, engine cache); other plans pass through."""
    if plan.device != "tensorrt":
        return plan
    trt = ("TensorrtExecutionProvider",
           tensorrt_options(plan.device_id, graph_sha256, inputs, profile, trt_cache or default_trt_cache(), fp16))
    return SessionPlan((trt, *plan.requested[1:]), plan.threads, plan.device, plan.device_id)


def _provider_name(spec: ProviderSpec) -> str:
    return spec if isinstance(spec, str) else spec[0]


def default_threads() -> int:
    """Intra-op threads: the cores this process may use (cgroup/affinity aware where the OS says)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


# Graph variants that run faster as two batches at once, each on half the threads, than as one batch
# on all of them: int8_rowwise's many small quantize/rescale ops each fork and join across the
# intra-op pool. Measured on 2 cores (benchmarks/cpu.py --workers 1,2, same run): MiniLM-L6 1.057x,
# mpnet-base 1.01-1.41x (the larger gain in one of the VM's slow phases); fp32 graphs 0.98-1.06x and
# dynamic int8 1.00x, so those keep one batch at a time and its lower one-text latency.
# int8_rowwise_fused does those steps in embedrt's kernels, which split rows over the session's
# threads themselves: one batch at a time read 895 and 905 sentences/s against 861 and 888 with two
# (MiniLM-L6, two benchmarks/cpu.py --workers 1,2 runs), so it keeps the lower latency of one.
CPU_CONCURRENT_VARIANTS = {INT8_ROWWISE: 2}

_shared_threads: int | None = None  # set by share_cpu_threads: this process's one CPU pool


def share_cpu_threads(threads: int | None = None) -> int:
    """Run every CPU session embedrt creates from now on, in this process, on one ONNX Runtime thread pool.

    Each session otherwise has a pool of its own, whose workers keep spinning after a run and take the
    cores from the next session's run. Two all-MiniLM-L6-v2 models taking turns on 2 cores (32 fortunes
    per call) ran at 291 sentences/s on their own pools and 407 on a shared one (fp32_fused; one model
    alone: 408), int8_rowwise_fused at 535 and 925 (alone: 962); one model alone ran 0.96-1.03x its own
    pool's speed. So call this in a process that holds several models (or CLIP's two towers), before
    loading them; models loaded earlier keep their own pools. A shared pool runs one batch at a time
    per call (``workers`` 1 unless asked) and ignores a model's ``threads``, saying so.

    Args:
        threads: the pool's size; default the cores this process may use.

    Returns:
        The pool's size.

    Raises:
        ValueError: ``threads`` is not a positive int, or differs from an earlier call's: ONNX Runtime
            has one global pool per process.
    """
    global _shared_threads
    size = default_threads() if threads is None else threads
    check_positive_int("threads", size)
    if _shared_threads is not None and size != _shared_threads:
        raise ValueError(f"share_cpu_threads: this process already shares a pool of {_shared_threads} threads; "
                         f"it cannot become {size}")
    if _shared_threads is None:
        import_onnxruntime().set_global_thread_pool_sizes(size, 1)
        _shared_threads = size
    return size


def split_threads(plan: SessionPlan, workers: int | None = None,
                  variant: str | None = None) -> tuple[SessionPlan, int]:
    """How a text engine spends ``plan``'s threads: ``(plan for its session, workers)``.

    On CPU, ``workers`` batches run at once, each with ``threads // workers`` intra-op threads; see
    :mod:`embedrt.engine` for what more workers buy and cost. Without ``workers``: 1, or
    :data:`CPU_CONCURRENT_VARIANTS`'s count for ``variant`` when there are threads for it. A GPU plan
    runs one batch at a time with the plan's threads; under :func:`share_cpu_threads`, the shared
    pool's size and one worker unless asked.
    """
    if workers is not None:
        check_positive_int("workers", workers)
    if plan.on_gpu:
        return plan, 1
    if _shared_threads is not None:
        if plan.threads not in (None, _shared_threads):
            logger.warning("threads=%d ignored: this process's CPU sessions share one pool of %d threads "
                           "(embedrt.share_cpu_threads)", plan.threads, _shared_threads)
        return replace(plan, threads=_shared_threads), workers or 1
    threads = plan.threads or default_threads()
    if workers is None:
        workers = min(CPU_CONCURRENT_VARIANTS.get(variant or "", 1), threads)
    return replace(plan, threads=max(1, threads // workers)), workers


def create_session(model_path: str, plan: SessionPlan, *, strict: bool = False,
                   custom_ops: Iterable[str] = ()) -> Any:
    """Create an ORT session for the graph file ``model_path`` following ``plan``.

    ``custom_ops``: the op domains the graph needs beyond ONNX Runtime's (its manifest entry's
    ``custom_ops``), registered from embedrt's kernel library (:func:`embedrt.kernels.register`).

    Providers ORT does not have are dropped with a warning naming them (``strict`` raises),
    and the session's active providers are checked against the first requested one.
    """
    ort = import_onnxruntime()
    available = set(ort.get_available_providers())
    usable = [p for p in plan.requested if _provider_name(p) in available]
    missing = [_provider_name(p) for p in plan.requested if _provider_name(p) not in available]
    first = _provider_name(plan.requested[0])
    if missing:
        message = (
            f"execution provider(s) {missing} not available in this onnxruntime build "
            f"(available: {sorted(available)})"
        )
        if strict and first in missing:
            raise ProviderUnavailableError(message)
        logger.warning("%s; using %s", message, [_provider_name(p) for p in usable] or ["none"])
    if not usable:
        raise ProviderUnavailableError(f"none of the requested providers is available: {missing}")

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if _shared_threads is not None and not plan.on_gpu:
        options.use_per_session_threads = False  # thread counts are the shared pool's
    else:
        options.intra_op_num_threads = plan.threads or default_threads()
        options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # Sequence lengths change every batch: memory patterns planned for one shape are wasted on the
    # next and make the arena grow (onnxruntime#11118), so plan per run instead.
    options.enable_mem_pattern = False
    options.log_severity_level = 3
    kernels.register(options, custom_ops)
    session = ort.InferenceSession(model_path, sess_options=options, providers=usable,
                                   disabled_optimizers=[] if plan.on_gpu else list(CPU_DISABLED_OPTIMIZERS))
    active = session.get_providers()
    if first not in active:
        message = f"requested {first} but ONNX Runtime activated {active}"
        if strict:
            raise ProviderUnavailableError(message)
        logger.warning(message)
    return session
