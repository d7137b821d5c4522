"""The engine: token ids in, embeddings out, over one ONNX Runtime session. No text, no HTTP.

Every front end drives it: the ``SentenceTransformer`` facade, the server's dynamic batcher and the
Ray actor. A front end that already formed a batch calls :meth:`Engine.run_batch` (or
:meth:`Engine.submit` for a future); one holding many texts calls :meth:`Engine.run`, which sorts
them by length and cuts batches under a token budget (:func:`plan_batches`). :attr:`Engine.info` holds
what a batcher needs to know: whether padding costs compute, the sequence limit, the token budget.

Thread-safe: it keeps no per-call state, and ONNX Runtime's ``run`` may be called concurrently. On
CPU it can run ``workers`` batches at once, each on ``threads // workers`` intra-op threads (the rule
is :mod:`embedrt.selection`'s); every caller's batches share those workers, so concurrent calls never
put more than ``workers`` runs on the cores.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from .checks import check_positive_int
from .types import SENTENCE, TOKENS, Encoded

T = TypeVar("T")


def plan_batches(lengths: np.ndarray, batch_size: int, max_batch_tokens: int | None = None, *,
                 min_batches: int = 1) -> list[np.ndarray]:
    """Group indices into batches, longest first, so each batch pads as little as possible.

    A batch holds at most ``batch_size`` texts and, when ``max_batch_tokens`` is given, at most
    that many padded tokens (count × longest length), but always at least one text. The batch with
    the most padded tokens is halved until there are ``min_batches`` (one per worker), or until every
    batch is one text: a short call then still keeps every worker busy.
    """
    check_positive_int("batch_size", batch_size)
    order = np.argsort(-lengths, kind="stable")
    batches: list[np.ndarray] = []
    start = 0
    n = len(order)
    while start < n:
        longest = max(int(lengths[order[start]]), 1)
        size = batch_size
        if max_batch_tokens is not None:
            size = max(1, min(size, max_batch_tokens // longest))
        batches.append(order[start:start + size])
        start += size
    while batches and len(batches) < min_batches:
        cost = [len(b) * int(lengths[b[0]]) if len(b) > 1 else -1 for b in batches]
        i = int(np.argmax(cost))
        if cost[i] < 0:
            break
        half = (len(batches[i]) + 1) // 2
        batches[i:i + 1] = [batches[i][:half], batches[i][half:]]
    return batches


@dataclass(frozen=True)
class BatchOutput:
    """Results for the texts of one call, in the caller's order."""

    sentence_embedding: np.ndarray | None
    token_embeddings: list[np.ndarray] | None


def bucket_width(longest: int, buckets: Sequence[int] | None) -> int:
    """Padded sequence width: the smallest bucket that fits, so only a few shapes ever reach the session."""
    longest = max(longest, 1)
    if not buckets:
        return longest
    for b in buckets:
        if b >= longest:
            return b
    return longest


def default_buckets(max_seq_length: int, smallest: int = 16) -> tuple[int, ...]:
    """Powers of two from ``smallest`` up to, and ending at, ``max_seq_length``."""
    out = []
    width = smallest
    while width < max_seq_length:
        out.append(width)
        width *= 2
    return (*out, max_seq_length)


@dataclass(frozen=True)
class EngineInfo:
    """What a front end needs to know about an engine (and what ``/info`` and ``embedrt info`` print).

    ``packed_rows``: the graph skips a batch's padding, so a batch costs its real tokens, not
    count x longest; ``max_batch_tokens``: the token budget per batch for this device and variant
    (padded tokens, or real ones on a packed graph); ``max_batch_size``: a hard cap on texts per batch
    (TensorRT's profile), else ``None``. A vision tower has no sequence limit or token budget (``None``).
    """

    model: str
    tower: str
    variant: str
    provider: str
    device: str
    threads: int | None
    workers: int
    packed_rows: bool
    max_seq_length: int | None
    max_batch_tokens: int | None
    max_batch_size: int | None
    dimension: int
    similarity_fn_name: str
    digest: str
    reasons: tuple[str, ...] = ()
    requested_providers: tuple[Any, ...] = ()


