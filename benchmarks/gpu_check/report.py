"""Steps (c) and (d) of the GPU check and its report: the provider benchmark per model within the budget,
the anchor model's tokens/s next to NVIDIA's figure, and ``gpu_check.md`` / ``gpu_check.json``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from .run import DRY, DRY_SIZES, GPU_SIZES, Run, spawn

# NVIDIA's published number for fused BERT-base, the yardstick of step (d).
ANCHOR = {"tokens_per_s": 1.0e6, "what": "NVIDIA demo/BERT, BERT-base, plugin-fused TensorRT FP16, A100-40GB, "
          "seq 128, batch 128, 16.14 ms (excludes tokenization and H2D/D2H copies)",
          "source": "NVIDIA TensorRT demo/BERT README, inference performance table"}


def benchmarks(run: Run, artifacts: dict[str, Path]) -> None:
    """(c): ``python -m benchmarks.providers`` per model, the anchor model first, sharing what is left of the
    budget."""
    sizes = DRY_SIZES if run.dry else GPU_SIZES
    order = sorted(artifacts, key=lambda m: m != run.args.anchor_model)
    for k, model in enumerate(order):
        share = run.remaining() / (len(order) - k)
        out = run.out / "bench" / model
        entry = run.record.setdefault("benchmarks", {}).setdefault(model, {"out": str(out)})
        if share < 20:
            entry["status"] = "not run: time budget spent"
            run.log(f"[{model}] benchmark not run: {run.remaining():.0f}s left")
            continue
        command = [sys.executable, "-m", "benchmarks.providers", str(artifacts[model]), "--out", str(out),
                   "--quick", "--texts", str(sizes["texts"]), "--repeats", str(sizes["repeats"]),
                   "--batch-sizes", ",".join(map(str, sizes["batch_sizes"])),
                   "--devices", "cpu" if run.dry else "cuda,tensorrt", "--corpus", str(run.args.corpus),
                   "--trt-cache-dir", str(run.scratch / "trt" / model),
                   # its own budget ends early enough to write its reports before our hard timeout
                   "--budget-s", f"{max(5.0, share - 30):.0f}", "--note", DRY if run.dry else ""]
        if run.record.get("no_plot"):
            command.append("--no-plot")
        run.log(f"[{model}] benchmark ({share:.0f}s share) → {out}")
        code, _ = spawn(run, f"{model}-bench", command, limit=share)
        entry["exit"] = code
        entry["status"] = "timed out" if code is None else ("ok" if code == 0 else f"exit {code} (error rows)")


def anchor(run: Run) -> list[dict[str, Any]]:
    """(d): the anchor model's tokens/s at exactly 128 tokens and the largest batch, per GPU config."""
    path = run.out / "bench" / run.args.anchor_model / "providers.json"
    if not path.is_file():
        run.record["anchor"] = {"status": f"not measured: no {path}"}
        return []
    data = json.loads(path.read_text(encoding="utf-8"))
    rows = []
    for cfg in data["configs"]:
        if cfg["device"] == "-" or (cfg["device"] == "cpu") != run.dry or not cfg.get("cells"):
            continue
        cells = [c for c in cfg["cells"] if c["group"] == "=128"]
        if not cells:
            continue
        best = max(cells, key=lambda c: c["batch_size"])
        model_only = best.get("model_only_tokens_per_s")
        rows.append({"config": f"{cfg['device']} {cfg['label']}", "batch_size": best["batch_size"],
                     "tokens_per_s": best["tokens_per_s"],
                     "ratio_to_anchor": None if run.dry else best["tokens_per_s"] / ANCHOR["tokens_per_s"],
                     "model_only_tokens_per_s": model_only,
                     "model_only_ratio": None if run.dry or not model_only else model_only / ANCHOR["tokens_per_s"]})
    run.record["anchor"] = {"anchor": ANCHOR, "rows": rows, "gpus": data["environment"]["gpus"]}
    return rows


