"""The types every layer shares: token ids (:class:`Encoded`) and the tokenizer protocol.

This module imports neither ``tokenizers`` nor ``onnxruntime``, so a front end (a server's queue,
a Ray actor) can hold and pass token ids without loading either.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

SENTENCE = "sentence_embedding"
TOKENS = "token_embeddings"

# One input of a text model: a text, or a (title, text) pair for models that take pairs.
TextInput = str | tuple[str, str]


@dataclass(frozen=True)
class Encoded:
    """Token ids of some texts, unpadded: one int64 array per text.

    ``truncated[i]`` says whether text ``i`` was longer than ``max_seq_length`` and lost its tail
    (``None`` when the tokenizer does not report it).
    """

    ids: list[np.ndarray]
    type_ids: list[np.ndarray]
    truncated: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def lengths(self) -> np.ndarray:
        """Token count of every text."""
        return np.fromiter((len(x) for x in self.ids), dtype=np.int64, count=len(self.ids))

    def select(self, rows: Sequence[int] | np.ndarray) -> Encoded:
        """The texts at ``rows``, in that order."""
        return Encoded(ids=[self.ids[i] for i in rows], type_ids=[self.type_ids[i] for i in rows],
                       truncated=None if self.truncated is None else self.truncated[np.asarray(rows, dtype=np.int64)])

    @staticmethod
    def concat(parts: Sequence[Encoded]) -> Encoded:
        """One :class:`Encoded` holding ``parts``' texts one after another."""
        flags = [p.truncated for p in parts]
        return Encoded(ids=[x for p in parts for x in p.ids], type_ids=[x for p in parts for x in p.type_ids],
                       truncated=None if any(f is None for f in flags) or not parts else np.concatenate(flags))


@runtime_checkable
class TokenizerBackend(Protocol):
    """What the engine's front ends need from a tokenizer: texts in, unpadded ids out.

    Implemented by :class:`embedrt.tokenization.HFTokenizer` (``tokenizers``' ``tokenizer.json``) and
    :class:`embedrt.whitespace.WhitespaceTokenizer` (average-word-embedding models).
    """

    pad_token_id: int
    max_seq_length: int

    @property
    def vocab_size(self) -> int:
        """Ids run from 0 to this, exclusive."""
        ...

    def encode(self, texts: Sequence[TextInput]) -> Encoded:
        """Token ids of ``texts``, truncated at ``max_seq_length``, unpadded."""
        ...

    def tokens(self, texts: Sequence[TextInput]) -> list[list[tuple[int, str, bool]]]:
        """Each text's ``(id, token, special)`` as :meth:`encode` truncates them."""
        ...
