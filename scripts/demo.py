"""Encode a few sentences with an embedrt artifact and print their similarity matrix (no torch involved)."""

import sys

import embedrt
import numpy as np

sentences = [
    "The new movie is awesome",
    "The new movie is so great",
    "A man is playing a guitar",
    "Ein Mann spielt Gitarre",
    "The cat sits outside",
]
model = embedrt.SentenceTransformer(sys.argv[1])
embeddings = model.encode(sentences)
print(model)
info = model.engine.info
print(f"variant: {info.variant} on {info.provider}, {info.threads} threads ({info.reasons[-1]})")
figures = model.manifest.towers["text"].variants[info.variant].parity
print("measured against sentence-transformers at export: " + ", ".join(
    f"{key} {figures[key]:.4g}" for key in ("max_one_minus_cos", "spearman", "top10_overlap", "batch_one_minus_cos",
                                            "n_texts") if key in figures))
print(f"embeddings: {embeddings.shape} {embeddings.dtype}")
np.set_printoptions(precision=3, suppress=True)
print(model.similarity(embeddings, embeddings))
