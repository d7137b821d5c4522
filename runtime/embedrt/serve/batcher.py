"""Dynamic batching for one model: requests' token ids in, one queue bounded in tokens, batches out.

The batcher never sees text or HTTP: requests arrive as :class:`~embedrt.types.Encoded` rows and leave
as embedding rows, through the engine's :meth:`~embedrt.engine.Engine.submit`. One loop per model takes
inputs in arrival order into a batch until the engine's token budget (real tokens on a packed graph,
count x longest on a padded one) or the batch cap would be passed, hands it to the engine, and forms the
next while that one runs: at most ``workers + 1`` batches are in flight, so under load each batch holds
what arrived while the previous one ran. An embedding does not depend on its batch (the graphs' sums
are sequential), so a request gets the bits ``encode`` gives, whatever it shared a batch with.

Admission is immediate: a request whose tokens would pass the queue's bound is refused with a 429 and a
``Retry-After`` from the recent token rate; inputs whose client left are dropped before batching; a
batch the engine fails is rerun input by input, so one bad input fails only its own request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..types import Encoded
from .errors import APIError, overloaded
from .metrics import Metrics

logger = logging.getLogger(__name__)

# Readiness turns off after this many batches in a row failed (and back on at the next success).
FAILURES_BEFORE_UNREADY = 3


@dataclass(eq=False)
class _Job:
    """One request's inputs on their way through the queue."""

    encoded: Encoded
    future: asyncio.Future[np.ndarray]
    out: np.ndarray
    remaining: int
    queued_at: float
    started_at: float = 0.0
    cancelled: bool = False
    error: BaseException | None = None


@dataclass(eq=False)
class _Entry:
    job: _Job
    row: int
    length: int


@dataclass
class BatcherStats:
    """What readiness and ``Retry-After`` read."""

    consecutive_failures: int = 0
    last_error: str | None = None
    tokens_per_s: float = 0.0
    batches: int = 0


