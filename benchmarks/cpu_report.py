"""The CPU benchmark's numbers and reports: fidelity against sentence-transformers torch, per-cycle
ratios and medians, the machine line, the Markdown table and the chart."""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from embedrt.selection import available_cpus
from embedrt_export.fidelity import one_minus_cos, ranking

from .cpu_contenders import SETUP_HINT, Contender
from .machine import cpu_flags, cpu_model, fmt

FIDELITY_PAIRS = 2000
QUERIES = 200
TOP_K = 10
# Flags that decide which int8 kernels ONNX Runtime can use.
SHOWN_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")


def fidelity_queries(n: int) -> int:
    """How many of ``n`` texts search the rest for the top-k overlap: ``QUERIES``, at most a fifth of them."""
    return min(QUERIES, n // 5)


def fidelity(reference: np.ndarray, candidate: np.ndarray) -> dict[str, Any]:
    """How closely ``candidate`` follows ``reference`` (same texts, same order), measured as the export's
    gates measure it (:func:`embedrt_export.fidelity.ranking`).

    max 1−cos per text; Spearman ρ between the two models' cosine similarities of ``FIDELITY_PAIRS``
    fixed random pairs of distinct texts; and mean overlap of the top-``TOP_K`` hits when the first
    :func:`fidelity_queries` texts search the rest.
    """
    n = len(reference)
    queries = fidelity_queries(n)
    figures = ranking(reference, candidate, n_pairs=FIDELITY_PAIRS, n_queries=queries, corpus_size=n - queries,
                      top_k=TOP_K)
    return {"max_one_minus_cos": float(one_minus_cos(reference, candidate).max()), "spearman": figures["spearman"],
            "pairs": FIDELITY_PAIRS, "top_k_overlap": figures["top10_overlap"], "queries": queries,
            "k": min(TOP_K, n - queries)}


def cycle_ratio(runs: list[dict[str, Any]], reference: list[dict[str, Any]]) -> float | None:
    """Median over cycles of ``reference``'s time / this path's time in the same cycle."""
    ref = {run["cycle"]: run["encode_s"] for run in reference}
    ratios = [ref[r["cycle"]] / r["encode_s"] for r in runs if r["cycle"] in ref]
    return statistics.median(ratios) if ratios else None


def summarize(rows: list[Contender], n_texts: int, tokens: int, ceiling_s: float, real_ceiling_s: float,
              int8_real_ceiling_s: float | None = None) -> None:
    """Medians over cycles into each row's ``summary``; ratios to sentence-transformers torch and to
    its qint8 ONNX backend per cycle (the targets are set against both); fractions of the fp32 ceiling for
    the padded batches and of the one for real tokens alone, and of the int8 real-token ceiling."""
    qint8 = next((row.runs for row in rows if row.key == "st-onnx-qint8"), [])
    for row in rows:
        if not row.runs:
            continue
        seconds = statistics.median(r["encode_s"] for r in row.runs)
        row.summary = {
            "encode_s": seconds, "sentences_per_s": n_texts / seconds, "tokens_per_s": tokens / seconds,
            "ratio_to_st_torch": cycle_ratio(row.runs, rows[0].runs),
            "ratio_to_st_qint8": cycle_ratio(row.runs, qint8),
            "fraction_of_ceiling": ceiling_s / seconds, "fraction_of_real_ceiling": real_ceiling_s / seconds,
            "fraction_of_int8_ceiling": int8_real_ceiling_s / seconds if int8_real_ceiling_s else None,
            "cold_start_s": statistics.median(r["cold_start_s"] for r in row.runs),
            "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in row.runs),
            "facts": row.runs[0]["facts"], "versions": row.runs[0]["versions"]}


def machine(args: argparse.Namespace) -> dict[str, Any]:
    """CPU, the flags that decide int8 kernels, cores, threads, load."""
    flags = cpu_flags()
    return {"cpu": cpu_model(), "flags": {f: f in flags for f in SHOWN_FLAGS}, "cores_usable": available_cpus(),
            "cpu_count": os.cpu_count(), "threads": args.threads, "python": sys.version.split()[0],
            "loadavg": list(os.getloadavg()), "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def row_record(row: Contender) -> dict[str, Any]:
    """A row as JSON: what ran, how, and its numbers."""
    return {"key": row.key, "label": row.label, "status": row.status, "reason": row.reason, "notes": row.notes,
            "python": row.python, "spec": row.spec, "runs": row.runs, "summary": row.summary,
            "fidelity": row.fidelity}


def render_markdown(result: dict[str, Any]) -> str:
    """The report: machine, corpus and ceiling, then one row per path."""
    env, corpus, flops = result["machine"], result["corpus"], result["flops"]
    s = result["settings"]
    flags = ", ".join(f"{f} {'yes' if on else 'no'}" for f, on in env["flags"].items())
    lines = [f"# CPU embeddings: {result['model']}", ""]
    if s["quick"]:
        lines += ["**--quick: development sizes, not a measurement**", ""]
    if result["ceiling"]["cores_looked_shared"]:
        lines += [f"**Busy machine: numpy GEMM on {env['threads']} threads was under 1.5× its 1-thread rate, so "
                  "other processes had the cores; throughput (torch's OpenMP most of all) is not representative.**",
                  ""]
    gemm_rows = [f"  - {label}: {fmt(g['gflops'])} GFLOP/s (median of {len(g['runs'])}); threadpoolctl: "
                 + "; ".join(f"{b['internal_api']} {b['version']}, kernel {b['architecture']}" for b in g["blas"])
                 for label, g in result["gemm"].items()]
    loads = [r["loadavg_1m_at_spawn"] for p in result["paths"] for r in p["runs"]]
    main_v, anchor_v = result["versions"]["main"], result["versions"].get("anchors") or {}
    lines += [
        f"- Machine: {env['cpu']} ({flags}); {env['cores_usable']} usable cores of {env['cpu_count']}, "
        f"{env['threads']} threads for every path; load average {', '.join(f'{x:.2f}' for x in env['loadavg'])} "
        f"before, {', '.join(f'{x:.2f}' for x in result['loadavg_after'])} after"
        + (f", 1-minute load {min(loads):.2f}–{max(loads):.2f} at the timed processes' spawns" if loads else "")
        + f"; {env['time']}",
        "- Project venv: " + ", ".join(f"{k} {v}" for k, v in main_v.items()),
        "- Anchors venv: " + (", ".join(f"{k} {v}" for k, v in anchor_v.items()) or f"absent: {SETUP_HINT}"),
        f"- Corpus: {corpus['texts']} English texts from {corpus['path']} (seeded sample); tokens per text "
        f"(special tokens included, truncated at {corpus['max_seq_length']}): mean {corpus['mean_tokens']:.1f}, "
        f"p95 {corpus['p95_tokens']:.0f}, max {corpus['max_tokens']}; batch {s['batch_size']} "
        "(fastembed: its default 256, unsorted)",
        f"- Timing: each path's pass in a fresh process, {s['repeats']} cycle(s) in rotated order; medians. "
        "× ST torch is the median of per-cycle ratios. Cold start: spawn → first one-text embedding (imports "
        "and model load included). Peak RSS: that process's whole run. Before the timed pass, one untimed "
        "warm-up on the 32 longest and the first 32 texts.",
        f"- fp32 FLOP ceiling: {flops['total_flops'] / 1e9:,.1f} GFLOP for the corpus in {flops['batches']} "
        f"length-sorted batches of {s['batch_size']} ({flops['linear_flops'] / 1e9:,.1f} linear + "
        f"{flops['attention_flops'] / 1e9:,.1f} attention; {flops['padded_tokens']:,} padded tokens for "
        f"{flops['real_tokens']:,} real), at {fmt(result['ceiling']['gflops'])} GFLOP/s "
        f"({result['ceiling']['source']}) = {result['ceiling']['seconds']:.3g} s. int8 paths can pass 100%, "
        "and so can graphs that skip the padding (embedrt's `_fused` variants run on packed rows): the stricter "
        f"real-token ceiling counts each text at its own length, {result['real_flops']['total_flops'] / 1e9:,.1f} "
        f"GFLOP = {result['ceiling']['real_tokens_seconds']:.3g} s.",
        *([f"- int8 ceiling (what the int8 graphs can reach): the linear layers' multiply-adds at the machine's "
           f"u8 × s8 GEMM rate (ONNX Runtime's MLAS MatMulInteger at {result['ceiling']['int8_shape']}, "
           f"{fmt(result['ceiling']['int8_gops'])} GOP/s; fp32 MatMul there {fmt(result['ceiling']['fp32_gflops'])} "
           "GFLOP/s) plus attention's at "
           + (f"the bf16 rate (torch's bf16 matmul there, {fmt(result['ceiling']['bf16_gflops'])} GFLOP/s: "
              "int8_rowwise_fused attends in bf16)" if result["ceiling"].get("bf16_gflops")
              else "the fp32 ceiling's rate (this CPU has no bf16 multiply, or torch was absent)")
           + ", for real tokens alone: "
           f"{result['ceiling']['int8_real_tokens_seconds']:.3g} s; the int8 rows' '% of int8 ceiling' is against it."]
          if "int8_gops" in result["ceiling"] else []),
        "- fp32 GEMM (numpy; ONNX Runtime's MLAS MatMul with a constant weight) at the model's layer shapes (m×k×n: "
        f"{', '.join('×'.join(map(str, sh)) for sh in result['gemm_shapes'])}); the ceiling is the best at "
        f"{env['threads']} threads:",
        *gemm_rows,
        "- Fidelity vs sentence-transformers torch fp32 on the same texts: max 1−cos; Spearman ρ of "
        f"{FIDELITY_PAIRS:,} fixed random pairs' cosine similarities; top-{TOP_K} overlap with the first "
        f"{result['fidelity_queries']} texts as queries against the rest.",
        "", "| path | status | sentences/s | tokens/s | × ST torch | × ST qint8 | % of fp32 ceiling "
        "| % of real-token ceiling | % of int8 ceiling | cold start (s) | peak RSS (MiB) | max 1−cos | Spearman "
        "| top-10 overlap | notes |",
        "|---" * 15 + "|"]
    for row in result["paths"]:
        status = row["status"] + (f": {row['reason']}" if row["reason"] else "")
        sm, fid = row["summary"] or {}, row["fidelity"] or {}
        is_ref = row["key"] == "st-torch"
        cells = [fmt(sm.get("sentences_per_s")), fmt(sm.get("tokens_per_s")),
                 f"{sm['ratio_to_st_torch']:.2f}" if sm.get("ratio_to_st_torch") is not None else "–",
                 f"{sm['ratio_to_st_qint8']:.2f}" if sm.get("ratio_to_st_qint8") is not None else "–",
                 f"{100 * sm['fraction_of_ceiling']:.1f}%" if sm else "–",
                 f"{100 * sm['fraction_of_real_ceiling']:.1f}%" if sm else "–",
                 f"{100 * sm['fraction_of_int8_ceiling']:.1f}%" if sm.get("fraction_of_int8_ceiling")
                 and "int8" in row["key"] else "–",
                 f"{sm['cold_start_s']:.2f}" if sm else "–", f"{sm['peak_rss_mb']:,.0f}" if sm else "–",
                 "reference" if is_ref and sm else (f"{fid['max_one_minus_cos']:.2e}" if fid else "–"),
                 "reference" if is_ref and sm else (f"{fid['spearman']:.5f}" if fid else "–"),
                 "reference" if is_ref and sm else (f"{fid['top_k_overlap']:.3f}" if fid else "–")]
        notes = list(row["notes"])
        facts = sm.get("facts") or {}
        if facts.get("max_seq_length") not in (None, result["corpus"]["max_seq_length"]):
            notes.append(f"truncates at {facts['max_seq_length']} tokens")
        if facts.get("workers", 1) > 1:
            notes.append(f"{facts['workers']} batches at once, {facts['intra_op_threads']} thread(s) each")
        lines.append(f"| {row['label']} | {status} | " + " | ".join(cells) + f" | {'; '.join(notes)} |")
    return "\n".join(lines) + "\n"


def render_plot(result: dict[str, Any], path: Path) -> None:
    """Horizontal bars per measured path: sentences/s (with × ST torch), cold start, peak RSS."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on benchmark machines
    import matplotlib.pyplot as plt

    rows = [r for r in result["paths"] if r["summary"]]
    labels = [r["label"] for r in rows]
    colors = ["tab:orange" if r["key"].startswith("embedrt") else "tab:gray" if r["key"] == "st-torch"
              else "tab:blue" for r in rows]
    panels = [("sentences/s (higher is better)", "sentences_per_s"), ("cold start, s (lower is better)",
              "cold_start_s"), ("peak RSS, MiB (lower is better)", "peak_rss_mb")]
    fig, axes = plt.subplots(1, 3, figsize=(15, 0.45 * len(rows) + 1.8), sharey=True)
    y = np.arange(len(rows))
    for ax, (title, key) in zip(axes, panels):
        values = [r["summary"][key] for r in rows]
        ax.barh(y, values, color=colors)
        ax.set_title(title, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
        if key == "sentences_per_s":
            for k, r in enumerate(rows):
                ratio = r["summary"]["ratio_to_st_torch"]
                if ratio is not None:
                    ax.text(values[k], k, f" {ratio:.2f}×", va="center", fontsize=8)
            ax.set_xlim(0, max(values) * 1.2)
    axes[0].set_yticks(y, labels, fontsize=8)
    axes[0].invert_yaxis()
    env = result["machine"]
    fig.suptitle(f"{result['model']}: {result['corpus']['texts']} English fortunes, {env['cpu']}, "
                 f"{env['threads']} threads" + (" (--quick)" if result["settings"]["quick"] else ""), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


