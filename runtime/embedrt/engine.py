"""Length-sorted, token-budget batching over one ONNX Runtime session.

The engine is the piece every front end drives (the ``SentenceTransformer`` facade today; a
server's dynamic batcher or a Ray actor next): it takes token ids, never raw text, and is
thread-safe because it keeps no per-call state and ORT's ``run`` is safe to call concurrently.

On CPU it can run several batches at once, each on its own core (``workers``), rather than one batch
at a time split across the cores by ORT's intra-op pool: a transformer layer is dozens of small
ops, and each op's fork/join across the pool stalls on the slowest core. On 2 cores (MiniLM-L6,
1,000 fortunes, batches of 32, ``benchmarks/workers.py``) two single-threaded runs gave the
int8_rowwise graph 1.05-1.08x the throughput of one two-threaded run, and 1.47x while the VM had one
of its slow phases; fp32 0.98-0.99x, and 1.11x in a slow phase. Outputs are bit-identical. The
facade runs int8_rowwise that way by default and other graphs one batch at a time, whose one-text
latency is lower (``embedrt.providers.CPU_CONCURRENT_VARIANTS``).
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from .checks import check_positive_int
from .tokenization import Encoded

T = TypeVar("T")

SENTENCE = "sentence_embedding"
TOKENS = "token_embeddings"


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


class _IOBindingRunner:
    """Runs with IO binding: inputs copied to the device once, outputs written into preallocated
    device buffers (one per shape, per thread, since concurrent calls must not share them)."""

    def __init__(self, session, device_type: str, device_id: int) -> None:
        self.session = session
        self.device_type = device_type
        self.device_id = device_id
        self.output_shapes = {o.name: o.shape for o in session.get_outputs()}
        self._local = threading.local()

    def _buffer(self, name: str, shape: tuple[int, ...]):
        from .providers import import_onnxruntime

        cache = self._local.__dict__.setdefault("buffers", {})
        key = (name, shape)
        if key not in cache:
            cache[key] = import_onnxruntime().OrtValue.ortvalue_from_shape_and_type(
                list(shape), np.float32, self.device_type, self.device_id)
        return cache[key]

    def _shape(self, name: str, batch: int, width: int) -> tuple[int, ...] | None:
        dims = self.output_shapes[name]
        concrete = [batch, width, *dims[2:]] if len(dims) == 3 else [batch, *dims[1:]]
        return tuple(concrete) if all(isinstance(d, int) for d in concrete) else None

    def run(self, outputs: Sequence[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        binding = self.session.io_binding()
        for name, array in feeds.items():
            binding.bind_cpu_input(name, array)
        batch, width = feeds["input_ids"].shape
        for name in outputs:
            shape = self._shape(name, batch, width)
            if shape is None:
                binding.bind_output(name, self.device_type, self.device_id)
            else:
                binding.bind_ortvalue_output(name, self._buffer(name, shape))
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()


class Engine:
    """Runs a sentence-embedding graph over pre-tokenized inputs.

    Args:
        session: an ONNX Runtime session of the graph.
        pad_token_id: id used to pad shorter sequences of a batch.
        max_batch_tokens: bound on padded tokens per batch (count × padded width).
        seq_buckets: pad every batch to one of these widths (GPU/TensorRT: few shapes, no
            engine rebuilds and no arena growth); ``None`` pads to the batch's longest text.
        io_binding: ``(device_type, device_id)`` to run through IO binding, e.g. ``("cuda", 0)``.
        max_batch_size: hard cap on texts per batch whatever the caller asks (a TensorRT profile's
            maximum batch: larger batches would force an engine rebuild).
        workers: batches run at once, on threads the engine owns (give the session
            ``cores // workers`` intra-op threads). Every caller's batches share these workers, so
            concurrent ``run`` calls never put more than ``workers`` runs on the cores.
    """

    def __init__(self, session, pad_token_id: int, max_batch_tokens: int | None = None, *,
                 seq_buckets: Sequence[int] | None = None, io_binding: tuple[str, int] | None = None,
                 max_batch_size: int | None = None, workers: int = 1) -> None:
        check_positive_int("workers", workers)
        self.session = session
        self.pad_token_id = pad_token_id
        self.max_batch_tokens = max_batch_tokens
        self.seq_buckets = tuple(sorted(seq_buckets)) if seq_buckets else None
        self.input_names = tuple(i.name for i in session.get_inputs())
        self.output_names = tuple(o.name for o in session.get_outputs())
        missing = {"input_ids", "attention_mask"} - set(self.input_names)
        if missing:
            raise ValueError(f"graph lacks required inputs {sorted(missing)}; has {self.input_names}")
        self._runner = _IOBindingRunner(session, *io_binding) if io_binding else None
        self.max_batch_size = max_batch_size
        self.workers = workers
        self._pool: ThreadPoolExecutor | None = None
        self._pool_pid = 0
        self._pool_lock = threading.Lock()

    def _workers(self) -> ThreadPoolExecutor:
        # A forked child (multiprocessing, a pre-forking server) inherits the pool object but not its
        # threads, and would wait forever on work nobody takes: each process gets its own pool.
        with self._pool_lock:
            if self._pool is None or self._pool_pid != os.getpid():
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="embedrt-batch")
                self._pool_pid = os.getpid()
            return self._pool

    def _run(self, outputs: Sequence[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        if self._runner is not None:
            return self._runner.run(outputs, feeds)
        return self.session.run(list(outputs), feeds)

    def _feeds(self, encoded: Encoded, idx: np.ndarray) -> dict[str, np.ndarray]:
        seqs = [encoded.ids[i] for i in idx]
        width = bucket_width(max(len(s) for s in seqs), self.seq_buckets)
        input_ids = np.full((len(seqs), width), self.pad_token_id, dtype=np.int64)
        attention_mask = np.zeros((len(seqs), width), dtype=np.int64)
        for row, seq in enumerate(seqs):
            input_ids[row, :len(seq)] = seq
            attention_mask[row, :len(seq)] = 1
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
        if "token_type_ids" in self.input_names:
            type_ids = np.zeros_like(input_ids)
            for row, i in enumerate(idx):
                t = encoded.type_ids[i]
                type_ids[row, :len(t)] = t
            feeds["token_type_ids"] = type_ids
        return feeds

    def run(self, encoded: Encoded, *, batch_size: int = 32, outputs: Sequence[str] = (SENTENCE,),
            on_batch: Callable[[int], None] | None = None) -> BatchOutput:
        """Embed every encoded text; ``on_batch(n)`` is called after each batch of ``n`` texts."""
        for name in outputs:
            if name not in self.output_names:
                raise ValueError(f"output {name!r} not in graph outputs {self.output_names}")
        lengths = encoded.lengths()
        n = len(lengths)
        sentence: np.ndarray | None = None
        tokens: list[np.ndarray] | None = [None] * n if TOKENS in outputs else None  # type: ignore[list-item]
        if self.max_batch_size is not None:
            batch_size = min(batch_size, self.max_batch_size)
        plan = plan_batches(lengths, batch_size, self.max_batch_tokens, min_batches=self.workers)

        def one(idx: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
            return idx, self._run(outputs, self._feeds(encoded, idx))

        done = self._workers().map(one, plan) if self.workers > 1 else map(one, plan)
        for idx, arrays in done:
            results = dict(zip(outputs, arrays))
            if SENTENCE in results:
                batch = results[SENTENCE].astype(np.float32, copy=False)  # fp16 graphs keep fp32 io, but be sure
                if sentence is None:
                    sentence = np.empty((n, batch.shape[1]), dtype=batch.dtype)
                sentence[idx] = batch
            if tokens is not None:
                for row, i in enumerate(idx):
                    tokens[i] = results[TOKENS][row, :max(int(lengths[i]), 1)].astype(np.float32, copy=False)
            if on_batch is not None:
                on_batch(len(idx))
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

    def warmup(self, batch_size: int, max_seq_length: int) -> None:
        """One batch per bucket width (or one at ``max_seq_length`` without buckets)."""
        widths = [w for w in (self.seq_buckets or ()) if w <= max_seq_length] or [max_seq_length]
        for width in widths:
            ids = [np.full(width, self.pad_token_id, dtype=np.int64)] * batch_size
            self.run(Encoded(ids=ids, type_ids=[np.zeros(width, dtype=np.int64)] * batch_size),
                     batch_size=batch_size)
