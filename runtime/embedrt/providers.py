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
from .manifest import ArtifactError
from .paths import cache_dir
from .selection import available_cpus, bounded

logger = logging.getLogger(__name__)

ProviderSpec = str | tuple[str, dict[str, Any]]

_DEVICE_PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}


# Two of ORT's CPU fusions are slower than the ops they replace: its BiasGelu kernel, and the
# SkipLayerNormalization the dynamic int8 graphs get (benchmarks/README.md, "No BiasGelu on CPU").
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
    device: str = "cpu"  # cpu, cuda or tensorrt: the kind of the first requested provider
    device_id: int = 0
    explicit: bool = False  # given as a providers list: its options are the caller's, used as they are

    @property
    def on_gpu(self) -> bool:
        """Whether the first requested provider runs on an NVIDIA GPU."""
        return _provider_name(self.requested[0]) in ("CUDAExecutionProvider", "TensorrtExecutionProvider")


def cuda_options(device_id: int = 0) -> dict[str, Any]:
    """CUDA EP options: the arena grows by what is requested, not in powers of two (onnxruntime#11118,
    triton onnxruntime_backend#102), and copies share the compute stream. fp32 stays fp32, as torch
    (so sentence-transformers) keeps it: with ORT's default TF32 GEMMs, mpnet-base's fp32 graph read
    off the CPU on an H200 by the size of error TF32's 10-bit mantissa gives (benchmarks/README.md,
    "Latest GPU results"). The fast path on a GPU is the fp16 variant."""
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
    return os.environ.get("EMBEDRT_TRT_CACHE") or str(cache_dir() / "trt")


def plan_providers(device: str | None = None, providers: list[ProviderSpec] | None = None,
                   threads: int | None = None) -> SessionPlan:
    """Turn ``device`` ("cpu", "cuda", "cuda:1", "tensorrt", "tensorrt:1") or an explicit providers list
    into ORT specs. TensorRT options that depend on the graph are added by :func:`specialize`.

    An explicit list runs on the device of its first provider: ``[("CUDAExecutionProvider", {...})]`` is
    a CUDA plan, so the GPU's variants are chosen for it."""
    if providers is not None and device is not None:
        raise ValueError("give either device= or providers=, not both")
    if threads is not None:
        check_positive_int("threads", threads)
    if providers is not None:
        if isinstance(providers, (str, bytes)) or not isinstance(providers, (list, tuple)):
            raise TypeError(f"providers must be a list of provider names or (name, options) pairs, got "
                            f"{type(providers).__name__}")
        if not providers:
            raise ValueError("providers must not be empty")
        specs = tuple(_check_provider(p, i) for i, p in enumerate(providers))
        first = specs[0]
        kind = next((k for k, name in _DEVICE_PROVIDERS.items() if name == _provider_name(first)), "cpu")
        options = first[1] if isinstance(first, tuple) else {}
        return SessionPlan(specs, threads, device=kind, device_id=int(options.get("device_id", 0)), explicit=True)
    if device is not None and not isinstance(device, str):
        raise TypeError(f"device must be a str such as 'cpu', 'cuda' or 'cuda:1', got {type(device).__name__} "
                        f"{device!r}"[:200])
    device = "cpu" if device is None else device.lower()
    name, colon, index = device.partition(":")
    if name not in _DEVICE_PROVIDERS:
        raise ValueError(f"unknown device {device!r}; use 'cpu', 'cuda', 'cuda:N', 'tensorrt' or 'tensorrt:N'")
    if colon and (name == "cpu" or not index.isdigit()):
        raise ValueError(f"device {device!r}: " + ("the CPU takes no index" if name == "cpu"
                                                   else "the index must be a non-negative integer"))
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
    if plan.device != "tensorrt" or plan.explicit:
        return plan
    trt = ("TensorrtExecutionProvider",
           tensorrt_options(plan.device_id, graph_sha256, inputs, profile, trt_cache or default_trt_cache(), fp16))
    return replace(plan, requested=(trt, *plan.requested[1:]))


def _provider_name(spec: ProviderSpec) -> str:
    return spec if isinstance(spec, str) else spec[0]


def _check_provider(spec: Any, index: int) -> ProviderSpec:
    if isinstance(spec, str) and spec:
        return spec
    if (isinstance(spec, (tuple, list)) and len(spec) == 2 and isinstance(spec[0], str)
            and isinstance(spec[1], dict)):
        return (spec[0], dict(spec[1]))
    raise TypeError(f"providers[{index}] must be a provider name or a (name, options dict) pair, got "
                    f"{type(spec).__name__} {spec!r}"[:200])


_shared_threads: int | None = None  # set by share_cpu_threads: this process's one CPU pool


def shared_cpu_threads() -> int | None:
    """The size of this process's shared CPU pool (:func:`share_cpu_threads`), or ``None``."""
    return _shared_threads


def share_cpu_threads(threads: int | None = None) -> int:
    """Run every CPU session embedrt creates from now on, in this process, on one ONNX Runtime thread pool.

    Each session otherwise has a pool of its own, whose workers keep spinning after a run and take the
    cores from the next session's run (two models taking turns lose much of their speed to each other;
    one model alone runs as fast on either: benchmarks/README.md, "several sessions in one process").
    So call this in a process that holds several models (or CLIP's two towers), before loading them;
    models loaded earlier keep their own pools. A shared pool runs one batch at a time
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
    size = available_cpus() if threads is None else bounded("threads", check_positive_int("threads", threads),
                                                             available_cpus())
    if _shared_threads is not None and size != _shared_threads:
        raise ValueError(f"share_cpu_threads: this process already shares a pool of {_shared_threads} threads; "
                         f"it cannot become {size}")
    if _shared_threads is None:
        import_onnxruntime().set_global_thread_pool_sizes(size, 1)
        _shared_threads = size
    return size


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
        options.intra_op_num_threads = plan.threads or available_cpus()
        options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # Sequence lengths change every batch: memory patterns planned for one shape are wasted on the
    # next and make the arena grow (onnxruntime#11118), so plan per run instead.
    options.enable_mem_pattern = False
    options.log_severity_level = 3
    kernels.register(options, custom_ops)
    try:
        session = ort.InferenceSession(model_path, sess_options=options, providers=usable,
                                       disabled_optimizers=[] if plan.on_gpu else list(CPU_DISABLED_OPTIMIZERS))
    except RuntimeError as exc:  # ORT's Fail / InvalidGraph / NotImplemented all derive from it
        raise ArtifactError(f"{model_path}: ONNX Runtime cannot load this graph "
                            f"({type(exc).__name__}: {str(exc)[:300]})") from exc
    active = session.get_providers()
    if first not in active:
        message = f"requested {first} but ONNX Runtime activated {active}"
        if strict:
            raise ProviderUnavailableError(message)
        logger.warning(message)
    return session
