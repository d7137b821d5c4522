"""``embedrt embed-corpus`` on Ray against in-process ``encode``: the same texts, variant and machine, one run.

    python -m benchmarks.ray_corpus ARTIFACT [--texts 20000] [--actors 2] [--cpus-per-actor 1]

In-process: ``SentenceTransformer.encode`` of the texts in batches of 32 on every core, in a fresh process
(median of ``--repeats``, the model loaded and warmed up first). Ray: the texts as JSON lines through
``embedrt embed-corpus`` on a local cluster of ``--actors`` actors x ``--cpus-per-actor`` CPUs, timed three
ways: the whole command; the job (cluster start, the actors' model load and warm-up, every part); and the
parts alone, from the first part an actor begins to the last one written (warmed actors, as ``encode`` is
timed). Writes
``ray-corpus-<model>.md`` and ``.json`` to ``--out``, with the machine's GEMM rates beside the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.machine import describe, header
from benchmarks.serve import english_fortunes, in_process

ROOT = Path(__file__).resolve().parents[1]


def ray_job(artifact: str, texts: list[str], variant: str, actors: int, cpus: float, rows_per_part: int,
            scratch: Path) -> dict[str, Any]:
    """``embed-corpus`` on a fresh local cluster; the job's own summary plus the command's wall time."""
    source = scratch / "corpus.jsonl"
    source.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(texts)), encoding="utf-8")
    code = ("import json, sys\nfrom embedrt.ray.corpus import embed_corpus\n"
            f"print(json.dumps(embed_corpus({str(source)!r}, {str(scratch / 'out')!r}, {artifact!r}, id_column='id', "
            f"variant={variant!r}, actors={actors}, cpus_per_actor={cpus}, rows_per_part={rows_per_part}, "
            "progress=False, log=lambda line: print(line, file=sys.stderr))))\n")
    began = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT,
                         start_new_session=True)
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    return {**summary, "command_seconds": time.perf_counter() - began}


def main(argv: list[str] | None = None) -> int:
    """Run both and write the table."""
    from embedrt.selection import available_cpus

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("artifact")
    parser.add_argument("--name", default="all-MiniLM-L6-v2")
    parser.add_argument("--texts", type=int, default=20_000)
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--cpus-per-actor", type=float, default=1.0)
    parser.add_argument("--rows-per-part", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    texts = english_fortunes(args.texts)
    cores = available_cpus()
    machine = {**describe(cores), "loadavg_before": os.getloadavg()}
    local = in_process(args.artifact, texts, args.repeats)
    print(f"in-process {local['variant']}: {local['texts_per_s']:.0f} texts/s", flush=True)
    with tempfile.TemporaryDirectory(prefix="embedrt-ray-bench-") as scratch:
        ray = ray_job(args.artifact, texts, local["variant"], args.actors, args.cpus_per_actor, args.rows_per_part,
                      Path(scratch))
    ratio_job = ray["rows_per_s"] / local["texts_per_s"]
    ratio_parts = ray["parts_rows_per_s"] / local["texts_per_s"]
    ratio_command = len(texts) / ray["command_seconds"] / local["texts_per_s"]
    data = {"model": args.name, "texts": len(texts), "machine": {**machine, "loadavg_after": os.getloadavg()},
            "settings": vars(args), "in_process": local, "ray": ray,
            "ratio_job": ratio_job, "ratio_parts": ratio_parts, "ratio_command": ratio_command}
    (out / f"ray-corpus-{args.name}.json").write_text(json.dumps(data, indent=1), encoding="utf-8")
    lines = [f"# `embedrt embed-corpus` on Ray vs in-process `encode`: {args.name}", "",
             f"{header(machine)} {len(texts):,} English "
             f"fortunes, variant {local['variant']}, {args.actors} actors x {args.cpus_per_actor:g} CPU, "
             f"{args.rows_per_part} rows per part.", "",
             "| path | seconds | texts/s | × in-process |", "|---|---|---|---|",
             f"| in-process `encode` (batches of 32, {cores} threads) | {local['seconds']:.1f} | "
             f"{local['texts_per_s']:.0f} | 1.00 |",
             f"| Ray, warmed actors (first part begun → last part written) | {ray['parts_seconds']:.1f} | "
             f"{ray['parts_rows_per_s']:.0f} | {ratio_parts:.2f} |",
             f"| Ray job (cluster start, actors' model load and warm-up → last part written) | {ray['seconds']:.1f} | "
             f"{ray['rows_per_s']:.0f} | {ratio_job:.2f} |",
             f"| Ray command (cluster start and stop included) | {ray['command_seconds']:.1f} | "
             f"{len(texts) / ray['command_seconds']:.0f} | {ratio_command:.2f} |", "",
             f"ONNX Runtime intra-op threads per actor (read back from its session): {ray['intra_op_threads']}; "
             f"rows with errors: {ray['errors']}.", ""]
    (out / f"ray-corpus-{args.name}.md").write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
