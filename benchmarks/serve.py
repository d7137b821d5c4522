"""``embedrt serve`` under load, beside in-process ``encode`` (the ceiling) and infinity-emb, in one run.

    python -m benchmarks.serve ARTIFACT [--model-folder ST_FOLDER] [--duration 20] [--long-duration 60]

For each server (embedrt; infinity-emb where its venv exists: ``bash benchmarks/setup_infinity.sh``), at
concurrency 1, 8, 64 and 256 with one-text and 32-text requests of real English fortunes: throughput
(texts/s, tokens/s), p50/p95/p99 latency, errors (429s apart: they are deliberate), the load
generator's and the server's CPU, and the server's RSS over time. One-text requests at concurrency 64
run ``--long-duration`` seconds (the acceptance cell: RSS at 10 s and at the end). Writes
``serve-<model>.md``, ``.json`` and ``.png`` (throughput and p99 latency against concurrency) to ``--out``.
Every number in one file was measured in one run on one machine; the machine's fp32 GEMM rate is beside
them, since ratios differ between machines.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks import serve_load
from benchmarks.machine import describe, header

CONCURRENCY = (1, 8, 64, 256)
PER_REQUEST = (1, 32)
ROOT = Path(__file__).resolve().parents[1]


def english_fortunes(n: int, seed: int = 0) -> list[str]:
    """``n`` English fortunes (the shared sampler, :func:`embedrt_dev.corpora.english_sample`)."""
    from embedrt_dev import corpora

    return corpora.english_sample(corpora.read_records(), n, seed)


def in_process(artifact: str, texts: list[str], repeats: int) -> dict[str, Any]:
    """``encode`` of the same texts in batches of 32, in a fresh process (the ceiling a server can reach)."""
    code = ("import embedrt, json, sys, time\n"
            "texts = json.load(sys.stdin)\n"
            f"m = embedrt.SentenceTransformer({artifact!r}); m.encode(texts[:64])\n"
            f"runs = []\nfor _ in range({repeats}):\n"
            "    t = time.perf_counter(); m.encode(texts, batch_size=32); runs.append(time.perf_counter() - t)\n"
            "print(json.dumps({'seconds': sorted(runs)[len(runs) // 2], 'variant': m.variant}))\n")
    out = subprocess.run([sys.executable, "-c", code], input=json.dumps(texts), capture_output=True, text=True,
                         check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return {**result, "texts_per_s": len(texts) / result["seconds"], "texts": len(texts)}


def infinity_folder(args: argparse.Namespace, work: Path) -> Path:
    """The sentence-transformers folder exported for infinity's optimum engine (once): optimum writes
    ``model.onnx`` with ``last_hidden_state`` (``--library-name transformers``; infinity pools it itself),
    and infinity finds it only at the folder root, given as ``--model-id .``."""
    folder = work / "infinity-model"
    if not (folder / "model.onnx").is_file():
        cli = Path(args.infinity_venv) / "bin" / "optimum-cli"
        subprocess.run([str(cli), "export", "onnx", "--library-name", "transformers", "--task", "feature-extraction",
                        "--model", args.model_folder, str(folder)], check=True, capture_output=True,
                       env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    return folder


def servers(args: argparse.Namespace, work: Path) -> list[tuple[str, list[str], str, dict[str, str], str | None]]:
    """(label, command, ready path, env, cwd) of each server to measure."""
    found = [("embedrt", [sys.executable, "-m", "embedrt.cli", "serve", args.artifact, "--name", args.name,
                          "--port", "{port}", "--log-level", "warning"], "/ready", {}, None)]
    infinity = Path(args.infinity_venv) / "bin" / "infinity_emb"
    if infinity.is_file() and args.model_folder:
        folder = infinity_folder(args, work)
        env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "DO_NOT_TRACK": "1",
               "INFINITY_ANONYMOUS_USAGE_STATS": "0", "HF_HUB_CACHE": str(work / "hf-cache")}
        found.append(("infinity-emb", [str(infinity), "v2", "--model-id", ".", "--served-model-name", args.name,
                                       "--engine", "optimum", "--pooling-method", "mean", "--url-prefix", "/v1",
                                       "--port", "{port}", "--host", "127.0.0.1"], "/health", env, str(folder)))
    return found


def report(data: dict[str, Any], out: Path) -> str:
    """The Markdown table, written beside the JSON."""
    lines = [f"# `embedrt serve` under load: {data['model']}", "",
             f"{header(data['machine'])} {data['texts']} English fortunes.",
             f"In-process `encode` (batches of 32, variant {data['in_process']['variant']}): "
             f"**{data['in_process']['texts_per_s']:.0f} texts/s** (the ceiling).", "",
             "| server | conc. | texts/req | texts/s | × in-process | tokens/s | p50 ms | p95 ms | p99 ms | "
             "429s | errors | client CPU | server CPU | RSS start→end MiB |", "|" + "---|" * 14]
    for server in data["servers"]:
        for cell in server["cells"]:
            rss = cell["rss_mb"]
            rss_text = f"{rss[0][1]:.0f}→{rss[-1][1]:.0f}" if rss else "–"
            lines.append(f"| {server['label']} | {cell['concurrency']} | {cell['texts_per_request']} | "
                         f"{cell['texts_per_s']:.0f} | {cell['texts_per_s'] / data['in_process']['texts_per_s']:.2f} | "
                         f"{cell['tokens_per_s']:.0f} | {cell['p50_ms']:.1f} | {cell['p95_ms']:.1f} | "
                         f"{cell['p99_ms']:.1f} | {cell['deliberate_429']} | {cell['errors']} | "
                         f"{cell['client_cpu_cores']:.2f} | {cell['server_cpu_cores']:.2f} | {rss_text} |")
    lines += ["", "tokens/s is the sum of each server's own `usage.prompt_tokens` (infinity-emb counts characters "
              "there, not tokens). 429s are deliberate (the queue is full) and not errors.", "",
              "Cold start (process start → ready): " + ", ".join(
        f"{s['label']} {s['ready_s']:.2f} s" for s in data["servers"]) + ".", ""]
    text = "\n".join(lines)
    (out / f"serve-{data['model']}.md").write_text(text, encoding="utf-8")
    return text


def chart(data: dict[str, Any], out: Path) -> None:
    """Throughput and p99 latency against concurrency, one line per server and request size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for server in data["servers"]:
        for per in PER_REQUEST:
            cells = [c for c in server["cells"] if c["texts_per_request"] == per]
            xs = [c["concurrency"] for c in cells]
            left.plot(xs, [c["texts_per_s"] for c in cells], marker="o", label=f"{server['label']}, {per} text(s)/req")
            right.plot(xs, [c["p99_ms"] for c in cells], marker="o", label=f"{server['label']}, {per} text(s)/req")
    left.axhline(data["in_process"]["texts_per_s"], color="grey", linestyle="--", label="in-process encode")
    for axis, label in ((left, "texts/s"), (right, "p99 latency (ms)")):
        axis.set_xscale("log", base=2)
        axis.set_xlabel("concurrency")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
    right.set_yscale("log")
    left.legend(fontsize=7)
    fig.suptitle(f"embedrt serve vs infinity-emb: {data['model']} ({data['machine']['cores']} cores)")
    fig.tight_layout()
    fig.savefig(out / f"serve-{data['model']}.png", dpi=110)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write its results."""
    from embedrt.paths import cache_dir
    from embedrt.selection import available_cpus

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("artifact", help="embedrt artifact folder")
    parser.add_argument("--name", default="all-MiniLM-L6-v2", help="the model name clients use")
    parser.add_argument("--model-folder", help="the sentence-transformers folder, for infinity-emb")
    parser.add_argument("--infinity-venv", default=str(cache_dir() / "venv-infinity"))
    parser.add_argument("--texts", type=int, default=4000)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per cell")
    parser.add_argument("--long-duration", type=float, default=60.0, help="seconds of the 64 x one-text cell")
    parser.add_argument("--max-requests", type=int, default=1_000_000, help="requests per cell at most")
    parser.add_argument("--concurrency", default=",".join(map(str, CONCURRENCY)))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = cache_dir() / "bench" / "serve"  # servers' logs and infinity's exported folder: not results
    work.mkdir(parents=True, exist_ok=True)
    texts = english_fortunes(args.texts)
    cores = available_cpus()
    data: dict[str, Any] = {
        "model": args.name, "texts": len(texts), "settings": vars(args),
        "machine": {**describe(cores), "loadavg_before": os.getloadavg()},
        "in_process": in_process(args.artifact, texts, repeats=3), "servers": []}
    print(f"in-process: {data['in_process']['texts_per_s']:.0f} texts/s", flush=True)
    for label, command, ready, env, cwd in servers(args, work):
        with serve_load.started(label, command, ready, work / f"serve-{label}.log", env=env, cwd=cwd) as server:
            cells = []
            for concurrency in map(int, args.concurrency.split(",")):
                for per in PER_REQUEST:
                    long = concurrency == 64 and per == 1
                    cell = serve_load.run_cell(server.url, args.name, server.popen.pid, texts, concurrency, per,
                                               args.long_duration if long else args.duration, args.max_requests)
                    cells.append(cell.summary())
                    print(f"{label} c={concurrency} n={per}: {cells[-1]['texts_per_s']:.0f} texts/s, "
                          f"p99 {cells[-1]['p99_ms']:.1f} ms, errors {cells[-1]['errors']}", flush=True)
            data["servers"].append({"label": label, "ready_s": server.ready_s, "cells": cells})
    data["machine"]["loadavg_after"] = os.getloadavg()
    (out / f"serve-{args.name}.json").write_text(json.dumps(data, indent=1), encoding="utf-8")
    print(report(data, out))
    chart(data, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