class Batcher:
    """The queue and batching loop of one model's engine (start it in the event loop with :meth:`start`)."""

    def __init__(self, engine: Any, name: str, metrics: Metrics, *, max_queue_tokens: int,
                 max_batch_texts: int = 256) -> None:
        info = engine.info
        self.engine = engine
        self.name = name
        self.metrics = metrics
        self.budget = int(info.max_batch_tokens)
        self.packed = bool(info.packed_rows)
        self.max_texts = min(max_batch_texts, info.max_batch_size or max_batch_texts)
        self.max_queue_tokens = max_queue_tokens
        self.queue: deque[_Entry] = deque()
        self.queued_tokens = 0
        self.stats = BatcherStats()
        self._slots: asyncio.Semaphore | None = None
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue_gauge = metrics.queue_tokens.labels(name)

    def start(self) -> None:
        """Start the batching loop on the running event loop."""
        self._loop = asyncio.get_running_loop()
        self._slots = asyncio.Semaphore(self.engine.workers + 1)
        self._wakeup = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name=f"embedrt-batcher-{self.name}")

    @property
    def ready(self) -> bool:
        """Not failing: fewer than :data:`FAILURES_BEFORE_UNREADY` batches in a row failed."""
        return self.stats.consecutive_failures < FAILURES_BEFORE_UNREADY

    def retry_after(self, tokens: int) -> float:
        """Seconds until ``tokens`` more would fit, at the recent rate (1 s when nothing is known yet)."""
        rate = self.stats.tokens_per_s
        return max(1.0, (self.queued_tokens + tokens - self.max_queue_tokens) / rate) if rate else 1.0

    async def embed(self, encoded: Encoded) -> tuple[np.ndarray, float, float]:
        """Sentence embeddings of ``encoded``'s rows, in order, with the request's queue and inference seconds.

        Raises :class:`~embedrt.serve.errors.APIError`: 413 for a request larger than the whole queue, 429
        when the queue has no room for it now, 500 when the engine failed on one of its inputs.
        """
        lengths = encoded.lengths()
        tokens = int(lengths.sum())
        if tokens > self.max_queue_tokens:
            raise APIError(413, f"the request has {tokens} tokens; this model's queue holds at most "
                           f"{self.max_queue_tokens} (split the request)", code="request_too_large")
        if self.queued_tokens + tokens > self.max_queue_tokens:
            raise overloaded(self.retry_after(tokens), self.name)
        assert self._loop is not None and self._wakeup is not None, "Batcher.start() was not called"
        job = _Job(encoded=encoded, future=self._loop.create_future(),
                   out=np.empty((len(encoded), self.engine.info.dimension), dtype=np.float32),
                   remaining=len(encoded), queued_at=time.perf_counter())
        self.queue.extend(_Entry(job, row, int(n)) for row, n in enumerate(lengths))
        self.queued_tokens += tokens
        self._queue_gauge.set(self.queued_tokens)
        self._wakeup.set()
        try:
            out = await job.future
        except asyncio.CancelledError:
            job.cancelled = True  # its inputs still queued are dropped before batching
            raise
        done = time.perf_counter()
        return out, job.started_at - job.queued_at, done - job.started_at

    def _cost(self, count: int, longest: int, total: int) -> int:
        return total if self.packed else count * longest

    def _take(self) -> list[_Entry]:
        """The next batch: queued inputs in arrival order while they fit the budget (at least one)."""
        batch: list[_Entry] = []
        longest = total = 0
        while self.queue:
            entry = self.queue[0]
            if entry.job.cancelled:
                self.queue.popleft()
                self.queued_tokens -= entry.length
                self.metrics.dropped.labels(self.name).inc()
                continue
            if batch and (len(batch) >= self.max_texts or self._cost(len(batch) + 1, max(longest, entry.length),
                                                                     total + entry.length) > self.budget):
                break
            self.queue.popleft()
            self.queued_tokens -= entry.length
            batch.append(entry)
            longest, total = max(longest, entry.length), total + entry.length
        self._queue_gauge.set(self.queued_tokens)
        return batch

    async def _run(self) -> None:
        assert self._slots is not None and self._wakeup is not None
        while True:
            await self._slots.acquire()
            batch: list[_Entry] = []
            while not batch:
                while not self.queue:
                    self._wakeup.clear()
                    await self._wakeup.wait()
                batch = self._take()
            now = time.perf_counter()
            for entry in batch:
                if not entry.job.started_at:
                    entry.job.started_at = now
            rows = Encoded(ids=[e.job.encoded.ids[e.row] for e in batch],
                           type_ids=[e.job.encoded.type_ids[e.row] for e in batch])
            self._submit(rows, lambda future, b=batch, t=now: self._done(b, t, future))

    def _submit(self, rows: Encoded, then: Callable[[Future[Any]], None]) -> None:
        loop = self._loop
        assert loop is not None
        self.engine.submit(rows).add_done_callback(lambda f: loop.call_soon_threadsafe(then, f))

    def _done(self, batch: list[_Entry], started: float, future: Future[Any]) -> None:
        assert self._slots is not None
        self._slots.release()
        error = future.exception()
        if error is not None:
            self._failed(batch, error)
            return
        embeddings = future.result().sentence_embedding
        seconds = time.perf_counter() - started
        total = sum(e.length for e in batch)
        self._record(len(batch), total, self._cost(len(batch), max(e.length for e in batch), total), seconds)
        for entry, row in zip(batch, embeddings):
            self._deliver(entry, row)

    def _deliver(self, entry: _Entry, row: np.ndarray | None, error: BaseException | None = None) -> None:
        job = entry.job
        if error is not None:
            job.error = error
        elif row is not None:
            job.out[entry.row] = row
        job.remaining -= 1
        if job.remaining == 0 and not job.future.done():
            if job.error is not None:
                job.future.set_exception(APIError(500, f"the model failed on this request's input "
                                                  f"({type(job.error).__name__}: {job.error})"[:400],
                                                  type="server_error", code="inference_failed"))
            else:
                job.future.set_result(job.out)

    def _record(self, texts: int, tokens: int, computed: int, seconds: float) -> None:
        stats = self.stats
        stats.consecutive_failures = 0
        stats.batches += 1
        rate = tokens / max(seconds, 1e-6)
        stats.tokens_per_s = rate if not stats.tokens_per_s else 0.9 * stats.tokens_per_s + 0.1 * rate
        m = self.metrics
        m.batch_size.labels(self.name).observe(texts)
        m.batch_tokens.labels(self.name).observe(tokens)
        m.padding_efficiency.labels(self.name).observe(tokens / max(computed, 1))

    def _failed(self, batch: list[_Entry], error: BaseException) -> None:
        """A batch failed: count it, and rerun each input alone so only the inputs that fail, fail."""
        self.stats.consecutive_failures += 1
        self.stats.last_error = f"{type(error).__name__}: {error}"[:300]
        self.metrics.batch_failures.labels(self.name).inc()
        logger.error("model %s: a batch of %d failed (%s); rerunning its inputs one by one", self.name, len(batch),
                     self.stats.last_error)
        if len(batch) == 1:
            self._deliver(batch[0], None, error)
            return
        for entry in batch:
            one = Encoded(ids=[entry.job.encoded.ids[entry.row]], type_ids=[entry.job.encoded.type_ids[entry.row]])
            self._submit(one, lambda f, e=entry: self._deliver(e, *((f.result().sentence_embedding[0], None)
                                                                    if f.exception() is None
                                                                    else (None, f.exception()))))
