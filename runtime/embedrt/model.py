"""The ``SentenceTransformer``-compatible facade: a tokenizer and an engine, configured by the manifest.

Everything it does beyond ``sentence_transformers``' argument handling is the tokenizer's
(:mod:`embedrt.tokenizer`) or the engine's (:mod:`embedrt.engine`, built by :func:`embedrt.load_engine`).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np

from . import images, util
from .artifact import open_artifact
from .checks import check_positive_int
from .loader import load_engine
from .providers import ProviderSpec
from .tokenizer import load_tokenizer
from .types import SENTENCE, TOKENS

logger = logging.getLogger(__name__)

OutputValue = Literal["sentence_embedding", "token_embeddings"] | None

# Texts are tokenized and length-sorted this many at a time: large enough that sorting removes nearly
# all padding, small enough to bound memory and overlap tokenization with the model.
CHUNK_SIZE = 4096


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"[:80]


def _items(sentences: Any) -> tuple[list[Any], bool]:
    """``(inputs as a list, whether the caller gave one input)``."""
    if isinstance(sentences, np.ndarray) and sentences.ndim == 0:
        return [sentences.item()], True  # np.array("text"): one text, as a str would be
    if isinstance(sentences, str):
        return [sentences], True
    if sentences is None or isinstance(sentences, (bytes, bytearray, dict, int, float)):
        raise TypeError(f"sentences must be a str or a list of str, got {_describe(sentences)}")
    if isinstance(sentences, np.ndarray):
        return sentences.tolist(), False
    if not isinstance(sentences, Iterable):
        raise TypeError(f"sentences must be a str or a list of str, got {_describe(sentences)}")
    return list(sentences), False


def _progress(total: int, show: bool | None) -> Any:
    """A tqdm bar, or ``None`` when not asked for, when tqdm is missing or there is no stderr to draw on."""
    if show is None:
        show = logger.getEffectiveLevel() <= logging.INFO
    if not show or not total or sys.stderr is None:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc="Encoding", unit="text")


def _unsorted(rows: Any, order: np.ndarray | None) -> Any:
    """``rows`` (an array or a list) back in the caller's order, where ``order`` sorted them."""
    if order is None:
        return rows
    if isinstance(rows, np.ndarray):
        out = np.empty_like(rows)
        out[order] = rows
        return out
    back: list[Any] = [None] * len(rows)
    for position, row in zip(order, rows):
        back[position] = row
    return back


