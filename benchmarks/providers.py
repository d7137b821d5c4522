#!/usr/bin/env python3
"""Throughput, latency, first-call time and fidelity of every execution provider × graph variant.

Usage::

    python benchmarks/providers.py ARTIFACT [--out DIR] [--texts N] [--batch-sizes 1,8,32,128] [--quick]
                                   [--repeats R] [--devices cpu,cuda,tensorrt] [--threads N]
                                   [--trt-cache-dir DIR] [--corpus FILE] [--budget-s S] [--note TEXT] [--no-plot]

The matrix is every provider this benchmark knows × the variants the artifact's manifest lists:
CPU runs ``fp32``, ``optimized*`` and ``int8*``; CUDA runs ``fp32`` and ``fp16*``; TensorRT builds
its fp16 engine from the ``fp32`` graph. Models are created with ``strict=True``, so a CUDA row can
never be a CPU run in disguise. Whatever cannot run here is still a row, saying why ("absent: …").

Texts are real fortunes (``fortunes.jsonl``), grouped by their token count into the runtime's
sequence buckets (≤16, ≤32, … ≤max_seq_length; the last group holds the over-long texts, truncated)
plus ``=128``: texts of at least 128 tokens truncated to exactly 128, the shape NVIDIA's BERT
numbers use. For each config, group and batch size it records the median over ``--repeats`` timed
passes after one untimed warm-up pass: sentences/s, tokens/s (real tokens, padding excluded) and,
at batch 1 (one ``encode`` call per text), p50/p99 latency. First call is model creation plus the
first one-text ``encode`` (for TensorRT: the engine build, or the engine-cache load when warm).
Fidelity is the max 1−cos against CPU fp32 on the same texts.

Writes ``<out>/providers.md`` (also printed), ``<out>/providers.json`` (every raw timing) and
``<out>/providers.png``. Exit status 1 when a provider that is present failed (an ``error`` row).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import embedrt
import numpy as np
from embedrt.artifact import Artifact
from embedrt.engine import default_buckets
from embedrt.providers import default_trt_cache, import_onnxruntime
from embedrt.selection import available_cpus
from embedrt.tokenizer import load_tokenizer

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = "embedrt.bench.providers/1"
EXACT_SEQ = 128
PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}
DISPLAY = {"cpu": "CPU", "cuda": "CUDA", "tensorrt": "TensorRT"}
QUICK = {"texts": 16, "batch_sizes": (1, 8, 32), "repeats": 3}
FULL = {"texts": 128, "batch_sizes": (1, 8, 32, 128), "repeats": 5}
# int8 variants are named int8_<isa>; these are the /proc/cpuinfo flags each ISA needs.
ISA_FLAGS = {"avx512_vnni": ("avx512_vnni",), "avx512": ("avx512f", "avx512bw"), "avx2": ("avx2",),
             "avx_vnni": ("avx_vnni",), "vnni": ("avx512_vnni",), "amx": ("amx_int8",),
             # u8 x s8 with any u8 value: on x86 only VNNI accumulates without saturating (embedrt.isa).
             "rowwise": ("avx512_vnni",), "rowwise_fused": ("avx512_vnni",), "blockwise": ()}


def load_fetcher() -> Any:
    """The fetch tools' path helpers (``embedrt_dev.fetch.items``)."""
    from embedrt_dev.fetch import items

    return items


def default_corpus() -> Path:
    """Where ``scripts/fetch_models.py fortunes`` puts the corpus."""
    return load_fetcher().corpus_path("fortunes")


