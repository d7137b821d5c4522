"""Fastest CPU embeddings: embedrt against sentence-transformers (torch and ONNX) and fastembed.

Usage (from the repository root; ``embedrt bench ARTIFACT`` runs the same)::

    python -m benchmarks.cpu [MODEL_OR_ARTIFACT ...] [--out DIR] [--quick] [--texts N] [--repeats R]
                             [--threads N] [--batch-size 32] [--corpus FILE] [--anchors-venv DIR]
                             [--st-model FOLDER] [--re-export]

Each target is a model name (its sentence-transformers folder under the cache's ``models/``; the
artifact is made once with ``embedrt export`` into the cache's ``bench/artifacts``) or an artifact
folder. Default: all-MiniLM-L6-v2 and all-mpnet-base-v2.

Paths (:mod:`.cpu_contenders`), all fed the same English fortunes and, except fastembed (its own
batching, 256), batch 32:
- sentence-transformers torch fp32 — the reference for ratios and fidelity;
- sentence-transformers' ONNX backend: plain, O3 and dynamic qint8 (avx512_vnni), exported once with
  its own helpers into the cache's ``bench/st-onnx``;
- fastembed on that ONNX file (custom model, mean/CLS pooling + normalize as the model has them);
- embedrt: every text variant in the artifact's manifest; the runtime's default is marked.

Every timed pass is a fresh process (cold start and peak RSS are that process's), and the whole set
of paths runs ``--repeats`` times in rotated order, so background load hits every path alike; the
report (:mod:`.cpu_report`) gives medians, and ratios to sentence-transformers torch taken within
each cycle. Fidelity against sentence-transformers torch on the same texts, measured as the export's
gates measure it: max 1−cos, Spearman of 2,000 fixed random pairs' cosine similarities, top-10
overlap of a semantic search. :mod:`.cpu_ceiling` turns the corpus' transformer FLOPs into a ceiling
time at the machine's fp32 GEMM rate; each path is reported as a fraction of it, and of the stricter
ceiling for real tokens alone (what a graph that skips padding computes).

Writes ``<out>/cpu-<model>.md`` (also printed), ``.json`` and ``.png``; default ``<out>`` is
``benchmarks/results``. Exit status 1 if a path that is present failed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from embedrt.artifact import Artifact
from embedrt.paths import cache_dir
from embedrt.selection import available_cpus
from embedrt.tokenizer import load_tokenizer
from embedrt_dev import corpora

from .cpu_ceiling import ceiling, corpus_flops, gemm_shapes, st_modules
from .cpu_contenders import Target, plan_contenders, prepare_anchors, resolve_target, run_cycles
from .cpu_report import fidelity, fidelity_queries, machine, render_markdown, render_plot, row_record, summarize
from .cpu_worker import versions
from .machine import gemm_rates

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = "embedrt.bench.cpu/1"
DEFAULT_MODELS = ("all-MiniLM-L6-v2", "all-mpnet-base-v2")
QUICK = {"texts": 300, "repeats": 1, "gemm_min_s": 0.05, "timeout_s": 600}
FULL = {"texts": 4000, "repeats": 3, "gemm_min_s": 0.3, "timeout_s": 3600}


def benchmark(target: Target, args: argparse.Namespace) -> dict[str, Any]:
    """Measure every path for one model; the JSON-able result."""
    manifest = Artifact(target.artifact).manifest
    shape = st_modules(target.st_folder)
    corpus_path = args.corpus or corpora.fortunes_path()
    texts = corpora.long_texts(args.texts) if args.long else corpora.english_sample(
        corpora.read_records(corpus_path), args.texts)
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
        for row in rows:
            if reference is not None and row.status == "ok" and row is not rows[0]:
                row.fidelity = fidelity(reference, np.load(row.embeddings))
    gemm, limit = ceiling(gemm_runs, args.threads, flops, real_flops)
    rates = gemm_rates(args.threads, m=shapes[0][0], k=shape["hidden"], n=shape["intermediate"], bf16=True)
    # int8_rowwise_fused attends in bf16: at the bf16 rate where the CPU has one, else the fp32 ceiling's.
    attention_gflops = rates.get("bf16_gflops") or limit["gflops"]
    limit.update(int8_gops=rates["int8_gops"], fp32_gflops=rates["fp32_gflops"], bf16_gflops=rates.get("bf16_gflops"),
                 int8_shape=f"{shapes[0][0]}×{shape['hidden']}×{shape['intermediate']}",
                 int8_real_tokens_seconds=real_flops["linear_flops"] / (rates["int8_gops"] * 1e9)
                 + real_flops["attention_flops"] / (attention_gflops * 1e9))
    summarize(rows, len(texts), int(lengths.sum()), limit["seconds"], limit["real_tokens_seconds"],
              limit["int8_real_tokens_seconds"])
    return {
        "schema": SCHEMA, "model": target.name,
        "settings": {"texts": args.texts, "repeats": args.repeats, "threads": args.threads,
                     "batch_size": args.batch_size, "quick": args.quick, "gemm_min_s": args.gemm_min_s},
        "machine": env, "loadavg_after": list(os.getloadavg()),
        "versions": {"main": versions(), "anchors": anchors.get("versions")},
        "artifact": {"path": str(target.artifact), "variants": sorted(manifest.towers["text"].variants),
                     "default_variant": default, "created_with": manifest.created_with},
        "st_folder": str(target.st_folder), "st_onnx": anchors.get("st_onnx"), "model_shape": shape,
        "corpus": {"path": "long: Lee background news + fortunes joined past max_seq_length" if args.long
                   else str(corpus_path), "texts": len(texts), "max_seq_length": tokenizer.max_seq_length,
                   "mean_tokens": float(lengths.mean()), "p95_tokens": float(np.percentile(lengths, 95)),
                   "max_tokens": int(lengths.max()), "total_tokens": int(lengths.sum())},
        "flops": flops, "real_flops": real_flops, "gemm_shapes": shapes, "gemm": gemm, "ceiling": limit,
        "fidelity_queries": fidelity_queries(len(texts)),
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
    parser.add_argument("--corpus", type=Path, help="fortunes.jsonl (default: the fetched corpus)")
    parser.add_argument("--long", action="store_true", help="long texts instead: the Lee background corpus's news "
                        "articles and fortunes joined past max_seq_length (results as cpu-<model>-long.*)")
    parser.add_argument("--anchors-venv", type=Path, default=cache_dir() / "venv-anchors",
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
        stem = f"cpu-{target.name}" + ("-long" if args.long else "")
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
