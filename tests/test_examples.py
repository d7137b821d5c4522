"""examples/: the public tokenizer + engine, without the facade, give SentenceTransformer.encode's bits."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import embedrt
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("variant", ["fp32", "fp32_fused", "int8_rowwise_fused"])
def test_engine_example_equals_encode(l3_with_fused, fortunes, tmp_path, variant):
    script = ROOT / "examples" / "encode_with_engine.py"
    assert len(script.read_text().splitlines()) <= 30
    texts = [r["text"].replace("\n", " ") for r in fortunes[::53][:1000]]
    source = tmp_path / "texts.txt"
    source.write_text("\n".join(texts) + "\n", encoding="utf-8")
    run = subprocess.run([sys.executable, str(script), str(l3_with_fused), str(source), variant],
                         capture_output=True, check=True)
    got = np.load(io.BytesIO(run.stdout))
    want = embedrt.SentenceTransformer(l3_with_fused, variant=variant).encode(texts)
    assert got.shape == (1000, 384) and np.array_equal(got, want)