def read_corpus(path: Path) -> list[str]:
    """Texts of a JSON-lines corpus of ``{"lang", "text"}`` records."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: corpus missing; run `python scripts/fetch_models.py fortunes` "
                                "or pass --corpus")
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line)["text"] for line in fh if line.strip()]


def one_minus_cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise 1 − cosine similarity, in float64 so fp16 outputs are compared fairly."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    denom = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return 1.0 - (a * b).sum(axis=1) / np.maximum(denom, 1e-30)


def percentile_ms(samples: Sequence[float], q: float) -> float:
    """The ``q``-th percentile of durations in seconds, in milliseconds."""
    return float(np.percentile(np.asarray(samples), q) * 1e3)


# -- texts ----------------------------------------------------------------------------------------

@dataclass
class Group:
    """Texts whose token count lies in ``(lo, hi]``, measured with truncation at ``max_seq_length``."""

    name: str
    lo: int
    hi: int
    max_seq_length: int
    texts: list[str] = field(default_factory=list)
    tokens: int = 0
    note: str = ""

    def as_json(self) -> dict[str, Any]:
        """Summary without the texts themselves."""
        return {"name": self.name, "lo": self.lo, "hi": self.hi, "max_seq_length": self.max_seq_length,
                "texts": len(self.texts), "tokens": self.tokens,
                "mean_tokens": self.tokens / len(self.texts) if self.texts else 0.0, "note": self.note}


def build_groups(texts: list[str], tokenizer: Any, n: int, seed: int = 0, chunk: int = 2048) -> list[Group]:
    """Fill each sequence-length group with ``n`` real texts, taken in a seeded random order.

    Only as much of the corpus is tokenized as the rarest group needs (tokenizing all of fortunes
    takes seconds on a small machine). A group the corpus cannot fill keeps what it found and says so.
    """
    max_seq = tokenizer.max_seq_length
    bounds = default_buckets(max_seq)
    groups = [Group(f"≤{hi}", lo, hi, max_seq) for lo, hi in zip((0, *bounds[:-1]), bounds)]
    groups[-1].note = f"texts over {groups[-1].lo} tokens, longer ones truncated to {max_seq}"
    exact = None
    if max_seq >= EXACT_SEQ:
        exact = Group(f"={EXACT_SEQ}", EXACT_SEQ - 1, max_seq, EXACT_SEQ,
                      note=f"texts of ≥{EXACT_SEQ} tokens truncated to exactly {EXACT_SEQ}")
    wanted = groups + ([exact] if exact else [])
    order = np.random.default_rng(seed).permutation(len(texts))
    for start in range(0, len(order), chunk):
        if all(len(g.texts) >= n for g in wanted):
            break
        batch = [texts[i] for i in order[start:start + chunk]]
        for text, length in zip(batch, tokenizer.encode(batch).lengths()):
            length = int(length)
            for g in wanted:
                if g.lo < length <= g.hi and len(g.texts) < n:
                    g.texts.append(text)
                    g.tokens += min(length, g.max_seq_length)
    for g in wanted:
        if len(g.texts) < n:
            g.note = (g.note + "; " if g.note else "") + f"corpus has only {len(g.texts)} such texts"
    return [g for g in wanted if g.texts]


# -- configurations -------------------------------------------------------------------------------

@dataclass
class Config:
    """One provider × variant row: what will run, or why it will not."""

    device: str
    variant: str
    label: str
    status: str = "pending"
    reason: str = ""
    notes: list[str] = field(default_factory=list)


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


def plan_configs(variants: Sequence[str], available: Sequence[str], devices: Sequence[str]) -> list[Config]:
    """Every provider × variant row, each either runnable (``pending``) or with its reason not to run."""
    flags = cpu_flags()
    present = set(variants)
    int8 = sorted(v for v in variants if v.startswith("int8"))
    optimized = sorted(v for v in variants if v.startswith("optimized"))
    fp16 = sorted(v for v in variants if v.startswith("fp16"))
    wanted: list[tuple[str, str, str]] = [("cpu", "fp32", "fp32")]
    wanted += [("cpu", v, v) for v in optimized] or [("cpu", "optimized", "optimized")]
    wanted += [("cpu", v, v) for v in int8] or [("cpu", "int8*", "int8*")]
    wanted += [("cuda", "fp32", "fp32")]
    wanted += [("cuda", v, v) for v in fp16] or [("cuda", "fp16", "fp16")]
    # TensorRT makes its own fp16 engine from the fp32 graph (trt_fp16_enable), see providers.tensorrt_options.
    wanted += [("tensorrt", "fp32", "fp16 engine from fp32")]

    configs = []
    for device, variant, label in wanted:
        cfg = Config(device, variant, label)
        reasons = []
        if PROVIDERS[device] not in available:
            reasons.append(f"{PROVIDERS[device]} not in this onnxruntime build (available: {', '.join(available)})")
        if variant not in present:
            reasons.append(f"artifact has no {variant} variant (variants: {', '.join(sorted(present))})")
        if reasons:
            cfg.status, cfg.reason = "absent", "; ".join(reasons)
        elif device not in devices:
            cfg.status, cfg.reason = "not selected", f"--devices {','.join(devices)}"
        if device == "cpu" and variant in present and variant.startswith("int8") and (note := isa_note(variant, flags)):
            cfg.notes.append(note)
        configs.append(cfg)
    claimed = {c.variant for c in configs}
    for variant in sorted(present - claimed):
        configs.append(Config("-", variant, variant, "not benchmarked",
                              "no provider in this benchmark's matrix runs this kind of variant"))
    return configs


# -- measurement ----------------------------------------------------------------------------------

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


# -- environment and reports ----------------------------------------------------------------------

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


def environment(args: argparse.Namespace) -> dict[str, Any]:
    """What the numbers depend on: machine, load, library versions, threads."""
    ort = import_onnxruntime()
    return {"cpu": cpu_model(), "cores_usable": available_cpus(), "threads": args.threads or available_cpus(),
            "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
            "gpus": gpu_names(), "python": platform.python_version(), "onnxruntime": ort.__version__,
            "onnxruntime_device": ort.get_device(), "available_providers": ort.get_available_providers(),
            "embedrt": embedrt.__version__, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "–"
    if value >= 10_000:
        return f"{value / 1000:,.1f}k"
    return f"{value:,.{digits}g}" if value < 100 else f"{value:,.0f}"


def render_markdown(result: dict[str, Any]) -> str:
    """The human-readable report: a summary row per config, then throughput per group and batch size."""
    env, settings = result["environment"], result["settings"]
    lines = [f"# embedrt provider benchmark: {result['artifact']['name']}", ""]
    if settings.get("note"):
        lines += [f"**{settings['note']}**", ""]
    gpus = f"; GPU: {', '.join(env['gpus'])}" if env["gpus"] else ""
    lines += [
        f"- Machine: {env['cpu']}, {env['cores_usable']} usable cores, {env['threads']} threads, "
        f"load average {', '.join(f'{x:.2f}' for x in env['loadavg'] or [])}{gpus}",
        f"- onnxruntime {env['onnxruntime']} ({env['onnxruntime_device']} build; providers "
        f"{', '.join(env['available_providers'])}); embedrt {env['embedrt']}; {env['time']}",
        f"- {settings['texts']} texts per group from {settings['corpus']}; batch sizes "
        f"{', '.join(map(str, settings['batch_sizes']))}; median of {settings['repeats']} timed passes after one "
        f"untimed warm-up{' (--quick)' if settings['quick'] else ''}. Batch 1 is one encode() call per text.",
        "- tokens/s counts real tokens (special tokens included, padding excluded). Shared or busy machines make "
        "these numbers noisy: compare rows of one run, not runs of different machines.",
        "- Groups: " + "; ".join(f"{g['name']}: {g['texts']} texts, {g['mean_tokens']:.1f} tokens/text"
                                 + (f" ({g['note']})" if g["note"] else "") for g in result["groups"]),
        "", "## Summary", "",
        "| provider | variant | status | first call (s) | best tokens/s (group, batch) | max 1−cos vs CPU fp32 "
        "| notes |", "|---|---|---|---|---|---|---|"]
    for cfg in result["configs"]:
        status = cfg["status"] + (f": {cfg['reason']}" if cfg["reason"] else "")
        best = max(cfg.get("cells", []), key=lambda c: c["tokens_per_s"], default=None)
        best_s = f"{_fmt(best['tokens_per_s'])} ({best['group']}, {best['batch_size']})" if best else "–"
        fid = cfg.get("fidelity_max_one_minus_cos")
        fid_s = "reference" if cfg["device"] == "cpu" and cfg["variant"] == "fp32" and cfg["status"] == "ok" \
            else (f"{fid:.2e}" if fid is not None else "–")
        lines.append(f"| {DISPLAY.get(cfg['device'], cfg['device'])} | {cfg['label']} | {status} | "
                     f"{_fmt(cfg.get('first_call_s'))} | {best_s} | {fid_s} | {'; '.join(cfg['notes'])} |")
    sizes = settings["batch_sizes"]
    lines += ["", "## Throughput: sentences/s (tokens/s)", "",
              "| provider | variant | group | tokens/text | " + " | ".join(f"batch {b}" for b in sizes)
              + f" | batch {max(sizes)}, tokens/s without tokenization | batch 1 p50 / p99 (ms) |",
              "|---" * (6 + len(sizes)) + "|"]
    mean_tokens = {g["name"]: g["mean_tokens"] for g in result["groups"]}
    for cfg in result["configs"]:
        by_group: dict[str, dict[int, dict[str, Any]]] = {}
        for cell in cfg.get("cells", []):
            by_group.setdefault(cell["group"], {})[cell["batch_size"]] = cell
        for group, cells in by_group.items():
            row = [f"{_fmt(c['sentences_per_s'])} ({_fmt(c['tokens_per_s'])})" if (c := cells.get(b)) else "–"
                   for b in sizes]
            lat = cells.get(1, {}).get("latency")
            lat_s = f"{lat['p50_ms']:.2f} / {lat['p99_ms']:.2f}" if lat else "–"
            model_only = cells.get(max(sizes), {}).get("model_only_tokens_per_s")
            lines.append(f"| {DISPLAY[cfg['device']]} | {cfg['label']} | {group} | {mean_tokens[group]:.1f} | "
                         + " | ".join(row) + f" | {_fmt(model_only) if model_only else '–'} | {lat_s} |")
    return "\n".join(lines) + "\n"


def render_plot(result: dict[str, Any], path: Path) -> None:
    """Bar charts: tokens/s at the largest batch size, and batch-1 p50 latency, per group and config."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on benchmark machines
    import matplotlib.pyplot as plt

    groups = [g["name"] for g in result["groups"]]
    largest = max(result["settings"]["batch_sizes"])
    measured = [c for c in result["configs"] if c.get("cells")]
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    width = 0.8 / max(1, len(measured))
    for panel, (ax, title) in enumerate(zip(axes, (f"tokens/s at batch {largest} (higher is better)",
                                                   "batch 1 p50 latency, ms (lower is better)"))):
        for k, cfg in enumerate(measured):
            values = []
            for g in groups:
                cell = next((c for c in cfg["cells"] if c["group"] == g
                             and c["batch_size"] == (largest if panel == 0 else 1)), None)
                value = None if cell is None else (cell["tokens_per_s"] if panel == 0 else
                                                   (cell["latency"] or {}).get("p50_ms"))
                values.append(np.nan if value is None else value)
            x = np.arange(len(groups)) + (k - (len(measured) - 1) / 2) * width
            ax.bar(x, values, width, label=f"{DISPLAY[cfg['device']]} {cfg['label']}")
        ax.set_xticks(np.arange(len(groups)), groups)
        ax.set_xlabel("sequence-length group (tokens)")
        ax.set_yscale("log")
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    note = result["settings"].get("note")
    fig.suptitle(f"{result['artifact']['name']}: {result['environment']['cpu']}"
                 + (f", {', '.join(result['environment']['gpus'])}" if result["environment"]["gpus"] else "")
                 + (f" — {note}" if note else ""), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- main -----------------------------------------------------------------------------------------

def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command line, with ``--quick`` supplying defaults for whatever is not given explicitly."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("artifact", type=Path, help="artifact folder written by `embedrt export`")
    parser.add_argument("--out", type=Path, help="output folder (default: benchmarks/results/<model name>)")
    parser.add_argument("--texts", type=int, help=f"texts per length group (default {FULL['texts']}, "
                                                  f"quick {QUICK['texts']})")
    parser.add_argument("--batch-sizes", help="comma-separated (default 1,8,32,128; quick 1,8,32)")
    parser.add_argument("--repeats", type=int, help="timed passes per cell (default 5, quick 3)")
    parser.add_argument("--quick", action="store_true", help="small sizes: a few minutes on two CPU cores")
    parser.add_argument("--devices", default="cpu,cuda,tensorrt", help="devices to measure (others are listed "
                                                                       "as not selected)")
    parser.add_argument("--threads", type=int, help="intra-op threads (default: every usable core)")
    parser.add_argument("--trt-cache-dir", help="TensorRT engine cache root (default: the runtime's)")
    parser.add_argument("--corpus", type=Path, help="fortunes.jsonl (default: the fetch_models cache)")
    parser.add_argument("--budget-s", type=float, help="stop measuring after this many seconds; the rest is "
                                                       "reported as skipped")
    parser.add_argument("--note", default="", help="line printed at the top of every output (e.g. DRY RUN)")
    parser.add_argument("--no-plot", action="store_true", help="skip providers.png (e.g. matplotlib missing)")
    args = parser.parse_args(argv)
    preset = QUICK if args.quick else FULL
    args.texts = args.texts or preset["texts"]
    args.repeats = args.repeats or preset["repeats"]
    args.batch_sizes = tuple(sorted({int(b) for b in args.batch_sizes.split(",")})) if args.batch_sizes \
        else preset["batch_sizes"]
    if args.texts < 1 or args.repeats < 1 or min(args.batch_sizes) < 1:
        parser.error("--texts, --repeats and batch sizes must be positive")
    args.devices = tuple(d.strip() for d in args.devices.split(",") if d.strip())
    unknown = set(args.devices) - set(PROVIDERS)
    if unknown:
        parser.error(f"unknown device(s) {sorted(unknown)}; use {', '.join(PROVIDERS)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; returns the exit status (1 if a present provider failed)."""
    args = parse_args(argv)
    deadline = Deadline(args.budget_s)
    artifact = Artifact(args.artifact)
    manifest = artifact.manifest
    out = args.out or ROOT / "benchmarks" / "results" / manifest.name
    out.mkdir(parents=True, exist_ok=True)
    corpus = args.corpus or default_corpus()

    tokenizer = load_tokenizer(artifact)
    groups = build_groups(read_corpus(corpus), tokenizer, args.texts)
    variants = sorted(manifest.towers["text"].variants)
    available = import_onnxruntime().get_available_providers()
    configs = plan_configs(variants, available, args.devices)

    result: dict[str, Any] = {
        "schema": SCHEMA,
        "artifact": {"name": manifest.name, "path": str(artifact.root), "variants": variants,
                     "max_seq_length": manifest.tokenizer.max_seq_length},
        "settings": {"texts": args.texts, "batch_sizes": list(args.batch_sizes), "repeats": args.repeats,
                     "quick": args.quick, "devices": list(args.devices), "corpus": str(corpus),
                     "budget_s": args.budget_s, "trt_cache_dir": args.trt_cache_dir, "note": args.note},
        "environment": environment(args),
        "groups": [g.as_json() for g in groups],
        "configs": [],
    }
    reference: dict[str, np.ndarray] | None = None
    cpu_fp32 = next(c for c in configs if c.device == "cpu" and c.variant == "fp32")
    if cpu_fp32.status != "pending" and any(c.status == "pending" for c in configs):
        reference = reference_embeddings(args.artifact, groups, args)
    failed = False
    # CPU fp32 first: its embeddings are every other row's fidelity reference.
    for cfg in sorted(configs, key=lambda c: c is not cpu_fp32):
        record: dict[str, Any] = {}
        if cfg.status == "pending":
            if deadline.passed():
                cfg.status, cfg.reason = "skipped", "time budget spent"
            else:
                print(f"measuring {DISPLAY[cfg.device]} {cfg.label} ...", file=sys.stderr, flush=True)
                try:
                    record, outputs = run_config(cfg, args.artifact, groups, args, deadline, reference)
                    if cfg is cpu_fp32:
                        reference = outputs
                    cfg.status = "partial" if record["skipped_cells"] else "ok"
                    if record["skipped_cells"]:
                        cfg.reason = f"time budget spent: {len(record['skipped_cells'])} cells not measured"
                except Exception as exc:  # report every failing provider as a row, then exit non-zero
                    failed = True
                    cfg.status, cfg.reason = "error", f"{type(exc).__name__}: {exc}"
        result["configs"].append({"device": cfg.device, "variant": cfg.variant, "label": cfg.label,
                                  "status": cfg.status, "reason": cfg.reason, "notes": cfg.notes, **record})
    order = {(c.device, c.variant, c.label): i for i, c in enumerate(configs)}
    result["configs"].sort(key=lambda c: order[(c["device"], c["variant"], c["label"])])

    markdown = render_markdown(result)
    (out / "providers.md").write_text(markdown, encoding="utf-8")
    (out / "providers.json").write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    if not args.no_plot:
        render_plot(result, out / "providers.png")
    print(markdown)
    print(f"wrote {out / 'providers.md'}, providers.json" + ("" if args.no_plot else ", providers.png"),
          file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
