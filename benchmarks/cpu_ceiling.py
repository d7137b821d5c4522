"""The CPU benchmark's yardstick: the model's transformer FLOPs over the corpus, and the machine's fp32 GEMM rate.

The faster of numpy's BLAS and ONNX Runtime's MLAS (measured each cycle by ``cpu_worker.py gemm``) turns
the corpus' FLOPs (length-sorted batches, each padded to its longest text) into a ceiling time; every
path is reported as a fraction of it, and of the stricter ceiling for real tokens alone.
"""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path
from typing import Any

import numpy as np
from embedrt.engine import plan_batches

OPENBLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def st_modules(folder: Path) -> dict[str, Any]:
    """What fastembed and the FLOP count need from a sentence-transformers folder: transformer shape,
    pooling, whether it normalizes, and modules fastembed cannot run."""
    modules = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
    kinds = {m["type"].rsplit(".", 1)[-1]: m for m in modules}
    transformer = folder / kinds["Transformer"]["path"] if "Transformer" in kinds else folder
    config = json.loads((transformer / "config.json").read_text(encoding="utf-8"))
    pooling = None
    if "Pooling" in kinds:
        pool_cfg = json.loads((folder / kinds["Pooling"]["path"] / "config.json").read_text(encoding="utf-8"))
        pooling = ("mean" if pool_cfg.get("pooling_mode_mean_tokens") else
                   "cls" if pool_cfg.get("pooling_mode_cls_token") else None)
    return {"hidden": int(config["hidden_size"]), "layers": int(config["num_hidden_layers"]),
            "intermediate": int(config["intermediate_size"]), "model_type": config.get("model_type"),
            "pooling": pooling, "normalize": "Normalize" in kinds,
            "unsupported_by_fastembed": sorted(set(kinds) - {"Transformer", "Pooling", "Normalize"})}


def corpus_flops(lengths: np.ndarray, batch_size: int, shape: dict[str, Any]) -> dict[str, Any]:
    """Transformer FLOPs of embedding the corpus in length-sorted batches, each padded to its longest text.

    Linear layers: 2 · params · padded tokens, params = layers · (4·d² + 2·d·ff) (Q, K, V, output and the
    two feed-forward matrices; biases, LayerNorm and embedding lookups are negligible or free).
    Attention: 4 · L² · d per layer per sequence (QKᵀ and attention·V) at the batch's padded length L.
    """
    d, layers, ff = shape["hidden"], shape["layers"], shape["intermediate"]
    params = layers * (4 * d * d + 2 * d * ff)
    linear = attention = padded = 0
    widths = []
    for idx in plan_batches(lengths, batch_size):
        width = int(lengths[idx].max())
        widths.append(width)
        padded += width * len(idx)
        linear += 2 * params * width * len(idx)
        attention += 4 * width * width * d * layers * len(idx)
    return {"linear_params": params, "linear_flops": linear, "attention_flops": attention,
            "total_flops": linear + attention, "padded_tokens": padded, "real_tokens": int(lengths.sum()),
            "batches": len(widths), "median_padded_width": float(np.median(widths))}


def gemm_shapes(shape: dict[str, Any], rows: int) -> list[list[int]]:
    """The linear layers' GEMMs at ``rows`` tokens: fused QKV, attention output, feed-forward in and out."""
    d, ff = shape["hidden"], shape["intermediate"]
    return [[rows, d, 3 * d], [rows, d, d], [rows, d, ff], [rows, ff, d]]

def gemm_probes(threads: int) -> list[tuple[str, tuple[str, ...], int, str]]:
    """(label, environment variables to drop, threads, backend) of each GEMM probe.

    numpy as this environment runs it and, where OPENBLAS_* are set (they pin an older kernel on some
    CPUs, see the env README), without them; ONNX Runtime's own MLAS MatMul (what the graphs run);
    all at ``threads``. Plus numpy on one thread: when ``threads`` threads are not clearly faster than
    one, the cores were shared while this ran. The ceiling takes the fastest probe at ``threads``.
    """
    unset = OPENBLAS_VARS if any(v in os.environ for v in OPENBLAS_VARS) else ()
    probes = [(f"numpy as is, {threads} threads", (), threads, "numpy")]
    if unset:
        probes.append((f"numpy, OPENBLAS_CORETYPE/L2_SIZE unset, {threads} threads", unset, threads, "numpy"))
    probes.append((f"onnxruntime MLAS, {threads} threads", (), threads, "onnxruntime"))
    if threads > 1:
        probes.append(("numpy" + (", OPENBLAS_CORETYPE/L2_SIZE unset" if unset else "") + ", 1 thread", unset, 1,
                       "numpy"))
    return probes



def ceiling(gemm_runs: dict[str, list[dict[str, Any]]], threads: int, flops: dict[str, Any],
            real_flops: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Each GEMM probe's median rate, and the ceiling: the fastest probe at ``threads`` turned into seconds
    for the padded batches (``flops``) and for real tokens alone (``real_flops``)."""
    gemm = {label: {"gflops": statistics.median(r["gflops"] for r in runs), "blas": runs[0]["blas"],
                    "threads": runs[0]["blas"][0]["num_threads"] if runs[0]["blas"] else None, "runs": runs}
            for label, runs in gemm_runs.items()}
    at_threads = [label for label, g in gemm.items() if g["threads"] == threads]
    best = max(at_threads, key=lambda label: gemm[label]["gflops"])
    single = [g["gflops"] for g in gemm.values() if g["threads"] == 1 and threads > 1]
    # N threads under 1.5× one thread: another process had the cores (or they are SMT siblings).
    shared = bool(single) and gemm[best]["gflops"] < 1.5 * single[0]
    return gemm, {"gflops": gemm[best]["gflops"], "source": best,
                  "seconds": flops["total_flops"] / (gemm[best]["gflops"] * 1e9),
                  "real_tokens_seconds": real_flops["total_flops"] / (gemm[best]["gflops"] * 1e9),
                  "cores_looked_shared": shared}
