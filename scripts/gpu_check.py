#!/usr/bin/env python3
"""The prepared check for a machine with one NVIDIA GPU: parity, TensorRT engine cache, benchmarks.

Usage::

    python scripts/gpu_check.py RESULTS_DIR [--models all-MiniLM-L6-v2,all-mpnet-base-v2] [--artifacts DIR]
                                [--corpus FILE] [--budget-s 420] [--parity-texts 500] [--require-tensorrt]
                                [--anchor-model all-mpnet-base-v2] [--allow-cpu-dry-run]

What it does, all bounded by ``--budget-s`` (default 420 s, so the whole run fits in 8 minutes):

0. Prerequisites, all listed at once with how to provide each: ``onnxruntime`` must be the GPU build
   with ``CUDAExecutionProvider`` (``TensorrtExecutionProvider`` too for the TensorRT part: without
   it the CUDA part runs and the TensorRT part is reported as SKIPPED with the reason); numpy,
   tokenizers and embedrt importable; the fortunes corpus; an artifact per model.
1. (a) Parity on ~500 real fortunes texts per model (every language, some past max_seq_length):
   CUDA fp16 (fp32 where the artifact has no fp16 variant) and TensorRT fp16 against CPU fp32,
   max 1−cos ≤ 1e-3.
   (b) TensorRT engine cache: a first process, on an empty cache, builds the engines (at most one per
   sequence bucket; with one explicit profile normally one per TensorRT subgraph) and must build none
   while going through every bucket; a second process on the same cache must create or modify no
   engine file and reach its first embedding in at most half the first process's time.
2. (c) ``benchmarks/providers.py`` for each model (CUDA and TensorRT rows, CPU fp32 as the fidelity
   reference), with what is left of the budget.
3. (d) ``--anchor-model``'s (all-mpnet-base-v2) fp16 tokens/s at sequence 128, batch 128, next to
   NVIDIA's ≈1.0M tokens/s for plugin-fused fp16 BERT-base on an A100 (``/work/shared/anchors.md``
   §8.3; NVIDIA's figure excludes tokenization and host↔device copies, ours includes both).

Everything goes to RESULTS_DIR: ``gpu_check.md`` (summary), ``gpu_check.json`` (raw), ``gpu_check.log``,
``logs/`` (every subprocess's output), ``bench/<model>/providers.{md,json,png}``. TensorRT engines and
artifacts exported here go to a temporary folder (hundreds of MB) that is removed at the end.
Exit status: 0 every gate passed (TensorRT may be SKIPPED, said loudly); 1 a gate failed;
2 a prerequisite is missing (nothing measured); 3 the budget ran out before every gate was evaluated.

``--allow-cpu-dry-run`` runs the same flow with the CPU provider standing in for CUDA and TensorRT
and tiny sizes, so the logic can be exercised on a machine without a GPU. Its outputs say DRY RUN
everywhere; its numbers are CPU numbers and its TensorRT gates are N/A.

Getting the prerequisites onto a GPU machine that has no package registry and no Hub
------------------------------------------------------------------------------------
What worked on an H200 lent through the device tool (2026-11-27; Python 3.12, CUDA 13 libraries from
torch's nvidia-* wheels, onnxruntime 1.30 CPU build preinstalled): each call carries at most 64 MiB of
git-ignored paths, a carried path replaces its remote copy, and paths carried earlier stay for as long
as the machine stays warm. So everything goes as one tar stream cut into 62 MiB pieces, one call per
piece (about 5 s of device time each), joined and unpacked in the last call. Here, with the registry::

    mkdir -p build/stage build/carry build/artifacts
    .venv/bin/pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 onnxruntime-gpu==1.31.1 -d build/stage        # 255 MB, CUDA 13
    xz -c ~/.cache/embedrt/corpora/fortunes.jsonl > build/stage/fortunes.jsonl.xz      # 18 MB -> 4.4 MB
    for m in all-MiniLM-L6-v2 all-mpnet-base-v2; do
        .venv/bin/embedrt export ~/.cache/embedrt/models/$m -o build/artifacts/$m --variants fp16; done
    tar -C build -cf - stage artifacts | split -b 62M -a 2 - build/carry/s1.            # 17 pieces

Then one device call per piece (``carry=["build/carry/s1.aa"]``, then ``["build/carry/s1.ab"]``, …)
and finally, in one call::

    cd build && cat carry/s1.* | tar -xf - && xz -dk stage/fortunes.jsonl.xz && python3 -m pip install -q \
        --no-index --no-deps --no-compile --target /tmp/ortgpu stage/onnxruntime_gpu-*.whl && cd .. &&
    PYTHONPATH=/tmp/ortgpu python3 scripts/gpu_check.py /tmp/gc --artifacts build/artifacts \
        --corpus build/stage/fortunes.jsonl --budget-s 400

then copy at most 8 files from /tmp/gc into ``$OUT`` (the tool returns 8 files, two folders deep).
``--target`` + ``PYTHONPATH`` shadows the preinstalled CPU onnxruntime without uninstalling it;
``--no-deps``: numpy and tokenizers are already there. The manifest's sha256 of every graph catches
a badly joined file. TensorRT: ``TensorrtExecutionProvider`` is in the onnxruntime-gpu wheel, but
TensorRT's own libraries (libnvinfer) are on no registry reachable here (PyPI's tensorrt-cu13-libs is
an sdist that downloads from pypi.nvidia.com), so that part is SKIPPED. If sentence-transformers and
the ST model folders are on the device instead, a model without ``--artifacts`` is exported there
(torch is available), but the weights weigh as much as the artifact.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PARITY_MAX = 1e-3
SECOND_START_MAX_RATIO = 0.5
ANCHOR = {"tokens_per_s": 1.0e6, "what": "NVIDIA demo/BERT, BERT-base, plugin-fused TensorRT FP16, A100-40GB, "
          "seq 128, batch 128, 16.14 ms (excludes tokenization and H2D/D2H copies)",
          "source": "/work/shared/anchors.md §8.3"}
GPU_SIZES = {"texts": 128, "batch_sizes": (1, 8, 32, 128), "repeats": 3}
DRY_SIZES = {"texts": 4, "batch_sizes": (1, 4), "repeats": 1}
DRY = "DRY RUN: CPU provider standing in for CUDA and TensorRT; these are not GPU numbers"


class BudgetExceeded(Exception):
    """The hard time bound (``--budget-s``) was reached."""


@dataclass
class Gate:
    """One pass/fail check of the run."""

    model: str
    check: str
    value: str
    threshold: str
    result: str  # PASS, FAIL, SKIPPED, N/A (DRY RUN), NOT RUN
    detail: str = ""


@dataclass
class Run:
    """State shared by the steps: options, log, deadline and everything recorded."""

    args: argparse.Namespace
    out: Path
    deadline: float
    log_file: Any
    gates: list[Gate] = field(default_factory=list)
    record: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    # TensorRT engines and exported graphs are hundreds of MB: they live here, out of RESULTS_DIR (which
    # travels back), fresh each run so the first process really builds, and are removed at the end.
    scratch: Path = Path()

    def log(self, message: str) -> None:
        """Print and append to ``gpu_check.log``."""
        print(message, flush=True)
        self.log_file.write(message + "\n")
        self.log_file.flush()

    def remaining(self) -> float:
        """Seconds left of the budget, keeping a few to write the reports."""
        return self.deadline - time.monotonic() - 5.0

    @property
    def dry(self) -> bool:
        """Whether this is the CPU dry run."""
        return self.args.allow_cpu_dry_run


# -- prerequisites --------------------------------------------------------------------------------

def child_env() -> tuple[dict[str, str], list[str]]:
    """Environment for the subprocesses: embedrt's source tree when it is not installed, and the CUDA,
    cuDNN and TensorRT libraries that pip wheels (torch's nvidia-*, tensorrt-libs) put in site-packages,
    which ONNX Runtime's CUDA/TensorRT providers dlopen but the loader does not search by itself."""
    env = dict(os.environ)
    notes = []
    if importlib.util.find_spec("embedrt") is None:
        paths = [str(ROOT / "runtime"), str(ROOT / "exporter")]
        sys.path[:0] = paths
        env["PYTHONPATH"] = os.pathsep.join(paths + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        notes.append(f"embedrt is not installed: using the source tree ({', '.join(paths)})")
    import site

    libs = []
    for base in {*site.getsitepackages(), site.getusersitepackages()}:
        libs += sorted(str(p) for p in Path(base).glob("nvidia/*/lib") if p.is_dir())
        libs += [str(p) for p in (Path(base) / "tensorrt_libs",) if p.is_dir()]
    if libs:
        env["LD_LIBRARY_PATH"] = os.pathsep.join(libs + ([env["LD_LIBRARY_PATH"]] if env.get("LD_LIBRARY_PATH")
                                                        else []))
        notes.append(f"library dirs from pip wheels added to LD_LIBRARY_PATH for subprocesses: {', '.join(libs)}")
    return env, notes


def check_prerequisites(run: Run) -> tuple[list[str], dict[str, Path], str | None]:
    """Everything missing (each with how to provide it), the artifact per model, and why TensorRT is skipped."""
    args = run.args
    missing: list[str] = []
    trt_skip = None
    docs = "see the docstring of scripts/gpu_check.py for carrying files to a machine without a registry"
    try:
        import onnxruntime as ort
    except ImportError as exc:
        missing.append(f"no CUDAExecutionProvider: onnxruntime is not importable ({exc}); install the "
                       f"onnxruntime-gpu 1.31.1 wheel with `pip install --no-deps` ({docs})")
        ort = None
    if ort is not None:
        available = ort.get_available_providers()
        run.record["onnxruntime"] = {"version": ort.__version__, "device": ort.get_device(), "providers": available}
        run.log(f"onnxruntime {ort.__version__} ({ort.get_device()} build), providers: {', '.join(available)}")
        if "CUDAExecutionProvider" not in available and not run.dry:
            missing.append(
                f"no CUDAExecutionProvider: this onnxruntime {ort.__version__} is the {ort.get_device()} build "
                f"(providers: {', '.join(available)}). Replace it with onnxruntime-gpu 1.31.1: "
                f"`pip uninstall -y onnxruntime && pip install --no-deps onnxruntime_gpu-1.31.1-<tags>.whl` "
                f"(the wheel is 255 MB: {docs}). Without a GPU, --allow-cpu-dry-run exercises this script's logic")
        if "TensorrtExecutionProvider" not in available and not run.dry:
            trt_skip = (f"TensorrtExecutionProvider not in this onnxruntime build (providers: {', '.join(available)})")
    for module, how in (("numpy", "pip install --no-deps a numpy wheel"),
                        ("tokenizers", "carry the tokenizers wheel (~3 MB) and pip install --no-deps it")):
        if importlib.util.find_spec(module) is None:
            missing.append(f"python module {module} missing: {how}")
    if importlib.util.find_spec("matplotlib") is None:
        run.log("matplotlib missing: benchmarks run with --no-plot (no providers.png)")
        run.record["no_plot"] = True

    from embedrt_dev.fetch import items as fetcher

    corpus = args.corpus or fetcher.corpus_path("fortunes")
    if not corpus.is_file():
        missing.append(f"corpus {corpus} missing: carry ~/.cache/embedrt/corpora/fortunes.jsonl (18 MB) and pass "
                       f"--corpus, or run `python scripts/fetch_models.py fortunes` where a registry is reachable")
    args.corpus = corpus

    artifacts: dict[str, Path] = {}
    exporter_ok = all(importlib.util.find_spec(m) is not None
                      for m in ("torch", "sentence_transformers", "embedrt_export"))
    for model in args.models:
        given = args.artifacts / model if args.artifacts else None
        source = fetcher.model_dir(model)
        if given is not None and (given / "manifest.json").is_file():
            artifacts[model] = given
        elif source.is_dir() and exporter_ok:
            artifacts[model] = Path(model)  # exported into the scratch folder once the checks pass
            run.record.setdefault("export", {})[model] = str(source)
        else:
            where = f"{given} has no manifest.json" if given else "no --artifacts DIR given"
            why = "the export extra (torch, sentence-transformers, embedrt_export) is not importable" \
                if source.is_dir() else f"its sentence-transformers folder {source} is not here either"
            missing.append(f"no artifact for {model}: {where}, and it cannot be exported here: {why}. Export it "
                           f"elsewhere (`embedrt export ~/.cache/embedrt/models/{model} -o DIR/{model}`), carry "
                           f"DIR over and pass --artifacts DIR ({docs})")
    return missing, artifacts, trt_skip


def load_module(name: str, path: Path) -> ModuleType:
    """Import a script by path (``benchmarks/`` and ``scripts/`` are not packages)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# -- texts ----------------------------------------------------------------------------------------

def parity_texts(corpus: Path, n: int) -> list[str]:
    """``n`` real fortunes: an even spread over every language, plus a tenth far past any max_seq_length
    (20 consecutive fortunes joined), so truncation and every bucket are exercised."""
    by_lang: dict[str, list[str]] = {}
    with open(corpus, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                record = json.loads(line)
                by_lang.setdefault(record["lang"], []).append(record["text"])
    n_long = max(1, n // 10)
    per_lang = max(1, (n - n_long) // len(by_lang))
    texts = []
    for lang in sorted(by_lang):
        pool = by_lang[lang]
        texts += pool[::max(1, len(pool) // per_lang)][:per_lang]
    everything = [t for lang in sorted(by_lang) for t in by_lang[lang]]
    stride = max(1, len(everything) // (n_long + 1))
    texts += ["\n".join(everything[i * stride:i * stride + 20]) for i in range(n - len(texts))]
    return texts[:n]


# -- subprocess worker ----------------------------------------------------------------------------

def worker(spec_path: str) -> int:
    """Child process: load a model, time its first embedding, go through every bucket, embed the parity
    texts, and record the TensorRT cache directory after each stage. Prints one ``RESULT {json}`` line."""
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    bench = load_module("embedrt_bench_providers", ROOT / "benchmarks" / "providers.py")
    import embedrt
    import numpy as np

    cache = spec["trt_cache_dir"]
    texts = json.loads(Path(spec["texts"]).read_text(encoding="utf-8"))
    result: dict[str, Any] = {"ok": False, "listings": {"start": bench.file_listing(cache)}}
    try:
        start = time.perf_counter()
        model = embedrt.SentenceTransformer(spec["artifact"], device=spec["device"], variant=spec["variant"],
                                            strict=True, max_batch_size=spec["max_batch_size"], trt_cache_dir=cache)
        result["construct_s"] = time.perf_counter() - start
        result["active_providers"] = model.providers["active"]
        model.encode(texts[:1], batch_size=1)
        result["first_call_s"] = time.perf_counter() - start
        result["listings"]["first_encode"] = bench.file_listing(cache)
        step = time.perf_counter()
        model.warmup(spec["max_batch_size"])
        result["all_buckets_s"] = time.perf_counter() - step
        result["listings"]["all_buckets"] = bench.file_listing(cache)
        step = time.perf_counter()
        embeddings = model.encode(texts, batch_size=spec["max_batch_size"])
        result["encode_s"] = time.perf_counter() - step
        result["listings"]["end"] = bench.file_listing(cache)
        np.save(spec["embeddings"], embeddings)
        result["ok"] = True
    except Exception as exc:  # reported to the parent, which decides whether it is a failure or a skip
        result.update(error_type=type(exc).__name__, error=str(exc))
    print("RESULT " + json.dumps(result), flush=True)
    return 0 if result["ok"] else 1


def _text(output: str | bytes | None) -> str:
    # TimeoutExpired carries bytes even when the process was started with text=True
    return output.decode(errors="replace") if isinstance(output, bytes) else output or ""


def spawn(run: Run, name: str, command: list[str], limit: float | None = None) -> tuple[int | None, str]:
    """Run a subprocess within the budget (and ``limit`` seconds), its output saved under ``logs/``:
    (exit status, or None when it was stopped for time; stdout)."""
    timeout = min(run.remaining(), limit or float("inf"))
    if timeout <= 1:
        raise BudgetExceeded(f"no time left for {name}")
    log_path = run.out / "logs" / f"{name}.log"
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=run.env, cwd=ROOT)
    except subprocess.TimeoutExpired as exc:
        log_path.write_text(f"$ {' '.join(command)}\nTIMED OUT after {timeout:.0f}s\n--- stdout\n{_text(exc.stdout)}\n"
                            f"--- stderr\n{_text(exc.stderr)}", encoding="utf-8")
        run.log(f"  {name}: timed out after {timeout:.0f}s (budget), log {log_path}")
        return None, ""
    log_path.write_text(f"$ {' '.join(command)}\nexit {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n"
                        f"{proc.stderr}", encoding="utf-8")
    return proc.returncode, proc.stdout


def run_worker(run: Run, name: str, spec: dict[str, Any]) -> dict[str, Any] | None:
    """Run :func:`worker` in a fresh process; its result, or None when it ran out of time."""
    spec_path = run.out / "work" / f"{name}.json"
    spec_path.write_text(json.dumps(spec), encoding="utf-8")
    started = time.perf_counter()
    code, stdout = spawn(run, name, [sys.executable, str(Path(__file__).resolve()), "--worker", str(spec_path)])
    if code is None:
        return None
    lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
    result = json.loads(lines[-1][len("RESULT "):]) if lines else {
        "ok": False, "error_type": "crash", "error": f"exit {code} without a result; see logs/{name}.log"}
    result["process_s"] = time.perf_counter() - started
    return result


# -- gates ----------------------------------------------------------------------------------------

def engines(listing: dict[str, Any]) -> dict[str, Any]:
    """The TensorRT engine files of a cache listing."""
    return {k: v for k, v in listing.items() if k.endswith(".engine")}


def check_model(run: Run, model: str, artifact: Path, trt_skip: str | None) -> None:
    """Gates (a) and (b) for one model."""
    bench = sys.modules["embedrt_bench_providers"]
    import embedrt
    import numpy as np
    from embedrt.engine import default_buckets

    args = run.args
    variants = _variants(artifact)
    texts = parity_texts(args.corpus, args.parity_texts)
    texts_path = run.out / "work" / f"{model}-texts.json"
    texts_path.write_text(json.dumps(texts, ensure_ascii=False), encoding="utf-8")
    rec = run.record.setdefault("models", {}).setdefault(model, {"artifact": str(artifact), "variants": variants})
    max_batch = max(DRY_SIZES["batch_sizes"] if run.dry else GPU_SIZES["batch_sizes"])

    start = time.perf_counter()
    reference = embedrt.SentenceTransformer(artifact, device="cpu", variant="fp32", strict=True).encode(
        texts, batch_size=64)
    rec["cpu_reference_s"] = time.perf_counter() - start
    run.log(f"[{model}] CPU fp32 reference: {len(texts)} texts in {rec['cpu_reference_s']:.1f}s")

    cuda_variant = "fp16" if "fp16" in variants and not run.dry else "fp32"
    label = "CUDA fp16" if cuda_variant == "fp16" else "CUDA fp32 (artifact has no fp16 variant)"
    if run.dry:
        label = "CUDA stand-in: CPU fp32 (DRY RUN)"

    def parity(name: str, result: dict[str, Any], what: str) -> None:
        npy = run.out / "work" / f"{name}.npy"
        got = np.load(npy)
        npy.unlink()  # the number is the result; 500 embeddings per process are not worth carrying back
        worst = float(bench.one_minus_cos(reference, got).max())
        result["max_one_minus_cos"] = worst
        run.gates.append(Gate(model, f"(a) {what} vs CPU fp32, {len(texts)} texts", f"max 1−cos {worst:.2e}",
                              f"≤ {PARITY_MAX:.0e}", "PASS" if worst <= PARITY_MAX else "FAIL"))
        run.log(f"[{model}] {what}: max 1−cos {worst:.2e}")

    def spec(name: str, device: str, variant: str, cache: Path | None) -> dict[str, Any]:
        return {"artifact": str(artifact), "device": device, "variant": variant, "max_batch_size": max_batch,
                "trt_cache_dir": str(cache) if cache else None, "texts": str(texts_path),
                "embeddings": str(run.out / "work" / f"{name}.npy")}

    name = f"{model}-cuda"
    result = run_worker(run, name, spec(name, "cpu" if run.dry else "cuda", cuda_variant, None))
    rec["cuda"] = result
    if result is None:
        run.gates.append(Gate(model, f"(a) {label} parity", "–", f"≤ {PARITY_MAX:.0e}", "NOT RUN", "time budget"))
    elif not result["ok"]:
        run.gates.append(Gate(model, f"(a) {label} parity", f"{result['error_type']}", f"≤ {PARITY_MAX:.0e}",
                              "FAIL", f"{result['error']} (logs/{name}.log)"))
        run.log(f"[{model}] {label} FAILED: {result['error_type']}: {result['error']}")
    else:
        parity(name, result, label)

    trt_label = "TensorRT stand-in: CPU fp32 (DRY RUN)" if run.dry else "TensorRT fp16 (engine from the fp32 graph)"
    if trt_skip:
        run.gates.append(Gate(model, f"(a)+(b) {trt_label}", "–", "–",
                              "FAIL" if args.require_tensorrt else "SKIPPED", trt_skip))
        return
    cache = run.scratch / "trt" / model
    cache.mkdir(parents=True)
    device = "cpu" if run.dry else "tensorrt"
    first = run_worker(run, f"{model}-trt-first", spec(f"{model}-trt-first", device, "fp32", cache))
    rec["trt_first"] = first
    if first is None:
        run.gates.append(Gate(model, f"(a)+(b) {trt_label}", "–", "–", "NOT RUN", "time budget"))
        return
    if not first["ok"]:
        unavailable = first["error_type"] == "ProviderUnavailableError"
        result_s = "SKIPPED" if unavailable and not args.require_tensorrt else "FAIL"
        run.gates.append(Gate(model, f"(a)+(b) {trt_label}", first["error_type"], "–", result_s,
                              f"{first['error']} (logs/{model}-trt-first.log: TensorRT libraries missing?)"))
        run.log(f"[{model}] TensorRT {result_s}: {first['error_type']}: {first['error']}")
        return
    parity(f"{model}-trt-first", first, trt_label)
    na = "N/A (DRY RUN)" if run.dry else None
    buckets = len(default_buckets(_max_seq(artifact)))
    built = engines(first["listings"]["end"])
    run.gates.append(Gate(model, "(b) engine files built by the first process", f"{len(built)} ({buckets} buckets)",
                          f"1 … {buckets}", na or ("PASS" if 1 <= len(built) <= buckets else "FAIL"),
                          ", ".join(built)))
    rebuilt = engines(first["listings"]["all_buckets"]) != engines(first["listings"]["first_encode"])
    run.gates.append(Gate(model, "(b) no engine built or rewritten while going through every bucket",
                          "engines changed" if rebuilt else "unchanged", "unchanged",
                          na or ("FAIL" if rebuilt else "PASS")))

    second = run_worker(run, f"{model}-trt-second", spec(f"{model}-trt-second", device, "fp32", cache))
    rec["trt_second"] = second
    if second is None or not second["ok"]:
        why = "time budget" if second is None else f"{second['error_type']}: {second['error']}"
        run.gates.append(Gate(model, "(b) second process on the warm cache", "–", "–",
                              "NOT RUN" if second is None else "FAIL", why))
        return
    parity(f"{model}-trt-second", second, f"{trt_label}, second process" + ("" if run.dry else " (cached engine)"))
    before, after = second["listings"]["start"], second["listings"]["end"]
    new = sorted(set(after) - set(before))
    changed = sorted(k for k in engines(before) if after.get(k) != before[k])
    other = sorted(k for k in before if k in after and after[k] != before[k] and k not in changed)
    run.gates.append(Gate(model, "(b) files created / engines modified by the second process",
                          f"{len(new)} / {len(changed)}", "0 / 0",
                          na or ("PASS" if not new and not changed else "FAIL"),
                          "; ".join(filter(None, [f"new: {', '.join(new)}" if new else "",
                                                  f"modified: {', '.join(changed)}" if changed else "",
                                                  f"other files rewritten: {', '.join(other)}" if other else ""]))))
    ratio = second["first_call_s"] / first["first_call_s"]
    run.gates.append(Gate(model, "(b) second process: time to first embedding",
                          f"{second['first_call_s']:.1f}s vs {first['first_call_s']:.1f}s ({ratio:.2f}×)",
                          f"≤ {SECOND_START_MAX_RATIO}×",
                          na or ("PASS" if ratio <= SECOND_START_MAX_RATIO else "FAIL")))
    run.log(f"[{model}] TensorRT first call {first['first_call_s']:.1f}s (engines: {len(built)}), second process "
            f"{second['first_call_s']:.1f}s")


def _variants(artifact: Path) -> list[str]:
    from embedrt.artifact import Artifact

    return sorted(Artifact(artifact).manifest.towers["text"].variants)


def _max_seq(artifact: Path) -> int:
    from embedrt.artifact import Artifact

    return Artifact(artifact).manifest.tokenizer.max_seq_length


# -- benchmarks and the anchor --------------------------------------------------------------------

def benchmarks(run: Run, artifacts: dict[str, Path]) -> None:
    """(c): benchmarks/providers.py per model, the anchor model first, sharing what is left of the budget."""
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
        command = [sys.executable, str(ROOT / "benchmarks" / "providers.py"), str(artifacts[model]), "--out", str(out),
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


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, help="folder for every output (created)")
    parser.add_argument("--models", default="all-MiniLM-L6-v2,all-mpnet-base-v2", help="comma-separated")
    parser.add_argument("--artifacts", type=Path, help="folder holding a pre-exported artifact per model (DIR/<model>)")
    parser.add_argument("--corpus", type=Path, help="fortunes.jsonl (default: the fetch_models cache)")
    parser.add_argument("--budget-s", type=float, default=420.0, help="hard bound on the whole run")
    parser.add_argument("--parity-texts", type=int, help="texts per model for gate (a) (default 500, dry run 24)")
    parser.add_argument("--anchor-model", default="all-mpnet-base-v2", help="model compared with NVIDIA's anchor")
    parser.add_argument("--require-tensorrt", action="store_true", help="a skipped TensorRT part fails the run")
    parser.add_argument("--allow-cpu-dry-run", action="store_true",
                        help="no GPU: run the flow on the CPU provider with tiny sizes, labelled DRY RUN")
    args = parser.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    args.parity_texts = args.parity_texts or (24 if args.allow_cpu_dry_run else 500)
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the check; the exit status is described in the module docstring."""
    args = parse_args(argv)
    started = time.monotonic()
    args.results.mkdir(parents=True, exist_ok=True)
    for sub in ("logs", "work"):
        (args.results / sub).mkdir(exist_ok=True)
    with open(args.results / "gpu_check.log", "w", encoding="utf-8") as log_file:
        run = Run(args, args.results, started + args.budget_s, log_file)
        if run.dry:
            run.log(DRY)
        run.env, notes = child_env()
        run.record["notes"] = notes + ([DRY] if run.dry else [])
        for note in notes:
            run.log(note)
        missing, artifacts, trt_skip = check_prerequisites(run)
        if missing:
            run.log("MISSING PREREQUISITES (nothing was measured):")
            for item in missing:
                run.log(f"  - {item}")
            (run.out / "gpu_check.json").write_text(json.dumps({"status": "missing prerequisites",
                                                                "missing": missing}, indent=1) + "\n")
            return 2
        bench = load_module("embedrt_bench_providers", ROOT / "benchmarks" / "providers.py")
        run.record["gpus"] = bench.gpu_names()
        if trt_skip:
            run.log(f"TensorRT part SKIPPED: {trt_skip}")

        # Backstop for in-process steps (CPU reference, export): subprocesses have their own timeouts.
        def on_alarm(signum: int, frame: Any) -> None:
            raise BudgetExceeded(f"hard time bound of {args.budget_s:.0f}s reached")

        signal.signal(signal.SIGALRM, on_alarm)
        signal.alarm(max(1, int(args.budget_s - (time.monotonic() - started))))
        run.scratch = Path(tempfile.mkdtemp(prefix="embedrt-gpu-check-"))
        status = None
        try:
            for model, source in run.record.get("export", {}).items():
                artifacts[model] = run.scratch / "artifacts" / model
                run.log(f"[{model}] exporting {source} → {artifacts[model]}")
                from embedrt_export import export

                export(source, artifacts[model], name=model)
            for model, artifact in artifacts.items():
                check_model(run, model, artifact, trt_skip)
            benchmarks(run, artifacts)
        except BudgetExceeded as exc:
            run.log(f"stopped: {exc}")
            status = f"INCOMPLETE: {exc}"
        finally:
            signal.alarm(0)
            run.record["trt_cache"] = bench.file_listing(str(run.scratch / "trt"))
            shutil.rmtree(run.scratch, ignore_errors=True)
        rows = anchor(run)
        run.record["elapsed_s"] = time.monotonic() - started
        failed = [g for g in run.gates if g.result == "FAIL"]
        not_run = [g for g in run.gates if g.result == "NOT RUN"]
        if status is None:
            status = (f"FAIL: {len(failed)} gate(s) failed" if failed else
                      f"INCOMPLETE: {len(not_run)} gate(s) not run (time budget)" if not_run else "PASS")
        if trt_skip or any(g.result == "SKIPPED" for g in run.gates):
            status += " (TensorRT part SKIPPED: see the gates)"
        if run.dry:
            status = f"DRY RUN {status}"
        write_report(run, status, rows)
        return 1 if failed else 3 if "INCOMPLETE" in status else 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        sys.exit(worker(sys.argv[2]))
    sys.exit(main())
