"""The CPU benchmark's rows: the model to measure, every path (sentence-transformers torch and ONNX,
fastembed, each embedrt variant), and running them, each timed pass in a fresh ``cpu_worker.py`` process.

The ONNX-backend and fastembed paths run under the anchors venv (``benchmarks/setup_anchors.sh``:
optimum-onnx pins an older transformers); without it their rows say how to create it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import embedrt
from embedrt.artifact import Artifact
from embedrt.manifest import MANIFEST_NAME
from embedrt.paths import cache_dir
from embedrt.selection import cpu_threads
from embedrt_dev.fetch.items import model_dir

from .cpu_ceiling import gemm_probes
from .cpu_worker import ST_ONNX_FILES
from .machine import cpu_flags, isa_note

# Run by path under either interpreter (the anchors venv has no embedrt): it imports only numpy and the
# library under test.
WORKER = Path(__file__).resolve().with_name("cpu_worker.py")
SETUP_HINT = "run benchmarks/setup_anchors.sh"


@dataclass
class Target:
    """One model: its name, its sentence-transformers folder and its embedrt artifact."""

    name: str
    st_folder: Path
    artifact: Path


def resolve_target(target: str, st_model: Path | None, re_export: bool) -> Target:
    """An artifact folder as is, or a model name exported once (``embedrt export``) into the bench cache."""
    if (Path(target) / MANIFEST_NAME).is_file():
        artifact = Path(target)
        manifest = Artifact(artifact).manifest
        recorded = Path(manifest.source.get("path", ""))
        folder = st_model or (recorded if (recorded / "modules.json").is_file() else model_dir(manifest.name))
        return Target(manifest.name, folder, artifact)
    folder = st_model or model_dir(target)
    if not (folder / "modules.json").is_file():
        raise FileNotFoundError(f"{folder}: no sentence-transformers model; run "
                                f"`python scripts/fetch_models.py {target}` or pass an artifact folder")
    artifact = cache_dir() / "bench" / "artifacts" / target
    if re_export or not (artifact / MANIFEST_NAME).is_file():
        print(f"exporting {target} -> {artifact} ...", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "-m", "embedrt.cli", "export", str(folder), "-o", str(artifact),
                        "--name", target, "--overwrite"], check=True)
    return Target(target, folder, artifact)


@dataclass
class Contender:
    """One measured path: how to run it, or why it does not run, and its runs."""

    key: str
    label: str
    python: str | None
    spec: dict[str, Any]
    status: str = "pending"
    reason: str = ""
    notes: list[str] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)
    embeddings: str | None = None
    summary: dict[str, Any] | None = None
    fidelity: dict[str, Any] | None = None


def worker_env(drop: Sequence[str] = ()) -> dict[str, str]:
    """The environment of every child: offline Hub (nothing can be downloaded here), minus ``drop``."""
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return env


def tail(text: str, lines: int = 3) -> str:
    """The last non-empty lines of a child's stderr, for a row's reason."""
    return " | ".join([line for line in text.strip().splitlines() if line.strip()][-lines:])


def anchor_versions(python: Path) -> dict[str, str]:
    """Library versions in the anchors venv."""
    out = subprocess.run([str(python), "-I", str(WORKER), "versions"], capture_output=True, text=True,
                         check=True, env=worker_env())
    return json.loads(out.stdout)


def ensure_st_onnx(python: Path, target: Target) -> Path:
    """sentence-transformers' ONNX / O3 / qint8 files for the model, exported once into the bench cache."""
    dest = cache_dir() / "bench" / "st-onnx" / target.name
    if all((dest / f).is_file() for f in ST_ONNX_FILES.values()):
        return dest
    print(f"exporting sentence-transformers ONNX/O3/qint8 of {target.name} -> {dest} ...", file=sys.stderr,
          flush=True)
    done = subprocess.run([str(python), "-I", str(WORKER), "export-st-onnx", str(target.st_folder), str(dest)],
                          capture_output=True, text=True, env=worker_env())
    if done.returncode != 0:
        raise RuntimeError(f"sentence-transformers ONNX export failed: {tail(done.stderr)}")
    return dest


