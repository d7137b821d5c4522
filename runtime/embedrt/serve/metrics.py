"""The server's Prometheus metrics, per model (names follow text-embeddings-inference's ``te_*`` where they
mean the same, under ``embedrt_``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_COUNTS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
_TOKENS = (16, 64, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768)


class Metrics:
    """One registry holding every metric of one server process."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("embedrt_requests", "Requests by route and outcome (ok, or the error code)",
                                ["model", "route", "outcome"], registry=r)
        self.duration = Histogram("embedrt_request_duration_seconds", "Whole request time", ["model", "route"],
                                  buckets=_SECONDS, registry=r)
        self.tokenization = Histogram("embedrt_request_tokenization_seconds", "Tokenizing a request's texts",
                                      ["model"], buckets=_SECONDS, registry=r)
        self.queue = Histogram("embedrt_request_queue_seconds", "From queued to its last batch starting",
                               ["model"], buckets=_SECONDS, registry=r)
        self.inference = Histogram("embedrt_request_inference_seconds", "Running the batches that held a request",
                                   ["model"], buckets=_SECONDS, registry=r)
        self.batch_size = Histogram("embedrt_batch_size", "Texts per batch", ["model"], buckets=_COUNTS, registry=r)
        self.batch_tokens = Histogram("embedrt_batch_tokens", "Tokens per batch (real tokens)", ["model"],
                                      buckets=_TOKENS, registry=r)
        self.padding_efficiency = Histogram(
            "embedrt_batch_padding_efficiency", "Real tokens / tokens computed per batch (1.0 on packed graphs)",
            ["model"], buckets=(0.25, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0), registry=r)
        self.queue_tokens = Gauge("embedrt_queue_tokens", "Tokens waiting in the model's queue", ["model"],
                                  registry=r)
        self.inputs = Counter("embedrt_inputs", "Inputs embedded", ["model"], registry=r)
        self.tokens = Counter("embedrt_tokens", "Real tokens embedded", ["model"], registry=r)
        self.truncated = Counter("embedrt_truncated_inputs", "Inputs longer than max_seq_length, truncated",
                                 ["model"], registry=r)
        self.batch_failures = Counter("embedrt_batch_failures", "Batches the engine failed to run", ["model"],
                                      registry=r)
        self.dropped = Counter("embedrt_dropped_inputs", "Inputs dropped before batching: their client left",
                               ["model"], registry=r)
