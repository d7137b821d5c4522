"""``python -m benchmarks.cpu``, run as its users run it, on a real small model.

Only the paths of the project's venv run here (sentence-transformers torch and embedrt): the anchors
venv is pointed at a folder that does not exist, so those rows must say how to create it. No
assertion is about speed; only that every number is there and that fp32 is faithful.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks import cpu_ceiling, cpu_report
from tests.support import ROOT, child_env

MODEL = "paraphrase-MiniLM-L3-v2"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ANCHOR_ROWS = ("st-onnx", "st-onnx-O3", "st-onnx-qint8", "fastembed")


@pytest.fixture(scope="module")
def artifact_with_int8(exported, tmp_path_factory) -> Path:
    """The small model's artifact plus an ``int8_avx512_vnni`` entry (the fp32 graph under that name): the
    benchmark must pick variants up by name from the manifest."""
    source = exported(MODEL)[0]
    out = tmp_path_factory.mktemp("bench-artifact") / MODEL
    shutil.copytree(source, out)
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    text = manifest["towers"]["text"]
    text["variants"]["int8_avx512_vnni"] = {**text["variants"]["fp32"], "parity": {}, "precision": "int8",
                                            "devices": ["cpu"], "cpu_isa": ["avx512_vnni"]}
    (out / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return out


def test_quick_run_writes_table_json_and_chart(artifact_with_int8, tmp_path):
    out = tmp_path / "results"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.cpu", str(artifact_with_int8), "--quick", "--texts", "120",
         "--out", str(out), "--anchors-venv", str(tmp_path / "no-anchors-venv"), "--workers", "1,2"],
        capture_output=True, text=True, timeout=300, cwd=ROOT, env=child_env())
    assert result.returncode == 0, result.stderr[-3000:]
    markdown = (out / f"cpu-{MODEL}.md").read_text(encoding="utf-8")
    data = json.loads((out / f"cpu-{MODEL}.json").read_text(encoding="utf-8"))
    assert (out / f"cpu-{MODEL}.png").read_bytes()[:8] == PNG_MAGIC
    assert markdown in result.stdout

    corpus = data["corpus"]
    assert corpus["texts"] == 120 and 0 < corpus["mean_tokens"] <= corpus["p95_tokens"] <= corpus["max_seq_length"]
    assert data["flops"]["padded_tokens"] >= data["flops"]["real_tokens"] == corpus["total_tokens"]
    assert data["real_flops"]["padded_tokens"] == data["real_flops"]["real_tokens"] == corpus["total_tokens"]
    assert 0 < data["ceiling"]["real_tokens_seconds"] <= data["ceiling"]["seconds"]
    assert data["ceiling"]["gflops"] > 0 and data["ceiling"]["seconds"] > 0
    assert all(g["blas"] and g["blas"][0]["architecture"] for g in data["gemm"].values())
    backends = {g["blas"][0]["internal_api"] for g in data["gemm"].values()}
    assert "onnxruntime MLAS" in backends and len(backends) >= 2  # numpy's BLAS and ORT's own GEMM
    at_threads = [g["gflops"] for g in data["gemm"].values() if g["threads"] == data["settings"]["threads"]]
    assert data["ceiling"]["gflops"] == max(at_threads)

    rows = {r["key"]: r for r in data["paths"]}
    assert list(rows) == ["st-torch", *ANCHOR_ROWS, "embedrt-fp32-w1", "embedrt-fp32-w2",
                          "embedrt-int8_avx512_vnni-w1", "embedrt-int8_avx512_vnni-w2"]
    assert [rows[k]["summary"]["facts"]["workers"] for k in ("embedrt-fp32-w1", "embedrt-fp32-w2")] == [1, 2]
    assert rows["embedrt-fp32-w2"]["label"] == "embedrt fp32, workers=2"
    assert not any("default" in note for note in rows["embedrt-fp32-w2"]["notes"])
    for key in ("st-torch", "embedrt-fp32-w1", "embedrt-int8_avx512_vnni-w2"):
        s = rows[key]["summary"]
        assert rows[key]["status"] == "ok", rows[key]["reason"]
        assert 0 < s["sentences_per_s"] <= s["tokens_per_s"]
        assert s["cold_start_s"] > 0 and s["peak_rss_mb"] > 0
        assert 0 < s["fraction_of_real_ceiling"] <= s["fraction_of_ceiling"]
        assert s["ratio_to_st_torch"] > 0
        assert s["ratio_to_st_qint8"] is None  # no anchors venv, so no qint8 row to compare with
    assert rows["st-torch"]["summary"]["ratio_to_st_torch"] == 1.0
    assert rows["embedrt-fp32-w1"]["summary"]["facts"]["variant"] == "fp32"
    assert data["artifact"]["default_variant"] == "fp32"
    assert "default" in rows["embedrt-fp32-w1"]["notes"][0]  # fp32 runs one batch at a time by default
    for key in ("embedrt-fp32-w1", "embedrt-int8_avx512_vnni-w2"):
        fid = rows[key]["fidelity"]
        assert fid["max_one_minus_cos"] < 1e-5 and fid["spearman"] > 0.9999 and fid["top_k_overlap"] > 0.95
        assert fid["pairs"] == 2000 and fid["queries"] == 24  # a fifth of the texts, as the export's gates

    for key in ANCHOR_ROWS:
        assert rows[key]["status"] == "absent" and "run benchmarks/setup_anchors.sh" in rows[key]["reason"]
        assert not rows[key]["runs"] and rows[key]["summary"] is None
    assert "| × ST torch | × ST qint8 | % of fp32 ceiling | % of real-token ceiling |" in markdown
    assert "| max 1−cos | Spearman | top-10 overlap |" in markdown
    assert "| sentence-transformers ONNX O3 | absent: run benchmarks/setup_anchors.sh" in markdown
    assert "| embedrt fp32, workers=1 | ok |" in markdown and "| reference |" in markdown


def test_ratios_pair_runs_of_the_same_cycle():
    path = [{"cycle": 0, "encode_s": 1.0}, {"cycle": 1, "encode_s": 4.0}, {"cycle": 2, "encode_s": 2.0}]
    reference = [{"cycle": 0, "encode_s": 3.0}, {"cycle": 1, "encode_s": 4.0}]  # cycle 2 did not run
    assert cpu_report.cycle_ratio(path, reference) == 2.0  # median of 3.0 and 1.0
    assert cpu_report.cycle_ratio(path, []) is None


def test_flop_count_pads_each_sorted_batch_to_its_longest():
    shape = {"hidden": 4, "layers": 2, "intermediate": 8}
    flops = cpu_ceiling.corpus_flops(np.array([3, 1, 2, 5, 5]), 2, shape)
    params = 2 * (4 * 4 * 4 + 2 * 4 * 8)
    # batches, longest first: [5, 5] → width 5, [3, 2] → 3, [1] → 1
    assert flops["linear_params"] == params
    assert flops["padded_tokens"] == 10 + 6 + 1 and flops["real_tokens"] == 16
    assert flops["linear_flops"] == 2 * params * 17
    assert flops["attention_flops"] == 4 * 4 * 2 * (2 * 25 + 2 * 9 + 1)


def test_fidelity_is_perfect_for_a_copy_and_drops_for_noise():
    rng = np.random.default_rng(1)
    reference = rng.standard_normal((400, 32)).astype(np.float32)
    same = cpu_report.fidelity(reference, reference * 3.0)  # cosine ignores scale
    assert same["max_one_minus_cos"] < 1e-12 and same["spearman"] == pytest.approx(1.0)
    assert same["top_k_overlap"] == 1.0 and same["queries"] == 80 and same["k"] == 10
    noisy = cpu_report.fidelity(reference, reference + rng.standard_normal(reference.shape).astype(np.float32))
    assert noisy["max_one_minus_cos"] > 0.1 and noisy["spearman"] < 0.99 and noisy["top_k_overlap"] < 0.9


def test_workers_script_times_each_setting_in_fresh_processes(exported):
    artifact, _ = exported(MODEL)
    result = subprocess.run([sys.executable, "-m", "benchmarks.workers", str(artifact), "--texts", "40",
                             "--cycles", "1"], capture_output=True, text=True, timeout=300, cwd=ROOT, env=child_env())
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert len(lines) == 2, result.stdout
    assert lines[0].startswith("fp32") and "workers=1 (2 thread(s) each)" in lines[0]
    assert "x workers=1 1.000" in lines[0]
    assert "workers=2 (1 thread(s) each)" in lines[1]
