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
print(f"embeddings: {embeddings.shape} {embeddings.dtype}")
np.set_printoptions(precision=3, suppress=True)
print(model.similarity(embeddings, embeddings))
