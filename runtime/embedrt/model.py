"""The ``SentenceTransformer``-compatible facade, configured entirely by the artifact's manifest."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np

from . import images, isa, kernels, util
from .checks import check_positive_int
from .engine import SENTENCE, TOKENS, Engine, default_buckets
from .hub import resolve_artifact
from .manifest import Artifact
from .providers import ProviderSpec, ShapeProfile, create_session, plan_providers, specialize, split_threads
from .tokenization import load_tokenizer

logger = logging.getLogger(__name__)

OutputValue = Literal["sentence_embedding", "token_embeddings"] | None


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"[:80]


def _is_pair(item: Any) -> bool:
    return isinstance(item, (list, tuple)) and len(item) == 2 and all(isinstance(x, str) for x in item)


def _check_item(item: Any, index: int, allow_pairs: bool) -> str | tuple[str, str]:
    if isinstance(item, str):
        return item
    if _is_pair(item):
        if not allow_pairs:
            raise TypeError(f"sentences[{index}] is a pair {_describe(item)}, but this model takes single texts")
        return (item[0], item[1])
    if images.is_image_input(item):
        raise TypeError(f"sentences[{index}] is an image ({type(item).__name__}), but this model is text-only")
    raise TypeError(f"sentences[{index}] must be a str{' or a [title, text] pair' if allow_pairs else ''}, "
                    f"got {_describe(item)}")


def _as_iterable(sentences: Any) -> Iterable[Any]:
    if sentences is None or isinstance(sentences, (bytes, bytearray, dict, int, float)):
        raise TypeError(f"sentences must be a str or a list of str, got {_describe(sentences)}")
    if isinstance(sentences, np.ndarray):
        return sentences.tolist()
    if not isinstance(sentences, Iterable):
        raise TypeError(f"sentences must be a str or a list of str, got {_describe(sentences)}")
    return sentences


def _chunks(items: Iterable[Any], size: int, allow_pairs: bool,
            positions: Iterable[int] | None = None) -> Iterator[list[str | tuple[str, str]]]:
    """Validated chunks of at most ``size`` inputs; errors name the index in the whole input."""
    chunk: list[str | tuple[str, str]] = []
    for index, item in zip(positions if positions is not None else itertools.count(), items):
        chunk.append(_check_item(item, index, allow_pairs))
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


# On CPU a batch of long texts is cut to this many padded tokens: attention memory grows with the
# square of the length, and smaller batches of long texts stay in cache. Measured on MiniLM-L6 over
# 2,000 fortunes: peak RSS 900 → 366 MiB, and no slower (see benchmarks/README.md).
CPU_MAX_BATCH_TOKENS = 1024

# What an int8 variant must have measured at export before the runtime picks it without being asked.
AUTO_INT8_GATE = {"spearman": 0.995, "top10_overlap": 0.95}
AUTO_INT8_MAX_BATCH_ONE_MINUS_COS = 1e-4


def _auto_pickable(name: str, parity: dict[str, float]) -> bool:
    if not name.startswith("int8"):
        return True
    return (all(parity.get(k, -1.0) >= limit for k, limit in AUTO_INT8_GATE.items())
            and parity.get("batch_one_minus_cos", 1.0) <= AUTO_INT8_MAX_BATCH_ONE_MINUS_COS)


class SentenceTransformer:
    """Encode text with an embedrt artifact, with ``sentence_transformers.SentenceTransformer``'s API.

    Args:
        model_name_or_path: an artifact folder (written by ``embedrt export``), a name under
            ``$EMBEDRT_CACHE/artifacts``, or a Hub repo holding an artifact.
        device: "cpu" (default), "cuda", "cuda:N" or "tensorrt".
        providers: explicit ONNX Runtime providers list instead of ``device``.
        threads: CPU threads to use in all; default all cores this process may use.
        workers: CPU only: text batches run at once, each on ``threads // workers`` threads. Default 1
            (every batch gets all threads: the lowest latency), and 2 for the ``int8_rowwise`` graph,
            which runs faster that way (``embedrt.providers.CPU_CONCURRENT_VARIANTS``).
        strict: raise instead of warning when the requested provider is not what runs.
        variant: graph variant from the manifest (default: the tower's default, ``fp32``).
        truncate_dim: keep only the first ``truncate_dim`` dimensions of sentence embeddings.
        max_batch_tokens: bound on padded tokens per batch (``None``: :data:`CPU_MAX_BATCH_TOKENS` on
            CPU, only ``batch_size`` on GPU).
        max_batch_size: TensorRT only: the shape profile's largest batch; ``encode(batch_size=...)``
            above it runs in batches of this size, since a larger batch would rebuild the engine.
        trt_cache_dir: TensorRT engine cache root (default ``$EMBEDRT_TRT_CACHE`` or
            ``~/.cache/embedrt/trt``); each graph and profile gets its own sub-folder.
    """

    def __init__(self, model_name_or_path: str | Path, *, device: str | None = None,
                 providers: list[ProviderSpec] | None = None, threads: int | None = None,
                 workers: int | None = None, strict: bool = False, variant: str | None = None,
                 truncate_dim: int | None = None, max_batch_tokens: int | None = None, max_batch_size: int = 64,
                 trt_cache_dir: str | None = None) -> None:
        self.artifact = Artifact(resolve_artifact(model_name_or_path))
        manifest = self.artifact.manifest
        self.manifest = manifest
        tower = manifest.towers["text"]
        plan = plan_providers(device, providers, threads)
        self.variant = variant or self._default_variant(tower.variants, tower.default_variant, plan)
        if self.variant not in tower.variants:
            raise ValueError(f"variant {self.variant!r} not in artifact; available: {sorted(tower.variants)}")
        spec = manifest.tokenizer
        self.tokenizer = load_tokenizer(spec, self.artifact.read_verified(spec.file))
        graph_variant = tower.variants[self.variant]
        buckets = default_buckets(spec.max_seq_length) if plan.on_gpu else None
        # TensorRT's profile reaches the position limit, so raising max_seq_length after load (as
        # sentence-transformers users do) stays inside the engine that was built.
        profile = ShapeProfile(max_batch=max_batch_size, opt_seq=min(128, spec.max_seq_length),
                               max_seq=spec.model_max_length or spec.max_seq_length)
        self._plan = specialize(plan, self.manifest.files[graph_variant.file].sha256, graph_variant.inputs,
                                profile, trt_cache_dir)
        self.device = device or ("cpu" if providers is None else None)
        text_plan, workers = split_threads(self._plan, workers, self.variant)
        with self.artifact.verified_graph(graph_variant) as graph_path:
            session = create_session(str(graph_path), text_plan, strict=strict, custom_ops=graph_variant.custom_ops)
        active = session.get_providers()[0]
        on_gpu = active in ("CUDAExecutionProvider", "TensorrtExecutionProvider")
        self._trt_max_seq = profile.max_seq if active == "TensorrtExecutionProvider" else None
        if max_batch_tokens is None and not on_gpu:
            max_batch_tokens = CPU_MAX_BATCH_TOKENS
        self.engine = Engine(session, spec.pad_token_id, max_batch_tokens,
                             seq_buckets=buckets if on_gpu else None,
                             io_binding=("cuda", self._plan.device_id) if on_gpu else None,
                             max_batch_size=max_batch_size if self._plan.device == "tensorrt" else None,
                             workers=workers)
        self.image_encoder = None
        if "vision" in manifest.towers:
            vision = manifest.towers["vision"]
            self.image_encoder = images.ImageEncoder.from_artifact(
                self.artifact, self._plan, variant=self.variant if self.variant in vision.variants else None,
                strict=strict)
        self.similarity_fn_name = manifest.similarity_fn_name
        self.prompts = dict(manifest.prompts)
        self.default_prompt_name = manifest.default_prompt_name
        self.truncate_dim = truncate_dim
        # Texts are tokenized and length-sorted this many at a time: large enough that sorting
        # removes nearly all padding, small enough to bound memory and overlap tokenization.
        self.chunk_size = 4096

    @staticmethod
    def _default_variant(variants: dict[str, Any], default: str, plan: Any) -> str:
        """The fastest variant for the device (``isa.best_variant``) among those safe to pick unasked:
        an int8 graph only if its recorded fidelity keeps ranking and is batch-invariant, and a graph
        on embedrt's kernels only where the kernel library was built (else it says what it picks)."""
        usable = [name for name, v in variants.items() if _auto_pickable(name, v.parity)]
        device = "cpu" if plan.device == "custom" else plan.device
        while True:
            try:
                best = isa.best_variant(usable, device=device)
            except ValueError:
                return default
            if not variants[best].custom_ops or kernels.available():
                return best
            usable.remove(best)
            logger.warning("variant %r would run fastest here but needs embedrt's kernel library, which this "
                           "install lacks (built at install time with a C++17 compiler); picking among %s",
                           best, sorted(usable))

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

    def _check_options(self, batch_size: int, precision: str = "float32", output_value: OutputValue = SENTENCE,
                       device: str | None = None) -> None:
        if device is not None and device != self.device:
            raise ValueError(f"encode(device={device!r}) differs from the load-time device {self.device!r}: "
                             "embedrt binds the device when the model is loaded; pass device= there")
        if output_value not in (SENTENCE, TOKENS, None):
            raise ValueError(f"output_value must be 'sentence_embedding', 'token_embeddings' or None, "
                             f"got {output_value!r}")
        if precision not in util.PRECISIONS:
            raise ValueError(f"precision {precision!r} is not supported; use one of {util.PRECISIONS}")
        check_positive_int("batch_size", batch_size)

    def _with_prompt(self, prompt: str | None, prompt_name: str | None) -> Any:
        text = self._resolve_prompt(prompt, prompt_name)
        if not text:
            return self.tokenizer.encode

        def encode(chunk: list[str | tuple[str, str]]) -> Any:
            return self.tokenizer.encode([text + t if isinstance(t, str) else (text + t[0], t[1]) for t in chunk])
        return encode

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
        self._check_options(batch_size, precision, output_value, device)
        singular = isinstance(sentences, str) or (self.image_encoder is not None and not isinstance(
            sentences, (list, tuple)) and images.is_image_input(sentences))
        items = [sentences] if singular else list(_as_iterable(sentences))
        image_pos = [i for i, x in enumerate(items) if images.is_image_input(x)] if self.image_encoder else []
        if image_pos and output_value != SENTENCE:
            raise ValueError(f"images have only sentence embeddings; output_value={output_value!r} needs texts only "
                             f"(sentences[{image_pos[0]}] is an image)")
        text_pos = sorted(set(range(len(items))) - set(image_pos)) if image_pos else None
        texts = [items[i] for i in text_pos] if text_pos is not None else items
        if show_progress_bar is None:
            show_progress_bar = logger.getEffectiveLevel() <= logging.INFO
        if convert_to_tensor:
            convert_to_numpy = False
        if output_value != SENTENCE:
            convert_to_tensor = convert_to_numpy = False
        outputs = (SENTENCE,) if output_value == SENTENCE else (TOKENS,) if output_value == TOKENS \
            else (SENTENCE, TOKENS)
        chunks = list(_chunks(texts, self.chunk_size, "pair" in self.manifest.input_kinds, text_pos))

        progress = None
        if show_progress_bar and items:
            from tqdm.auto import tqdm
            progress = tqdm(total=len(items), desc="Encoding", unit="text")
        try:
            parts = list(self.engine.pipeline(chunks, self._with_prompt(prompt, prompt_name), batch_size=batch_size,
                                              outputs=outputs, on_batch=progress.update if progress else None))
            image_embeddings = self.image_encoder.encode(
                [items[i] for i in image_pos], batch_size=batch_size, positions=image_pos, name="sentences",
                on_batch=progress.update if progress else None) if image_pos else None
        finally:
            if progress is not None:
                progress.close()

        tokens = [t for _, out in parts for t in (out.token_embeddings or [])]
        raw = np.concatenate([out.sentence_embedding for _, out in parts]) if parts and SENTENCE in outputs \
            else np.zeros((0, self.manifest.embedding_dimension), dtype=np.float32)
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
            ids = [i for enc, _ in parts for i in enc.ids]
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

        Each chunk of ``chunk_size`` inputs is length-sorted and batched on its own while the next
        chunk is read and tokenized; concatenating the yielded arrays gives ``encode``'s result.
        """
        self._check_options(batch_size)
        size = chunk_size or self.chunk_size
        chunks = _chunks(_as_iterable(sentences), size, "pair" in self.manifest.input_kinds)
        for _, out in self.engine.pipeline(chunks, self._with_prompt(prompt, prompt_name), batch_size=batch_size):
            yield self._finish(out.sentence_embedding, normalize_embeddings, truncate_dim)

    def __repr__(self) -> str:
        return (f"embedrt.SentenceTransformer({self.manifest.name!r}, variant={self.variant!r}, "
                f"dim={self.get_sentence_embedding_dimension()}, max_seq_length={self.max_seq_length}, "
                f"similarity={self.similarity_fn_name!r}, providers={self.providers['active']})")
