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


def test_export_via_cli_and_bad_source(model_path, tmp_path, capsys):
    out = tmp_path / "l3"
    assert main(["export", str(model_path("paraphrase-MiniLM-L3-v2")), "-o", str(out)]) == 0
    assert "parity vs sentence-transformers: text max_one_minus_cos" in capsys.readouterr().out
    assert embedrt.SentenceTransformer(out).encode("hi").shape == (384,)
    assert main(["export", str(tmp_path / "missing"), "-o", str(tmp_path / "x")]) == 2
    assert "not in the embedrt catalogue" in capsys.readouterr().err
    assert main(["export", "distiluse-base-multilingual-cased", "-o", str(tmp_path / "x")]) == 2
    assert "did you mean distiluse-base-multilingual-cased-v2" in capsys.readouterr().err
