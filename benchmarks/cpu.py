#!/usr/bin/env python3
"""Fastest CPU embeddings: embedrt against sentence-transformers (torch and ONNX) and fastembed.

Usage::

    python benchmarks/cpu.py [MODEL_OR_ARTIFACT ...] [--out DIR] [--quick] [--texts N] [--repeats R]
                             [--threads N] [--batch-size 32] [--corpus FILE] [--anchors-venv DIR]
                             [--st-model FOLDER] [--re-export]

Each target is a model name (its sentence-transformers folder under ``$EMBEDRT_CACHE/models``; the
artifact is made once with ``embedrt export`` into ``$EMBEDRT_CACHE/bench/artifacts``) or an
artifact folder. Default: all-MiniLM-L6-v2 and all-mpnet-base-v2.

Paths, all fed the same English fortunes and, except fastembed (its own batching, 256), batch 32:
- sentence-transformers torch fp32 — the reference for ratios and fidelity;
- sentence-transformers' ONNX backend: plain, O3 and dynamic qint8 (avx512_vnni), exported once with
  its own helpers into ``$EMBEDRT_CACHE/bench/st-onnx``;
- fastembed on that ONNX file (custom model, mean/CLS pooling + normalize as the model has them);
- embedrt: every text variant in the artifact's manifest; the runtime's default is marked.
The ONNX-backend and fastembed paths run under the anchors venv (``benchmarks/setup_anchors.sh``:
optimum-onnx pins an older transformers); without it their rows say how to create it.

Every timed pass is a fresh process (cold start and peak RSS are that process's), and the whole set
of paths runs ``--repeats`` times in rotated order, so background load hits every path alike; the
report gives medians, and ratios to sentence-transformers torch taken within each cycle. Fidelity
against sentence-transformers torch on the same texts: max 1−cos, Spearman of 2,000 fixed random
pairs' cosine similarities, top-10 overlap of a semantic search (first 200 texts as queries). The
machine's fp32 GEMM rate (the faster of numpy and ONNX Runtime's MLAS, measured each cycle) turns the
corpus' transformer FLOPs (sorted batches of 32, padded) into a ceiling time; each path is reported as
a fraction of it, and of the stricter ceiling for real tokens alone (what a graph that skips padding
computes).

Writes ``<out>/cpu-<model>.md`` (also printed), ``.json`` and ``.png``; default ``<out>`` is
``benchmarks/results``. Exit status 1 if a path that is present failed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import embedrt
import numpy as np
from cpu_worker import ST_ONNX_FILES, versions
from embedrt.artifact import Artifact
from embedrt.engine import plan_batches
from embedrt.manifest import MANIFEST_NAME
from embedrt.selection import available_cpus, cpu_threads
from embedrt.tokenizer import load_tokenizer
from providers import _fmt as fmt
from providers import cpu_flags, cpu_model, isa_note, load_fetcher, one_minus_cos

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).resolve().with_name("cpu_worker.py")
SCHEMA = "embedrt.bench.cpu/1"
DEFAULT_MODELS = ("all-MiniLM-L6-v2", "all-mpnet-base-v2")
QUICK = {"texts": 300, "repeats": 1, "gemm_min_s": 0.05, "timeout_s": 600}
FULL = {"texts": 4000, "repeats": 3, "gemm_min_s": 0.3, "timeout_s": 3600}
FIDELITY_PAIRS = 2000
QUERIES = 200
TOP_K = 10
SETUP_HINT = "run benchmarks/setup_anchors.sh"
# Flags that decide which int8 kernels ONNX Runtime can use.
SHOWN_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")
OPENBLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


# -- targets and inputs ---------------------------------------------------------------------------

@dataclass
class Target:
    """One model: its name, its sentence-transformers folder and its embedrt artifact."""

    name: str
    st_folder: Path
    artifact: Path


def cache_root() -> Path:
    """``$EMBEDRT_CACHE`` (default ``~/.cache/embedrt``), as ``scripts/fetch_models.py`` resolves it."""
    return load_fetcher().cache_dir()


def resolve_target(target: str, st_model: Path | None, re_export: bool) -> Target:
    """An artifact folder as is, or a model name exported once (``embedrt export``) into the bench cache."""
    fetcher = load_fetcher()
    if (Path(target) / MANIFEST_NAME).is_file():
        artifact = Path(target)
        manifest = Artifact(artifact).manifest
        recorded = Path(manifest.source.get("path", ""))
        folder = st_model or (recorded if (recorded / "modules.json").is_file() else fetcher.model_dir(manifest.name))
        return Target(manifest.name, folder, artifact)
    folder = st_model or fetcher.model_dir(target)
    if not (folder / "modules.json").is_file():
        raise FileNotFoundError(f"{folder}: no sentence-transformers model; run "
                                f"`python scripts/fetch_models.py {target}` or pass an artifact folder")
    artifact = cache_root() / "bench" / "artifacts" / target
    if re_export or not (artifact / MANIFEST_NAME).is_file():
        print(f"exporting {target} -> {artifact} ...", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "-m", "embedrt.cli", "export", str(folder), "-o", str(artifact),
                        "--name", target, "--overwrite"], check=True)
    return Target(target, folder, artifact)


def english_texts(path: Path, n: int, seed: int = 0) -> list[str]:
    """``n`` English records of a ``{"lang", "text"}`` JSON-lines corpus, a seeded random sample in random order."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: corpus missing; run `python scripts/fetch_models.py fortunes` "
                                "or pass --corpus")
    with open(path, encoding="utf-8") as fh:
        texts = [r["text"] for r in map(json.loads, filter(str.strip, fh)) if r.get("lang") == "en"]
    picked = np.random.default_rng(seed).choice(len(texts), size=min(n, len(texts)), replace=False)
    return [texts[i] for i in picked]


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


