"""``load_engine``: an artifact → a ready engine, with the variant, provider and threads chosen once.

This is everything a front end would otherwise copy: artifact checks, the selection rule
(:mod:`embedrt.selection`), provider plan and session options (:mod:`embedrt.providers`), sequence
buckets and IO binding on GPU, the token budget. The facade, the server and the Ray actor all call it.
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from typing import Any

from . import kernels
from .artifact import Artifact, open_artifact
from .checks import check_positive_int
from .engine import Engine, EngineInfo, default_buckets
from .isa import detect_isa
from .manifest import MANIFEST_NAME, ArtifactError
from .providers import (
    ProviderSpec,
    SessionPlan,
    ShapeProfile,
    create_session,
    plan_providers,
    shared_cpu_threads,
    specialize,
)
from .selection import CPU_MAX_BATCH_TOKENS, GPU_MAX_BATCH_TOKENS, Choice, choose_variant, cpu_threads
from .types import SENTENCE

logger = logging.getLogger(__name__)

_GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")


def _threads(plan: SessionPlan, variant: str, threads: int | None, workers: int | None) -> tuple[int | None, int]:
    """(intra-op threads per batch, batches at once) for ``plan``'s device."""
    if plan.device != "cpu":
        if workers not in (None, 1):
            logger.warning("workers=%s ignored: on %s the engine runs one batch at a time", workers, plan.device)
        return plan.threads, 1
    shared = shared_cpu_threads()
    if shared is not None:
        if threads not in (None, shared):
            logger.warning("threads=%d ignored: this process's CPU sessions share one pool of %d threads "
                           "(embedrt.share_cpu_threads)", threads, shared)
        return shared, workers or 1
    return cpu_threads(variant, threads, workers)


def _check_dimension(session: Any, dimension: int, file: str) -> None:
    shapes = {o.name: o.shape for o in session.get_outputs()}
    width = (shapes.get(SENTENCE) or [None])[-1]
    if SENTENCE not in shapes or (isinstance(width, int) and width != dimension):
        raise ArtifactError(f"{file}: its {SENTENCE!r} output is {shapes.get(SENTENCE)}, but {MANIFEST_NAME} "
                            f"says embedding_dimension {dimension}")


def _choose(artifact: Artifact, tower: str, plan: SessionPlan, variant: str | None) -> Choice:
    variants = artifact.manifest.towers[tower].variants
    choice = choose_variant(variants, plan.device, isa=detect_isa(), kernels_built=kernels.available(),
                            requested=variant)
    for line in choice.reasons[:-1]:
        # A variant the artifact has but this install cannot run is worth a warning; the rest is routine.
        (logger.warning if "kernel library" in line else logger.info)("%s %s: %s", artifact.manifest.name, tower,
                                                                        line)
    return choice


def load_engine(artifact: str | os.PathLike[str] | Artifact, *, tower: str = "text", device: str | None = None,
                providers: list[ProviderSpec] | None = None, variant: str | None = None, threads: int | None = None,
                workers: int | None = None, strict: bool = False, max_batch_tokens: int | None = None,
                max_batch_size: int = 64, trt_cache_dir: str | None = None,
                expected_digest: str | None = None) -> Any:
    """The engine of one tower of an artifact: :class:`~embedrt.engine.Engine` for ``text``,
    :class:`~embedrt.images.ImageEngine` for CLIP's ``vision``.

    Args:
        artifact: an artifact folder, a name under ``$EMBEDRT_CACHE/artifacts``, a Hub repo holding one,
            or an opened :class:`~embedrt.artifact.Artifact`.
        device: "cpu" (default), "cuda", "cuda:N", "tensorrt" or "tensorrt:N".
        providers: an explicit ONNX Runtime providers list instead of ``device``; it runs on the device of
            its first provider.
        variant: a graph variant by name; default: :func:`embedrt.selection.choose_variant`'s pick.
        threads: CPU threads in all (default: every core this process may use; more is capped, warning).
        workers: CPU batches at once, each on ``threads // workers`` threads (default: the selection rule).
        strict: raise instead of warning when the requested provider is not what runs.
        max_batch_tokens: token budget per batch (default: :data:`~embedrt.selection.CPU_MAX_BATCH_TOKENS`
            on CPU, :data:`~embedrt.selection.GPU_MAX_BATCH_TOKENS` on GPU).
        max_batch_size: TensorRT only: the shape profile's largest batch.
        trt_cache_dir: TensorRT engine cache root (default ``$EMBEDRT_TRT_CACHE`` or ``$EMBEDRT_CACHE/trt``).
        expected_digest: refuse the artifact unless its digest (sha256 of ``manifest.json``) is this.
    """
    artifact = open_artifact(artifact, expected_digest)
    manifest = artifact.manifest
    if tower not in manifest.towers:
        raise ValueError(f"artifact {manifest.name!r} has no {tower!r} tower; it has {sorted(manifest.towers)}")
    if workers is not None:
        workers = check_positive_int("workers", workers)
    if max_batch_tokens is not None:
        max_batch_tokens = check_positive_int("max_batch_tokens", max_batch_tokens)
    max_batch_size = check_positive_int("max_batch_size", max_batch_size)
    plan = plan_providers(device, providers, threads)
    choice = _choose(artifact, tower, plan, variant)
    graph = manifest.towers[tower].variants[choice.variant]
    session_threads, workers = _threads(plan, choice.variant, plan.threads, workers)
    plan = replace(plan, threads=session_threads)
    spec = manifest.tokenizer
    if tower == "text":
        # TensorRT's profile reaches the position limit, so raising max_seq_length after load (as
        # sentence-transformers users do) stays inside the engine that was built.
        profile = ShapeProfile(max_batch=max_batch_size, opt_seq=min(128, spec.max_seq_length),
                               max_seq=spec.model_max_length or spec.max_seq_length)
        plan = specialize(plan, manifest.files[graph.file].sha256, graph.inputs, profile, trt_cache_dir)
    with artifact.verified_graph(graph) as graph_path:
        session = create_session(str(graph_path), plan, strict=strict, custom_ops=graph.custom_ops)
    _check_dimension(session, manifest.embedding_dimension, graph.file)
    active = session.get_providers()[0]
    on_gpu = active in _GPU_PROVIDERS
    info = EngineInfo(
        model=manifest.name, tower=tower, variant=choice.variant, provider=active, device=plan.device,
        threads=plan.threads, workers=workers, packed_rows=graph.packed_rows,
        max_seq_length=spec.max_seq_length if tower == "text" else None,
        max_batch_tokens=(max_batch_tokens or (GPU_MAX_BATCH_TOKENS if on_gpu else CPU_MAX_BATCH_TOKENS))
        if tower == "text" else None,
        max_batch_size=max_batch_size if active == "TensorrtExecutionProvider" else None,
        dimension=manifest.embedding_dimension, similarity_fn_name=manifest.similarity_fn_name,
        digest=artifact.digest, reasons=choice.reasons, requested_providers=plan.requested)
    if tower == "vision":
        from .images import ImageEngine

        return ImageEngine(session, manifest.image, info)
    runner = None
    if on_gpu:
        from .iobinding import IOBindingRunner

        runner = IOBindingRunner(session, "cuda", plan.device_id)
    return Engine(session, info, spec.pad_token_id, runner=runner,
                  seq_buckets=default_buckets(spec.max_seq_length) if on_gpu else None)
