"""The provider benchmark's reports: the environment it ran in, the Markdown tables and the chart."""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path
from typing import Any

import embedrt
import numpy as np
from embedrt.providers import import_onnxruntime
from embedrt.selection import available_cpus

from .machine import cpu_model, fmt, gpu_names
from .providers_matrix import DISPLAY


def environment(args: argparse.Namespace) -> dict[str, Any]:
    """What the numbers depend on: machine, load, library versions, threads."""
    ort = import_onnxruntime()
    return {"cpu": cpu_model(), "cores_usable": available_cpus(), "threads": args.threads or available_cpus(),
            "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
            "gpus": gpu_names(), "python": platform.python_version(), "onnxruntime": ort.__version__,
            "onnxruntime_device": ort.get_device(), "available_providers": ort.get_available_providers(),
            "embedrt": embedrt.__version__, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def render_markdown(result: dict[str, Any]) -> str:
    """The human-readable report: a summary row per config, then throughput per group and batch size."""
    env, settings = result["environment"], result["settings"]
    lines = [f"# embedrt provider benchmark: {result['artifact']['name']}", ""]
    if settings.get("note"):
        lines += [f"**{settings['note']}**", ""]
    gpus = f"; GPU: {', '.join(env['gpus'])}" if env["gpus"] else ""
    lines += [
        f"- Machine: {env['cpu']}, {env['cores_usable']} usable cores, {env['threads']} threads, "
        f"load average {', '.join(f'{x:.2f}' for x in env['loadavg'] or [])}{gpus}",
        f"- onnxruntime {env['onnxruntime']} ({env['onnxruntime_device']} build; providers "
        f"{', '.join(env['available_providers'])}); embedrt {env['embedrt']}; {env['time']}",
        f"- {settings['texts']} texts per group from {settings['corpus']}; batch sizes "
        f"{', '.join(map(str, settings['batch_sizes']))}; median of {settings['repeats']} timed passes after one "
        f"untimed warm-up{' (--quick)' if settings['quick'] else ''}. Batch 1 is one encode() call per text.",
        "- tokens/s counts real tokens (special tokens included, padding excluded). Shared or busy machines make "
        "these numbers noisy: compare rows of one run, not runs of different machines.",
        "- Groups: " + "; ".join(f"{g['name']}: {g['texts']} texts, {g['mean_tokens']:.1f} tokens/text"
                                 + (f" ({g['note']})" if g["note"] else "") for g in result["groups"]),
        "", "## Summary", "",
        "| provider | variant | status | first call (s) | best tokens/s (group, batch) | max 1−cos vs CPU fp32 "
        "| notes |", "|---|---|---|---|---|---|---|"]
    for cfg in result["configs"]:
        status = cfg["status"] + (f": {cfg['reason']}" if cfg["reason"] else "")
        best = max(cfg.get("cells", []), key=lambda c: c["tokens_per_s"], default=None)
        best_s = f"{fmt(best['tokens_per_s'])} ({best['group']}, {best['batch_size']})" if best else "–"
        fid = cfg.get("fidelity_max_one_minus_cos")
        fid_s = "reference" if cfg["device"] == "cpu" and cfg["variant"] == "fp32" and cfg["status"] == "ok" \
            else (f"{fid:.2e}" if fid is not None else "–")
        lines.append(f"| {DISPLAY.get(cfg['device'], cfg['device'])} | {cfg['label']} | {status} | "
                     f"{fmt(cfg.get('first_call_s'))} | {best_s} | {fid_s} | {'; '.join(cfg['notes'])} |")
    sizes = settings["batch_sizes"]
    lines += ["", "## Throughput: sentences/s (tokens/s)", "",
              "| provider | variant | group | tokens/text | " + " | ".join(f"batch {b}" for b in sizes)
              + f" | batch {max(sizes)}, tokens/s without tokenization | batch 1 p50 / p99 (ms) |",
              "|---" * (6 + len(sizes)) + "|"]
    mean_tokens = {g["name"]: g["mean_tokens"] for g in result["groups"]}
    for cfg in result["configs"]:
        by_group: dict[str, dict[int, dict[str, Any]]] = {}
        for cell in cfg.get("cells", []):
            by_group.setdefault(cell["group"], {})[cell["batch_size"]] = cell
        for group, cells in by_group.items():
            row = [f"{fmt(c['sentences_per_s'])} ({fmt(c['tokens_per_s'])})" if (c := cells.get(b)) else "–"
                   for b in sizes]
            lat = cells.get(1, {}).get("latency")
            lat_s = f"{lat['p50_ms']:.2f} / {lat['p99_ms']:.2f}" if lat else "–"
            model_only = cells.get(max(sizes), {}).get("model_only_tokens_per_s")
            lines.append(f"| {DISPLAY[cfg['device']]} | {cfg['label']} | {group} | {mean_tokens[group]:.1f} | "
                         + " | ".join(row) + f" | {fmt(model_only) if model_only else '–'} | {lat_s} |")
    return "\n".join(lines) + "\n"


def render_plot(result: dict[str, Any], path: Path) -> None:
    """Bar charts: tokens/s at the largest batch size, and batch-1 p50 latency, per group and config."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on benchmark machines
    import matplotlib.pyplot as plt

    groups = [g["name"] for g in result["groups"]]
    largest = max(result["settings"]["batch_sizes"])
    measured = [c for c in result["configs"] if c.get("cells")]
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    width = 0.8 / max(1, len(measured))
    for panel, (ax, title) in enumerate(zip(axes, (f"tokens/s at batch {largest} (higher is better)",
                                                   "batch 1 p50 latency, ms (lower is better)"))):
        for k, cfg in enumerate(measured):
            values = []
            for g in groups:
                cell = next((c for c in cfg["cells"] if c["group"] == g
                             and c["batch_size"] == (largest if panel == 0 else 1)), None)
                value = None if cell is None else (cell["tokens_per_s"] if panel == 0 else
                                                   (cell["latency"] or {}).get("p50_ms"))
                values.append(np.nan if value is None else value)
            x = np.arange(len(groups)) + (k - (len(measured) - 1) / 2) * width
            ax.bar(x, values, width, label=f"{DISPLAY[cfg['device']]} {cfg['label']}")
        ax.set_xticks(np.arange(len(groups)), groups)
        ax.set_xlabel("sequence-length group (tokens)")
        ax.set_yscale("log")
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    note = result["settings"].get("note")
    fig.suptitle(f"{result['artifact']['name']}: {result['environment']['cpu']}"
                 + (f", {', '.join(result['environment']['gpus'])}" if result["environment"]["gpus"] else "")
                 + (f" — {note}" if note else ""), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


