"""Execution-provider choice and ONNX Runtime session options.

What was asked for and what is active are both kept, and nothing falls back silently: a
missing provider is a logged warning naming the reason, or an error with ``strict=True``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

ProviderSpec = str | tuple[str, dict[str, Any]]

_DEVICE_PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}


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


def plan_providers(device: str | None = None, providers: list[ProviderSpec] | None = None,
                   threads: int | None = None) -> SessionPlan:
    """Turn ``device`` ("cpu", "cuda", "cuda:1", "tensorrt") or an explicit providers list into ORT specs."""
    if providers is not None and device is not None:
        raise ValueError("give either device= or providers=, not both")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be a positive int, got {threads!r}")
    if providers is not None:
        if not providers:
            raise ValueError("providers must not be empty")
        return SessionPlan(tuple(providers), threads)
    device = (device or "cpu").lower()
    name, _, index = device.partition(":")
    if name not in _DEVICE_PROVIDERS:
        raise ValueError(f"unknown device {device!r}; use 'cpu', 'cuda', 'cuda:N' or 'tensorrt'")
    if index and not index.isdigit():
        raise ValueError(f"device index must be an integer in {device!r}")
    options: dict[str, Any] = {"device_id": int(index)} if index else {}
    if name == "cpu":
        return SessionPlan(("CPUExecutionProvider",), threads)
    cuda: ProviderSpec = ("CUDAExecutionProvider", options) if options else "CUDAExecutionProvider"
    if name == "cuda":
        return SessionPlan((cuda, "CPUExecutionProvider"), threads)
    trt: ProviderSpec = ("TensorrtExecutionProvider", options) if options else "TensorrtExecutionProvider"
    return SessionPlan((trt, cuda, "CPUExecutionProvider"), threads)


def _provider_name(spec: ProviderSpec) -> str:
    return spec if isinstance(spec, str) else spec[0]


def default_threads() -> int:
    """Intra-op threads: the cores this process may use (cgroup/affinity aware where the OS says)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def create_session(model: bytes, plan: SessionPlan, *, strict: bool = False) -> Any:
    """Create an ORT session for a serialized graph following ``plan``.

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
    options.intra_op_num_threads = plan.threads or default_threads()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # Sequence lengths change every batch: memory patterns planned for one shape are wasted on the
    # next and make the arena grow (onnxruntime#11118), so plan per run instead.
    options.enable_mem_pattern = False
    options.log_severity_level = 3
    session = ort.InferenceSession(model, sess_options=options, providers=usable)
    active = session.get_providers()
    if first not in active:
        message = f"requested {first} but ONNX Runtime activated {active}"
        if strict:
            raise ProviderUnavailableError(message)
        logger.warning(message)
    return session
