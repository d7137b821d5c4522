"""One served model: its tokenizer, engine (and CLIP's vision engine), batcher and readiness.

It stands on the same layers as the facade (:func:`embedrt.load_tokenizer`, :func:`embedrt.load_engine`),
so a request's embedding is the one ``SentenceTransformer.encode`` gives for the same input and variant.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import images
from ..artifact import open_artifact
from ..loader import load_engine
from ..tokenizer import load_tokenizer
from ..types import Encoded
from .batcher import Batcher
from .errors import bad_request
from .metrics import Metrics
from .protocol import Item

logger = logging.getLogger(__name__)

# Requests with fewer characters than this are tokenized on the event loop: a thread hop costs more.
INLINE_TOKENIZE_CHARS = 4096


@dataclass(frozen=True)
class ImageFetch:
    """Fetching image URLs that clients name: off unless hosts are allowed (a server that fetches any URL
    is an SSRF hole). Only ``https`` and ``http`` URLs on ``hosts``, at most ``max_bytes`` in ``timeout_s``."""

    hosts: frozenset[str] = frozenset()
    max_bytes: int = 10 << 20
    timeout_s: float = 5.0

    def load(self, url: str, label: str) -> Any:
        """The image at ``url`` (PIL), or a 400 naming ``label``."""
        parsed = urllib.parse.urlparse(url)
        if parsed.scheme not in ("http", "https") or parsed.hostname not in self.hosts:
            raise bad_request(f"{label}: fetching image URLs is {'off' if not self.hosts else 'allowed only for '}"
                              f"{', '.join(sorted(self.hosts))}; send the image as a data:image/...;base64, URI",
                              label)
        try:
            with urllib.request.urlopen(url, timeout=self.timeout_s) as response:  # noqa: S310 - allow-listed
                data = response.read(self.max_bytes + 1)
        except OSError as exc:
            raise bad_request(f"{label}: could not fetch {url!r} ({exc})", label) from exc
        if len(data) > self.max_bytes:
            raise bad_request(f"{label}: the image at {url!r} is larger than {self.max_bytes} bytes", label)
        return images.load_image("data:image/;base64," + base64.b64encode(data).decode(), label)


class ModelHost:
    """Loads, warms and serves one artifact under ``name``."""

    def __init__(self, name: str | None, source: str, metrics: Metrics, *, max_queue_tokens: int,
                 device: str | None = None,
                 variant: str | None = None, threads: int | None = None, workers: int | None = None,
                 expected_digest: str | None = None, image_fetch: ImageFetch = ImageFetch()) -> None:
        self.metrics = metrics
        self.artifact = open_artifact(source, expected_digest)
        self.manifest = self.artifact.manifest
        self.name = name or self.manifest.name
        self.tokenizer = load_tokenizer(self.artifact)
        run = {"device": device, "threads": threads, "workers": workers}
        self.engine = load_engine(self.artifact, variant=variant, **run)
        self.vision = None
        if "vision" in self.manifest.towers:
            vision = self.manifest.towers["vision"].variants
            chosen = self.engine.info.variant
            self.vision = load_engine(self.artifact, tower="vision", variant=chosen if chosen in vision else None,
                                      **run)
        self.batcher = Batcher(self.engine, self.name, metrics, max_queue_tokens=max_queue_tokens)
        self.image_fetch = image_fetch
        self.warm = False
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=f"embedrt-tokenize-{self.name}")

    def warmup(self) -> None:
        """One batch at the longest length the budget allows (and one image), so the arenas are sized and
        the first request runs at speed."""
        info = self.engine.info
        self.engine.warmup(max(1, info.max_batch_tokens // info.max_seq_length), info.max_seq_length)
        if self.vision is not None:
            spec = self.vision.spec
            self.vision.run_batch(np.zeros((1, 3, spec.crop_height, spec.crop_width), dtype=np.float32))
        self.warm = True

    @property
    def ready(self) -> bool:
        """Warmed up, and its recent batches did not fail."""
        return self.warm and self.batcher.ready

    @property
    def dimension(self) -> int:
        """Embedding width."""
        return self.manifest.embedding_dimension

    def info(self) -> dict[str, Any]:
        """What ``GET /info`` says about this model."""
        info = self.engine.info
        return {"model": self.name, "artifact": self.manifest.name, "digest": info.digest, "variant": info.variant,
                "provider": info.provider, "threads": info.threads, "workers": info.workers,
                "packed_rows": info.packed_rows, "max_batch_tokens": info.max_batch_tokens,
                "max_queue_tokens": self.batcher.max_queue_tokens, "max_seq_length": self.tokenizer.max_seq_length,
                "dimension": self.dimension, "similarity": self.manifest.similarity_fn_name,
                "similarity_source": self.manifest.similarity_source, "normalized": self.manifest.normalized,
                "inputs": list(self.manifest.input_kinds), "ready": self.ready,
                "last_error": self.batcher.stats.last_error}

    # -- requests --------------------------------------------------------------------------------------
    def _tokenize(self, items: list[Item], positions: list[int], field: str, truncate: bool,
                  prompt_name: str | None) -> Encoded:
        texts = [k for k, item in enumerate(items) if item.text is not None]
        ids = [k for k, item in enumerate(items) if item.ids is not None]
        parts = []
        try:
            if texts:
                prompt = self.tokenizer.prompt_text(prompt_name=prompt_name)
                parts.append(self.tokenizer.encode_checked(self.tokenizer.check(
                    [items[k].text for k in texts], positions=[positions[k] for k in texts], name=field,
                    prompt=prompt)))
            if ids:
                parts.append(self.tokenizer.from_ids([items[k].ids for k in ids],  # type: ignore[misc]
                                                     name=field, positions=[positions[k] for k in ids]))
        except (TypeError, ValueError) as exc:
            raise bad_request(str(exc), field) from exc
        encoded = Encoded.concat(parts).select(np.argsort(texts + ids, kind="stable"))
        flags = encoded.truncated if encoded.truncated is not None else np.zeros(len(encoded), dtype=bool)
        if flags.any():
            first = f"{field}[{positions[int(np.argmax(flags))]}]"
            if not truncate:
                raise bad_request(f"'{first}' has more than {self.tokenizer.max_seq_length} tokens, the model's "
                                  "max_seq_length, and 'truncate' is false", first, code="input_too_long")
            self.metrics.truncated.labels(self.name).inc(int(flags.sum()))
        return encoded

    async def tokenize(self, items: list[Item], positions: list[int], field: str, *, truncate: bool = True,
                       prompt_name: str | None = None) -> Encoded:
        """The token ids of ``items`` (texts and token-id inputs; errors name ``field[positions[k]]``)."""
        started = time.perf_counter()
        if sum(len(item.text or "") for item in items) < INLINE_TOKENIZE_CHARS:
            encoded = self._tokenize(items, positions, field, truncate, prompt_name)
        else:
            encoded = await asyncio.get_running_loop().run_in_executor(
                self._pool, self._tokenize, items, positions, field, truncate, prompt_name)
        self.metrics.tokenization.labels(self.name).observe(time.perf_counter() - started)
        return encoded

    async def embed(self, items: tuple[Item, ...], field: str, *, truncate: bool = True,
                    prompt_name: str | None = None) -> tuple[np.ndarray, int]:
        """``(embeddings in items' order, real tokens)`` for texts, token ids and images."""
        image_rows = [i for i, item in enumerate(items) if item.image is not None]
        if image_rows and self.vision is None:
            raise bad_request(f"'{field}[{image_rows[0]}]' is an image, but model {self.name!r} embeds text only",
                              f"{field}[{image_rows[0]}]")
        text_rows = [i for i, item in enumerate(items) if item.image is None]
        out = np.empty((len(items), self.dimension), dtype=np.float32)
        tokens = 0
        if text_rows:
            encoded = await self.tokenize([items[i] for i in text_rows], text_rows, field, truncate=truncate,
                                          prompt_name=prompt_name)
            tokens = int(encoded.lengths().sum())
            vectors, queued, inferred = await self.batcher.embed(encoded)
            self.metrics.queue.labels(self.name).observe(queued)
            self.metrics.inference.labels(self.name).observe(inferred)
            out[text_rows] = vectors
        if image_rows:
            out[image_rows] = await self._images([items[i].image for i in image_rows], image_rows, field)
        self.metrics.inputs.labels(self.name).inc(len(items))
        self.metrics.tokens.labels(self.name).inc(tokens)
        return out, tokens

    async def _images(self, uris: list[str | None], rows: list[int], field: str) -> np.ndarray:
        assert self.vision is not None
        loop = asyncio.get_running_loop()

        def pixels() -> np.ndarray:
            loaded = []
            for uri, row in zip(uris, rows):
                label = f"{field}[{row}]"
                if isinstance(uri, str) and uri.startswith("data:image/"):
                    loaded.append(images.load_image(uri, label))
                else:
                    loaded.append(self.image_fetch.load(str(uri), label))
            return images.preprocess(loaded, self.vision.spec, positions=rows, name=field)

        try:
            batch = await loop.run_in_executor(self._pool, pixels)
        except (TypeError, ValueError) as exc:
            raise bad_request(str(exc), field) from exc
        return await asyncio.wrap_future(self.vision.submit(batch))
