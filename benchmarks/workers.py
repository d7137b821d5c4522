"""Concurrent CPU batches against one batch at a time: each setting's pass in a fresh process.

For each variant of an artifact, runs ``embedrt.SentenceTransformer(artifact, threads=T, workers=W)`` for
every ``W`` in ``--workers`` (each batch gets ``T // W`` ORT threads), alternating the order each cycle,
on the same English fortunes as ``benchmarks.cpu`` (the fetched corpus) with its warm-up (one text,
then the 32 longest and the first 32), and prints the median sentences/s and the median per-cycle ratio
to the first ``W``.

    python -m benchmarks.workers ARTIFACT --variants fp32 int8_rowwise --cycles 4
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from embedrt_dev import corpora

CHILD = """
import json, sys, time
import embedrt
artifact, variant, threads, workers, texts_file, batch_size = sys.argv[1:7]
texts = json.load(open(texts_file, encoding="utf-8"))
model = embedrt.SentenceTransformer(artifact, variant=variant, threads=int(threads), workers=int(workers))
model.encode(texts[:1])
model.encode(sorted(texts, key=len)[-32:] + texts[:32])
start = time.perf_counter()
model.encode(texts, batch_size=int(batch_size))
print(json.dumps(len(texts) / (time.perf_counter() - start)))
"""


def one_pass(artifact: Path, variant: str, threads: int, workers: int, texts_file: Path, batch_size: int) -> float:
    """Sentences/s of one timed pass in a fresh interpreter."""
    out = subprocess.run([sys.executable, "-c", CHILD, str(artifact), variant, str(threads), str(workers),
                          str(texts_file), str(batch_size)], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, run the cycles, print one line per variant and worker count."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifact", type=Path)
    parser.add_argument("--variants", nargs="+", default=["fp32"])
    parser.add_argument("--workers", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--texts", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--cycles", type=int, default=4)
    args = parser.parse_args(argv)
    texts = corpora.english_sample(corpora.read_records(), args.texts)
    rates: dict[tuple[str, int], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="embedrt-workers-") as tmp:
        texts_file = Path(tmp) / "texts.json"
        texts_file.write_text(json.dumps(texts), encoding="utf-8")
        for cycle in range(args.cycles):
            order = args.workers if cycle % 2 == 0 else args.workers[::-1]
            for variant in args.variants:
                for workers in order:
                    rate = one_pass(args.artifact, variant, args.threads, workers, texts_file, args.batch_size)
                    rates.setdefault((variant, workers), []).append(rate)
    for (variant, workers), values in rates.items():
        first = rates[(variant, args.workers[0])]
        ratio = statistics.median(v / f for v, f in zip(values, first))
        print(f"{variant:18s} workers={workers} ({args.threads // workers} thread(s) each): "
              f"{statistics.median(values):7.1f} sentences/s, x workers={args.workers[0]} {ratio:.3f}, "
              f"per cycle {[round(v) for v in values]}")


if __name__ == "__main__":
    main()
