"""The ``embedrt`` command: export, info, encode."""

from __future__ import annotations

import subprocess
import sys

import embedrt
import numpy as np
from embedrt.cli import main


def test_info_prints_key_facts_and_parity(minilm_artifact, capsys):
    assert main(["info", str(minilm_artifact), "--verify"]) == 0
    out = capsys.readouterr().out
    for needle in ("all-MiniLM-L6-v2", "384", "cosine", "max_seq_length      256", "max_one_minus_cos", "verified"):
        assert needle in out


def test_encode_lines_to_npy(minilm_artifact, tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("first line\nsecond line\n\nfourth, after an empty one\n", encoding="utf-8")
    out = tmp_path / "out.npy"
    result = subprocess.run([sys.executable, "-m", "embedrt.cli", "encode", str(minilm_artifact), "-i", str(src),
                             "-o", str(out), "--threads", "2", "--workers", "1"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    got = np.load(out)
    expected = embedrt.SentenceTransformer(minilm_artifact).encode(
        ["first line", "second line", "", "fourth, after an empty one"])
    assert got.shape == (4, 384) and np.allclose(got, expected, atol=1e-6)


def test_default_export_is_the_fast_one_and_needs_nothing_fetched(model_path, tmp_path, capsys, monkeypatch):
    """`embedrt export SRC -o OUT` writes every variant the runtime picks on CPU and GPU, gated on the texts
    that ship with the exporter (an empty cache proves nothing else was read); --minimal writes fp32 alone."""
    from embedrt import kernels

    source = model_path("paraphrase-MiniLM-L3-v2")
    monkeypatch.setenv("EMBEDRT_CACHE", str(tmp_path / "empty-cache"))
    out = tmp_path / "l3"
    assert main(["export", str(source), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "parity vs sentence-transformers: text max_one_minus_cos" in printed
    variants = embedrt.SentenceTransformer(out).manifest.towers["text"].variants
    fused = {"int8_rowwise_fused", "fp32_fused"} if kernels.available() else set()
    assert {"fp32", "int8_rowwise", "fp16"} | fused <= set(variants), printed
    assert variants["int8_rowwise"].parity["n_texts"] == 1500  # the bundled texts
    model = embedrt.SentenceTransformer(out)
    assert f"on this machine's CPU the runtime runs text {model.variant}" in printed
    assert model.encode("hi").shape == (384,)
    assert main(["export", str(source), "-o", str(tmp_path / "minimal"), "--minimal"]) == 0
    assert set(embedrt.SentenceTransformer(tmp_path / "minimal").manifest.towers["text"].variants) == {"fp32"}
    capsys.readouterr()
    assert main(["export", str(tmp_path / "missing"), "-o", str(tmp_path / "x")]) == 2
    assert "not in the embedrt catalogue" in capsys.readouterr().err
    assert main(["export", "distiluse-base-multilingual-cased", "-o", str(tmp_path / "x")]) == 2
    assert "did you mean distiluse-base-multilingual-cased-v2" in capsys.readouterr().err