# -- report ---------------------------------------------------------------------------------------

def write_report(run: Run, status: str, anchor_rows: list[dict[str, Any]]) -> None:
    """``gpu_check.md`` and ``gpu_check.json``."""
    title = "# embedrt GPU check" + (f" — {DRY}" if run.dry else "")
    ort = run.record.get("onnxruntime", {})
    lines = [title, "", f"**Result: {status}**", "",
             f"- GPU: {', '.join(run.record.get('gpus') or ['none reported by nvidia-smi'])}; onnxruntime "
             f"{ort.get('version', '?')} ({ort.get('device', '?')} build; {', '.join(ort.get('providers', []))})",
             f"- models: {', '.join(run.args.models)}; budget {run.args.budget_s:.0f}s, used "
             f"{run.record.get('elapsed_s', 0):.0f}s", *[f"- {n}" for n in run.record.get("notes", [])],
             "", "## Gates", "", "| model | check | value | threshold | result | detail |", "|---|---|---|---|---|---|"]
    lines += [f"| {g.model} | {g.check} | {g.value} | {g.threshold} | {g.result} | {g.detail} |" for g in run.gates]
    st_rows = run.record.get("st_anchor", {})
    if st_rows:
        lines += ["", "## (e) embedrt vs sentence-transformers torch fp16, sequence 128, batch 128"
                  + (" (DRY RUN: CPU fp32, not a GPU number)" if run.dry else ""), "",
                  "| model | embedrt end to end | embedrt without tokenization | share | ST fp16 end to end | "
                  "ST fp16 forward only | embedrt / ST, end to end |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {m} | {r['embedrt_end_to_end']:,.0f} | {r['embedrt_engine']:,.0f} | "
                  f"{r['embedrt_end_to_end'] / r['embedrt_engine']:.2f} | {r['st_end_to_end']:,.0f} | "
                  f"{r['st_forward']:,.0f} | {r['embedrt_end_to_end'] / r['st_end_to_end']:.2f}× |"
                  for m, r in st_rows.items()]
        lines.append("(tokens/s)")
    lines += ["", "## (c) Benchmarks", ""]
    for model, entry in run.record.get("benchmarks", {}).items():
        lines.append(f"- {model}: {entry['status']} — `{entry['out']}/providers.md`")
    lines += ["", f"## (d) {run.args.anchor_model} at sequence 128 vs NVIDIA's fused BERT-base", "",
              f"Anchor: ≈{ANCHOR['tokens_per_s'] / 1e6:.1f}M tokens/s — {ANCHOR['what']} ({ANCHOR['source']}). "
              "Ours: embedrt end to end (tokenization, host↔device copies, pipeline) on "
              + ("the CPU: DRY RUN, not comparable." if run.dry else "this machine's GPU."), ""]
    if anchor_rows:
        def ratio(value: float | None) -> str:
            return "n/a" if value is None else format(value, ".3f")

        lines += ["| config | batch | tokens/s, end to end | / anchor | tokens/s without tokenization | / anchor |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {r['config']}{' (DRY RUN: CPU, not a GPU number)' if run.dry else ''} | {r['batch_size']} | "
                  f"{r['tokens_per_s']:,.0f} | {ratio(r['ratio_to_anchor'])} | "
                  f"{format(r['model_only_tokens_per_s'], ',.0f') if r['model_only_tokens_per_s'] else '–'} | "
                  f"{ratio(r['model_only_ratio'])} |" for r in anchor_rows]
    else:
        lines.append(f"not measured: {run.record.get('anchor', {}).get('status', 'no GPU rows at =128')}")
    (run.out / "gpu_check.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    record = {**run.record, "dry_run": run.dry, "status": status, "gates": [g.__dict__ for g in run.gates],
              "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(run.args).items()}}
    (run.out / "gpu_check.json").write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    run.log("\n".join(lines))