def fastembed_folder(st_onnx: Path, name: str, max_seq_length: int) -> tuple[Path, str | None]:
    """sentence-transformers' exported folder as fastembed should see it, and what had to change.

    fastembed truncates at min(model_max_length, max_length) of ``tokenizer_config.json``, never at
    sentence-transformers' ``max_seq_length``; the folder sentence-transformers 5.7 saves carries
    ``max_length: 128``, which would make fastembed embed less text than every other path. So the
    fastembed folder links every file but that one, rewritten to truncate at ``max_seq_length``.
    """
    dest = cache_dir() / "bench" / "fastembed" / name
    dest.mkdir(parents=True, exist_ok=True)
    for entry in st_onnx.iterdir():
        link = dest / entry.name
        if entry.name != "tokenizer_config.json" and not link.is_symlink():
            link.symlink_to(entry.resolve(), target_is_directory=entry.is_dir())
    config = json.loads((st_onnx / "tokenizer_config.json").read_text(encoding="utf-8"))
    saved = {k: config.pop(k) for k in ("model_max_length", "max_length") if k in config}
    config["model_max_length"] = max_seq_length
    (dest / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    limits = [v for v in saved.values() if isinstance(v, int)]
    if limits and min(limits) == max_seq_length:
        return dest, None
    saved_text = ", ".join(f"{k} {v}" for k, v in saved.items()) or "no limit"
    return dest, (f"tokenizer_config.json rewritten to truncate at max_seq_length {max_seq_length}; as saved "
                  f"({saved_text}) fastembed would truncate at {min(limits) if limits else 'no limit'}")


def plan_contenders(target: Target, shape: dict[str, Any], args: argparse.Namespace,
                    anchors: dict[str, Any]) -> tuple[list[Contender], str]:
    """Every row, runnable or with its reason; also the variant ``embedrt.SentenceTransformer(artifact)`` picks."""
    flags = cpu_flags()
    manifest = Artifact(target.artifact).manifest
    common = {"threads": args.threads, "batch_size": args.batch_size}
    rows = [Contender("st-torch", "sentence-transformers torch fp32", sys.executable,
                      {"kind": "st", "model_dir": str(target.st_folder), **common})]
    onnx_rows = [("st-onnx", "sentence-transformers ONNX fp32", "onnx"),
                 ("st-onnx-O3", "sentence-transformers ONNX O3", "O3"),
                 ("st-onnx-qint8", "sentence-transformers ONNX qint8 (avx512_vnni)", "qint8")]
    fast = Contender("fastembed", "fastembed ONNX fp32 (own batching)", anchors.get("python"),
                     {"kind": "fastembed", "file_name": ST_ONNX_FILES["onnx"], "pooling": shape["pooling"],
                      "normalize": shape["normalize"], "dim": manifest.embedding_dimension, **common})
    anchor_rows = [Contender(key, label, anchors.get("python"),
                             {"kind": "st", "file_name": ST_ONNX_FILES[file], **common})
                   for key, label, file in onnx_rows] + [fast]
    for row in anchor_rows:
        if anchors.get("status"):
            row.status, row.reason = anchors["status"], anchors.get("reason", "")
        else:
            row.spec["model_dir"] = anchors["st_onnx"]
    if not anchors.get("status"):
        folder, note = fastembed_folder(Path(anchors["st_onnx"]), target.name, manifest.tokenizer.max_seq_length)
        fast.spec["model_dir"] = str(folder)
        fast.notes += [note] if note else []
        if "fastembed" not in anchors["versions"]:
            fast.status, fast.reason = "absent", "fastembed not installed in the anchors venv"
        elif shape["unsupported_by_fastembed"] or shape["pooling"] is None:
            fast.status, fast.reason = "absent", (f"fastembed runs only mean/CLS pooling + normalize; model has "
                                                  f"{shape['unsupported_by_fastembed'] or 'other pooling'}")
    if note := isa_note("int8_avx512_vnni", flags):
        anchor_rows[2].notes.append(note)
    rows += anchor_rows

    default = embedrt.SentenceTransformer(target.artifact, threads=1).variant
    variants = sorted(manifest.towers["text"].variants, key=lambda v: (v != "fp32", v))
    for variant in variants:
        default_workers = cpu_threads(variant, args.threads, None)[1]
        for workers in args.workers:
            suffix = ("", "") if workers is None else (f"-w{workers}", f", workers={workers}")
            row = Contender(f"embedrt-{variant}{suffix[0]}", f"embedrt {variant}{suffix[1]}", sys.executable,
                            {"kind": "embedrt", "model_dir": str(target.artifact), "variant": variant,
                             "workers": workers, **common})
            if variant == default and workers in (None, default_workers):
                row.notes.append("embedrt.SentenceTransformer(artifact)'s default")
            if variant.startswith("int8") and (note := isa_note(variant, flags)):
                row.notes.append(note)
            rows.append(row)
    return rows, default


def prepare_anchors(venv: Path, target: Target) -> dict[str, Any]:
    """The anchors venv's interpreter, versions and exported ONNX folder, or the status its rows get."""
    python = venv / "bin" / "python"
    if not python.is_file():
        return {"status": "absent", "reason": f"{SETUP_HINT} (no {python})"}
    try:
        versions = anchor_versions(python)
        st_onnx = ensure_st_onnx(python, target)
    except (subprocess.CalledProcessError, RuntimeError, json.JSONDecodeError) as exc:
        return {"status": "error", "reason": str(exc), "python": str(python)}
    return {"python": str(python), "versions": versions, "st_onnx": str(st_onnx)}

def run_worker(python: str, mode: str, spec: dict[str, Any], work: Path, tag: str, timeout: float,
               drop_env: Sequence[str] = ()) -> dict[str, Any]:
    """One fresh process of ``cpu_worker.py``; its result, or RuntimeError with the end of its stderr."""
    spec_path = work / f"{tag}.spec.json"
    spec = {**spec, "result": str(work / f"{tag}.result.json")}
    spec_path.write_text(json.dumps(spec), encoding="utf-8")
    t0 = time.monotonic()
    try:
        done = subprocess.run([python, "-I", str(WORKER), mode, str(spec_path), repr(t0)], capture_output=True,
                              text=True, timeout=timeout, env=worker_env(drop_env))
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"timed out after {timeout:.0f} s") from exc
    if done.returncode != 0:
        raise RuntimeError(f"exit {done.returncode}: {tail(done.stderr)}")
    return json.loads(Path(spec["result"]).read_text(encoding="utf-8"))


