"""Encode texts with the public layers under the facade: a tokenizer and an engine, nothing else.

    python examples/encode_with_engine.py ARTIFACT TEXTS.txt [VARIANT] > embeddings.npy

What a server or a Ray actor does: tokenize, length-sort, cut batches under the engine's token
budget, run each batch, put the rows back in order. The result is SentenceTransformer.encode's.
"""

import sys

import embedrt
import numpy as np

artifact, texts_file = sys.argv[1], sys.argv[2]
variant = sys.argv[3] if len(sys.argv) > 3 else None
texts = open(texts_file, encoding="utf-8").read().splitlines()

tokenizer = embedrt.load_tokenizer(artifact)
engine = embedrt.load_engine(artifact, variant=variant)
encoded = tokenizer.encode(texts)
out = np.empty((len(texts), engine.info.dimension), dtype=np.float32)
for rows in engine.plan(encoded.lengths(), batch_size=32):
    out[rows] = engine.run_batch(encoded.select(rows)).sentence_embedding
np.save(sys.stdout.buffer, out)
