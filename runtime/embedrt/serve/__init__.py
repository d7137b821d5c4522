"""``embedrt serve``: an OpenAI- and TEI-compatible embedding server with dynamic batching (``serve`` extra).

Layers, each with one job: :mod:`~embedrt.serve.protocol` (request bodies → typed requests),
:mod:`~embedrt.serve.app` (routes, auth, limits, errors, draining), :mod:`~embedrt.serve.host` (one model:
tokenizer, engine, readiness), :mod:`~embedrt.serve.batcher` (one model's token-budget queue and batching
loop over the engine), :mod:`~embedrt.serve.metrics` and :mod:`~embedrt.serve.server` (uvicorn, SIGTERM).
The queue never sees text; the engine never sees HTTP.
"""
