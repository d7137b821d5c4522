"""The ``embedrt`` command: export, encode, info, models, bench (and serve / embed-corpus with their extras).

Every error is one line on stderr naming the file (and line) at fault, with exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

from . import kernels
from .manifest import ArtifactError


class CLIError(Exception):
    """A user error: printed as one line, exit status 2."""


def _cmd_export(args: argparse.Namespace) -> int:
    try:  # by name: the runtime never imports the exporter, whose extra may not be installed
        exporter_cli = importlib.import_module("embedrt_export.cli")
    except ImportError as exc:
        raise CLIError(f"embedrt export needs the export extra: pip install 'embedrt[export]' "
                       f"(install torch==2.13.0 first) [{exc}]") from exc
    return int(exporter_cli.run_export(args))


def read_lines(path: str) -> list[str]:
    """The lines of a UTF-8 text file (``-``: stdin) without their newlines; :class:`CLIError` names the
    file and line of anything unreadable."""
    try:
        data = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except OSError as exc:
        raise CLIError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise CLIError(f"{path}:{line}: not UTF-8 text (byte {data[exc.start]:#04x}); convert it to UTF-8") from exc
    return text.splitlines()


def _cmd_encode(args: argparse.Namespace) -> int:
    import numpy as np

    from .model import SentenceTransformer

    output = Path(args.output)
    if output.is_dir():
        raise CLIError(f"{output}: is a directory; give the .npy file to write")
    if output.suffix != ".npy":
        raise CLIError(f"{output}: the output is a numpy .npy file; name it with the .npy suffix")
    texts = read_lines(args.input)
    model = SentenceTransformer(args.artifact, threads=args.threads, workers=args.workers, variant=args.variant,
                                expected_digest=args.digest)
    embeddings = model.encode(texts, batch_size=args.batch_size, show_progress_bar=not args.quiet,
                              normalize_embeddings=args.normalize, convert_to_tensor=True)
    try:
        with open(output, "wb") as stream:  # a file object: np.save then adds no second suffix
            np.save(stream, embeddings.astype(np.float32, copy=False))
    except OSError as exc:
        raise CLIError(f"{output}: cannot write ({exc.strerror or exc})") from exc
    print(f"{len(texts)} texts -> {output} {tuple(embeddings.shape)} float32", file=sys.stderr)
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from .artifact import Artifact
    from .isa import detect_isa
    from .providers import plan_providers
    from .selection import choose_variant

    artifact = Artifact(args.artifact, expected_digest=args.digest)
    m = artifact.manifest
    if args.verify:
        artifact.verify_all()
    if args.json:
        print(m.to_json(), end="")
        return 0
    plan = plan_providers(args.device)
    picks = {tower: choose_variant(t.variants, plan.device, isa=detect_isa(), kernels_built=kernels.available())
             for tower, t in m.towers.items()}
    print(f"name                {m.name}")
    print(f"digest              {artifact.digest} (sha256 of manifest.json; pin it with expected_digest=)")
    print(f"embedding dimension {m.embedding_dimension}")
    print(f"similarity          {m.similarity_fn_name} ({_SIMILARITY_SOURCE[m.similarity_source]})"
          f"{', graph output is normalized' if m.normalized else ''}")
    print(f"max_seq_length      {m.tokenizer.max_seq_length} (position limit {m.tokenizer.model_max_length})")
    print(f"modules             {json.dumps(m.source.get('modules', []))}")
    for tower_name, tower in m.towers.items():
        for key, v in tower.variants.items():
            parity = ", ".join(f"{k} {val:.3g}" for k, val in v.parity.items()) or "not measured"
            mark = " (picked)" if key == picks[tower_name].variant else ""
            data = f" + {v.external_data}" if v.external_data else ""
            ops = f"  needs {', '.join(v.custom_ops)} (embedrt's kernels)" if v.custom_ops else ""
            print(f"{tower_name}/{key:<18}{mark} {v.file}{data}  opset {v.opset}{ops}  parity: {parity}")
    if any(v.custom_ops for tower in m.towers.values() for v in tower.variants.values()):
        print(f"embedrt kernels     {kernels.isa() if kernels.available() else 'not built in this install'}")
    print(f"on this machine     {plan.device} (int8 ISA: {detect_isa() or 'none'}), would run:")
    for tower, choice in picks.items():
        for line in choice.reasons:
            print(f"  {tower}: {line}")
    print(f"created with        {', '.join(f'{k} {v}' for k, v in sorted(m.created_with.items()))}")
    if args.verify:
        print(f"files               {len(m.files)} verified (sha256)")
    return 0


_SIMILARITY_SOURCE = {
    "declared": "declared by the model folder",
    "catalogue": "the catalogue's, the model's documented use; the folder declares none, so sentence-transformers "
                 "would report cosine",
    "default": "sentence-transformers' default; the folder declares none",
}


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

    # A child of this interpreter, not an import: the benchmark loads torch/sentence-transformers,
    # which the runtime must never import. benchmarks/ exists only in a source checkout.
    root = Path(__file__).resolve().parents[2]
    if not (root / "benchmarks" / "cpu.py").is_file():
        raise CLIError(f"embedrt bench needs a source checkout ({root / 'benchmarks' / 'cpu.py'} not found)")
    return subprocess.call([sys.executable, "-m", "benchmarks.cpu", args.artifact, *args.bench_args], cwd=root)


def _cmd_serve(args: argparse.Namespace) -> int:
    try:
        server = importlib.import_module("embedrt.serve.server")
    except ImportError as exc:
        raise CLIError(f"embedrt serve needs the serve extra: pip install 'embedrt[serve]' [{exc}]") from exc
    return int(server.run(args))


def _cmd_embed_corpus(args: argparse.Namespace) -> int:
    try:
        corpus = importlib.import_module("embedrt.ray.corpus")
    except ImportError as exc:
        raise CLIError(f"embedrt embed-corpus needs the ray extra: pip install 'embedrt[ray]' [{exc}]") from exc
    texts = args.text_column.split(",")
    corpus.embed_corpus(args.input, args.output, args.model, address=args.address,
                        text_column=texts[0] if len(texts) == 1 else texts, id_column=args.id_column,
                        input_format=args.format, rows_per_part=args.rows_per_part, actors=args.actors,
                        cpus_per_actor=args.cpus_per_actor, variant=args.variant, normalize=args.normalize,
                        progress=not args.quiet, log=lambda line: print(line, file=sys.stderr))
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and docs)."""
    parser = argparse.ArgumentParser(prog="embedrt", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("export", help="export a sentence-transformers folder to an artifact (needs [export])")
    p.add_argument("source", help="sentence-transformers model folder, or a catalogue name (see `embedrt models`)")
    p.add_argument("-o", "--output", required=True, help="artifact folder to write")
    p.add_argument("--name", help="model name recorded in the manifest (default: folder name)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.add_argument("--variants", help="graph variants to write instead of the default set (the ones the runtime "
                   "picks on CPU and GPU: int8_rowwise_fused, fp32_fused, int8_rowwise, fp16), e.g. "
                   "optimized,int8_avx512_vnni; each written only if it meets its fidelity gate")
    p.add_argument("--minimal", action="store_true", help="write the fp32 graph alone (fastest export)")
    p.add_argument("--texts", help="real texts to calibrate int8_rowwise* and gate every variant on (lines, or "
                   "JSON lines with 'text'; default: the 1,500 texts that ship with the exporter)")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("encode", help="embed text lines into a .npy file")
    p.add_argument("artifact")
    p.add_argument("-i", "--input", default="-", help="UTF-8 text file, one text per line ('-' = stdin)")
    p.add_argument("-o", "--output", required=True, help=".npy file to write (float32, texts x dimension)")
    p.add_argument("--batch-size", type=_positive, default=32)
    p.add_argument("--threads", type=_positive, help="CPU threads in all (default: every core this process may use)")
    p.add_argument("--workers", type=_positive, help="CPU batches run at once (default: the variant's rule)")
    p.add_argument("--variant", help="graph variant (default: the fastest that runs here; see `embedrt info`)")
    p.add_argument("--digest", help="refuse the artifact unless its digest is this one")
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

    p = sub.add_parser("serve", help="an OpenAI- and TEI-compatible embedding server (needs [serve])")
    p.add_argument("models", nargs="+", metavar="ARTIFACT_OR_NAME", help="artifact folders or names to serve")
    p.add_argument("--name", action="append", help="the name clients use for the model (default: the manifest's); "
                   "once per model, in order")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback only)")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--api-key", help="require 'Authorization: Bearer KEY' (also $EMBEDRT_API_KEY); /health, /ready "
                   "and /metrics stay open")
    p.add_argument("--cors-allow-origin", action="append", help="allow browser calls from this origin (default: none)")
    p.add_argument("--device", help="cpu (default), cuda, cuda:N or tensorrt")
    p.add_argument("--variant", help="graph variant (default: the fastest that runs here)")
    p.add_argument("--threads", type=_positive, help="CPU threads in all (default: every core this process may use)")
    p.add_argument("--workers", type=_positive, help="CPU batches at once (default: the variant's rule)")
    p.add_argument("--max-queue-tokens", type=_positive, default=65536,
                   help="tokens a model's queue holds; past it, requests get 429 + Retry-After (default 65536)")
    p.add_argument("--max-inputs", type=_positive, default=2048, help="inputs per request (413 past it)")
    p.add_argument("--max-body-mb", type=float, default=16.0, help="request body size (413 past it)")
    p.add_argument("--allow-image-url-host", action="append", help="CLIP: fetch image URLs on this host (default: "
                   "none; data URIs only), at most 10 MB in 5 s")
    p.add_argument("--drain-timeout", type=float, default=30.0, help="seconds SIGTERM waits for work in flight")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                   help="info writes one JSON access-log line per request to stdout")
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser("embed-corpus", help="embed a corpus into Parquet on a Ray cluster (needs [ray])")
    p.add_argument("input", help="Parquet, JSON lines or text files: a file or a folder, any path pyarrow's "
                   "filesystems read (local, s3://, gs://, hdfs://)")
    p.add_argument("output", help="folder of Parquet parts to write (a resumed job skips the parts it holds)")
    p.add_argument("--model", required=True, help="artifact folder (reachable from every node) or name")
    p.add_argument("--address", help="join this Ray cluster (default: start one on this machine)")
    p.add_argument("--text-column", default="text", help="the text field; 'title,text' for pair models")
    p.add_argument("--id-column", help="the id field (default: <file>:<row>)")
    p.add_argument("--format", choices=["parquet", "jsonl", "text"], help="default: from each file's suffix")
    p.add_argument("--rows-per-part", type=_positive, default=8192, help="rows per task and per output file")
    p.add_argument("--actors", type=_positive, help="engines in the pool (default: the cluster's CPUs / "
                   "--cpus-per-actor)")
    p.add_argument("--cpus-per-actor", type=float, default=1.0, help="CPUs, so ONNX Runtime threads, per actor")
    p.add_argument("--variant", help="graph variant for every actor (default: the fastest that runs here)")
    p.add_argument("--normalize", action="store_true", help="L2-normalize the embeddings")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_embed_corpus)

    p = sub.add_parser("info", help="an artifact's facts, its digest, and the variant this machine would run")
    p.add_argument("artifact")
    p.add_argument("--verify", action="store_true", help="also check every file's sha256")
    p.add_argument("--digest", help="refuse the artifact unless its digest is this one")
    p.add_argument("--device", default="cpu", help="say what would run on this device (default cpu)")
    p.add_argument("--json", action="store_true", help="print the whole manifest")
    p.set_defaults(func=_cmd_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``embedrt`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (CLIError, ArtifactError, ValueError, TypeError, RuntimeError, OSError) as exc:
        message = " ".join(str(exc).split())  # one line, whatever the error carried
        print(f"embedrt {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
