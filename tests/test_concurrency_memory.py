"""The engine under load: thread safety, batch invariance, bounded memory, streaming."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor

import embedrt
import numpy as np
import pytest
from embedrt_export.fidelity import one_minus_cos


def test_eight_threads_give_exactly_the_serial_results(minilm_artifact, corpus_1000):
    model = embedrt.SentenceTransformer(minilm_artifact)
    jobs = [corpus_1000[i * 40:(i + 1) * 40] for i in range(8)]
    serial = [model.encode(job, batch_size=16) for job in jobs]
    with ThreadPoolExecutor(max_workers=8) as pool:
        parallel = list(pool.map(lambda job: model.encode(job, batch_size=16), jobs))
    for a, b in zip(serial, parallel):
        assert np.array_equal(a, b)


def test_forked_child_encodes(minilm_artifact, corpus_1000, tmp_path):
    """A process forked after the model has encoded (multiprocessing, pre-forking servers) encodes too:
    it inherits the batch workers' pool but not their threads, so it must make its own."""
    model = embedrt.SentenceTransformer(minilm_artifact, workers=2)
    texts = corpus_1000[:100]
    expected = model.encode(texts)
    out = tmp_path / "child.npy"
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        code = 1
        try:
            np.save(out, model.encode(texts))
            code = 0
        finally:
            os._exit(code)
    deadline = time.monotonic() + 120
    while (status := os.waitpid(pid, os.WNOHANG))[0] == 0:
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("the forked child hung in encode")
        time.sleep(0.05)
    assert os.waitstatus_to_exitcode(status[1]) == 0
    assert np.array_equal(np.load(out), expected)


def test_batch_invariance_fp32(minilm_artifact, corpus_1000):
    model = embedrt.SentenceTransformer(minilm_artifact)
    texts = corpus_1000[:64]
    alone = np.stack([model.encode(t) for t in texts[:16]])
    for batch_size in (1, 7, 32, 64):
        together = model.encode(texts, batch_size=batch_size)[:16]
        assert one_minus_cos(alone, together).max() <= 1e-6


def test_stream_equals_encode(minilm_artifact, corpus_1000):
    model = embedrt.SentenceTransformer(minilm_artifact)
    texts = corpus_1000[:300]
    streamed = list(model.encode_stream(iter(texts), chunk_size=64))
    assert [len(s) for s in streamed] == [64, 64, 64, 64, 44]
    assert one_minus_cos(np.concatenate(streamed), model.encode(texts)).max() <= 1e-6


def test_callers_texts_do_not_grow(minilm_artifact):
    """CPython caches a str's UTF-8 form on the str once a C library asks for it; tokenizing the
    caller's own non-ASCII texts would make every text the caller keeps carry a second copy."""
    model = embedrt.SentenceTransformer(minilm_artifact)
    texts = ["Ünïcödé texts stay as the caller made them: " + "é" * 200, "ascii text", ("pär", "pair")]
    sizes = [sys.getsizeof(t) for t in texts[:2]] + [sys.getsizeof(texts[2][0])]
    model.encode(texts[:2])
    embedrt.Tokenizer(model.tokenizer.backend, pairs=True).encode(texts)
    assert [sys.getsizeof(t) for t in texts[:2]] + [sys.getsizeof(texts[2][0])] == sizes


@pytest.mark.parametrize(("variant", "workers"), [("fp32", 1), ("fp32", 2), ("int8_rowwise_fused", None),
                                                  ("fp32_fused", None)])
def test_rss_does_not_grow_with_new_shapes(exported, fortunes, request, variant, workers):
    """RSS after 10,000 mixed-length texts stays within 10% of RSS after the first 2,000, with one
    batch in flight (fp32's default) and with two (int8_rowwise's default), and on embedrt's own
    kernels with the layers on packed rows, whose shapes change with every batch's token count
    (int8_rowwise_fused, the default on VNNI and Arm CPUs, and fp32_fused). benchmarks/soak.py runs the
    same check over 500,000 texts."""
    from embedrt_dev.corpora import sample_records

    artifact = exported("paraphrase-MiniLM-L3-v2")[0] if variant == "fp32" else \
        request.getfixturevalue("l3_with_fused")
    corpus_file = artifact.parent / f"rss_corpus_{variant}_{workers}.txt"
    texts = sample_records(fortunes, 10_000, n_long=250)
    random.Random(0).shuffle(texts)  # mixed lengths throughout, as in a real stream
    corpus_file.write_text("\n".join(t.replace("\n", " ") for t in texts), encoding="utf-8")
    script = textwrap.dedent(f"""
        import psutil, embedrt
        texts = open({str(corpus_file)!r}, encoding="utf-8").read().split("\\n")
        model = embedrt.SentenceTransformer({str(artifact)!r}, variant={variant!r}, workers={workers})
        proc = psutil.Process()
        model.encode(texts[:2000], batch_size=32)
        first = proc.memory_info().rss
        for start in range(2000, len(texts), 2000):
            model.encode(texts[start:start + 2000], batch_size=32)
        print(first, proc.memory_info().rss)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    first, last = map(int, out.stdout.split())
    print(f"\nRSS after 2,000: {first / 2**20:.0f} MiB; after 10,000: {last / 2**20:.0f} MiB "
          f"({(last / first - 1) * 100:+.1f}%)")
    assert last <= first * 1.10
