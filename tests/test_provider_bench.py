"""``python -m benchmarks.providers`` and scripts/gpu_check.py, run as their users run them, on a real small model.

On a CPU-only onnxruntime the CUDA and TensorRT rows must be listed as absent with the reason, and
the GPU check must refuse to run (or, with --allow-cpu-dry-run, run and say DRY RUN everywhere).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import onnxruntime
import pytest

from benchmarks.providers_matrix import plan_configs
from tests.support import ROOT, child_env

MODEL = "paraphrase-MiniLM-L3-v2"
GPU_PROVIDERS = {"cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _run(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          env=child_env())


@pytest.fixture(scope="module")
def small_artifact(exported) -> Path:
    """The exported paraphrase-MiniLM-L3-v2 (3 layers: the cheapest real transformer to time)."""
    return exported(MODEL)[0]


def test_benchmark_measures_cpu_and_lists_missing_gpu_providers(small_artifact, tmp_path):
    out = tmp_path / "bench"
    result = _run("-m", "benchmarks.providers", str(small_artifact), "--out", str(out), "--quick", "--texts", "3",
                  "--batch-sizes", "1,2", "--repeats", "1", "--devices", "cpu")
    assert result.returncode == 0, result.stderr
    data = json.loads((out / "providers.json").read_text(encoding="utf-8"))
    markdown = (out / "providers.md").read_text(encoding="utf-8")
    assert (out / "providers.png").read_bytes()[:8] == PNG_MAGIC
    assert markdown in result.stdout

    assert [g["name"] for g in data["groups"]] == ["≤16", "≤32", "≤64", "≤128", "=128"]
    assert all(g["texts"] == 3 and g["tokens"] > 0 for g in data["groups"])
    rows = {(c["device"], c["variant"]): c for c in data["configs"]}
    cpu = rows[("cpu", "fp32")]
    assert cpu["status"] == "ok" and cpu["active_providers"][0] == "CPUExecutionProvider"
    assert cpu["first_call_s"] > 0
    assert {(c["group"], c["batch_size"]) for c in cpu["cells"]} == {
        (g["name"], b) for g in data["groups"] for b in (1, 2)}
    for cell in cpu["cells"]:
        assert cell["sentences_per_s"] > 0 and cell["tokens_per_s"] >= cell["sentences_per_s"]
        if cell["batch_size"] == 1:
            assert 0 < cell["latency"]["p50_ms"] <= cell["latency"]["p99_ms"]
    assert "| CPU | fp32 | ok |" in markdown and "| reference |" in markdown

    available = onnxruntime.get_available_providers()
    for device, provider in GPU_PROVIDERS.items():
        for row in (c for c in data["configs"] if c["device"] == device):
            if provider in available:
                assert row["status"] in ("not selected", "absent"), row
            else:
                assert row["status"] == "absent" and f"{provider} not in this onnxruntime build" in row["reason"]
                assert "cells" not in row
                assert f"absent: {provider} not in this onnxruntime build" in markdown


def test_every_manifest_variant_gets_a_row():
    variants = ["fp32", "optimized", "int8_avx512_vnni", "int8_quantum", "fp16", "bf16"]
    configs = plan_configs(variants, ["CPUExecutionProvider"], ("cpu", "cuda", "tensorrt"))
    rows = {(c.device, c.variant): c for c in configs}
    assert {v for d, v in rows if d == "cpu"} == {"fp32", "optimized", "int8_avx512_vnni", "int8_quantum"}
    assert all(rows[("cpu", v)].status == "pending" for v in ("fp32", "optimized", "int8_avx512_vnni"))
    assert "unknown to this benchmark" in rows[("cpu", "int8_quantum")].notes[0]
    assert rows[("cuda", "fp16")].status == "absent" and "CUDAExecutionProvider" in rows[("cuda", "fp16")].reason
    assert rows[("tensorrt", "fp32")].label == "fp16 engine from fp32"
    assert rows[("-", "bf16")].status == "not benchmarked"
    bare = {(c.device, c.variant): c for c in plan_configs(["fp32"], ["CPUExecutionProvider"], ("cpu",))}
    assert "no int8* variant" in bare[("cpu", "int8*")].reason and not bare[("cpu", "int8*")].notes


@pytest.mark.skipif("CUDAExecutionProvider" in onnxruntime.get_available_providers(),
                    reason="checks the behaviour without a GPU build of onnxruntime")
def test_gpu_check_refuses_without_cuda(tmp_path):
    result = _run("scripts/gpu_check.py", str(tmp_path / "results"), timeout=60)
    assert result.returncode == 2
    assert "no CUDAExecutionProvider: this onnxruntime" in result.stdout
    assert "--allow-cpu-dry-run" in result.stdout
    missing = json.loads((tmp_path / "results" / "gpu_check.json").read_text(encoding="utf-8"))["missing"]
    assert missing[0].startswith("no CUDAExecutionProvider")


def test_gpu_check_dry_run_is_labelled(small_artifact, tmp_path):
    out = tmp_path / "results"
    result = _run("scripts/gpu_check.py", str(out), "--allow-cpu-dry-run", "--models", MODEL, "--artifacts",
                  str(small_artifact.parent), "--anchor-model", MODEL, "--parity-texts", "8", "--budget-s", "100")
    assert result.returncode == 0, result.stdout + result.stderr
    summary = (out / "gpu_check.md").read_text(encoding="utf-8")
    assert summary.startswith("# embedrt GPU check — DRY RUN")
    assert "**Result: DRY RUN PASS**" in summary
    data = json.loads((out / "gpu_check.json").read_text(encoding="utf-8"))
    assert data["dry_run"] is True
    gates = data["gates"]
    assert {g["result"] for g in gates} == {"PASS", "N/A (DRY RUN)"}
    # CPU stand-ins never count as TensorRT evidence
    assert all(g["result"] == "N/A (DRY RUN)" for g in gates if g["check"].startswith("(b)"))
    assert sum(g["check"].startswith("(a)") for g in gates) == 3
    # (e): embedrt against sentence-transformers on the same texts at sequence 128 (torch fp32 on the CPU here)
    assert sum(g["check"].startswith("(e)") for g in gates) == 3
    assert "## (e) embedrt vs sentence-transformers torch fp16" in summary
    st = data["st_anchor"][MODEL]
    assert st["embedrt_end_to_end"] > 0 and st["st_forward"] > 0 and st["max_one_minus_cos_vs_st"] < 1e-5
    bench = (out / "bench" / MODEL / "providers.md").read_text(encoding="utf-8")
    assert "DRY RUN" in bench.splitlines()[2]
    assert "(DRY RUN: CPU, not a GPU number)" in summary
    assert data["anchor"]["rows"] and all(r["ratio_to_anchor"] is None for r in data["anchor"]["rows"])
    assert (out / "gpu_check.log").is_file() and (out / "logs" / f"{MODEL}-trt-second.log").is_file()