class SentenceTransformer:
    """Encode text with an embedrt artifact, with ``sentence_transformers.SentenceTransformer``'s API.

    Args:
        model_name_or_path: an artifact folder (written by ``embedrt export``), a name under
            ``$EMBEDRT_CACHE/artifacts``, or a Hub repo holding an artifact.
        device, providers, threads, workers, strict, variant, max_batch_tokens, max_batch_size,
            trt_cache_dir: how the engine runs; see :func:`embedrt.load_engine`.
        truncate_dim: keep only the first ``truncate_dim`` dimensions of sentence embeddings (a negative
            value slices as Python does, as in sentence-transformers: -1 drops the last one).
        expected_digest: refuse the artifact unless its digest (``embedrt info`` prints it) is this one.
    """

    def __init__(self, model_name_or_path: str | Path, *, device: str | None = None,
                 providers: list[ProviderSpec] | None = None, threads: int | None = None,
                 workers: int | None = None, strict: bool = False, variant: str | None = None,
                 truncate_dim: int | None = None, max_batch_tokens: int | None = None, max_batch_size: int = 64,
                 trt_cache_dir: str | None = None, expected_digest: str | None = None) -> None:
        self.artifact = open_artifact(model_name_or_path, expected_digest)
        self.manifest = self.artifact.manifest
        self.tokenizer = load_tokenizer(self.artifact)
        run = {"device": device, "providers": providers, "threads": threads, "workers": workers, "strict": strict,
               "max_batch_size": max_batch_size}
        self.engine = load_engine(self.artifact, variant=variant, max_batch_tokens=max_batch_tokens,
                                  trt_cache_dir=trt_cache_dir, **run)
        self.variant = self.engine.info.variant
        self.image_engine = None
        if "vision" in self.manifest.towers:
            vision = self.manifest.towers["vision"].variants
            self.image_engine = load_engine(self.artifact, tower="vision",
                                            variant=self.variant if self.variant in vision else None, **run)
        self.device = device or ("cpu" if providers is None else None)
        spec = self.manifest.tokenizer
        self._trt_max_seq = (spec.model_max_length or spec.max_seq_length) \
            if self.engine.info.provider == "TensorrtExecutionProvider" else None
        self.similarity_fn_name = self.manifest.similarity_fn_name
        self._check_options(1, truncate_dim=truncate_dim)
        self.truncate_dim = truncate_dim
        self.chunk_size = CHUNK_SIZE

    def warmup(self, batch_size: int = 32) -> None:
        """Run one batch per sequence bucket (GPU) or one full-length batch (CPU), so TensorRT engines,
        CUDA kernels and memory arenas are ready before the first real request."""
        self.engine.warmup(batch_size, self.max_seq_length)

    # -- properties mirroring sentence-transformers ---------------------------------------------
    @property
    def max_seq_length(self) -> int:
        """Inputs longer than this many tokens are truncated."""
        return self.tokenizer.max_seq_length

    @max_seq_length.setter
    def max_seq_length(self, value: int) -> None:
        if self._trt_max_seq is not None and isinstance(value, int) and value > self._trt_max_seq:
            raise ValueError(f"max_seq_length {value} exceeds {self._trt_max_seq}, the longest sequence this "
                             "model's TensorRT engine was built for; load it with device='cuda' to go further")
        self.tokenizer.max_seq_length = value

    @property
    def prompts(self) -> dict[str, str]:
        """Named prompts (``encode(prompt_name=...)``)."""
        return self.tokenizer.prompts

    @property
    def default_prompt_name(self) -> str | None:
        """The prompt prepended when ``encode`` names none."""
        return self.tokenizer.default_prompt_name

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
        return {"requested": list(self.engine.info.requested_providers),
                "active": self.engine.session.get_providers()}

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
    def _check_options(self, batch_size: Any, precision: str = "float32", output_value: OutputValue = SENTENCE,
                       device: str | None = None, truncate_dim: Any = None) -> int:
        if device is not None and device != self.device:
            raise ValueError(f"encode(device={device!r}) differs from the load-time device {self.device!r}: "
                             "embedrt binds the device when the model is loaded; pass device= there")
        if output_value not in (SENTENCE, TOKENS, None):
            raise ValueError(f"output_value must be 'sentence_embedding', 'token_embeddings' or None, "
                             f"got {output_value!r}")
        if precision not in util.PRECISIONS:
            raise ValueError(f"precision {precision!r} is not supported; use one of {util.PRECISIONS}")
        if truncate_dim is not None and (isinstance(truncate_dim, bool) or not isinstance(truncate_dim, int)):
            raise TypeError(f"truncate_dim must be an int, got {_describe(truncate_dim)}")
        return check_positive_int("batch_size", batch_size)

    def _chunks(self, texts: list[Any], batch_size: int) -> tuple[list[list[Any]], np.ndarray | None]:
        """What the pipeline tokenizes at a time, and the order it puts the texts in (``None``: theirs).

        On CPU, chunks of :attr:`chunk_size` texts, each length-sorted by its token counts. On a GPU the
        model outruns the tokenizer, so the texts go in batches ordered by character length (a stand-in for
        token length, known before tokenizing) and each batch is tokenized while the device runs the one
        before; an embedding does not depend on its batch, so the result is the same.
        """
        if self.engine.info.device == "cpu" or len(texts) <= batch_size:
            return [texts[i:i + self.chunk_size] for i in range(0, len(texts), self.chunk_size)], None
        sizes = np.fromiter((len(t) if isinstance(t, str) else len(t[0]) + len(t[1]) for t in texts), dtype=np.int64,
                            count=len(texts))
        order = np.argsort(-sizes, kind="stable")
        return [[texts[i] for i in order[k:k + batch_size]] for k in range(0, len(texts), batch_size)], order

    def _finish(self, embeddings: np.ndarray, normalize: bool, truncate_dim: int | None) -> np.ndarray:
        truncate_dim = truncate_dim if truncate_dim is not None else self.truncate_dim
        if truncate_dim:
            embeddings = embeddings[:, :truncate_dim]
        if normalize:
            embeddings = util.normalize_embeddings(embeddings).astype(np.float32)
        return embeddings

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
        batch_size = self._check_options(batch_size, precision, output_value, device, truncate_dim)
        if self.image_engine is not None and not isinstance(sentences, (list, tuple, str)) \
                and images.is_image_input(sentences):
            items, singular = [sentences], True
        else:
            items, singular = _items(sentences)
        image_pos = [i for i, x in enumerate(items) if images.is_image_input(x)] if self.image_engine else []
        if image_pos and output_value != SENTENCE:
            raise ValueError(f"images have only sentence embeddings; output_value={output_value!r} needs texts only "
                             f"(sentences[{image_pos[0]}] is an image)")
        text_pos = sorted(set(range(len(items))) - set(image_pos)) if image_pos else None
        texts = self.tokenizer.check([items[i] for i in text_pos] if text_pos is not None else items,
                                     positions=text_pos, prompt=self.tokenizer.prompt_text(prompt, prompt_name))
        if convert_to_tensor:
            convert_to_numpy = False
        if output_value != SENTENCE:
            convert_to_tensor = convert_to_numpy = False
        outputs = (SENTENCE,) if output_value == SENTENCE else (TOKENS,) if output_value == TOKENS \
            else (SENTENCE, TOKENS)
        chunks, order = self._chunks(texts, batch_size)

        progress = _progress(len(items), show_progress_bar)
        on_batch = progress.update if progress is not None else None
        try:
            parts = list(self.engine.pipeline(chunks, self.tokenizer.encode_checked, batch_size=batch_size,
                                              outputs=outputs, on_batch=on_batch))
            image_embeddings = self.image_engine.encode(
                [items[i] for i in image_pos], batch_size=batch_size, positions=image_pos, name="sentences",
                on_batch=on_batch) if image_pos else None
        finally:
            if progress is not None:
                progress.close()

        tokens = _unsorted([t for _, out in parts for t in (out.token_embeddings or [])], order)
        raw = np.concatenate([out.sentence_embedding for _, out in parts]) if parts and SENTENCE in outputs \
            else np.zeros((0, self.manifest.embedding_dimension), dtype=np.float32)
        if order is not None and len(raw):
            raw = _unsorted(raw, order)
        if image_embeddings is not None:
            # texts and images back into one array, in the caller's order
            merged = np.empty((len(items), image_embeddings.shape[1]), dtype=np.float32)
            merged[image_pos] = image_embeddings
            merged[text_pos] = raw
            raw = merged
        embeddings = self._finish(raw, normalize_embeddings, truncate_dim)
        if output_value == TOKENS:
            out: Any = tokens
        elif output_value is None:
            ids = _unsorted([i for enc, _ in parts for i in enc.ids], order)
            out = [{"sentence_embedding": embeddings[i], "token_embeddings": tokens[i], "input_ids": ids[i],
                    "attention_mask": np.ones_like(ids[i])} for i in range(len(items))]
        else:
            if items and precision != "float32":
                embeddings = util.quantize_embeddings(embeddings, precision)
            if convert_to_tensor:
                out = embeddings
            elif convert_to_numpy:
                out = embeddings if items else np.array([])
            else:
                out = list(embeddings)
        return out[0] if singular else out

    def encode_stream(self, sentences: Iterable[str], *, chunk_size: int | None = None, batch_size: int = 32,
                      prompt_name: str | None = None, prompt: str | None = None,
                      normalize_embeddings: bool = False, truncate_dim: int | None = None) -> Iterator[np.ndarray]:
        """Embed an arbitrarily long iterable with bounded memory, yielding one array per chunk, in order.

        Each chunk of ``chunk_size`` inputs is length-sorted and batched on its own while the next chunk is
        read and tokenized; concatenating the yielded arrays gives ``encode``'s result. Arguments are
        checked when this is called, not when the first chunk is asked for; a bare ``str`` is a
        ``TypeError`` (a stream of one text is ``[text]``). Texts are checked chunk by chunk, with errors
        naming the text's index in the whole stream.
        """
        batch_size = self._check_options(batch_size, truncate_dim=truncate_dim)
        size = self.chunk_size if chunk_size is None else check_positive_int("chunk_size", chunk_size)
        if isinstance(sentences, (str, bytes, bytearray)) or not isinstance(sentences, Iterable):
            raise TypeError(f"encode_stream takes an iterable of texts, got {_describe(sentences)}"
                            + ("; for one text use encode(text) or encode_stream([text])"
                               if isinstance(sentences, str) else ""))
        prompt_text = self.tokenizer.prompt_text(prompt, prompt_name)
        return self._stream(iter(sentences), size, batch_size, prompt_text, normalize_embeddings, truncate_dim)

    def _stream(self, items: Iterator[Any], size: int, batch_size: int, prompt: str | None, normalize: bool,
                truncate_dim: int | None) -> Iterator[np.ndarray]:
        def chunks() -> Iterator[list[Any]]:
            start = 0
            while True:
                chunk = [x for _, x in zip(range(size), items)]
                if not chunk:
                    return
                yield self.tokenizer.check(chunk, start=start, prompt=prompt)
                start += len(chunk)

        for _, out in self.engine.pipeline(chunks(), self.tokenizer.encode_checked, batch_size=batch_size):
            yield self._finish(out.sentence_embedding, normalize, truncate_dim)

    def __repr__(self) -> str:
        return (f"embedrt.SentenceTransformer({self.manifest.name!r}, variant={self.variant!r}, "
                f"dim={self.get_sentence_embedding_dimension()}, max_seq_length={self.max_seq_length}, "
                f"similarity={self.similarity_fn_name!r}, providers={self.providers['active']})")
