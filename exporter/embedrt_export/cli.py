"""``embedrt export``: the command-line front of :func:`embedrt_export.export` (the runtime's CLI loads it by name)."""

from __future__ import annotations

import argparse
import json
import time

from embedrt import kernels
from embedrt.artifact import Artifact
from embedrt.cli import CLIError, read_lines
from embedrt.isa import detect_isa
from embedrt.selection import choose_variant

from .export import export
from .resolve import resolve


def fidelity_texts(path: str, limit: int = 2000) -> list[str]:
    """``--texts``: real texts to calibrate and gate variants on (lines, or JSON lines with "text")."""
    lines = read_lines(path)
    if path.endswith(".jsonl"):
        lines = [json.loads(line)["text"] for line in lines if line.strip()]
    return [line for line in lines if line.strip()][:limit]


def run_export(args: argparse.Namespace) -> int:
    """Export ``args.source`` to ``args.output`` and print what was written."""
    source, entry = resolve(args.source)
    if args.minimal and args.variants:
        raise CLIError("give --minimal (the fp32 graph alone) or --variants, not both")
    variants = () if args.minimal else [v for v in args.variants.split(",") if v] if args.variants else None
    started = time.perf_counter()
    manifest = export(source, args.output, name=args.name or (entry.name if entry else None),
                      overwrite=args.overwrite, expect=entry, variants=variants,
                      fidelity_texts=fidelity_texts(args.texts) if args.texts else None)
    digest = Artifact(args.output).digest
    picked = {tower: choose_variant(t.variants, "cpu", isa=detect_isa(), kernels_built=kernels.available()).variant
              for tower, t in manifest.towers.items()}
    # What each tower measured: CLIP's towers have no token outputs, its vision tower pixel figures.
    parity = "; ".join(
        f"{tower} " + ", ".join(f"{k} {v:.3g}" for k, v in sorted(t.variants[t.default_variant].parity.items()))
        for tower, t in manifest.towers.items())
    print(f"wrote {args.output} in {time.perf_counter() - started:.0f} s: {manifest.name}, dim "
          f"{manifest.embedding_dimension}, max_seq_length {manifest.tokenizer.max_seq_length}, similarity "
          f"{manifest.similarity_fn_name} ({manifest.similarity_source}), parity vs sentence-transformers: {parity}")
    print("variants: " + "; ".join(f"{tower} {', '.join(t.variants)}" for tower, t in manifest.towers.items())
          + "; on this machine's CPU the runtime runs " + ", ".join(f"{tower} {v}" for tower, v in picked.items()))
    print(f"artifact digest {digest} (pin it: SentenceTransformer(path, expected_digest=...), "
          "embedrt info --verify --digest ...)")
    return 0
