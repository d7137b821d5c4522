"""Memory over a long run: RSS while 500,000 mixed-length texts go through ``encode_stream`` and through
repeated ``encode`` calls, per variant, each in a fresh process.

    python -m benchmarks.soak ARTIFACT [--texts 500000] [--max-chars 300]
                                       [--variants fp32,fp32_fused,int8_rowwise_fused]

Texts are English fortunes cut at a random length between 5 and ``--max-chars`` characters (so batch shapes
keep changing), cycled until ``--texts``. RSS is read every ``--every`` texts; the target is RSS after all
texts within 10% of RSS after 20,000. Writes ``soak-<model>.md``, ``.json`` and a ``.png`` of the curves.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks.machine import describe, header

ROOT = Path(__file__).resolve().parents[1]
BASELINE = 20_000

WORKER = """
import json, random, sys, time
import numpy as np
import embedrt
from benchmarks.serve import english_fortunes

artifact, variant, mode, total, every, longest = sys.argv[1], sys.argv[2], sys.argv[3], *map(int, sys.argv[4:7])
pool = english_fortunes(20000)
rng = random.Random(0)
cuts = [rng.randint(5, longest) for _ in range(len(pool))]
def texts(n, start=0):
    return [pool[(start + i) % len(pool)][:cuts[(start + i) % len(cuts)]] for i in range(n)]
def rss():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:")) / 1024
model = embedrt.SentenceTransformer(artifact, variant=variant)
points, done, began = [(0, rss())], 0, time.perf_counter()
if mode == "stream":
    def source():
        for start in range(0, total, 1000):
            yield from texts(min(1000, total - start), start)
    for chunk in model.encode_stream(source(), chunk_size=4096):
        before, done = done, done + len(chunk)
        if done // every != before // every:
            points.append((done, rss()))
else:
    while done < total:
        model.encode(texts(1000, done), batch_size=32)
        done += 1000
        if done % every == 0:
            points.append((done, rss()))
print(json.dumps({"variant": model.variant, "mode": mode, "points": points, "seconds": time.perf_counter() - began}))
"""


def run(artifact: str, variant: str, mode: str, total: int, every: int, longest: int) -> dict[str, Any]:
    """One variant and mode in a fresh process: its RSS points."""
    out = subprocess.run([sys.executable, "-c", WORKER, artifact, variant, mode, str(total), str(every), str(longest)],
                         capture_output=True, text=True, check=True, cwd=ROOT)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    points = dict(result["points"])
    base = points[min(points, key=lambda n: abs(n - BASELINE))]
    result["rss_baseline_mb"], result["rss_end_mb"] = base, result["points"][-1][1]
    result["growth"] = result["rss_end_mb"] / base - 1
    return result


def chart(runs: list[dict[str, Any]], out: Path, model: str) -> None:
    """RSS against texts, one line per variant and mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axis = plt.subplots(figsize=(8, 4.5))
    for r in runs:
        xs, ys = zip(*r["points"])
        axis.plot(xs, ys, label=f"{r['variant']}, {r['mode']} ({r['growth']:+.1%} after {BASELINE:,})")
    axis.axvline(BASELINE, color="grey", linestyle=":")
    axis.set_xlabel("texts embedded")
    axis.set_ylabel("RSS (MiB)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    axis.set_title(f"RSS over a long run: {model}")
    fig.tight_layout()
    fig.savefig(out / f"soak-{model}.png", dpi=110)


def main(argv: list[str] | None = None) -> int:
    """Run every variant and mode; write the report."""
    from embedrt.selection import available_cpus

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("artifact")
    parser.add_argument("--name", default="all-MiniLM-L6-v2")
    parser.add_argument("--texts", type=int, default=500_000)
    parser.add_argument("--every", type=int, default=10_000)
    parser.add_argument("--max-chars", type=int, default=300, help="texts are cut to 5..max-chars characters")
    parser.add_argument("--variants", default="fp32,fp32_fused,int8_rowwise_fused")
    parser.add_argument("--modes", default="stream,encode")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cores = available_cpus()
    runs = []
    for variant in args.variants.split(","):
        for mode in args.modes.split(","):
            runs.append(run(args.artifact, variant, mode, args.texts, args.every, args.max_chars))
            r = runs[-1]
            print(f"{variant} {mode}: RSS {r['rss_baseline_mb']:.0f} MiB after {BASELINE:,}, {r['rss_end_mb']:.0f} "
                  f"after {args.texts:,} ({r['growth']:+.1%}), {r['seconds']:.0f} s", flush=True)
    machine = describe(cores)
    (out / f"soak-{args.name}.json").write_text(json.dumps({"model": args.name, "machine": machine,
                                                            "settings": vars(args), "runs": runs}, indent=1))
    lines = [f"# RSS over {args.texts:,} texts: {args.name}", "",
             f"{header(machine)} English fortunes cut to 5-{args.max_chars} characters; each run "
             f"a fresh process. Target: RSS at the end within 10% of RSS after {BASELINE:,} texts.", "",
             f"| variant | mode | RSS after {BASELINE:,} (MiB) | RSS after {args.texts:,} (MiB) | change | seconds |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['variant']} | {r['mode']} | {r['rss_baseline_mb']:.0f} | {r['rss_end_mb']:.0f} | "
              f"{r['growth']:+.1%} | {r['seconds']:.0f} |" for r in runs]
    (out / f"soak-{args.name}.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    chart(runs, out, args.name)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
