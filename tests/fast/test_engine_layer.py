"""The engine layer every front end stands on: load_tokenizer + load_engine, run_batch, submit, info."""

from __future__ import annotations

import embedrt
import numpy as np
import pytest
from embedrt.types import Encoded

TEXTS = ["hello world", "the quick brown fox", "a", "", "the man is eating food " * 20, "cat, dog & fox!"]


def test_tokenizer_plus_engine_equal_the_facade_bit_for_bit(tiny_artifact):
    tokenizer = embedrt.load_tokenizer(tiny_artifact)
    engine = embedrt.load_engine(tiny_artifact)
    facade = embedrt.SentenceTransformer(tiny_artifact)
    encoded = tokenizer.encode(TEXTS)
    assert np.array_equal(engine.run(encoded).sentence_embedding, facade.encode(TEXTS))
    # One planned batch, as given: the caller's order, no re-planning.
    batch = encoded.select([4, 0, 2])
    out = engine.run_batch(batch, outputs=("sentence_embedding", "token_embeddings"))
    assert np.array_equal(out.sentence_embedding, facade.encode([TEXTS[4], TEXTS[0], TEXTS[2]]))
    assert [t.shape for t in out.token_embeddings] == [(len(i), 8) for i in batch.ids]
    assert np.array_equal(engine.submit(batch).result().sentence_embedding, out.sentence_embedding)


def test_engine_info_says_what_a_batcher_needs(tiny_artifact):
    info = embedrt.load_engine(tiny_artifact, threads=1).info
    assert (info.model, info.tower, info.variant, info.provider) == ("tiny", "text", "fp32", "CPUExecutionProvider")
    assert (info.threads, info.workers, info.packed_rows, info.max_seq_length) == (1, 1, False, 32)
    assert info.max_batch_tokens == 1024 and info.max_batch_size is None and info.dimension == 8
    assert info.digest == embedrt.Artifact(tiny_artifact).digest and info.reasons


def test_plan_respects_the_token_budget_and_keeps_every_text(tiny_artifact):
    engine = embedrt.load_engine(tiny_artifact, max_batch_tokens=40)
    lengths = np.array([30, 3, 12, 12, 5, 30, 1])
    plan = engine.plan(lengths, batch_size=4)
    assert sorted(np.concatenate(plan).tolist()) == list(range(7))
    assert all(len(b) * lengths[b].max() <= 40 or len(b) == 1 for b in plan)
    assert [int(lengths[b[0]]) for b in plan] == sorted((int(lengths[b[0]]) for b in plan), reverse=True)


def test_encoded_select_and_concat():
    a = Encoded(ids=[np.array([1, 2]), np.array([3])], type_ids=[np.zeros(2, int), np.zeros(1, int)],
                truncated=np.array([False, True]))
    b = Encoded(ids=[np.array([4, 5, 6])], type_ids=[np.zeros(3, int)], truncated=np.array([False]))
    both = Encoded.concat([a, b])
    assert [x.tolist() for x in both.ids] == [[1, 2], [3], [4, 5, 6]] and both.truncated.tolist() == [0, 1, 0]
    assert both.select([2, 0]).lengths().tolist() == [3, 2] and both.select([1]).truncated.tolist() == [True]


def test_tokenizer_reports_truncation(tiny_artifact):
    tokenizer = embedrt.load_tokenizer(tiny_artifact)
    encoded = tokenizer.encode(["short", "word " * 40, "word " * 400])
    assert encoded.truncated.tolist() == [False, True, True]
    assert encoded.lengths().tolist()[1:] == [32, 32]


def test_prompts_and_pairs_are_the_tokenizers(tiny_artifact, tmp_path):
    import tiny

    tokenizer = embedrt.load_tokenizer(tiny_artifact)
    with_prompt = tokenizer.encode(["cat"], prompt_name="query")
    assert with_prompt.ids[0].tolist() == tokenizer.encode(["query: cat"]).ids[0].tolist()
    with pytest.raises(ValueError, match="prompt_name 'doc' not found"):
        tokenizer.encode(["cat"], prompt_name="doc")
    with pytest.raises(TypeError, match=r"sentences\[1\] is a pair .* single texts"):
        tokenizer.encode(["cat", ["title", "text"]])
    paired = embedrt.load_tokenizer(tiny.build(tmp_path / "pairs", pairs=True))
    assert paired.encode([("cat", "dog")]).type_ids[0].tolist() == [0, 0, 0, 1, 1]


def test_the_types_module_imports_neither_tokenizers_nor_onnxruntime():
    import subprocess
    import sys

    code = ("import sys; import embedrt.types; "
            "bad = [m for m in ('tokenizers', 'onnxruntime') if m in sys.modules]; assert not bad, bad")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


def test_on_a_gpu_each_batch_is_tokenized_while_the_one_before_runs(tiny_artifact):
    """On a GPU, encode orders texts by character length and tokenizes batch by batch on the pipeline's
    thread (so tokenization overlaps the device); the result is bit for bit the CPU path's, in input order."""
    from dataclasses import replace

    texts = [f"{'the quick brown fox ' * (i % 7)}dog {i}" for i in range(100)]
    model = embedrt.SentenceTransformer(tiny_artifact)
    want = model.encode(texts, batch_size=16)
    tokens_want = model.encode(texts, batch_size=16, output_value="token_embeddings")
    model.engine.info = replace(model.engine.info, device="cuda")  # the GPU path, on the CPU session
    calls = []
    real = model.tokenizer.encode_checked
    model.tokenizer.encode_checked = lambda chunk: calls.append(len(chunk)) or real(chunk)
    assert np.array_equal(model.encode(texts, batch_size=16), want)
    assert calls == [16] * 6 + [4]
    tokens = model.encode(texts, batch_size=16, output_value="token_embeddings")
    assert all(np.array_equal(a, b) for a, b in zip(tokens, tokens_want))
