"""Write the exporter's bundled fidelity texts, ``exporter/embedrt_export/data/fidelity_texts.jsonl``.

The default ``embedrt export`` calibrates and gates its int8 and fp16 variants on real text without
fetching anything, so a few real sentences ship with the exporter. Only texts whose licence allows
that are taken from the fetched Debian fortunes corpus (``python scripts/fetch_models.py fortunes``):

* English: the classic BSD ``fortune`` files of Debian's ``fortunes`` and ``fortunes-min`` (BSD licence,
  The Regents of the University of California; the notice ships beside the texts);
* Spanish (``fortunes-es``) and Italian (``fortunes-it``): their packages declare the texts public domain.

German, Russian, Chinese and Portuguese fortunes are GPL and stay out. Run ``python -m
embedrt_dev.bundle_texts`` to rebuild the file (deterministic: the same corpus gives the same file).
"""

from __future__ import annotations

import json
import random
import re
import sys
from pathlib import Path

from embedrt.paths import cache_dir

OUT = Path(__file__).resolve().parents[3] / "exporter" / "embedrt_export" / "data" / "fidelity_texts.jsonl"
# The fortune files of 4.4BSD's fortune(6), as Debian ships them; left out: Debian's own files, and the
# files of long quotations from poems and books ("songs-poems", "literature").
BSD_FILES = ("fortunes", "people", "definitions", "cookie", "computers", "education", "food", "humorists", "law",
             "love", "magic", "medicine", "miscellaneous", "news", "pets", "platitudes", "politics", "riddles",
             "science", "sports", "wisdom", "work", "men-women", "kids")
COUNTS = {"en": 1000, "es": 250, "it": 250}


def _plain(text: str) -> bool:
    """Prose, not ASCII art or a table: mostly letters, and not too long for a sentence embedding."""
    letters = sum(c.isalpha() or c.isspace() for c in text)
    return 10 <= len(text) <= 500 and letters >= 0.85 * len(text) and not re.search(r"[|_/\\]{3,}", text)


def build(corpus: Path, out: Path = OUT, seed: int = 0) -> dict[str, int]:
    """Pick the texts from ``corpus`` (fortunes JSON lines) and write them; returns how many per language."""
    pools: dict[str, list[dict[str, str]]] = {lang: [] for lang in COUNTS}
    for line in corpus.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        lang, source, text = record["lang"], record["source"], record["text"]
        allowed = (lang == "en" and source in BSD_FILES) or (lang in ("es", "it") and source.startswith(f"{lang}/"))
        if allowed and _plain(text):
            pools[lang].append({"lang": lang, "source": source, "text": text})
    rng = random.Random(seed)
    picked = []
    for lang, count in COUNTS.items():
        picked += rng.sample(pools[lang], min(count, len(pools[lang])))
    rng.shuffle(picked)
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in picked), encoding="utf-8")
    return {lang: sum(r["lang"] == lang for r in picked) for lang in COUNTS}


if __name__ == "__main__":
    counts = build(cache_dir() / "corpora" / "fortunes.jsonl")
    print(f"wrote {OUT}: {counts}", file=sys.stderr)
