"""Speed and fidelity of every graph variant on real English text, against sentence-transformers fp32.

For each model: export the fp32 artifact as ``embedrt export`` does, build every variant from its
graph (``int8_rowwise`` calibrated on 256 English texts that are not measured), then print per
variant: sentences/s (2 threads, length-sorted batches of 32; the median over interleaved rounds
and its ratio to fp32 in the same round), max 1−cos, Spearman of 2,000 pairwise cosine
similarities, top-10 overlap (200 queries vs 1,000 texts) and batch invariance (1−cos between a
text encoded alone and in a batch of 32). "x best" is the ratio of each variant's best round to
fp32's best round, the figure least disturbed by other processes.

    python -m benchmarks.variant_study --models all-MiniLM-L6-v2 all-mpnet-base-v2

The machine is shared, so only same-round ratios are comparable; absolute rates move with load.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from embedrt_dev import corpora
from embedrt_dev.fetch import items


def build_artifact(source: Path, out: Path, calibration_texts: list[str]) -> list[Any]:
    """Export ``source`` and add every variant, each written into the artifact's manifest."""
    from embedrt.artifact import Artifact
    from embedrt_export import export, variants
    from embedrt_export.builders.base import load_sentence_transformer
    from embedrt_export.builders.transformer import calibration_feeds
    from embedrt_export.variants import optimize

    export(source, out, overwrite=True, variants=())
    model = load_sentence_transformer(str(source))
    facts = optimize.ArchFacts.from_config(model[0].auto_model.config)
    manifest = Artifact(out).manifest
    candidates = list(variants.build_text_variants((out / "text" / "model.onnx").read_bytes(), facts,
                                                   calibration_feeds=calibration_feeds(model, calibration_texts)))
    for candidate in candidates:
        (out / candidate.file).write_bytes(candidate.onnx_bytes)
        manifest = variants.with_variant(manifest, candidate)
    (out / "manifest.json").write_text(manifest.to_json(), encoding="utf-8")
    return candidates


def sentences_per_second(models: dict[str, Any], texts: list[str], rounds: int) -> dict[str, list[float]]:
    """Interleaved rounds (every variant once per round, the order rotated each round), so load
    changes from other processes hit all variants alike."""
    rates: dict[str, list[float]] = {name: [] for name in models}
    for model in models.values():
        model.encode(texts[:64], batch_size=32, show_progress_bar=False)  # warm-up: arena, kernels
    order = list(models.items())
    for i in range(rounds):
        for name, model in order[i % len(order):] + order[:i % len(order)]:
            start = time.perf_counter()
            model.encode(texts, batch_size=32, show_progress_bar=False)
            rates[name].append(len(texts) / (time.perf_counter() - start))
    return rates


def study(name: str, root: Path, texts: list[str], speed_texts: list[str], rounds: int,
          calibration_texts: list[str]) -> list[dict[str, Any]]:
    """Measure every variant of model ``name``; returns one row per variant."""
    import embedrt
    from embedrt_export import variants
    from embedrt_export.builders.base import load_sentence_transformer

    source = items.model_dir(name, root)
    with tempfile.TemporaryDirectory(prefix="variant-study-") as tmp:
        artifact = Path(tmp) / name
        candidates = build_artifact(source, artifact, calibration_texts)
        reference = load_sentence_transformer(str(source))
        ref = reference.encode(texts, batch_size=32, convert_to_numpy=True, show_progress_bar=False)
        names = ["fp32", *(c.name for c in candidates)]
        models = {n: embedrt.SentenceTransformer(artifact, variant=n, threads=2) for n in names}
        info = {c.name: c for c in candidates}
        rows = []
        for n, model in models.items():
            figures = variants.measure(ref, model, texts)
            built = info.get(n)
            rows.append({"model": name, "variant": n, **figures,
                         "gate_failures": built.gate.failures(figures) if built else [],
                         "fused_ops": built.build_info if built else {},
                         "size_mb": (artifact / (built.file if built else "text/model.onnx")).stat().st_size / 1e6})
        rates = sentences_per_second(models, speed_texts, rounds)
        base = np.array(rates["fp32"])
        for row in rows:
            r = np.array(rates[row["variant"]])
            # Median of same-round ratios, and the ratio of best rounds (least disturbed by load).
            row.update(sent_per_s=float(np.median(r)), speedup=float(np.median(r / base)),
                       speedup_best=float(r.max() / base.max()))
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    """One line per variant."""
    print(f"{'model':22s} {'variant':17s} {'sent/s':>7s} {'x fp32':>6s} {'x best':>6s} {'max 1-cos':>9s} "
          f"{'spearman':>8s} {'top10':>6s} {'batch 1-cos':>11s} {'MB':>5s}  gate")
    for r in rows:
        print(f"{r['model']:22s} {r['variant']:17s} {r['sent_per_s']:7.1f} {r['speedup']:6.2f} "
              f"{r['speedup_best']:6.2f} {r['max_one_minus_cos']:9.2e} {r['spearman']:8.5f} {r['top10_overlap']:6.3f} "
              f"{r['batch_one_minus_cos']:11.2e} {r['size_mb']:5.0f}  {'; '.join(r['gate_failures']) or 'pass'}")
    for r in rows:
        if r["fused_ops"]:
            print(f"{r['model']} {r['variant']}: fused ops {r['fused_ops']}")


def main(argv: list[str] | None = None) -> None:
    """Command line: see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["all-MiniLM-L6-v2"])
    parser.add_argument("--cache", help="cache root (default: embedrt.paths.cache_dir())")
    parser.add_argument("--texts", type=int, default=2000, help="English texts for the fidelity figures")
    parser.add_argument("--speed-texts", type=int, default=2000, help="texts per timed encode")
    parser.add_argument("--rounds", type=int, default=6, help="interleaved timing rounds")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    logging.disable(logging.INFO)  # onnxruntime.quantization logs every node it touches
    root = items.cache_dir(args.cache)
    records = corpora.read_records(items.corpus_path("fortunes", root))
    texts = corpora.spread_english(records, args.texts)
    calibration = [t for t in corpora.spread_english(records, args.texts + 256) if t not in set(texts)][:256]
    rows = []
    for name in args.models:
        rows += study(name, root, texts, texts[:args.speed_texts], args.rounds, calibration)
        print_table([r for r in rows if r["model"] == name])
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
