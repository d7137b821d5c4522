"""How the provider benchmark times a row: warm-up and timed passes per group and batch size, the TensorRT
engine cache before and after, and fidelity against CPU fp32."""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import embedrt
import numpy as np
from embedrt.providers import default_trt_cache
from embedrt_export.fidelity import one_minus_cos

from .providers_matrix import Config, Group


def percentile_ms(samples: Sequence[float], q: float) -> float:
    """The ``q``-th percentile of durations in seconds, in milliseconds."""
    return float(np.percentile(np.asarray(samples), q) * 1e3)


def file_listing(path: str | None) -> dict[str, tuple[int, int]]:
    """``{relative path: (size, mtime_ns)}`` of every file under ``path`` (empty if it does not exist)."""
    root = Path(path) if path else None
    if root is None or not root.exists():
        return {}
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")
            if p.is_file()}


class Deadline:
    """A wall-clock budget shared by every measurement (``None``: unbounded)."""

    def __init__(self, seconds: float | None) -> None:
        self.end = None if seconds is None else time.monotonic() + seconds

    def passed(self) -> bool:
        """Whether the budget is spent."""
        return self.end is not None and time.monotonic() >= self.end


def timed_passes(run: Callable[[], Any], repeats: int) -> tuple[list[float], Any]:
    """One untimed warm-up call of ``run`` then ``repeats`` timed ones: (durations, last result)."""
    result = run()
    durations = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        durations.append(time.perf_counter() - start)
    return durations, result


def measure_cell(model: Any, group: Group, batch_size: int, repeats: int) -> tuple[dict[str, Any], np.ndarray]:
    """Time one group at one batch size: the cell's numbers and the embeddings of the last pass."""
    if batch_size == 1:
        # Batch 1 is one encode() call per text, as a latency-bound client makes them; each call is a
        # latency sample and a pass over the group is a throughput sample.
        latencies: list[float] = []

        def one_by_one() -> np.ndarray:
            rows = []
            for text in group.texts:
                start = time.perf_counter()
                rows.append(model.encode([text], batch_size=1))
                latencies.append(time.perf_counter() - start)
            return np.concatenate(rows)

        durations, embeddings = timed_passes(one_by_one, repeats)
        timed = latencies[len(group.texts):]  # drop the warm-up pass's samples
        latency = {"p50_ms": percentile_ms(timed, 50), "p99_ms": percentile_ms(timed, 99), "samples": len(timed)}
    else:
        durations, embeddings = timed_passes(lambda: model.encode(group.texts, batch_size=batch_size), repeats)
        latency = None
    median = statistics.median(durations)
    cell = {"group": group.name, "batch_size": batch_size, "repeat_s": durations, "median_s": median,
            "sentences_per_s": len(group.texts) / median, "tokens_per_s": group.tokens / median,
            "latency": latency}
    if batch_size > 1:
        # The same batches without tokenization (padding, copies and the graph only), which is what
        # GPU vendors' figures count; on a GPU one encode() call of a few hundred texts is bound by it.
        encoded = model.tokenizer.encode(group.texts)
        engine_s, _ = timed_passes(lambda: model.engine.run(encoded, batch_size=batch_size), repeats)
        cell["model_only_tokens_per_s"] = group.tokens / statistics.median(engine_s)
    return cell, embeddings


def run_config(cfg: Config, artifact: Path, groups: list[Group], args: argparse.Namespace, deadline: Deadline,
               reference: dict[str, np.ndarray] | None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Measure one runnable config; returns its JSON record and its embeddings per group (largest batch)."""
    record: dict[str, Any] = {"cells": [], "skipped_cells": []}
    largest = max(args.batch_sizes)
    trt_root = args.trt_cache_dir or default_trt_cache()
    cache_before = file_listing(trt_root) if cfg.device == "tensorrt" else None
    start = time.perf_counter()
    model = embedrt.SentenceTransformer(artifact, device=cfg.device, variant=cfg.variant, strict=True,
                                        threads=args.threads, max_batch_size=largest,
                                        trt_cache_dir=args.trt_cache_dir)
    constructed = time.perf_counter()
    model.encode([groups[0].texts[0]], batch_size=1)
    record["first_call_s"] = time.perf_counter() - start
    record["construct_s"] = constructed - start
    record["active_providers"] = model.providers["active"]
    if cache_before is not None:
        # The engine cache folder is keyed by graph and profile; only files in this model's key folder count.
        key_dir = os.path.relpath(model.providers["requested"][0][1]["trt_engine_cache_path"], trt_root)
        warm = [f for f in cache_before if f.startswith(key_dir + os.sep)]
        record["trt_engine_cache"] = {"root": str(trt_root), "key": key_dir, "files_before": warm}
        if warm:
            cfg.notes.append(f"TensorRT engine cache was warm ({len(warm)} files): first call is a load, not a build")
    if cfg.device != "cpu":
        # One batch per sequence bucket at the largest batch size: CUDA/TensorRT kernels and the arena
        # reach their final size before timing. CPU needs no such pass: each cell has its own warm-up.
        model.warmup(largest)
    default_max_seq = model.max_seq_length
    outputs: dict[str, np.ndarray] = {}
    for group in groups:
        model.max_seq_length = group.max_seq_length
        try:
            for batch_size in args.batch_sizes:
                if deadline.passed():
                    record["skipped_cells"].append({"group": group.name, "batch_size": batch_size,
                                                    "reason": "time budget spent"})
                    continue
                cell, embeddings = measure_cell(model, group, batch_size, args.repeats)
                record["cells"].append(cell)
                if batch_size == largest:
                    outputs[group.name] = embeddings
        finally:
            model.max_seq_length = default_max_seq
    if cache_before is not None:
        record["trt_engine_cache"]["files_after"] = sorted(
            f for f in file_listing(trt_root) if f.startswith(record["trt_engine_cache"]["key"] + os.sep))
    if reference is not None:
        compared = [g for g in outputs if g in reference]
        worst = [float(one_minus_cos(reference[g], outputs[g]).max()) for g in compared]
        record["fidelity_max_one_minus_cos"] = max(worst) if worst else None
        record["fidelity_texts"] = sum(len(outputs[g]) for g in compared)
    return record, outputs


def reference_embeddings(artifact: Path, groups: list[Group], args: argparse.Namespace) -> dict[str, np.ndarray]:
    """CPU fp32 embeddings of every group (untimed), for when the CPU rows are not measured."""
    model = embedrt.SentenceTransformer(artifact, device="cpu", variant="fp32", strict=True, threads=args.threads)
    out = {}
    for group in groups:
        model.max_seq_length = group.max_seq_length
        out[group.name] = model.encode(group.texts, batch_size=max(args.batch_sizes))
    return out


