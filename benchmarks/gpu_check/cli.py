"""The GPU check's command line: prerequisites (all listed at once, each with how to provide it), then the
gates, the benchmarks and the report within ``--budget-s``. See the package docstring."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

from ..machine import gpu_names
from ..providers_measure import file_listing
from .gates import anchor_texts, check_model
from .report import anchor, benchmarks, write_report
from .run import DRY, BudgetExceeded, Run
from .st_anchor import st_anchor


def child_env() -> tuple[dict[str, str], list[str]]:
    """Environment for the subprocesses: this one's (``scripts/gpu_check.py`` put the checkout's folders on
    ``PYTHONPATH`` where a package is not installed) plus the CUDA, cuDNN and TensorRT libraries that pip
    wheels (torch's nvidia-*, tensorrt-libs) put in site-packages, which ONNX Runtime's CUDA/TensorRT
    providers dlopen but the loader does not search by itself."""
    env = dict(os.environ)
    notes = []
    if (spec := importlib.util.find_spec("embedrt")) is not None and spec.origin:
        notes.append(f"embedrt from {Path(spec.origin).parent}")
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
    docs = "see the docstring of benchmarks/gpu_check for carrying files to a machine without a registry"
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
    checkout = "run scripts/gpu_check.py, which puts this checkout's folder of a package that is not installed on " \
        "PYTHONPATH"
    for module, how in (("numpy", "pip install --no-deps a numpy wheel"),
                        ("tokenizers", "carry the tokenizers wheel (~3 MB) and pip install --no-deps it"),
                        ("onnx", "carry the onnx wheel and pip install --no-deps it (embedrt_export, whose fidelity "
                                 "measure the parity gates and benchmarks use, imports it)"),
                        ("embedrt", checkout), ("embedrt_export", checkout), ("embedrt_dev", checkout)):
        if importlib.util.find_spec(module) is None:
            missing.append(f"python module {module} missing: {how}")
    if importlib.util.find_spec("matplotlib") is None:
        run.log("matplotlib missing: benchmarks run with --no-plot (no providers.png)")
        run.record["no_plot"] = True

    if importlib.util.find_spec("embedrt_dev") is None or importlib.util.find_spec("embedrt") is None:
        return missing, {}, trt_skip  # the corpus and the models are found through them
    from embedrt_dev.fetch.items import corpus_path, model_dir

    corpus = args.corpus or corpus_path("fortunes")
    if not corpus.is_file():
        missing.append(f"corpus {corpus} missing: carry the fetched corpus (corpora/fortunes.jsonl under the cache, "
                       f"18 MB) and pass --corpus, or run `python scripts/fetch_models.py fortunes` where a registry "
                       "is reachable")
    args.corpus = corpus

    artifacts: dict[str, Path] = {}
    exporter_ok = all(importlib.util.find_spec(m) is not None
                      for m in ("torch", "sentence_transformers", "embedrt_export"))
    for model in args.models:
        given = args.artifacts / model if args.artifacts else None
        source = model_dir(model)
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
                           f"elsewhere (`embedrt export {source} -o DIR/{model}`), carry "
                           f"DIR over and pass --artifacts DIR ({docs})")
    return missing, artifacts, trt_skip


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command line; paths are made absolute (the children run in the repository root)."""
    parser = argparse.ArgumentParser(prog="gpu_check.py", description="The prepared check for a machine with one "
                                     "NVIDIA GPU: parity, TensorRT engine cache, benchmarks.")
    parser.add_argument("results", type=Path, help="folder for every output (created)")
    parser.add_argument("--models", default="all-MiniLM-L6-v2,all-mpnet-base-v2", help="comma-separated")
    parser.add_argument("--artifacts", type=Path, help="folder holding a pre-exported artifact per model (DIR/<model>)")
    parser.add_argument("--corpus", type=Path, help="fortunes.jsonl (default: the fetched corpus)")
    parser.add_argument("--budget-s", type=float, default=420.0, help="hard bound on the whole run")
    parser.add_argument("--parity-texts", type=int, help="texts per model for gate (a) (default 500, dry run 24)")
    parser.add_argument("--anchor-model", default="all-mpnet-base-v2", help="model compared with NVIDIA's anchor")
    parser.add_argument("--require-tensorrt", action="store_true", help="a skipped TensorRT part fails the run")
    parser.add_argument("--st-folders", type=Path, help="folder of sentence-transformers model folders (DIR/<model>) "
                        "for (e), the side-by-side with sentence-transformers torch fp16 (default: the cache's "
                        "models/)")
    parser.add_argument("--allow-cpu-dry-run", action="store_true",
                        help="no GPU: run the flow on the CPU provider with tiny sizes, labelled DRY RUN")
    args = parser.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    args.results = args.results.absolute()
    args.artifacts = args.artifacts.absolute() if args.artifacts else None
    args.corpus = args.corpus.absolute() if args.corpus else None
    args.parity_texts = args.parity_texts or (24 if args.allow_cpu_dry_run else 500)
    if args.st_folders is None:
        from embedrt.paths import cache_dir

        args.st_folders = cache_dir() / "models"
    args.st_folders = args.st_folders.absolute()
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
        run.record["gpus"] = gpu_names()
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

                export(source, artifacts[model], name=model, variants=("fp16",))
            for model, artifact in artifacts.items():
                check_model(run, model, artifact, trt_skip)
            long_texts = run.out / "work" / "st-anchor-texts.json"
            long_texts.write_text(json.dumps(anchor_texts(args.corpus, 32 if run.dry else 1024)), encoding="utf-8")
            for model, artifact in artifacts.items():
                st_anchor(run, model, artifact, long_texts)
            benchmarks(run, artifacts)
        except BudgetExceeded as exc:
            run.log(f"stopped: {exc}")
            status = f"INCOMPLETE: {exc}"
        finally:
            signal.alarm(0)
            run.record["trt_cache"] = file_listing(str(run.scratch / "trt"))
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