# -- paths ----------------------------------------------------------------------------------------

@dataclass
class Contender:
    """One measured path: how to run it, or why it does not run, and its runs."""

    key: str
    label: str
    python: str | None
    spec: dict[str, Any]
    status: str = "pending"
    reason: str = ""
    notes: list[str] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)
    embeddings: str | None = None
    summary: dict[str, Any] | None = None
    fidelity: dict[str, Any] | None = None


def worker_env(drop: Sequence[str] = ()) -> dict[str, str]:
    """The environment of every child: offline Hub (nothing can be downloaded here), minus ``drop``."""
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return env


def tail(text: str, lines: int = 3) -> str:
    """The last non-empty lines of a child's stderr, for a row's reason."""
    return " | ".join([line for line in text.strip().splitlines() if line.strip()][-lines:])


def anchor_versions(python: Path) -> dict[str, str]:
    """Library versions in the anchors venv."""
    out = subprocess.run([str(python), "-I", str(WORKER), "versions"], capture_output=True, text=True,
                         check=True, env=worker_env())
    return json.loads(out.stdout)


def ensure_st_onnx(python: Path, target: Target) -> Path:
    """sentence-transformers' ONNX / O3 / qint8 files for the model, exported once into the bench cache."""
    dest = cache_root() / "bench" / "st-onnx" / target.name
    if all((dest / f).is_file() for f in ST_ONNX_FILES.values()):
        return dest
    print(f"exporting sentence-transformers ONNX/O3/qint8 of {target.name} -> {dest} ...", file=sys.stderr,
          flush=True)
    done = subprocess.run([str(python), "-I", str(WORKER), "export-st-onnx", str(target.st_folder), str(dest)],
                          capture_output=True, text=True, env=worker_env())
    if done.returncode != 0:
        raise RuntimeError(f"sentence-transformers ONNX export failed: {tail(done.stderr)}")
    return dest


