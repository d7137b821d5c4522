"""The ``embedrt`` command: export, encode, info, models, bench."""

from __future__ import annotations

import argparse
import json
import sys

from . import kernels
from .manifest import Artifact


def _cmd_export(args: argparse.Namespace) -> int:
    try:
        from embedrt_export import export
    except ImportError as exc:
        print(f"embedrt export needs the export extra: pip install 'embedrt[export]' "
              f"(install torch==2.13.0 first) [{exc}]", file=sys.stderr)
        return 2
    from embedrt_export.resolve import resolve

    source, entry = resolve(args.source)
    variants = [v for v in (args.variants or "").split(",") if v]
    manifest = export(source, args.output, name=args.name or (entry.name if entry else None),
                      overwrite=args.overwrite, expect=entry, variants=variants,
                      fidelity_texts=_fidelity_texts(args.texts) if variants else ())
    # What each tower measured: CLIP's towers have no token outputs, its vision tower pixel figures.
    parity = "; ".join(
        f"{tower} " + ", ".join(f"{k} {v:.3g}" for k, v in sorted(t.variants[t.default_variant].parity.items()))
        for tower, t in manifest.towers.items())
    print(f"wrote {args.output}: {manifest.name}, dim {manifest.embedding_dimension}, "
          f"max_seq_length {manifest.tokenizer.max_seq_length}, parity vs sentence-transformers: {parity}")
    return 0


def _fidelity_texts(path: str | None, limit: int = 2000) -> list[str]:
    """Real texts to measure variants on: ``--texts`` (lines, or JSON lines with "text"), else the
    English records of the fetched fortunes corpus."""
    import os
    from pathlib import Path

    if path is None:
        cache = Path(os.environ.get("EMBEDRT_CACHE", Path.home() / ".cache" / "embedrt"))
        corpus = cache / "corpora" / "fortunes.jsonl"
        if not corpus.is_file():
            raise ValueError("--variants needs --texts FILE (real text, one per line) to measure fidelity")
        records = [json.loads(line) for line in corpus.read_text(encoding="utf-8").splitlines()]
        return [r["text"] for r in records if r["lang"] == "en"][::7][:limit]
    lines = _read_lines(path)
    if path.endswith(".jsonl"):
        lines = [json.loads(line)["text"] for line in lines if line.strip()]
    return [line for line in lines if line.strip()][:limit]


def _read_lines(path: str) -> list[str]:
    stream = sys.stdin if path == "-" else open(path, encoding="utf-8")
    with stream:
        return [line.rstrip("\n") for line in stream]


