"""Throughput, latency, first-call time and fidelity of every execution provider × graph variant.

Usage (from the repository root)::

    python -m benchmarks.providers ARTIFACT [--out DIR] [--texts N] [--batch-sizes 1,8,32,128] [--quick]
                                   [--repeats R] [--devices cpu,cuda,tensorrt] [--threads N]
                                   [--trt-cache-dir DIR] [--corpus FILE] [--budget-s S] [--note TEXT] [--no-plot]

The matrix (:mod:`.providers_matrix`) is every provider this benchmark knows × the variants the
artifact's manifest lists: CPU runs ``fp32``, ``optimized*`` and ``int8*``; CUDA runs ``fp32`` and
``fp16*``; TensorRT builds its fp16 engine from the ``fp32`` graph. Models are created with
``strict=True``, so a CUDA row can never be a CPU run in disguise. Whatever cannot run here is still a
row, saying why ("absent: …").

Texts are real fortunes (``fortunes.jsonl``), grouped by their token count into the runtime's
sequence buckets (≤16, ≤32, … ≤max_seq_length; the last group holds the over-long texts, truncated)
plus ``=128``: texts of at least 128 tokens truncated to exactly 128, the shape NVIDIA's BERT
numbers use. For each config, group and batch size :mod:`.providers_measure` records the median over
``--repeats`` timed passes after one untimed warm-up pass: sentences/s, tokens/s (real tokens,
padding excluded) and, at batch 1 (one ``encode`` call per text), p50/p99 latency. First call is
model creation plus the first one-text ``encode`` (for TensorRT: the engine build, or the
engine-cache load when warm). Fidelity is the max 1−cos against CPU fp32 on the same texts.

Writes ``<out>/providers.md`` (also printed), ``<out>/providers.json`` (every raw timing) and
``<out>/providers.png`` (:mod:`.providers_report`). Exit status 1 when a provider that is present
failed (an ``error`` row).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from embedrt.artifact import Artifact
from embedrt.providers import import_onnxruntime
from embedrt.tokenizer import load_tokenizer
from embedrt_dev import corpora

from .providers_matrix import DISPLAY, PROVIDERS, build_groups, plan_configs
from .providers_measure import Deadline, reference_embeddings, run_config
from .providers_report import environment, render_markdown, render_plot

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = "embedrt.bench.providers/1"
QUICK = {"texts": 16, "batch_sizes": (1, 8, 32), "repeats": 3}
FULL = {"texts": 128, "batch_sizes": (1, 8, 32, 128), "repeats": 5}


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
    parser.add_argument("--corpus", type=Path, help="fortunes.jsonl (default: the fetched corpus)")
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
    corpus = args.corpus or corpora.fortunes_path()

    tokenizer = load_tokenizer(artifact)
    groups = build_groups([r["text"] for r in corpora.read_records(corpus)], tokenizer, args.texts)
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
