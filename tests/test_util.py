"""``embedrt.util`` gives sentence-transformers' ``util`` results on the same embeddings."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from embedrt import util
from sentence_transformers import util as st_util


@pytest.fixture(scope="module")
def emb():
    rng = np.random.default_rng(7)
    base = rng.normal(size=(40, 16)).astype(np.float32)
    # near-duplicates make paraphrase mining meaningful
    return np.concatenate([base, base[:10] + 0.05 * rng.normal(size=(10, 16)).astype(np.float32)])


def test_similarity_matrices(emb):
    a, b = emb[:7], emb[7:]
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    assert np.allclose(util.cos_sim(a, b), st_util.cos_sim(ta, tb).numpy(), atol=1e-6)
    assert np.allclose(util.dot_score(a, b), st_util.dot_score(ta, tb).numpy(), atol=1e-5)
    assert np.allclose(util.euclidean_sim(a, b), st_util.euclidean_sim(ta, tb).numpy(), atol=1e-4)
    assert np.allclose(util.manhattan_sim(a, b), st_util.manhattan_sim(ta, tb).numpy(), atol=1e-4)
    assert util.cos_sim(a[0], b).shape == (1, len(b))


@pytest.mark.parametrize("top_k, chunk", [(1, 100), (5, 3), (10, 500000), (100, 7)])
@pytest.mark.parametrize("score", ["cos", "dot"])
def test_semantic_search(emb, top_k, chunk, score):
    q, c = emb[:12], emb[12:]
    ours_fn = util.cos_sim if score == "cos" else util.dot_score
    st_fn = st_util.cos_sim if score == "cos" else st_util.dot_score
    ours = util.semantic_search(q, c, top_k=top_k, corpus_chunk_size=chunk, query_chunk_size=5, score_function=ours_fn)
    ref = st_util.semantic_search(torch.from_numpy(q), torch.from_numpy(c), top_k=top_k, corpus_chunk_size=chunk,
                                  query_chunk_size=5, score_function=st_fn)
    assert [[h["corpus_id"] for h in r] for r in ours] == [[h["corpus_id"] for h in r] for r in ref]
    assert np.allclose([[h["score"] for h in r] for r in ours], [[h["score"] for h in r] for r in ref], atol=1e-5)


@pytest.mark.parametrize("kwargs", [{}, {"top_k": 3}, {"max_pairs": 5},
                                    {"query_chunk_size": 7, "corpus_chunk_size": 9}])
def test_paraphrase_mining_embeddings(emb, kwargs):
    ours = util.paraphrase_mining_embeddings(emb, **kwargs)
    ref = st_util.paraphrase_mining_embeddings(torch.from_numpy(emb), **kwargs)
    assert [(i, j) for _, i, j in ours] == [(i, j) for _, i, j in ref]
    assert np.allclose([s for s, _, _ in ours], [s for s, _, _ in ref], atol=1e-5)


def test_paraphrase_mining_with_model(minilm_artifact, reference_model):
    import embedrt

    sentences = ["The cat sits outside", "A man is playing guitar", "I love pasta", "The new movie is awesome",
                 "The cat plays in the garden", "A woman watches TV", "The new movie is so great",
                 "Do you like pizza?"]
    ours = util.paraphrase_mining(embedrt.SentenceTransformer(minilm_artifact), sentences)
    ref = st_util.paraphrase_mining(reference_model("all-MiniLM-L6-v2"), sentences)
    assert [(i, j) for _, i, j in ours] == [(i, j) for _, i, j in ref]
    assert np.allclose([s for s, _, _ in ours], [s for s, _, _ in ref], atol=1e-5)


def test_bad_embeddings_are_refused():
    with pytest.raises(TypeError, match="numeric"):
        util.cos_sim(["a", "b"], [[1.0, 2.0]])
    with pytest.raises(ValueError, match="shape"):
        util.cos_sim(np.zeros((2, 2, 2)), np.zeros((2, 2)))
