"""How close one set of embeddings is to another: the measures the export gates, tests and benchmarks share.

Every figure compares a candidate (an embedrt graph variant) with a reference (sentence-transformers'
own embeddings of the same texts), never with embedrt's own earlier output.
"""

from __future__ import annotations

import numpy as np


def one_minus_cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise 1 − cosine in float64 (float32 rounding would hide or invent differences).

    Identical rows score 0 even where cosine is undefined (all-zero rows: a text with no known word;
    ``-inf`` rows: max pooling over nothing); any other undefined value scores 1, never NaN, so a
    threshold check cannot pass by accident.
    """
    a64, b64 = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    with np.errstate(all="ignore"):
        num = (a64 * b64).sum(1)
        den = np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1)
        out = 1.0 - num / den
    out = np.where(np.all(a64 == b64, axis=1), 0.0, out)
    return np.where(np.isfinite(out), out, 1.0)


def _ranks(values: np.ndarray) -> np.ndarray:
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[np.argsort(values, kind="stable")] = np.arange(len(values))
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (cosine similarities are continuous, so ties are ignored)."""
    return float(np.corrcoef(_ranks(a), _ranks(b))[0, 1])


def unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1, in float64 (zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-300)


def ranking(reference: np.ndarray, candidate: np.ndarray, *, n_pairs: int = 2000, n_queries: int = 200,
            corpus_size: int = 1000, top_k: int = 10, seed: int = 0) -> dict[str, float]:
    """Whether ``candidate`` ranks like ``reference`` (rows: the same texts).

    ``spearman``: rank correlation of the cosine similarities of ``n_pairs`` fixed random pairs of
    distinct texts; ``top10_overlap``: the mean share of each query's top-``top_k`` hits that agree, the
    first ``n_queries`` texts searching the (up to) ``corpus_size`` texts after them.
    """
    n = len(reference)
    n_queries = min(n_queries, n // 5)
    if n_queries < 1:
        raise ValueError(f"need at least 5 texts to measure ranking, got {n}")
    ref, got = unit(reference), unit(candidate)
    rng = np.random.default_rng(seed)
    left = rng.integers(0, n, n_pairs)
    right = rng.integers(0, n - 1, n_pairs)
    right += right >= left  # distinct texts, still uniform
    rho = spearman((ref[left] * ref[right]).sum(1), (got[left] * got[right]).sum(1))
    queries, corpus = slice(0, n_queries), slice(n_queries, n_queries + corpus_size)
    k = min(top_k, len(ref[corpus]))
    ref_top = np.argsort(-(ref[queries] @ ref[corpus].T), axis=1)[:, :k]
    got_top = np.argsort(-(got[queries] @ got[corpus].T), axis=1)[:, :k]
    overlap = float(np.mean([len(set(r) & set(g)) / k for r, g in zip(ref_top, got_top)]))
    return {"spearman": rho, "top10_overlap": overlap}