def fastembed_folder(st_onnx: Path, name: str, max_seq_length: int) -> tuple[Path, str | None]:
    """sentence-transformers' exported folder as fastembed should see it, and what had to change.

    fastembed truncates at min(model_max_length, max_length) of ``tokenizer_config.json``, never at
    sentence-transformers' ``max_seq_length``; the folder sentence-transformers 5.7 saves carries
    ``max_length: 128``, which would make fastembed embed less text than every other path. So the
    fastembed folder links every file but that one, rewritten to truncate at ``max_seq_length``.
    """
    dest = cache_root() / "bench" / "fastembed" / name
    dest.mkdir(parents=True, exist_ok=True)
    for entry in st_onnx.iterdir():
        link = dest / entry.name
        if entry.name != "tokenizer_config.json" and not link.is_symlink():
            link.symlink_to(entry.resolve(), target_is_directory=entry.is_dir())
    config = json.loads((st_onnx / "tokenizer_config.json").read_text(encoding="utf-8"))
    saved = {k: config.pop(k) for k in ("model_max_length", "max_length") if k in config}
    config["model_max_length"] = max_seq_length
    (dest / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    limits = [v for v in saved.values() if isinstance(v, int)]
    if limits and min(limits) == max_seq_length:
        return dest, None
    saved_text = ", ".join(f"{k} {v}" for k, v in saved.items()) or "no limit"
    return dest, (f"tokenizer_config.json rewritten to truncate at max_seq_length {max_seq_length}; as saved "
                  f"({saved_text}) fastembed would truncate at {min(limits) if limits else 'no limit'}")


def plan_contenders(target: Target, shape: dict[str, Any], args: argparse.Namespace,
                    anchors: dict[str, Any]) -> tuple[list[Contender], str]:
    """Every row, runnable or with its reason; also the variant ``embedrt.SentenceTransformer(artifact)`` picks."""
    flags = cpu_flags()
    manifest = Artifact(target.artifact).manifest
    common = {"threads": args.threads, "batch_size": args.batch_size}
    rows = [Contender("st-torch", "sentence-transformers torch fp32", sys.executable,
                      {"kind": "st", "model_dir": str(target.st_folder), **common})]
    onnx_rows = [("st-onnx", "sentence-transformers ONNX fp32", "onnx"),
                 ("st-onnx-O3", "sentence-transformers ONNX O3", "O3"),
                 ("st-onnx-qint8", "sentence-transformers ONNX qint8 (avx512_vnni)", "qint8")]
    fast = Contender("fastembed", "fastembed ONNX fp32 (own batching)", anchors.get("python"),
                     {"kind": "fastembed", "file_name": ST_ONNX_FILES["onnx"], "pooling": shape["pooling"],
                      "normalize": shape["normalize"], "dim": manifest.embedding_dimension, **common})
    anchor_rows = [Contender(key, label, anchors.get("python"),
                             {"kind": "st", "file_name": ST_ONNX_FILES[file], **common})
                   for key, label, file in onnx_rows] + [fast]
    for row in anchor_rows:
        if anchors.get("status"):
            row.status, row.reason = anchors["status"], anchors.get("reason", "")
        else:
            row.spec["model_dir"] = anchors["st_onnx"]
    if not anchors.get("status"):
        folder, note = fastembed_folder(Path(anchors["st_onnx"]), target.name, manifest.tokenizer.max_seq_length)
        fast.spec["model_dir"] = str(folder)
        fast.notes += [note] if note else []
        if "fastembed" not in anchors["versions"]:
            fast.status, fast.reason = "absent", "fastembed not installed in the anchors venv"
        elif shape["unsupported_by_fastembed"] or shape["pooling"] is None:
            fast.status, fast.reason = "absent", (f"fastembed runs only mean/CLS pooling + normalize; model has "
                                                  f"{shape['unsupported_by_fastembed'] or 'other pooling'}")
    if note := isa_note("int8_avx512_vnni", flags):
        anchor_rows[2].notes.append(note)
    rows += anchor_rows

    default = embedrt.SentenceTransformer(target.artifact, threads=1).variant
    variants = sorted(manifest.towers["text"].variants, key=lambda v: (v != "fp32", v))
    for variant in variants:
        default_workers = cpu_threads(variant, args.threads, None)[1]
        for workers in args.workers:
            suffix = ("", "") if workers is None else (f"-w{workers}", f", workers={workers}")
            row = Contender(f"embedrt-{variant}{suffix[0]}", f"embedrt {variant}{suffix[1]}", sys.executable,
                            {"kind": "embedrt", "model_dir": str(target.artifact), "variant": variant,
                             "workers": workers, **common})
            if variant == default and workers in (None, default_workers):
                row.notes.append("embedrt.SentenceTransformer(artifact)'s default")
            if variant.startswith("int8") and (note := isa_note(variant, flags)):
                row.notes.append(note)
            rows.append(row)
    return rows, default


def prepare_anchors(venv: Path, target: Target) -> dict[str, Any]:
    """The anchors venv's interpreter, versions and exported ONNX folder, or the status its rows get."""
    python = venv / "bin" / "python"
    if not python.is_file():
        return {"status": "absent", "reason": f"{SETUP_HINT} (no {python})"}
    try:
        versions = anchor_versions(python)
        st_onnx = ensure_st_onnx(python, target)
    except (subprocess.CalledProcessError, RuntimeError, json.JSONDecodeError) as exc:
        return {"status": "error", "reason": str(exc), "python": str(python)}
    return {"python": str(python), "versions": versions, "st_onnx": str(st_onnx)}


# -- running --------------------------------------------------------------------------------------

def run_worker(python: str, mode: str, spec: dict[str, Any], work: Path, tag: str, timeout: float,
               drop_env: Sequence[str] = ()) -> dict[str, Any]:
    """One fresh process of ``cpu_worker.py``; its result, or RuntimeError with the end of its stderr."""
    spec_path = work / f"{tag}.spec.json"
    spec = {**spec, "result": str(work / f"{tag}.result.json")}
    spec_path.write_text(json.dumps(spec), encoding="utf-8")
    t0 = time.monotonic()
    try:
        done = subprocess.run([python, "-I", str(WORKER), mode, str(spec_path), repr(t0)], capture_output=True,
                              text=True, timeout=timeout, env=worker_env(drop_env))
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"timed out after {timeout:.0f} s") from exc
    if done.returncode != 0:
        raise RuntimeError(f"exit {done.returncode}: {tail(done.stderr)}")
    return json.loads(Path(spec["result"]).read_text(encoding="utf-8"))


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


