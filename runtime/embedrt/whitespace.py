"""sentence-transformers' ``WhitespaceTokenizer`` without torch: text → word ids for word-embedding models.

:meth:`WhitespaceTokenizer.tokenize` is a line-for-line port of sentence-transformers 6.2
(``sentence_transformer/modules/tokenizer/whitespace.py``), because every quirk of it decides which
words are averaged: ``str.split()`` on Unicode whitespace, a stop-word check before *and* after
stripping ASCII punctuation, a last lower-cased lookup even when ``do_lower_case`` is off, and
unknown words dropped silently. The artifact file is JSON (never pickle) holding the vocabulary in
id order, the stop words and ``do_lower_case``.

Truncation mirrors ``WordEmbeddings.preprocess``: the first ``max_seq_length`` ids are kept *after*
stop words and unknown words are removed (sentence-transformers' default limit is 1,000,000, i.e.
effectively none).
"""

from __future__ import annotations

import json
import string
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from .manifest import ArtifactError
from .types import Encoded

FORMAT = "embedrt.whitespace_tokenizer/1"


class WhitespaceTokenizer:
    """Word-level tokenizer of sentence-transformers' average-word-embedding models.

    Args:
        vocab: words in id order, exactly as sentence-transformers' ``vocab`` list (a repeated word
            maps to its last position, as in sentence-transformers).
        stop_words: words that are never looked up.
        do_lower_case: lower-case the whole text before splitting.
        max_seq_length: keep at most this many ids per text.
        pad_token_id: id the engine pads batches with (sentence-transformers pads with 0).
    """

    def __init__(self, vocab: Sequence[str], stop_words: Iterable[str], do_lower_case: bool,
                 max_seq_length: int, pad_token_id: int = 0) -> None:
        self.vocab = list(vocab)
        self.stop_words = frozenset(stop_words)
        self.do_lower_case = bool(do_lower_case)
        self.word2idx = {word: idx for idx, word in enumerate(self.vocab)}
        self.pad_token_id = pad_token_id
        self.max_seq_length = max_seq_length

    @classmethod
    def from_json(cls, data: bytes | str, max_seq_length: int, pad_token_id: int = 0,
                  origin: str = "whitespace_tokenizer.json") -> WhitespaceTokenizer:
        """Load the artifact's tokenizer file; :class:`ArtifactError` names ``origin`` and the bad field."""
        try:
            config = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ArtifactError(f"{origin}: not valid JSON ({exc})") from exc
        if not isinstance(config, dict) or config.get("format") != FORMAT:
            found = config.get("format") if isinstance(config, dict) else type(config).__name__
            raise ArtifactError(f"{origin}: expected a JSON object with format {FORMAT!r}, got {found!r}")
        vocab = _string_list(config, "vocab", origin)
        stop_words = _string_list(config, "stop_words", origin)
        do_lower_case = config.get("do_lower_case")
        if not isinstance(do_lower_case, bool):
            raise ArtifactError(f"{origin}: 'do_lower_case' must be true or false, got {do_lower_case!r}")
        return cls(vocab, stop_words, do_lower_case, max_seq_length, pad_token_id)

    def to_json(self) -> str:
        """The artifact file's text; stop words are sorted so the same model always gives the same bytes."""
        return json.dumps({"format": FORMAT, "do_lower_case": self.do_lower_case,
                           "stop_words": sorted(self.stop_words), "vocab": self.vocab}, ensure_ascii=False)

    @property
    def max_seq_length(self) -> int:
        """Most ids kept per text; longer texts keep their first ``max_seq_length`` ids."""
        return self._max_seq_length

    @max_seq_length.setter
    def max_seq_length(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"max_seq_length must be an int >= 1, got {value!r}")
        self._max_seq_length = value

    def tokenize(self, text: str) -> list[int]:
        """Word ids of ``text`` before truncation, exactly as sentence-transformers computes them."""
        if self.do_lower_case:
            text = text.lower()
        ids = []
        for token in text.split():
            if token in self.stop_words:
                continue
            if token in self.word2idx:
                ids.append(self.word2idx[token])
                continue
            token = token.strip(string.punctuation)
            if token in self.stop_words:
                continue
            if len(token) > 0 and token in self.word2idx:
                ids.append(self.word2idx[token])
                continue
            # sentence-transformers tries the lower-cased word whatever do_lower_case says; an empty
            # token (punctuation only) is looked up here too, and matches if "" is in the vocabulary.
            token = token.lower()
            if token in self.stop_words:
                continue
            if token in self.word2idx:
                ids.append(self.word2idx[token])
        return ids

    def encode(self, texts: Sequence[str]) -> Encoded:
        """Truncated word ids of each text, unpadded; ``type_ids`` are zeros (the graph takes none)."""
        ids, truncated = [], []
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"texts[{i}] must be a str (word-embedding models take no text pairs), "
                                f"got {type(text).__name__}")
            words = self.tokenize(text)
            ids.append(np.asarray(words[:self._max_seq_length], dtype=np.int64))
            truncated.append(len(words) > self._max_seq_length)
        return Encoded(ids=ids, type_ids=[np.zeros_like(x) for x in ids], truncated=np.asarray(truncated, dtype=bool))

    @property
    def vocab_size(self) -> int:
        """Ids run from 0 to this, exclusive."""
        return len(self.vocab)

    def tokens(self, texts: Sequence[str]) -> list[list[tuple[int, str, bool]]]:
        """Each text's ``(id, word, special)`` as :meth:`encode` sees them (no word is special here)."""
        return [[(int(i), self.vocab[i], False) for i in ids] for ids in self.encode(texts).ids]


def _string_list(config: dict[str, Any], key: str, origin: str) -> list[str]:
    value = config.get(key)
    if not isinstance(value, list):
        raise ArtifactError(f"{origin}: {key!r} must be a list of strings, got {type(value).__name__}")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise ArtifactError(f"{origin}: {key}[{i}] must be a string, got {item!r}")
    return value
