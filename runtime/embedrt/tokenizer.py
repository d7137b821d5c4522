"""The public tokenizer: an artifact's texts (or [title, text] pairs) checked, prompted and tokenized.

``embedrt.load_tokenizer(artifact)`` builds it from the manifest, as :func:`embedrt.load_engine` builds
the engine; the facade, the server and the Ray actor all tokenize through it, so an input is refused,
prompted and truncated the same way everywhere:

* every input is a ``str`` (or, for pair models, a two-``str`` list/tuple); anything else is a
  ``TypeError`` naming its index;
* a text that is not valid Unicode (a lone surrogate such as ``"\\ud800"``, which no UTF-8 encoder
  accepts) is a ``ValueError`` naming its index and the character's position, wherever it sits in the
  text, also past what truncation would keep;
* a prompt (``prompt=``, ``prompt_name=``, or the manifest's ``default_prompt_name``) is prepended to
  each text (to the first of a pair), as sentence-transformers does.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from .artifact import Artifact, open_artifact
from .manifest import ArtifactError, TokenizerSpec
from .types import Encoded, TextInput, TokenizerBackend


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"[:80]


def _valid_text(text: str, label: str) -> str:
    """``text``, or ``ValueError`` if it holds a lone surrogate. Non-ASCII texts come back as a fresh copy:
    tokenizers reads a ``str`` through CPython's UTF-8 view, which CPython then keeps on the caller's
    ``str`` for its lifetime (a second copy of every non-ASCII text a caller holds); the copy dies after
    tokenizing."""
    if text.isascii():
        return text
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"{label} is not valid Unicode: a lone surrogate {text[exc.start]!r} at character "
                         f"{exc.start}; decode bytes with errors='replace' or remove it") from None
    return data.decode("utf-8")


class Tokenizer:
    """Texts → :class:`~embedrt.types.Encoded` for one artifact (see the module docstring).

    Args:
        backend: the model's tokenizer (``tokenizers`` or the whitespace one).
        pairs: the model takes ``[title, text]`` pairs.
        prompts: named prompts; ``default_prompt_name`` is used when a call names none.
    """

    def __init__(self, backend: TokenizerBackend, *, pairs: bool = False, prompts: dict[str, str] | None = None,
                 default_prompt_name: str | None = None) -> None:
        self.backend = backend
        self.pairs = pairs
        self.prompts = dict(prompts or {})
        self.default_prompt_name = default_prompt_name

    @property
    def max_seq_length(self) -> int:
        """Inputs longer than this many tokens are truncated."""
        return self.backend.max_seq_length

    @max_seq_length.setter
    def max_seq_length(self, value: int) -> None:
        self.backend.max_seq_length = value

    @property
    def pad_token_id(self) -> int:
        """The id batches are padded with."""
        return self.backend.pad_token_id

    def prompt_text(self, prompt: str | None = None, prompt_name: str | None = None) -> str | None:
        """The text to prepend: ``prompt``, else the prompt named ``prompt_name`` or by default."""
        if prompt is not None:
            if not isinstance(prompt, str):
                raise TypeError(f"prompt must be a str, got {_describe(prompt)}")
            return _valid_text(prompt, "prompt") or None
        name = prompt_name if prompt_name is not None else self.default_prompt_name
        if name is None:
            return None
        if name not in self.prompts:
            raise ValueError(f"prompt_name {name!r} not found; this model has prompts {sorted(self.prompts)}")
        return self.prompts[name] or None

    def check(self, items: Sequence[Any], *, positions: Sequence[int] | None = None, start: int = 0,
              name: str = "sentences", prompt: str | None = None) -> list[TextInput]:
        """Validated inputs with ``prompt`` prepended, ready for :meth:`encode_checked`.

        Errors name an input as ``name[i]``, ``i`` being ``positions[k]`` or ``start + k``.
        """
        out: list[TextInput] = []
        for k, item in enumerate(items):
            label = f"{name}[{positions[k] if positions is not None else start + k}]"
            if isinstance(item, str):
                text = _valid_text(item, label)
                out.append(prompt + text if prompt else text)
            elif isinstance(item, (list, tuple)) and len(item) == 2 and all(isinstance(x, str) for x in item):
                if not self.pairs:
                    raise TypeError(f"{label} is a pair {_describe(item)}, but this model takes single texts")
                first, second = _valid_text(item[0], f"{label}[0]"), _valid_text(item[1], f"{label}[1]")
                out.append((prompt + first if prompt else first, second))
            else:
                from .images import is_image_input

                if is_image_input(item):
                    raise TypeError(f"{label} is an image ({type(item).__name__}), but this model is text-only")
                raise TypeError(f"{label} must be a str{' or a [title, text] pair' if self.pairs else ''}, got "
                                f"{_describe(item)}")
        return out

    @property
    def vocab_size(self) -> int:
        """Token ids run from 0 to this, exclusive."""
        return self.backend.vocab_size

    def from_ids(self, rows: Sequence[Sequence[int]], *, name: str = "sentences",
                 positions: Sequence[int] | None = None) -> Encoded:
        """Inputs given as token ids (as :meth:`tokens` or another client's tokenizer made them), used as
        they are: each id checked against the vocabulary, each row cut at :attr:`max_seq_length`."""
        vocab, limit = self.vocab_size, self.max_seq_length
        ids, truncated = [], []
        for k, row in enumerate(rows):
            label = f"{name}[{positions[k] if positions is not None else k}]"
            array = np.asarray(row)
            if array.ndim != 1 or not len(array) or array.dtype.kind not in "iu":
                raise ValueError(f"{label} must be a non-empty list of integer token ids")
            bad = np.flatnonzero((array < 0) | (array >= vocab))
            if len(bad):
                raise ValueError(f"{label}[{bad[0]}] = {array[bad[0]]} is not a token id of this model "
                                 f"(0 to {vocab - 1})")
            ids.append(array[:limit].astype(np.int64))
            truncated.append(len(array) > limit)
        return Encoded(ids=ids, type_ids=[np.zeros_like(x) for x in ids], truncated=np.asarray(truncated, dtype=bool))

    def tokens(self, texts: Sequence[Any], *, name: str = "sentences") -> list[list[tuple[int, str, bool]]]:
        """Each text's ``(id, token, special)``, checked and truncated as :meth:`encode` does."""
        return self.backend.tokens(self.check(texts, name=name))

    def encode_checked(self, checked: Sequence[TextInput]) -> Encoded:
        """Token ids of inputs already passed through :meth:`check`."""
        return self.backend.encode(checked)

    def encode(self, texts: Sequence[Any], *, prompt: str | None = None, prompt_name: str | None = None,
               start: int = 0, name: str = "sentences") -> Encoded:
        """Check, prompt and tokenize ``texts`` (unpadded ids, truncated at :attr:`max_seq_length`)."""
        if isinstance(texts, str):
            raise TypeError(f"{name} must be a list of texts, got a single str; wrap it in a list")
        return self.encode_checked(self.check(texts, start=start, name=name,
                                              prompt=self.prompt_text(prompt, prompt_name)))


def backend_for(spec: TokenizerSpec, data: bytes) -> TokenizerBackend:
    """The tokenizer an artifact's manifest describes, from the verified file bytes."""
    if spec.kind == "whitespace":
        from .whitespace import WhitespaceTokenizer

        return WhitespaceTokenizer.from_json(data, spec.max_seq_length, spec.pad_token_id, origin=spec.file)
    from .tokenization import HFTokenizer

    try:
        text = data.decode("utf-8")
        return HFTokenizer(text, spec.max_seq_length, spec.pad_token_id, spec.model_max_length)
    except ArtifactError:
        raise
    except Exception as exc:  # tokenizers raises its own Exception subclass for a malformed file
        raise ArtifactError(f"{spec.file}: not a usable tokenizer.json ({type(exc).__name__}: {exc})"[:400]) from exc


def load_tokenizer(artifact: str | os.PathLike[str] | Artifact, *, expected_digest: str | None = None) -> Tokenizer:
    """The public tokenizer of an artifact (a folder, a name under ``$EMBEDRT_CACHE/artifacts``, or an
    :class:`~embedrt.artifact.Artifact`), configured by its manifest."""
    artifact = open_artifact(artifact, expected_digest)
    manifest = artifact.manifest
    spec = manifest.tokenizer
    return Tokenizer(backend_for(spec, artifact.read_verified(spec.file)), pairs="pair" in manifest.input_kinds,
                     prompts=manifest.prompts, default_prompt_name=manifest.default_prompt_name)
