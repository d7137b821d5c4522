"""``embedrt export``: the command-line front of :func:`embedrt_export.export` (the runtime's CLI loads it by name)."""

from __future__ import annotations

import argparse
import json

from embedrt.artifact import Artifact
from embedrt.cli import CLIError, read_lines
from embedrt.paths import cache_dir

from .export import export
from .resolve import resolve


def fidelity_texts(path: str | None, limit: int = 2000) -> list[str]:
    """Real texts to measure variants on: ``--texts`` (lines, or JSON lines with "text"), else the
    English records of the fetched fortunes corpus."""
    if path is None:
        corpus = cache_dir() / "corpora" / "fortunes.jsonl"
        if not corpus.is_file():
            raise CLIError("--variants needs --texts FILE (real text, one per line) to measure fidelity")
        records = [json.loads(line) for line in corpus.read_text(encoding="utf-8").splitlines()]
        return [r["text"] for r in records if r["lang"] == "en"][::7][:limit]
    lines = read_lines(path)
    if path.endswith(".jsonl"):
        lines = [json.loads(line)["text"] for line in lines if line.strip()]
    return [line for line in lines if line.strip()][:limit]


def run_export(args: argparse.Namespace) -> int:
    """Export ``args.source`` to ``args.output`` and print what was written."""
    source, entry = resolve(args.source)
    variants = [v for v in (args.variants or "").split(",") if v]
    manifest = export(source, args.output, name=args.name or (entry.name if entry else None),
                              overwrite=args.overwrite, expect=entry, variants=variants,
                              fidelity_texts=fidelity_texts(args.texts) if variants else ())
    digest = Artifact(args.output).digest
    # What each tower measured: CLIP's towers have no token outputs, its vision tower pixel figures.
    parity = "; ".join(
        f"{tower} " + ", ".join(f"{k} {v:.3g}" for k, v in sorted(t.variants[t.default_variant].parity.items()))
        for tower, t in manifest.towers.items())
    print(f"wrote {args.output}: {manifest.name}, dim {manifest.embedding_dimension}, "
          f"max_seq_length {manifest.tokenizer.max_seq_length}, similarity {manifest.similarity_fn_name} "
          f"({manifest.similarity_source}), parity vs sentence-transformers: {parity}")
    print(f"artifact digest {digest} (pin it: SentenceTransformer(path, expected_digest=...), "
          "embedrt info --verify --digest ...)")
    return 0
