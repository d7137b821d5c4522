"""The ``SentenceTransformer``-compatible facade, configured entirely by the artifact's manifest."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import numpy as np

from . import util
from .engine import SENTENCE, TOKENS, Engine
from .manifest import Artifact
from .providers import ProviderSpec, create_session, plan_providers
from .tokenization import TextTokenizer

logger = logging.getLogger(__name__)

OutputValue = Literal["sentence_embedding", "token_embeddings"] | None


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"[:80]


def _texts_from(sentences: Any) -> tuple[list[str], bool]:
    """Validate encode input: one string or an iterable of strings; errors name the bad index."""
    if isinstance(sentences, str):
        return [sentences], True
    if sentences is None or isinstance(sentences, (bytes, bytearray, dict, int, float)):
        raise TypeError(f"sentences must be a str or a list of str, got {_describe(sentences)}")
    if isinstance(sentences, np.ndarray):
        sentences = sentences.tolist()
    if not isinstance(sentences, Iterable):
        raise TypeError(f"sentences must be a str or a list of str, got {_describe(sentences)}")
    texts = list(sentences)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"sentences[{i}] must be a str, got {_describe(text)}")
    return texts, False


class SentenceTransformer:
    """Encode text with an embedrt artifact, with ``sentence_transformers.SentenceTransformer``'s API.

    Args:
        model_name_or_path: an artifact folder (written by ``embedrt export``).
        device: "cpu" (default), "cuda", "cuda:N" or "tensorrt".
        providers: explicit ONNX Runtime providers list instead of ``device``.
        threads: intra-op threads; default all cores this process may use.
        strict: raise instead of warning when the requested provider is not what runs.
        variant: graph variant from the manifest (default: the tower's default, ``fp32``).
        truncate_dim: keep only the first ``truncate_dim`` dimensions of sentence embeddings.
        max_batch_tokens: bound on padded tokens per batch (``None``: only ``batch_size`` bounds it).
    """

    def __init__(self, model_name_or_path: str | Path, *, device: str | None = None,
                 providers: list[ProviderSpec] | None = None, threads: int | None = None,
                 strict: bool = False, variant: str | None = None, truncate_dim: int | None = None,
                 max_batch_tokens: int | None = None) -> None:
        self.artifact = Artifact(model_name_or_path)
        manifest = self.artifact.manifest
        self.manifest = manifest
        tower = manifest.towers["text"]
        self.variant = variant or tower.default_variant
        if self.variant not in tower.variants:
            raise ValueError(f"variant {self.variant!r} not in artifact; available: {sorted(tower.variants)}")
        spec = manifest.tokenizer
        self.tokenizer = TextTokenizer(self.artifact.read_verified(spec.file).decode("utf-8"),
                                       spec.max_seq_length, spec.pad_token_id, spec.model_max_length)
        self._plan = plan_providers(device, providers, threads)
        self.device = device or ("cpu" if providers is None else None)
        graph = self.artifact.read_verified(tower.variants[self.variant].file)
        self.engine = Engine(create_session(graph, self._plan, strict=strict), spec.pad_token_id, max_batch_tokens)
        self.similarity_fn_name = manifest.similarity_fn_name
        self.prompts = dict(manifest.prompts)
        self.default_prompt_name = manifest.default_prompt_name
        self.truncate_dim = truncate_dim

    # -- properties mirroring sentence-transformers ---------------------------------------------
    @property
    def max_seq_length(self) -> int:
        """Inputs longer than this many tokens are truncated."""
        return self.tokenizer.max_seq_length

    @max_seq_length.setter
    def max_seq_length(self, value: int) -> None:
        self.tokenizer.max_seq_length = value

    @property
    def similarity_fn_name(self) -> str:
        """Name of the similarity function used by :meth:`similarity`."""
        return self._similarity_fn_name

    @similarity_fn_name.setter
    def similarity_fn_name(self, value: str) -> None:
        if value not in util.SIMILARITY_FUNCTIONS:
            raise ValueError(f"similarity_fn_name must be one of {sorted(util.SIMILARITY_FUNCTIONS)}, got {value!r}")
        self._similarity_fn_name = value

    @property
    def providers(self) -> dict[str, list[Any]]:
        """Execution providers as requested and as ONNX Runtime activated them."""
        return {"requested": list(self._plan.requested), "active": self.engine.session.get_providers()}

    def get_embedding_dimension(self) -> int:
        """Dimension of ``encode``'s sentence embeddings (after ``truncate_dim``)."""
        dim = self.manifest.embedding_dimension
        return min(dim, self.truncate_dim) if self.truncate_dim else dim

    get_sentence_embedding_dimension = get_embedding_dimension  # the sentence-transformers < 6 name

    def get_max_seq_length(self) -> int:
        """Same as :attr:`max_seq_length`."""
        return self.max_seq_length

    def similarity(self, embeddings1: util.ArrayLike, embeddings2: util.ArrayLike) -> np.ndarray:
        """Similarity matrix with the model's ``similarity_fn_name``."""
        return util.SIMILARITY_FUNCTIONS[self.similarity_fn_name](embeddings1, embeddings2)

    # -- encoding ---------------------------------------------------------------------------------
    def _resolve_prompt(self, prompt: str | None, prompt_name: str | None) -> str | None:
        if prompt is not None:
            return prompt
        name = prompt_name or self.default_prompt_name
        if name is None:
            return None
        if name not in self.prompts:
            raise ValueError(f"prompt_name {name!r} not found; this model has prompts {sorted(self.prompts)}")
        return self.prompts[name]

    def encode(self, sentences: str | list[str] | Iterable[str], prompt_name: str | None = None,
               prompt: str | None = None, batch_size: int = 32, show_progress_bar: bool | None = None,
               output_value: OutputValue = "sentence_embedding", precision: str = "float32",
               convert_to_numpy: bool = True, convert_to_tensor: bool = False, device: str | None = None,
               normalize_embeddings: bool = False, truncate_dim: int | None = None) -> Any:
        """Embed sentences; arguments and result shapes follow ``sentence_transformers`` ``encode``.

        Without torch, ``convert_to_tensor=True`` returns one stacked numpy array and
        ``convert_to_numpy=False`` a list of 1-D numpy arrays. ``device`` must be None or match
        the device the model was loaded on (sessions are bound to their provider at load).
        """
        if device is not None and device != self.device:
            raise ValueError(f"encode(device={device!r}) differs from the load-time device {self.device!r}: "
                             "embedrt binds the device when the model is loaded; pass device= there")
        if output_value not in (SENTENCE, TOKENS, None):
            raise ValueError(f"output_value must be 'sentence_embedding', 'token_embeddings' or None, "
                             f"got {output_value!r}")
        if precision not in util.PRECISIONS:
            raise ValueError(f"precision {precision!r} is not supported; use one of {util.PRECISIONS}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        texts, singular = _texts_from(sentences)
        if show_progress_bar is None:
            show_progress_bar = logger.getEffectiveLevel() <= logging.INFO
        if convert_to_tensor:
            convert_to_numpy = False
        if output_value != SENTENCE:
            convert_to_tensor = convert_to_numpy = False
        prompt_text = self._resolve_prompt(prompt, prompt_name)
        if prompt_text:
            texts = [prompt_text + t for t in texts]

        outputs = (SENTENCE,) if output_value == SENTENCE else (TOKENS,) if output_value == TOKENS \
            else (SENTENCE, TOKENS)
        encoded = self.tokenizer.encode(texts)
        progress = None
        if show_progress_bar and texts:
            from tqdm.auto import tqdm
            progress = tqdm(total=len(texts), desc="Encoding", unit="text")
        try:
            result = self.engine.run(encoded, batch_size=batch_size, outputs=outputs,
                                     on_batch=progress.update if progress else None)
        finally:
            if progress is not None:
                progress.close()

        truncate_dim = truncate_dim if truncate_dim is not None else self.truncate_dim
        embeddings = result.sentence_embedding
        if embeddings is not None:
            if truncate_dim:
                embeddings = embeddings[:, :truncate_dim]
            if normalize_embeddings:
                embeddings = util.normalize_embeddings(embeddings).astype(np.float32)

        if output_value == TOKENS:
            out: Any = result.token_embeddings
        elif output_value is None:
            out = [
                {"sentence_embedding": embeddings[i], "token_embeddings": result.token_embeddings[i],
                 "input_ids": encoded.ids[i], "attention_mask": np.ones_like(encoded.ids[i])}
                for i in range(len(texts))
            ]
        else:
            if embeddings is None:
                embeddings = np.zeros((0, self.get_sentence_embedding_dimension()), dtype=np.float32)
            if len(texts) and precision != "float32":
                embeddings = util.quantize_embeddings(embeddings, precision)
            if convert_to_tensor:
                out = embeddings
            elif convert_to_numpy:
                out = embeddings if len(texts) else np.array([])
            else:
                out = list(embeddings)
        if singular:
            out = out[0]
        return out

    def __repr__(self) -> str:
        return (f"embedrt.SentenceTransformer({self.manifest.name!r}, variant={self.variant!r}, "
                f"dim={self.get_sentence_embedding_dimension()}, max_seq_length={self.max_seq_length}, "
                f"similarity={self.similarity_fn_name!r}, providers={self.providers['active']})")
