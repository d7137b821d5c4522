"""The fortunes corpus as the tests and benchmarks read and sample it: one module, deterministic samples.

Records are ``{"lang", "source", "text"}`` dicts, one per line of ``corpora/fortunes.jsonl`` in the cache
(``python scripts/fetch_models.py fortunes``). Every sampler is a pure function of its arguments, so a
test fixture or a benchmark gets the same texts on every machine with the same corpus.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .fetch.items import corpus_path


def fortunes_path() -> Path:
    """Where ``python scripts/fetch_models.py fortunes`` puts the corpus."""
    return corpus_path("fortunes")


def read_records(path: Path | None = None) -> list[dict]:
    """Every record of a JSON-lines corpus (default: the fetched fortunes), in file order."""
    path = Path(path) if path is not None else fortunes_path()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: corpus missing; run `python scripts/fetch_models.py fortunes` "
                                "(or pass --corpus)")
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def sample_records(records: list[dict], n: int, n_long: int = 50, join: int = 40) -> list[str]:
    """A deterministic mix: records spread evenly over every language, plus ``n_long`` texts of ``join``
    consecutive records each, far past any max_seq_length."""
    by_lang: dict[str, list[str]] = {}
    for r in records:
        by_lang.setdefault(r["lang"], []).append(r["text"])
    langs = sorted(by_lang)
    per_lang = max(1, (n - n_long) // len(langs))
    texts: list[str] = []
    for lang in langs:
        pool = by_lang[lang]
        step = max(1, len(pool) // per_lang)
        texts += pool[::step][:per_lang]
    all_texts = [r["text"] for r in records]
    stride = max(1, len(all_texts) // (n_long + 1))
    while len(texts) < n:
        start = (len(texts) * stride) % max(1, len(all_texts) - join)
        texts.append("\n".join(all_texts[start:start + join]))
    return texts[:n]


def english_sample(records: list[dict], n: int, seed: int = 0) -> list[str]:
    """``n`` English texts, a seeded random sample in random order (the CPU benchmarks' texts)."""
    texts = [r["text"] for r in records if r.get("lang") == "en"]
    picked = np.random.default_rng(seed).choice(len(texts), size=min(n, len(texts)), replace=False)
    return [texts[i] for i in picked]


def spread_english(records: list[dict], n: int) -> list[str]:
    """``n`` distinct non-blank English texts, sorted and taken at an even stride over the corpus (the
    variant gates' texts)."""
    pool = sorted({r["text"] for r in records if r["lang"] == "en" and r["text"].strip()})
    return pool[::max(1, len(pool) // n)][:n]


def long_texts(n: int, seed: int = 0) -> list[str]:
    """``n`` news-length English texts: the Lee background corpus's documents (``python scripts/fetch_models.py
    lee``; news articles of a few hundred tokens), then English fortunes joined twelve at a time, past
    any ``max_seq_length``; shuffled with ``seed``."""
    lee = corpus_path("lee") / "lee_background.cor"
    docs = [line.strip() for line in lee.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    fortunes = english_sample(read_records(), 12 * max(0, n - len(docs)), seed=seed)
    texts = docs + [" ".join(fortunes[i:i + 12]) for i in range(0, len(fortunes), 12)]
    order = np.random.default_rng(seed).permutation(len(texts))[:n]
    return [texts[i] for i in order]