class Engine:
    """Runs a sentence-embedding graph over token ids (build one with :func:`embedrt.load_engine`).

    Args:
        session: an ONNX Runtime session of the graph.
        info: the engine's facts; ``info.max_batch_tokens`` bounds :meth:`run`'s batches.
        pad_token_id: id used to pad shorter sequences of a batch.
        seq_buckets: pad every batch to one of these widths (GPU/TensorRT: few shapes, no
            engine rebuilds and no arena growth); ``None`` pads to the batch's longest text.
        runner: runs feeds through the session another way than ``session.run`` (IO binding).
    """

    def __init__(self, session: Any, info: EngineInfo, pad_token_id: int, *,
                 seq_buckets: Sequence[int] | None = None, runner: Any = None) -> None:
        check_positive_int("workers", info.workers)
        self.session = session
        self.info = info
        self.pad_token_id = pad_token_id
        self.seq_buckets = tuple(sorted(seq_buckets)) if seq_buckets else None
        self.input_names = tuple(i.name for i in session.get_inputs())
        self.output_names = tuple(o.name for o in session.get_outputs())
        missing = {"input_ids", "attention_mask"} - set(self.input_names)
        if missing:
            raise ValueError(f"graph lacks required inputs {sorted(missing)}; has {self.input_names}")
        self._runner = runner
        self._pool: ThreadPoolExecutor | None = None
        self._pool_pid = 0
        self._pool_lock = threading.Lock()

    @property
    def workers(self) -> int:
        """Batches that run at once."""
        return self.info.workers

    def _workers(self) -> ThreadPoolExecutor:
        # A forked child (multiprocessing, a pre-forking server) inherits the pool object but not its
        # threads, and would wait forever on work nobody takes: each process gets its own pool.
        with self._pool_lock:
            if self._pool is None or self._pool_pid != os.getpid():
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="embedrt-batch")
                self._pool_pid = os.getpid()
            return self._pool

    def _check_outputs(self, outputs: Sequence[str]) -> None:
        for name in outputs:
            if name not in self.output_names:
                raise ValueError(f"output {name!r} not in graph outputs {self.output_names}")

    def _feeds(self, encoded: Encoded) -> dict[str, np.ndarray]:
        if not len(encoded):
            raise ValueError("a batch needs at least one text")
        width = bucket_width(max(len(s) for s in encoded.ids), self.seq_buckets)
        input_ids = np.full((len(encoded), width), self.pad_token_id, dtype=np.int64)
        attention_mask = np.zeros((len(encoded), width), dtype=np.int64)
        for row, seq in enumerate(encoded.ids):
            input_ids[row, :len(seq)] = seq
            attention_mask[row, :len(seq)] = 1
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
        if "token_type_ids" in self.input_names:
            type_ids = np.zeros_like(input_ids)
            for row, t in enumerate(encoded.type_ids):
                type_ids[row, :len(t)] = t
            feeds["token_type_ids"] = type_ids
        return feeds

    def run_batch(self, batch: Encoded, outputs: Sequence[str] = (SENTENCE,)) -> BatchOutput:
        """Run ``batch`` as one batch, as given: no sorting, no splitting (the caller planned it).

        Returns float32 sentence embeddings (batch, dim) and/or each text's token embeddings, trimmed
        to its own length, in ``batch``'s order.
        """
        self._check_outputs(outputs)
        feeds = self._feeds(batch)
        arrays = dict(zip(outputs, self._runner.run(outputs, feeds) if self._runner is not None
                          else self.session.run(list(outputs), feeds)))
        sentence = arrays[SENTENCE].astype(np.float32, copy=False) if SENTENCE in arrays else None
        tokens = None
        if TOKENS in arrays:
            tokens = [arrays[TOKENS][row, :max(len(ids), 1)].astype(np.float32, copy=False)
                      for row, ids in enumerate(batch.ids)]
        return BatchOutput(sentence_embedding=sentence, token_embeddings=tokens)

    def submit(self, batch: Encoded, outputs: Sequence[str] = (SENTENCE,)) -> Future[BatchOutput]:
        """:meth:`run_batch` on the engine's workers; the future holds its result (for a batcher)."""
        self._check_outputs(outputs)
        return self._workers().submit(self.run_batch, batch, outputs)

    def plan(self, lengths: np.ndarray, batch_size: int = 32) -> list[np.ndarray]:
        """Batches of indices for texts of ``lengths`` tokens: :func:`plan_batches` under this engine's
        budget, one batch per worker at least."""
        if self.info.max_batch_size is not None:
            batch_size = min(check_positive_int("batch_size", batch_size), self.info.max_batch_size)
        return plan_batches(lengths, batch_size, self.info.max_batch_tokens, min_batches=self.workers)

    def run(self, encoded: Encoded, *, batch_size: int = 32, outputs: Sequence[str] = (SENTENCE,),
            on_batch: Callable[[int], None] | None = None) -> BatchOutput:
        """Embed every encoded text in batches of :meth:`plan`, results in ``encoded``'s order;
        ``on_batch(n)`` is called after each batch of ``n`` texts."""
        self._check_outputs(outputs)
        n = len(encoded)
        sentence: np.ndarray | None = None
        tokens: list[np.ndarray] | None = [None] * n if TOKENS in outputs else None  # type: ignore[list-item]

        def one(idx: np.ndarray) -> tuple[np.ndarray, BatchOutput]:
            return idx, self.run_batch(encoded.select(idx), outputs)

        plan = self.plan(encoded.lengths(), batch_size)
        done = self._workers().map(one, plan) if self.workers > 1 else map(one, plan)
        for idx, out in done:
            if out.sentence_embedding is not None:
                if sentence is None:
                    sentence = np.empty((n, out.sentence_embedding.shape[1]), dtype=np.float32)
                sentence[idx] = out.sentence_embedding
            if tokens is not None and out.token_embeddings is not None:
                for i, t in zip(idx, out.token_embeddings):
                    tokens[i] = t
            if on_batch is not None:
                on_batch(len(idx))
        if sentence is None and SENTENCE in outputs:
            sentence = np.zeros((0, self.info.dimension), dtype=np.float32)
        return BatchOutput(sentence_embedding=sentence, token_embeddings=tokens)

    def pipeline(self, chunks: Iterable[T], tokenize: Callable[[T], Encoded], *, batch_size: int = 32,
                 outputs: Sequence[str] = (SENTENCE,), on_batch: Callable[[int], None] | None = None,
                 ) -> Iterator[tuple[Encoded, BatchOutput]]:
        """Embed chunk after chunk, tokenizing the next chunk on a worker thread while this one runs.

        Memory stays bounded by the chunk size however long ``chunks`` is; both tokenizers and
        ONNX Runtime release the GIL, so the two stages really overlap.
        """
        iterator = iter(chunks)
        first = next(iterator, None)
        if first is None:
            return
        second = next(iterator, None)
        if second is None:  # one chunk: nothing to overlap, and no thread to pay for on short calls
            encoded = tokenize(first)
            yield encoded, self.run(encoded, batch_size=batch_size, outputs=outputs, on_batch=on_batch)
            return
        iterator = itertools.chain([second], iterator)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="embedrt-tokenize") as pool:
            pending = pool.submit(tokenize, first)
            for chunk in iterator:
                encoded = pending.result()
                pending = pool.submit(tokenize, chunk)
                yield encoded, self.run(encoded, batch_size=batch_size, outputs=outputs, on_batch=on_batch)
            encoded = pending.result()
            yield encoded, self.run(encoded, batch_size=batch_size, outputs=outputs, on_batch=on_batch)

    def warmup(self, batch_size: int = 32, max_seq_length: int | None = None) -> None:
        """One batch per bucket width (or one at ``max_seq_length``, default the engine's, without buckets),
        so TensorRT engines, CUDA kernels and memory arenas are ready before the first real request."""
        longest = max_seq_length or self.info.max_seq_length
        widths = [w for w in (self.seq_buckets or ()) if w <= longest] or [longest]
        for width in widths:
            ids = [np.full(width, self.pad_token_id, dtype=np.int64)] * batch_size
            self.run(Encoded(ids=ids, type_ids=[np.zeros(width, dtype=np.int64)] * batch_size),
                     batch_size=batch_size)
