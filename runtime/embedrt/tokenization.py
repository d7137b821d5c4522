"""The ``tokenizers`` backend: text → token ids exactly as sentence-transformers tokenizes for the model.

The exporter writes the tokenizer that sentence-transformers actually used (its lower-casing
normalizer included) with padding and truncation cleared; this module sets truncation to the
model's ``max_seq_length`` and leaves padding to the engine, which pads per batch. Input checks,
prompts and pairs are :class:`embedrt.tokenizer.Tokenizer`'s, the public object in front of it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

import numpy as np
from tokenizers import Tokenizer

from .manifest import MANIFEST_NAME, ArtifactError
from .types import Encoded, TextInput


class HFTokenizer:
    """A ``tokenizers`` tokenizer configured for one model (truncation at ``max_seq_length``)."""

    def __init__(self, tokenizer_json: str, max_seq_length: int, pad_token_id: int,
                 model_max_length: int | None = None) -> None:
        self._tokenizer = Tokenizer.from_str(tokenizer_json)
        if pad_token_id >= self.vocab_size:
            raise ArtifactError(f"{MANIFEST_NAME}: tokenizer.pad_token_id {pad_token_id} is outside the "
                                f"vocabulary ({self.vocab_size} tokens)")
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

    @property
    def vocab_size(self) -> int:
        """Ids run from 0 to this, exclusive (added tokens included)."""
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    def tokens(self, texts: Sequence[TextInput]) -> list[list[tuple[int, str, bool]]]:
        """Each text's ``(id, token, special)``, truncated as :meth:`encode` truncates."""
        return [[(i, t, bool(s)) for i, t, s in zip(e.ids, e.tokens, e.special_tokens_mask)]
                for e in self._tokenizer.encode_batch(list(texts))]

    def encode(self, texts: Sequence[TextInput]) -> Encoded:
        """Tokenize texts (or ``(text, text_pair)`` tuples) without padding.

        A text far longer than ``max_seq_length`` tokens can fill is tokenized from its head: the
        words before a space, enough for ``max_seq_length`` tokens. Where the pre-tokenizer splits
        at spaces, those words tokenize exactly as inside the whole text, and truncation keeps only
        them; a head that falls short of ``max_seq_length`` tokens is redone from the whole text.
        This spares tokenizing (and holding in memory) the rest of a long document.
        """
        heads = [self._head(t) for t in texts]
        # The _fast variant skips character offsets, which nothing here reads (same ids, less time).
        encodings = self._tokenizer.encode_batch_fast([h if h is not None else t for h, t in zip(heads, texts)])
        short = [i for i, h in enumerate(heads) if h is not None and len(encodings[i].ids) < self._max_seq_length]
        for i, encoding in zip(short, self._tokenizer.encode_batch_fast([texts[i] for i in short])):
            encodings[i] = encoding
            heads[i] = None
        return Encoded(
            ids=[np.asarray(e.ids, dtype=np.int64) for e in encodings],
            type_ids=[np.asarray(e.type_ids, dtype=np.int64) for e in encodings],
            # A head that filled max_seq_length stands for a longer text, which truncation cut.
            truncated=np.fromiter((h is not None or bool(e.overflowing) for h, e in zip(heads, encodings)),
                                  dtype=bool, count=len(encodings)),
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
    vocabulary again (XLM-R's 250,002 pieces, at every load)."""
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
