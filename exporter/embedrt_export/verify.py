"""Parity of an artifact against sentence-transformers, measured through the embedrt runtime."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .fidelity import one_minus_cos

FP32_MAX_ONE_MINUS_COS = 1e-6

_LONG = ("The quick brown fox jumps over the lazy dog while the committee deliberates at length about "
         "tokenization, truncation and the many ways an embedding runtime can silently disagree. ")


def probe_texts(max_seq_length: int) -> list[str]:
    """Fixed probe set: several scripts, emoji, empty input and texts past ``max_seq_length``."""
    long_en = _LONG * (max_seq_length // 8 + 2)
    return [
        "A man is eating food.",
        "The weather today is lovely, isn't it?",
        "Der schnelle braune Fuchs springt über den faulen Hund. Grüße aus München!",
        "Съешь же ещё этих мягких французских булок, да выпей чаю.",
        "我们今天去公园散步，天气非常好。",
        "Emoji only: 🙂🚀🔥👍🏽 and a family 👨‍👩‍👧‍👦",
        "",
        "   leading and trailing whitespace   ",
        "UPPER case and MiXeD CaSe Words",
        long_en,
        ("Ein sehr langer deutscher Text über Einbettungen und Sätze. " * (max_seq_length // 6 + 2)),
        "短" * (max_seq_length * 2),
    ]


def probe_pairs(max_seq_length: int) -> list[tuple[str, str]]:
    """[title, text] probes for models that take pairs, one pair running past ``max_seq_length``."""
    return [
        ("London", "London has 9,787,426 inhabitants at the 2011 census."),
        ("Berlin", "Berlin ist die Hauptstadt Deutschlands und hat rund 3,7 Millionen Einwohner."),
        ("", "A passage without a title."),
        ("A title only", ""),
        ("Long passage", _LONG * (max_seq_length // 8 + 2)),
    ]


@dataclass(frozen=True)
class Parity:
    """Worst-case agreement between the runtime and sentence-transformers."""

    max_one_minus_cos: float
    token_max_abs: float
    n_texts: int

    def as_dict(self) -> dict[str, float]:
        """Manifest form."""
        return {"max_one_minus_cos": self.max_one_minus_cos, "token_max_abs": self.token_max_abs,
                "n_texts": float(self.n_texts)}


def measure(reference: Any, candidate: Any, texts: Sequence[str | tuple[str, str]], batch_size: int = 16) -> Parity:
    """Compare sentence and token embeddings of ``candidate`` (embedrt) with ``reference`` (ST)."""
    texts = list(texts)
    ref = reference.encode(texts, batch_size=batch_size, convert_to_numpy=True)
    got = candidate.encode(texts, batch_size=batch_size)
    if ref.shape != got.shape:
        raise AssertionError(f"shape mismatch: sentence-transformers {ref.shape}, embedrt {got.shape}")
    ref_tok = reference.encode(texts, batch_size=batch_size, output_value="token_embeddings")
    got_tok = candidate.encode(texts, batch_size=batch_size, output_value="token_embeddings")
    token_max_abs = 0.0
    for i, (r, g) in enumerate(zip(ref_tok, got_tok)):
        r = r.detach().cpu().numpy() if hasattr(r, "detach") else np.asarray(r)
        if r.shape != g.shape:
            raise AssertionError(f"text {i}: token embeddings shape {g.shape} != sentence-transformers {r.shape}")
        token_max_abs = max(token_max_abs, float(np.abs(r - g).max()) if r.size else 0.0)
    return Parity(max_one_minus_cos=float(one_minus_cos(ref, got).max()), token_max_abs=token_max_abs,
                  n_texts=len(texts))
