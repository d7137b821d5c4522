"""Similarity and search helpers in numpy, with sentence-transformers' ``util`` semantics."""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .model import SentenceTransformer

ArrayLike = np.ndarray | list

_EPS = 1e-12  # the eps of torch.nn.functional.normalize, which sentence-transformers uses


def _as_2d(a: ArrayLike, name: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.dtype == object or not np.issubdtype(arr.dtype, np.number):
        raise TypeError(f"{name}: expected a numeric array of embeddings, got dtype {arr.dtype}")
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected 1-D or 2-D embeddings, got shape {arr.shape}")
    return arr if np.issubdtype(arr.dtype, np.floating) else arr.astype(np.float32)


def normalize_embeddings(embeddings: ArrayLike) -> np.ndarray:
    """L2-normalize rows (zero rows stay zero, as in torch's ``normalize``)."""
    arr = _as_2d(embeddings, "embeddings")
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    return arr / np.maximum(norms, _EPS)


def cos_sim(a: ArrayLike, b: ArrayLike) -> np.ndarray:
    """Cosine similarity matrix ``[len(a), len(b)]``."""
    return normalize_embeddings(_as_2d(a, "a")) @ normalize_embeddings(_as_2d(b, "b")).T


def dot_score(a: ArrayLike, b: ArrayLike) -> np.ndarray:
    """Dot-product matrix ``[len(a), len(b)]``."""
    return _as_2d(a, "a") @ _as_2d(b, "b").T


def euclidean_sim(a: ArrayLike, b: ArrayLike) -> np.ndarray:
    """Negative Euclidean distance matrix."""
    a2, b2 = _as_2d(a, "a"), _as_2d(b, "b")
    return -np.sqrt(np.maximum(((a2[:, None, :] - b2[None, :, :]) ** 2).sum(-1), 0))


def manhattan_sim(a: ArrayLike, b: ArrayLike) -> np.ndarray:
    """Negative Manhattan distance matrix."""
    a2, b2 = _as_2d(a, "a"), _as_2d(b, "b")
    return -np.abs(a2[:, None, :] - b2[None, :, :]).sum(-1)


SIMILARITY_FUNCTIONS: dict[str, Callable[[ArrayLike, ArrayLike], np.ndarray]] = {
    "cosine": cos_sim,
    "dot": dot_score,
    "euclidean": euclidean_sim,
    "manhattan": manhattan_sim,
}


def _top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Largest ``k`` per row, sorted descending (indices, values)."""
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k] if k < scores.shape[1] else np.tile(
        np.arange(scores.shape[1]), (scores.shape[0], 1))
    vals = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-vals, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(vals, order, axis=1)


def semantic_search(query_embeddings: ArrayLike, corpus_embeddings: ArrayLike, query_chunk_size: int = 100,
                    corpus_chunk_size: int = 500000, top_k: int = 10,
                    score_function: Callable[[ArrayLike, ArrayLike], np.ndarray] = cos_sim,
                    ) -> list[list[dict[str, int | float]]]:
    """For each query, the ``top_k`` corpus entries as ``{"corpus_id", "score"}``, best first."""
    queries = _as_2d(query_embeddings, "query_embeddings")
    corpus = _as_2d(corpus_embeddings, "corpus_embeddings")
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    results: list[list[tuple[float, int]]] = [[] for _ in range(len(queries))]
    for c0 in range(0, len(corpus), corpus_chunk_size):
        chunk = corpus[c0:c0 + corpus_chunk_size]
        for q0 in range(0, len(queries), query_chunk_size):
            scores = score_function(queries[q0:q0 + query_chunk_size], chunk)
            idx, vals = _top_k(scores, top_k)
            for heap, ids, sc in zip(results[q0:q0 + query_chunk_size], idx.tolist(), vals.tolist()):
                for s, i in zip(sc, ids):
                    item = (s, i + c0)
                    if len(heap) < top_k:
                        heapq.heappush(heap, item)
                    else:
                        heapq.heappushpop(heap, item)
    return [
        [{"corpus_id": i, "score": s} for s, i in sorted(heap, key=lambda x: x[0], reverse=True)]
        for heap in results
    ]


def paraphrase_mining_embeddings(embeddings: ArrayLike, query_chunk_size: int = 5000,
                                 corpus_chunk_size: int = 100000, max_pairs: int = 500000, top_k: int = 100,
                                 score_function: Callable[[ArrayLike, ArrayLike], np.ndarray] = cos_sim,
                                 ) -> list[list[float | int]]:
    """All-pairs mining: ``[score, i, j]`` with ``i < j``, highest score first, at most ``max_pairs``."""
    emb = _as_2d(embeddings, "embeddings")
    pairs: list[tuple[float, int, int]] = []
    queued: set[tuple[int, int]] = set()
    min_score = float("-inf")
    for q0 in range(0, len(emb), query_chunk_size):
        query = emb[q0:q0 + query_chunk_size]
        best_idx = best_val = None
        for c0 in range(0, len(emb), corpus_chunk_size):
            idx, vals = _top_k(score_function(query, emb[c0:c0 + corpus_chunk_size]), top_k + 1)
            idx = idx + c0
            if best_idx is None:
                best_idx, best_val = idx, vals
            else:
                merged_idx = np.concatenate([best_idx, idx], axis=1)
                pos, best_val = _top_k(np.concatenate([best_val, vals], axis=1), top_k + 1)
                best_idx = np.take_along_axis(merged_idx, pos, axis=1)
        for row, (ids, vals) in enumerate(zip(best_idx.tolist(), best_val.tolist())):
            i = q0 + row
            neighbours = [(j, s) for j, s in zip(ids, vals) if j != i][:top_k]
            for j, s in neighbours:
                if s <= min_score:
                    continue
                pair = (i, j) if i < j else (j, i)
                if pair in queued:
                    continue
                queued.add(pair)
                if len(pairs) < max_pairs:
                    heapq.heappush(pairs, (s, *pair))
                else:
                    evicted = heapq.heappushpop(pairs, (s, *pair))
                    queued.discard(evicted[1:])
                    min_score = evicted[0]
    return sorted(([s, i, j] for s, i, j in pairs), key=lambda x: x[0], reverse=True)


def paraphrase_mining(model: SentenceTransformer, sentences: list[str], show_progress_bar: bool = False,
                      batch_size: int = 32, query_chunk_size: int = 5000, corpus_chunk_size: int = 100000,
                      max_pairs: int = 500000, top_k: int = 100,
                      score_function: Callable[[ArrayLike, ArrayLike], np.ndarray] = cos_sim,
                      ) -> list[list[float | int]]:
    """Encode ``sentences`` with ``model`` and mine the most similar pairs."""
    embeddings = model.encode(sentences, show_progress_bar=show_progress_bar, batch_size=batch_size)
    return paraphrase_mining_embeddings(embeddings, query_chunk_size, corpus_chunk_size, max_pairs, top_k,
                                        score_function)


PRECISIONS = ("float32", "int8", "uint8", "binary", "ubinary")


def quantize_embeddings(embeddings: ArrayLike, precision: str, ranges: np.ndarray | None = None,
                        calibration_embeddings: np.ndarray | None = None) -> np.ndarray:
    """Quantize float embeddings to int8/uint8 buckets or packed bits, as sentence-transformers does.

    For int8/uint8 the per-dimension ranges come from ``ranges``, else ``calibration_embeddings``,
    else the embeddings themselves (which needs more than one embedding).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not supported; use one of {PRECISIONS}")
    emb = _as_2d(embeddings, "embeddings")
    if not np.issubdtype(emb.dtype, np.floating):
        raise TypeError(f"embeddings to quantize must be float, got {emb.dtype}")
    if precision == "float32":
        return emb.astype(np.float32)
    if precision.endswith("int8"):
        if ranges is None:
            calibration = emb if calibration_embeddings is None else _as_2d(calibration_embeddings, "calibration")
            if calibration.shape[0] < 2:
                raise ValueError(f"cannot compute {precision} ranges from a single embedding; pass ranges= "
                                 "or calibration_embeddings=")
            ranges = np.vstack((calibration.min(axis=0), calibration.max(axis=0)))
        ranges = np.asarray(ranges, dtype=np.float32)
        starts = ranges[0]
        steps = (ranges[1] - starts) / 255
        steps = np.where(steps == 0, 1, steps)
        q = np.clip(np.floor((emb - starts) / steps), 0, 255)
        return q.astype(np.uint8) if precision == "uint8" else (q - 128).astype(np.int8)
    packed = np.packbits(emb > 0, axis=-1)
    return (packed - 128).astype(np.int8) if precision == "binary" else packed
