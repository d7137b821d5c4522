"""Embeddings on Ray (the ``ray`` extra): :func:`embed` for a Ray Dataset, and ``embedrt embed-corpus``.

Each actor of the pool holds one engine (:class:`~embedrt.ray.embedder.Embedder`), loaded and warmed
once, on ONNX Runtime threads equal to the CPUs Ray gave it. ``embed`` is lazy like any Ray Data
transform; the corpus job (:mod:`embedrt.ray.corpus`) adds stable ids, atomic Parquet parts and resume.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from typing import Any

from .embedder import Embedder


def actor_pool(actors: int | None, cpus_per_actor: float) -> dict[str, Any]:
    """``map_batches`` arguments for a pool of ``actors`` (default: one per ``cpus_per_actor`` CPUs of the
    cluster): ``compute=ActorPoolStrategy(...)``, or ``concurrency=`` on Ray releases that lack it."""
    import ray
    from ray import data

    if actors is None:
        actors = max(1, int(ray.cluster_resources().get("CPU", 1) // cpus_per_actor))
    if actors < 1:
        raise ValueError(f"actors must be a positive int, got {actors!r}")
    strategy = getattr(data, "ActorPoolStrategy", None)
    try:
        return {"compute": strategy(size=actors)} if strategy is not None else {"concurrency": actors}
    except TypeError:  # releases whose ActorPoolStrategy takes min_size/max_size only
        return {"compute": strategy(min_size=actors, max_size=actors)}


@contextlib.contextmanager
def connect(address: str | None = None) -> Iterator[None]:
    """Ray for the duration of the block: join ``address``, or start a local cluster on this machine (and
    stop it afterwards); an already initialized Ray is used as it is."""
    import ray

    if ray.is_initialized():
        yield
        return
    ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING,
             configure_logging=True, log_to_driver=True)
    ray.data.DataContext.get_current().enable_progress_bars = False  # the caller shows its own
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    try:
        yield
    finally:
        ray.shutdown()


def embed(dataset: Any, model: str, *, text_column: str | Sequence[str] = "text", image_column: str | None = None,
          id_column: str | None = "id", keep_columns: Sequence[str] = (), variant: str | None = None,
          normalize: bool = False, actors: int | None = None, cpus_per_actor: float = 1,
          batch_size: int = 4096, expected_digest: str | None = None) -> Any:
    """``dataset`` with its rows embedded: ``id``, ``embedding`` (``fixed_size_list<float32>[dim]``, null where
    the row's input was unusable), ``error`` (why, else null) and ``keep_columns``; the schema metadata names
    the model, variant, dimension and similarity.

    Args:
        dataset: a Ray Dataset.
        model: an artifact folder reachable from every node, or a name in each node's
            ``$EMBEDRT_CACHE/artifacts``. A folder's digest is pinned here, so every actor loads that artifact.
        text_column: the text column, or ``(title, text)`` columns for pair models.
        image_column: CLIP images (bytes of an image file, or paths) instead of text.
        actors, cpus_per_actor: the actor pool: each actor's ONNX Runtime runs ``cpus_per_actor`` threads.
            A dataset that starts with a read needs CPUs for the read tasks too: on a small node, leave one
            (``actors * cpus_per_actor`` below the node's CPUs) or the read waits forever for the actors.
        batch_size: rows per call; inside it texts are length-sorted and batched as ``encode`` does.
    """
    import os

    from ..artifact import Artifact

    if expected_digest is None and os.path.isdir(model):
        expected_digest = Artifact(model).digest
        model = os.path.abspath(model)
    kwargs = {"model": model, "text_column": text_column, "image_column": image_column, "id_column": id_column,
              "keep_columns": tuple(keep_columns), "variant": variant, "expected_digest": expected_digest,
              "normalize": normalize}
    return dataset.map_batches(Embedder, fn_constructor_kwargs=kwargs, batch_size=batch_size, batch_format="pyarrow",
                               num_cpus=cpus_per_actor, **actor_pool(actors, cpus_per_actor))


__all__ = ["Embedder", "actor_pool", "connect", "embed"]