def run_cycles(rows: list[Contender], texts_file: Path, warmup: list[int], gemm_spec: dict[str, Any],
               args: argparse.Namespace, work: Path) -> dict[str, list[dict[str, Any]]]:
    """``args.repeats`` cycles; each runs the GEMM probes, then every path in a fresh process, order rotated."""
    probes = gemm_probes(args.threads)
    gemm: dict[str, list[dict[str, Any]]] = {label: [] for label, _, _, _ in probes}
    for cycle in range(args.repeats):
        for n, (label, drop, threads, backend) in enumerate(probes):
            gemm[label].append(run_worker(sys.executable, "gemm", {**gemm_spec, "threads": threads, "backend": backend},
                                          work, f"gemm-{cycle}-{n}", args.timeout_s, drop))
        live = [r for r in rows if r.status == "pending"]
        shift = cycle % max(1, len(live))
        for row in live[shift:] + live[:shift]:
            print(f"cycle {cycle + 1}/{args.repeats}: {row.label} ...", file=sys.stderr, flush=True)
            spec = {**row.spec, "texts": str(texts_file), "warmup": warmup, "scratch": str(work / "scratch")}
            if cycle == 0:
                row.embeddings = spec["embeddings"] = str(work / f"{row.key}.npy")
            load = os.getloadavg()[0]  # what else ran on the machine: read it next to every number
            try:
                run = run_worker(row.python, "encode", spec, work, f"{row.key}-{cycle}", args.timeout_s)
                row.runs.append({"cycle": cycle, "loadavg_1m_at_spawn": load, **run})
            except RuntimeError as exc:  # a failing path is a row, not the end of the benchmark
                row.status, row.reason = "error", str(exc)
        for row in live:
            if row.status == "pending" and len(row.runs) == args.repeats:
                row.status = "ok"
    return gemm


# -- fidelity and summaries -----------------------------------------------------------------------

def unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (float64), so dot products are cosine similarities."""
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-30)


def fidelity(reference: np.ndarray, candidate: np.ndarray, seed: int = 0) -> dict[str, Any]:
    """How closely ``candidate`` follows ``reference`` (same texts, same order).

    max 1−cos per text; Spearman ρ between the two models' cosine similarities of ``FIDELITY_PAIRS``
    fixed random pairs of distinct texts; and mean overlap of the top-``TOP_K`` hits when the first
    ``QUERIES`` texts (at most half the corpus) search the rest.
    """
    from scipy.stats import spearmanr

    n = len(reference)
    ref, cand = unit(reference), unit(candidate)
    rng = np.random.default_rng(seed)
    i = rng.integers(0, n, FIDELITY_PAIRS)
    j = rng.integers(0, n - 1, FIDELITY_PAIRS)
    j += j >= i  # distinct texts, still uniform
    rho = spearmanr((ref[i] * ref[j]).sum(1), (cand[i] * cand[j]).sum(1)).statistic
    queries = min(QUERIES, n // 2)
    k = min(TOP_K, n - queries)

    def top(x: np.ndarray) -> np.ndarray:
        return np.argpartition(-(x[:queries] @ x[queries:].T), k - 1, axis=1)[:, :k]

    overlap = [len(set(a) & set(b)) / k for a, b in zip(top(ref), top(cand))]
    return {"max_one_minus_cos": float(one_minus_cos(reference, candidate).max()), "spearman": float(rho),
            "pairs": FIDELITY_PAIRS, "top_k_overlap": float(np.mean(overlap)), "queries": queries, "k": k}


def cycle_ratio(runs: list[dict[str, Any]], reference: list[dict[str, Any]]) -> float | None:
    """Median over cycles of ``reference``'s time / this path's time in the same cycle."""
    ref = {run["cycle"]: run["encode_s"] for run in reference}
    ratios = [ref[r["cycle"]] / r["encode_s"] for r in runs if r["cycle"] in ref]
    return statistics.median(ratios) if ratios else None


def summarize(rows: list[Contender], n_texts: int, tokens: int, ceiling_s: float, real_ceiling_s: float) -> None:
    """Medians over cycles into each row's ``summary``; ratios to sentence-transformers torch and to
    its qint8 ONNX backend per cycle (the targets are set against both); fractions of the ceiling for
    the padded batches and of the one for real tokens alone."""
    qint8 = next((row.runs for row in rows if row.key == "st-onnx-qint8"), [])
    for row in rows:
        if not row.runs:
            continue
        seconds = statistics.median(r["encode_s"] for r in row.runs)
        row.summary = {
            "encode_s": seconds, "sentences_per_s": n_texts / seconds, "tokens_per_s": tokens / seconds,
            "ratio_to_st_torch": cycle_ratio(row.runs, rows[0].runs),
            "ratio_to_st_qint8": cycle_ratio(row.runs, qint8),
            "fraction_of_ceiling": ceiling_s / seconds, "fraction_of_real_ceiling": real_ceiling_s / seconds,
            "cold_start_s": statistics.median(r["cold_start_s"] for r in row.runs),
            "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in row.runs),
            "facts": row.runs[0]["facts"], "versions": row.runs[0]["versions"]}


# -- reports --------------------------------------------------------------------------------------

def machine(args: argparse.Namespace) -> dict[str, Any]:
    """CPU, the flags that decide int8 kernels, cores, threads, load."""
    flags = cpu_flags()
    return {"cpu": cpu_model(), "flags": {f: f in flags for f in SHOWN_FLAGS}, "cores_usable": available_cpus(),
            "cpu_count": os.cpu_count(), "threads": args.threads, "python": sys.version.split()[0],
            "loadavg": list(os.getloadavg()), "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def row_record(row: Contender) -> dict[str, Any]:
    """A row as JSON: what ran, how, and its numbers."""
    return {"key": row.key, "label": row.label, "status": row.status, "reason": row.reason, "notes": row.notes,
            "python": row.python, "spec": row.spec, "runs": row.runs, "summary": row.summary,
            "fidelity": row.fidelity}


def render_markdown(result: dict[str, Any]) -> str:
    """The report: machine, corpus and ceiling, then one row per path."""
    env, corpus, flops = result["machine"], result["corpus"], result["flops"]
    s = result["settings"]
    flags = ", ".join(f"{f} {'yes' if on else 'no'}" for f, on in env["flags"].items())
    lines = [f"# CPU embeddings: {result['model']}", ""]
    if s["quick"]:
        lines += ["**--quick: development sizes, not a measurement**", ""]
    if result["ceiling"]["cores_looked_shared"]:
        lines += [f"**Busy machine: numpy GEMM on {env['threads']} threads was under 1.5× its 1-thread rate, so "
                  "other processes had the cores; throughput (torch's OpenMP most of all) is not representative.**",
                  ""]
    gemm_rows = [f"  - {label}: {fmt(g['gflops'])} GFLOP/s (median of {len(g['runs'])}); threadpoolctl: "
                 + "; ".join(f"{b['internal_api']} {b['version']}, kernel {b['architecture']}" for b in g["blas"])
                 for label, g in result["gemm"].items()]
    loads = [r["loadavg_1m_at_spawn"] for p in result["paths"] for r in p["runs"]]
    main_v, anchor_v = result["versions"]["main"], result["versions"].get("anchors") or {}
    lines += [
        f"- Machine: {env['cpu']} ({flags}); {env['cores_usable']} usable cores of {env['cpu_count']}, "
        f"{env['threads']} threads for every path; load average {', '.join(f'{x:.2f}' for x in env['loadavg'])} "
        f"before, {', '.join(f'{x:.2f}' for x in result['loadavg_after'])} after"
        + (f", 1-minute load {min(loads):.2f}–{max(loads):.2f} at the timed processes' spawns" if loads else "")
        + f"; {env['time']}",
        "- Project venv: " + ", ".join(f"{k} {v}" for k, v in main_v.items()),
        "- Anchors venv: " + (", ".join(f"{k} {v}" for k, v in anchor_v.items()) or f"absent: {SETUP_HINT}"),
        f"- Corpus: {corpus['texts']} English texts from {corpus['path']} (seeded sample); tokens per text "
        f"(special tokens included, truncated at {corpus['max_seq_length']}): mean {corpus['mean_tokens']:.1f}, "
        f"p95 {corpus['p95_tokens']:.0f}, max {corpus['max_tokens']}; batch {s['batch_size']} "
        "(fastembed: its default 256, unsorted)",
        f"- Timing: each path's pass in a fresh process, {s['repeats']} cycle(s) in rotated order; medians. "
        "× ST torch is the median of per-cycle ratios. Cold start: spawn → first one-text embedding (imports "
        "and model load included). Peak RSS: that process's whole run. Before the timed pass, one untimed "
        "warm-up on the 32 longest and the first 32 texts.",
        f"- fp32 FLOP ceiling: {flops['total_flops'] / 1e9:,.1f} GFLOP for the corpus in {flops['batches']} "
        f"length-sorted batches of {s['batch_size']} ({flops['linear_flops'] / 1e9:,.1f} linear + "
        f"{flops['attention_flops'] / 1e9:,.1f} attention; {flops['padded_tokens']:,} padded tokens for "
        f"{flops['real_tokens']:,} real), at {fmt(result['ceiling']['gflops'])} GFLOP/s "
        f"({result['ceiling']['source']}) = {result['ceiling']['seconds']:.3g} s. int8 paths can pass 100%, "
        "and so can graphs that skip the padding (embedrt's `_fused` variants run on packed rows): the stricter "
        f"real-token ceiling counts each text at its own length, {result['real_flops']['total_flops'] / 1e9:,.1f} "
        f"GFLOP = {result['ceiling']['real_tokens_seconds']:.3g} s.",
        "- fp32 GEMM (numpy; ONNX Runtime's MLAS MatMul with a constant weight) at the model's layer shapes (m×k×n: "
        f"{', '.join('×'.join(map(str, sh)) for sh in result['gemm_shapes'])}); the ceiling is the best at "
        f"{env['threads']} threads:",
        *gemm_rows,
        "- Fidelity vs sentence-transformers torch fp32 on the same texts: max 1−cos; Spearman ρ of "
        f"{FIDELITY_PAIRS:,} fixed random pairs' cosine similarities; top-{TOP_K} overlap with the first "
        f"{result['fidelity_queries']} texts as queries against the rest.",
        "", "| path | status | sentences/s | tokens/s | × ST torch | × ST qint8 | % of fp32 ceiling "
        "| % of real-token ceiling | cold start (s) | peak RSS (MiB) | max 1−cos | Spearman | top-10 overlap | notes |",
        "|---" * 14 + "|"]
    for row in result["paths"]:
        status = row["status"] + (f": {row['reason']}" if row["reason"] else "")
        sm, fid = row["summary"] or {}, row["fidelity"] or {}
        is_ref = row["key"] == "st-torch"
        cells = [fmt(sm.get("sentences_per_s")), fmt(sm.get("tokens_per_s")),
                 f"{sm['ratio_to_st_torch']:.2f}" if sm.get("ratio_to_st_torch") is not None else "–",
                 f"{sm['ratio_to_st_qint8']:.2f}" if sm.get("ratio_to_st_qint8") is not None else "–",
                 f"{100 * sm['fraction_of_ceiling']:.1f}%" if sm else "–",
                 f"{100 * sm['fraction_of_real_ceiling']:.1f}%" if sm else "–",
                 f"{sm['cold_start_s']:.2f}" if sm else "–", f"{sm['peak_rss_mb']:,.0f}" if sm else "–",
                 "reference" if is_ref and sm else (f"{fid['max_one_minus_cos']:.2e}" if fid else "–"),
                 "reference" if is_ref and sm else (f"{fid['spearman']:.5f}" if fid else "–"),
                 "reference" if is_ref and sm else (f"{fid['top_k_overlap']:.3f}" if fid else "–")]
        notes = list(row["notes"])
        facts = sm.get("facts") or {}
        if facts.get("max_seq_length") not in (None, result["corpus"]["max_seq_length"]):
            notes.append(f"truncates at {facts['max_seq_length']} tokens")
        if facts.get("workers", 1) > 1:
            notes.append(f"{facts['workers']} batches at once, {facts['intra_op_threads']} thread(s) each")
        lines.append(f"| {row['label']} | {status} | " + " | ".join(cells) + f" | {'; '.join(notes)} |")
    return "\n".join(lines) + "\n"


def render_plot(result: dict[str, Any], path: Path) -> None:
    """Horizontal bars per measured path: sentences/s (with × ST torch), cold start, peak RSS."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on benchmark machines
    import matplotlib.pyplot as plt

    rows = [r for r in result["paths"] if r["summary"]]
    labels = [r["label"] for r in rows]
    colors = ["tab:orange" if r["key"].startswith("embedrt") else "tab:gray" if r["key"] == "st-torch"
              else "tab:blue" for r in rows]
    panels = [("sentences/s (higher is better)", "sentences_per_s"), ("cold start, s (lower is better)",
              "cold_start_s"), ("peak RSS, MiB (lower is better)", "peak_rss_mb")]
    fig, axes = plt.subplots(1, 3, figsize=(15, 0.45 * len(rows) + 1.8), sharey=True)
    y = np.arange(len(rows))
    for ax, (title, key) in zip(axes, panels):
        values = [r["summary"][key] for r in rows]
        ax.barh(y, values, color=colors)
        ax.set_title(title, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
        if key == "sentences_per_s":
            for k, r in enumerate(rows):
                ratio = r["summary"]["ratio_to_st_torch"]
                if ratio is not None:
                    ax.text(values[k], k, f" {ratio:.2f}×", va="center", fontsize=8)
            ax.set_xlim(0, max(values) * 1.2)
    axes[0].set_yticks(y, labels, fontsize=8)
    axes[0].invert_yaxis()
    env = result["machine"]
    fig.suptitle(f"{result['model']}: {result['corpus']['texts']} English fortunes, {env['cpu']}, "
                 f"{env['threads']} threads" + (" (--quick)" if result["settings"]["quick"] else ""), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- main -----------------------------------------------------------------------------------------

def benchmark(target: Target, args: argparse.Namespace) -> dict[str, Any]:
    """Measure every path for one model; the JSON-able result."""
    manifest = Artifact(target.artifact).manifest
    shape = st_modules(target.st_folder)
    corpus_path = args.corpus or load_fetcher().corpus_path("fortunes")
    texts = english_texts(corpus_path, args.texts)
    tokenizer = load_tokenizer(target.artifact)
    lengths = tokenizer.encode(texts).lengths()
    flops = corpus_flops(lengths, args.batch_size, shape)
    real_flops = corpus_flops(lengths, 1, shape)  # one text per batch: no padding
    shapes = gemm_shapes(shape, args.batch_size * max(8, int(flops["median_padded_width"])))
    anchors = prepare_anchors(args.anchors_venv, target)
    env = machine(args)
    rows, default = plan_contenders(target, shape, args, anchors)
    # Warm-up: the longest texts (arenas and caches grow to their largest shapes) and a few typical ones.
    warmup = sorted(set(np.argsort(-lengths, kind="stable")[:32].tolist()) | set(range(min(32, len(texts)))))
    with tempfile.TemporaryDirectory(prefix="embedrt-cpu-bench-") as tmp:
        work = Path(tmp)
        texts_file = work / "texts.json"
        texts_file.write_text(json.dumps(texts), encoding="utf-8")
        gemm_runs = run_cycles(rows, texts_file, warmup, {"shapes": shapes, "min_s": args.gemm_min_s}, args, work)
        reference = np.load(rows[0].embeddings) if rows[0].status == "ok" else None
        fidelity_queries = min(QUERIES, len(texts) // 2)
        for row in rows:
            if reference is not None and row.status == "ok" and row is not rows[0]:
                row.fidelity = fidelity(reference, np.load(row.embeddings))
    gemm = {label: {"gflops": statistics.median(r["gflops"] for r in runs), "blas": runs[0]["blas"],
                    "threads": runs[0]["blas"][0]["num_threads"] if runs[0]["blas"] else None, "runs": runs}
            for label, runs in gemm_runs.items()}
    at_threads = [label for label, g in gemm.items() if g["threads"] == args.threads]
    best = max(at_threads, key=lambda label: gemm[label]["gflops"])
    single = [g["gflops"] for g in gemm.values() if g["threads"] == 1 and args.threads > 1]
    # N threads under 1.5× one thread: another process had the cores (or they are SMT siblings).
    shared = bool(single) and gemm[best]["gflops"] < 1.5 * single[0]
    ceiling_s = flops["total_flops"] / (gemm[best]["gflops"] * 1e9)
    real_ceiling_s = real_flops["total_flops"] / (gemm[best]["gflops"] * 1e9)
    summarize(rows, len(texts), int(lengths.sum()), ceiling_s, real_ceiling_s)
    return {
        "schema": SCHEMA, "model": target.name,
        "settings": {"texts": args.texts, "repeats": args.repeats, "threads": args.threads,
                     "batch_size": args.batch_size, "quick": args.quick, "gemm_min_s": args.gemm_min_s},
        "machine": env, "loadavg_after": list(os.getloadavg()),
        "versions": {"main": versions(), "anchors": anchors.get("versions")},
        "artifact": {"path": str(target.artifact), "variants": sorted(manifest.towers["text"].variants),
                     "default_variant": default, "created_with": manifest.created_with},
        "st_folder": str(target.st_folder), "st_onnx": anchors.get("st_onnx"), "model_shape": shape,
        "corpus": {"path": str(corpus_path), "texts": len(texts), "max_seq_length": tokenizer.max_seq_length,
                   "mean_tokens": float(lengths.mean()), "p95_tokens": float(np.percentile(lengths, 95)),
                   "max_tokens": int(lengths.max()), "total_tokens": int(lengths.sum())},
        "flops": flops, "real_flops": real_flops, "gemm_shapes": shapes, "gemm": gemm,
        "ceiling": {"gflops": gemm[best]["gflops"], "source": best, "seconds": ceiling_s,
                    "real_tokens_seconds": real_ceiling_s, "cores_looked_shared": shared},
        "fidelity_queries": fidelity_queries,
        "paths": [row_record(r) for r in rows],
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command line; ``--quick`` supplies smaller defaults for what is not given."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("targets", nargs="*", default=list(DEFAULT_MODELS),
                        help="model names (exported once into the bench cache) or artifact folders "
                             f"(default: {' '.join(DEFAULT_MODELS)})")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results",
                        help="output folder (default benchmarks/results)")
    parser.add_argument("--quick", action="store_true",
                        help=f"development sizes: {QUICK['texts']} texts, {QUICK['repeats']} cycle")
    parser.add_argument("--texts", type=int, help=f"English texts (default {FULL['texts']})")
    parser.add_argument("--repeats", type=int, help=f"cycles over all paths (default {FULL['repeats']})")
    parser.add_argument("--threads", type=int, default=available_cpus(),
                        help="threads for every path and for the GEMM probe (default: usable cores)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers",
                        help="comma-separated batch worker counts, one embedrt row per variant and count "
                             "(default: one row per variant with the runtime's own count)")
    parser.add_argument("--corpus", type=Path, help="fortunes.jsonl (default: the fetch_models cache)")
    parser.add_argument("--anchors-venv", type=Path, default=cache_root() / "venv-anchors",
                        help="virtualenv made by benchmarks/setup_anchors.sh")
    parser.add_argument("--st-model", type=Path,
                        help="sentence-transformers folder of the (single) target, when not in the cache")
    parser.add_argument("--re-export", action="store_true", help="export the embedrt artifact again")
    args = parser.parse_args(argv)
    preset = QUICK if args.quick else FULL
    args.texts = args.texts or preset["texts"]
    args.repeats = args.repeats or preset["repeats"]
    args.gemm_min_s, args.timeout_s = preset["gemm_min_s"], preset["timeout_s"]
    if args.st_model and len(args.targets) != 1:
        parser.error("--st-model needs exactly one target")
    try:
        args.workers = [int(w) for w in args.workers.split(",")] if args.workers else [None]
    except ValueError:
        parser.error(f"--workers must be comma-separated integers, got {args.workers!r}")
    if args.texts < 4 or args.repeats < 1 or args.threads < 1 or args.batch_size < 1 or \
            min(w or 1 for w in args.workers) < 1:
        parser.error("--texts must be at least 4; --repeats, --threads, --batch-size and --workers positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark for every target; returns the exit status (1 if a present path failed)."""
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    failed = False
    for name in args.targets:
        target = resolve_target(name, args.st_model, args.re_export)
        result = benchmark(target, args)
        stem = f"cpu-{target.name}"
        markdown = render_markdown(result)
        (args.out / f"{stem}.md").write_text(markdown, encoding="utf-8")
        (args.out / f"{stem}.json").write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n",
                                               encoding="utf-8")
        render_plot(result, args.out / f"{stem}.png")
        print(markdown)
        print(f"wrote {args.out / stem}.md, .json, .png", file=sys.stderr)
        failed |= any(r["status"] == "error" for r in result["paths"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
