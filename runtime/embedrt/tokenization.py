"""Text → token ids, exactly as sentence-transformers tokenizes for the exported model.

The exporter writes the tokenizer that sentence-transformers actually used (its lower-casing
normalizer included) with padding and truncation cleared; this module sets truncation to the
model's ``max_seq_length`` and leaves padding to the engine, which pads per batch.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from tokenizers import Tokenizer

from .manifest import TokenizerSpec

if TYPE_CHECKING:
    from .whitespace import WhitespaceTokenizer

TextInput = str | tuple[str, str] | list[str]


@dataclass(frozen=True)
class Encoded:
    """Token ids of a batch of texts, unpadded: one int array per text."""

    ids: list[np.ndarray]
    type_ids: list[np.ndarray]

    def lengths(self) -> np.ndarray:
        """Token count of every text."""
        return np.fromiter((len(x) for x in self.ids), dtype=np.int64, count=len(self.ids))


class TextTokenizer:
    """A `tokenizers` tokenizer configured for one model (truncation at ``max_seq_length``)."""

    def __init__(self, tokenizer_json: str, max_seq_length: int, pad_token_id: int,
                 model_max_length: int | None = None) -> None:
        self._tokenizer = Tokenizer.from_str(tokenizer_json)
        self._splits_on_spaces = (_splits_on_spaces(_component(self._tokenizer.pre_tokenizer))
                                  and _keeps_spaces(_component(self._tokenizer.normalizer)))
        self._tokenizer.no_padding()
        self.pad_token_id = pad_token_id
        self.model_max_length = model_max_length
        self.max_seq_length = max_seq_length

    @property
    def max_seq_length(self) -> int:
        """Longest token sequence fed to the model; longer inputs are truncated."""
        return self._max_seq_length

    @max_seq_length.setter
    def max_seq_length(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 2:
            raise ValueError(f"max_seq_length must be an int >= 2, got {value!r}")
        if self.model_max_length is not None and value > self.model_max_length:
            raise ValueError(
                f"max_seq_length {value} exceeds the model's position limit {self.model_max_length}"
            )
        self._tokenizer.enable_truncation(max_length=value, strategy="longest_first")
        self._max_seq_length = value

    def encode(self, texts: Sequence[str | tuple[str, str]]) -> Encoded:
        """Tokenize texts (or ``(text, text_pair)`` tuples) without padding.

        A text far longer than ``max_seq_length`` tokens can fill is tokenized from its head: the
        words before a space, enough for ``max_seq_length`` tokens. Where the pre-tokenizer splits
        at spaces, those words tokenize exactly as inside the whole text, and truncation keeps only
        them; a head that falls short of ``max_seq_length`` tokens is redone from the whole text.
        This spares tokenizing (and holding in memory) the rest of a long document.
        """
        heads = [self._head(t) for t in texts]
        # The _fast variant skips character offsets, which nothing here reads (same ids; 10-20% less time).
        encodings = self._tokenizer.encode_batch_fast([h if h is not None else _transient(t)
                                                       for h, t in zip(heads, texts)])
        short = [i for i, h in enumerate(heads) if h is not None and len(encodings[i].ids) < self._max_seq_length]
        for i, encoding in zip(short, self._tokenizer.encode_batch_fast([_transient(texts[i]) for i in short])):
            encodings[i] = encoding
        return Encoded(
            ids=[np.asarray(e.ids, dtype=np.int64) for e in encodings],
            type_ids=[np.asarray(e.type_ids, dtype=np.int64) for e in encodings],
        )

    def _head(self, text: str | tuple[str, str]) -> str | None:
        """The words of ``text`` before its last space within the head limit; ``None``: use it whole."""
        limit = HEAD_CHARS_PER_TOKEN * self._max_seq_length
        if not self._splits_on_spaces or not isinstance(text, str) or len(text) <= limit:
            return None
        cut = text.rfind(" ", 0, limit)
        head = text[:cut].rstrip(" ") if cut > 0 else ""
        return head or None


# A text longer than this many characters per token of ``max_seq_length`` is tokenized from its head
# (English runs ~4-5 characters per token; a head that falls short is redone whole).
HEAD_CHARS_PER_TOKEN = 8
# Pre-tokenizers that split at every space (and only ever split further): under them a word's tokens
# do not depend on the text after it.
_SPACE_SPLITTERS = {"BertPreTokenizer", "Whitespace", "WhitespaceSplit", "Metaspace", "ByteLevel"}


def _component(part: object) -> dict | None:
    """A tokenizer component's own JSON; parsing the whole tokenizer.json instead would read its
    vocabulary again (XLM-R's: 120 ms at load)."""
    return None if part is None else json.loads(part.__getstate__())


def _splits_on_spaces(pre_tokenizer: dict | None) -> bool:
    """Whether a tokenizer.json ``pre_tokenizer`` splits at every space."""
    if not pre_tokenizer:
        return False
    kind = pre_tokenizer.get("type")
    if kind == "Sequence":
        return any(_splits_on_spaces(p) for p in pre_tokenizer.get("pretokenizers", ()))
    if kind == "Metaspace":
        return pre_tokenizer.get("split", True) is not False
    if kind == "ByteLevel":
        return pre_tokenizer.get("use_regex", True) is not False
    return kind in _SPACE_SPLITTERS


# A Replace pattern made only of whitespace and quantifiers (" {2,}", r"\s+") collapses runs of spaces.
_SPACE_RUN = re.compile(r"(?:\s|\\s|[+*?]|\{\d*,?\d*\})+")


def _keeps_spaces(normalizer: dict | None) -> bool:
    """Whether a tokenizer.json ``normalizer`` leaves every word boundary where it is: no ``Replace``
    matches a space together with something else (which could join two words, e.g. ``" '"`` -> ``"'"``)."""
    if not normalizer:
        return True
    kind = normalizer.get("type")
    if kind == "Sequence":
        return all(_keeps_spaces(n) for n in normalizer.get("normalizers", ()))
    if kind == "Replace":
        pattern = normalizer.get("pattern", {})
        text = pattern.get("String", pattern.get("Regex", ""))
        touches_space = " " in text or "\\s" in text
        return not touches_space or _SPACE_RUN.fullmatch(text) is not None
    return True


def _transient(text: TextInput) -> TextInput:
    """A copy of a non-ASCII text for the tokenizer to read.

    tokenizers reads a ``str`` through CPython's UTF-8 view, which CPython caches on the ``str``
    for its lifetime: every non-ASCII text the caller keeps would carry a second copy of itself
    (a 20,000-text corpus kept in a list grew by 5 MB). The copy dies after tokenizing.
    """
    if not isinstance(text, str):  # a (text, text_pair)
        return type(text)(_transient(part) for part in text)  # type: ignore[return-value]
    return text if text.isascii() else text.encode("utf-8", "surrogatepass").decode("utf-8", "surrogatepass")


def load_tokenizer(spec: TokenizerSpec, data: bytes) -> TextTokenizer | WhitespaceTokenizer:
    """Build the tokenizer an artifact's manifest describes, from the verified file bytes."""
    if spec.kind == "hf":
        return TextTokenizer(data.decode("utf-8"), spec.max_seq_length, spec.pad_token_id, spec.model_max_length)
    if spec.kind == "whitespace":
        # Imported here because whitespace.py builds on this module's Encoded.
        from .whitespace import WhitespaceTokenizer

        return WhitespaceTokenizer.from_json(data, spec.max_seq_length, spec.pad_token_id, origin=spec.file)
    raise ValueError(f"tokenizer kind {spec.kind!r} is not supported by this embedrt")