def run_cycles(rows: list[Contender], texts_file: Path, warmup: list[int], gemm_spec: dict[str, Any],
               args: argparse.Namespace, work: Path) -> dict[str, list[dict[str, Any]]]:
    """``args.repeats`` cycles; each runs the GEMM probes, then every path in a fresh process, order rotated."""
    probes = gemm_probes(args.threads)
    gemm: dict[str, list[dict[str, Any]]] = {label: [] for label, _, _, _ in probes}
    for cycle in range(args.repeats):
        for n, (label, drop, threads, backend) in enumerate(probes):
            gemm[label].append(run_worker(sys.executable, "gemm", {**gemm_spec, "threads": threads, "backend": backend},
                                          work, f"gemm-{cycle}-{n}", args.timeout_s, drop))
        live = [r for r in rows if r.status == "pending"]
        shift = cycle % max(1, len(live))
        for row in live[shift:] + live[:shift]:
            print(f"cycle {cycle + 1}/{args.repeats}: {row.label} ...", file=sys.stderr, flush=True)
            spec = {**row.spec, "texts": str(texts_file), "warmup": warmup, "scratch": str(work / "scratch")}
            if cycle == 0:
                row.embeddings = spec["embeddings"] = str(work / f"{row.key}.npy")
            load = os.getloadavg()[0]  # what else ran on the machine: read it next to every number
            try:
                run = run_worker(row.python, "encode", spec, work, f"{row.key}-{cycle}", args.timeout_s)
                row.runs.append({"cycle": cycle, "loadavg_1m_at_spawn": load, **run})
            except RuntimeError as exc:  # a failing path is a row, not the end of the benchmark
                row.status, row.reason = "error", str(exc)
        for row in live:
            if row.status == "pending" and len(row.runs) == args.repeats:
                row.status = "ok"
    return gemm