def _cmd_encode(args: argparse.Namespace) -> int:
    import numpy as np

    from .model import SentenceTransformer

    model = SentenceTransformer(args.artifact, threads=args.threads, workers=args.workers, variant=args.variant)
    texts = _read_lines(args.input)
    embeddings = model.encode(texts, batch_size=args.batch_size, show_progress_bar=not args.quiet,
                              normalize_embeddings=args.normalize)
    np.save(args.output, embeddings)
    print(f"{len(texts)} texts -> {args.output} {tuple(embeddings.shape)}", file=sys.stderr)
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    artifact = Artifact(args.artifact)
    m = artifact.manifest
    if args.verify:
        artifact.verify_all()
    if args.json:
        print(m.to_json(), end="")
        return 0
    print(f"name                {m.name}")
    print(f"schema              {m.schema}")
    print(f"embedding dimension {m.embedding_dimension}")
    print(f"similarity          {m.similarity_fn_name}{' (graph output is normalized)' if m.normalized else ''}")
    print(f"max_seq_length      {m.tokenizer.max_seq_length} (position limit {m.tokenizer.model_max_length})")
    print(f"modules             {json.dumps(m.source.get('modules', []))}")
    for tower_name, tower in m.towers.items():
        for key, v in tower.variants.items():
            parity = ", ".join(f"{k} {val:.3g}" for k, val in v.parity.items()) or "not measured"
            default = " (default)" if key == tower.default_variant else ""
            data = f" + {v.external_data}" if v.external_data else ""
            ops = f"  needs {', '.join(v.custom_ops)} (embedrt's kernels)" if v.custom_ops else ""
            print(f"{tower_name}/{key:<14}{default} {v.file}{data}  opset {v.opset}{ops}  parity: {parity}")
    if any(v.custom_ops for tower in m.towers.values() for v in tower.variants.values()):
        print(f"embedrt kernels     {kernels.isa() if kernels.available() else 'not built in this install'}")
    print(f"created with        {', '.join(f'{k} {v}' for k, v in sorted(m.created_with.items()))}")
    if args.verify:
        print(f"files               {len(m.files)} verified (sha256)")
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from . import catalogue

    rows = [(e.name, e.task, e.family, " → ".join(e.module_stack()[1:]) or "-", str(e.dimension),
             str(e.max_seq_length), e.similarity, "+".join(e.inputs), e.languages, e.metric)
            for e in catalogue.find(args.task)]
    header = ("model", "task", "family", "head", "dim", "max_seq", "sim", "input", "languages", "metric")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    import subprocess
    from pathlib import Path

    # A child of this interpreter, not an import: the benchmark loads torch/sentence-transformers,
    # which the runtime must never import. benchmarks/ exists only in a source checkout.
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "cpu.py"
    if not script.is_file():
        print(f"embedrt bench needs a source checkout ({script} not found)", file=sys.stderr)
        return 2
    return subprocess.call([sys.executable, str(script), args.artifact, *args.bench_args])


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and docs)."""
    parser = argparse.ArgumentParser(prog="embedrt", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("export", help="export a sentence-transformers folder to an artifact (needs [export])")
    p.add_argument("source", help="sentence-transformers model folder, or a catalogue name (see `embedrt models`)")
    p.add_argument("-o", "--output", required=True, help="artifact folder to write")
    p.add_argument("--name", help="model name recorded in the manifest (default: folder name)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.add_argument("--variants", help="comma-separated graph variants to add, e.g. optimized,fp16,int8_rowwise,"
                   "int8_rowwise_fused,int8_avx512_vnni (each written only if it meets its fidelity gate)")
    p.add_argument("--texts", help="real texts for measuring variants and calibrating int8_rowwise* (its first "
                   "256) (default: the fetched fortunes corpus)")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("encode", help="embed text lines into a .npy file")
    p.add_argument("artifact")
    p.add_argument("-i", "--input", default="-", help="text file, one text per line ('-' = stdin)")
    p.add_argument("-o", "--output", required=True, help=".npy file to write")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, help="CPU threads in all (default: every core this process may use)")
    p.add_argument("--workers", type=int, help="CPU batches run at once (default 1; 2 for the int8_rowwise graph)")
    p.add_argument("--variant", help="graph variant (default: the manifest's default)")
    p.add_argument("--normalize", action="store_true", help="L2-normalize the embeddings")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_encode)

    p = sub.add_parser("models", help="list the catalogue")
    p.add_argument("--task", help="only models whose task contains this (e.g. retrieval, sts, image)")
    p.set_defaults(func=_cmd_models)

    p = sub.add_parser("bench", help="CPU speed and fidelity vs sentence-transformers and fastembed (source checkout)")
    p.add_argument("artifact", help="artifact folder or model name")
    p.add_argument("bench_args", nargs=argparse.REMAINDER, help="options for benchmarks/cpu.py, e.g. --quick --out DIR")
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("info", help="print an artifact's key facts and parity figures")
    p.add_argument("artifact")
    p.add_argument("--verify", action="store_true", help="also check every file's sha256")
    p.add_argument("--json", action="store_true", help="print the whole manifest")
    p.set_defaults(func=_cmd_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``embedrt`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ValueError, TypeError, RuntimeError, FileExistsError, FileNotFoundError) as exc:
        print(f"embedrt {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
