"""The HTTP front: routes, auth, body limits, errors in OpenAI's shape, draining, access logs.

It parses and answers; the models (:mod:`embedrt.serve.host`) tokenize and embed. Routes:
``POST /v1/embeddings`` (OpenAI), ``POST /embed`` and ``/similarity`` and ``/tokenize``
(text-embeddings-inference's shapes), ``GET /v1/models``, ``/info``, ``/health``, ``/ready``, ``/metrics``.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from .. import __version__, util
from .errors import APIError, bad_request
from .host import ModelHost
from .metrics import Metrics
from .protocol import Item, parse_openai, parse_similarity, parse_tei, parse_texts

access_log = logging.getLogger("embedrt.serve.access")
logger = logging.getLogger(__name__)
_OPEN = ("/health", "/ready", "/metrics")  # no API key, and answered while draining


@dataclass
class Limits:
    """Per-request limits: inputs per request and body bytes (each refused with a 413)."""

    max_inputs: int = 2048
    max_body_bytes: int = 16 << 20


@dataclass
class ServerState:
    """Everything the routes share: the models, metrics, limits, auth, and the draining flag."""

    metrics: Metrics
    limits: Limits = field(default_factory=Limits)
    api_key: str | None = None
    hosts: dict[str, ModelHost] = field(default_factory=dict)
    loading: bool = True
    load_error: str | None = None
    draining: bool = False
    in_flight: int = 0

    def host(self, name: str | None, param: str = "model") -> ModelHost:
        """The model ``name`` (the only one when ``None`` and one is served), else a 404 or 503."""
        if self.loading:
            raise APIError(503, "the server is loading its models; retry shortly", type="server_error",
                           code="loading", retry_after=1)
        if name is None:
            if len(self.hosts) == 1:
                return next(iter(self.hosts.values()))
            raise bad_request(f"'{param}' is required: this server holds {sorted(self.hosts)}", param,
                              code="missing_required_parameter")
        host = self.hosts.get(name)
        if host is None:
            raise APIError(404, f"model {name!r} not found; this server holds {sorted(self.hosts)}", param=param,
                           code="model_not_found")
        return host


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON response serialized by orjson (numpy arrays included)."""
    return Response(orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY), status_code=status,
                    media_type="application/json", headers=headers)


async def read_json(request: Request, limits: Limits) -> Any:
    """The request's JSON body, refused with a 413 past ``limits.max_body_bytes`` (before reading it when
    ``Content-Length`` says so) and a 400 when it is not JSON."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limits.max_body_bytes:
        raise APIError(413, f"the request body has {declared} bytes; this server takes at most "
                       f"{limits.max_body_bytes}", code="body_too_large")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limits.max_body_bytes:
            raise APIError(413, f"the request body is larger than {limits.max_body_bytes} bytes",
                           code="body_too_large")
        chunks.append(chunk)
    try:
        return orjson.loads(b"".join(chunks))
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"the request body is not valid JSON ({exc})", code="invalid_json") from exc


async def until_done_or_gone(request: Request, work: Awaitable[Any]) -> Any:
    """``await work``, but cancel it if the client disconnects first: its inputs still queued are dropped
    before they are batched."""
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(request.receive())
    try:
        done, _ = await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            return task.result()
        if gone.result().get("type") == "http.disconnect":
            task.cancel()
            raise ClientDisconnect()
        return await task
    finally:
        gone.cancel()


def _encode_vector(vector: np.ndarray, encoding: str) -> Any:
    if encoding == "base64":  # little-endian float32, as the OpenAI clients decode it
        return base64.b64encode(vector.astype("<f4", copy=False).tobytes()).decode("ascii")
    return vector


# -- routes ------------------------------------------------------------------------------------------
async def openai_embeddings(request: Request, state: ServerState) -> Response:
    """``POST /v1/embeddings``: OpenAI's request and response."""
    req = parse_openai(await read_json(request, state.limits), max_inputs=state.limits.max_inputs)
    host = state.host(req.model)
    request.state.model = host.name
    if req.dimensions is not None and req.dimensions != host.dimension:
        raise bad_request(f"'dimensions' must be {host.dimension}, this model's width: it was not trained for "
                          "shorter vectors, and cutting them would return worse ones", "dimensions")
    vectors, tokens = await until_done_or_gone(request, host.embed(req.items, "input"))
    data = [{"object": "embedding", "index": i, "embedding": _encode_vector(v, req.encoding_format)}
            for i, v in enumerate(vectors)]
    return json_response({"object": "list", "data": data, "model": host.name,
                          "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})


async def tei_embed(request: Request, state: ServerState) -> Response:
    """``POST /embed``: text-embeddings-inference's request; a JSON list of vectors."""
    req = parse_tei(await read_json(request, state.limits), max_inputs=state.limits.max_inputs)
    host = state.host(req.model)
    request.state.model = host.name
    vectors, _ = await until_done_or_gone(request, host.embed(req.items, "inputs", truncate=req.truncate,
                                                              prompt_name=req.prompt_name))
    return json_response(util.normalize_embeddings(vectors).astype(np.float32) if req.normalize else vectors)


async def similarity(request: Request, state: ServerState) -> Response:
    """``POST /similarity``: the source sentence against each sentence, with the model's own similarity."""
    model, source, sentences = parse_similarity(await read_json(request, state.limits),
                                                max_inputs=state.limits.max_inputs)
    host = state.host(model)
    request.state.model = host.name
    items = tuple(Item(text=t) for t in (source, *sentences))
    vectors, _ = await until_done_or_gone(request, host.embed(items, "inputs"))
    scores = util.SIMILARITY_FUNCTIONS[host.manifest.similarity_fn_name](vectors[:1], vectors[1:])[0]
    return json_response(np.asarray(scores, dtype=np.float32))


async def tokenize(request: Request, state: ServerState) -> Response:
    """``POST /tokenize``: each text's tokens as the model sees them (truncated), ``{id, text, special}``."""
    body = await read_json(request, state.limits)
    texts = parse_texts(body, "inputs", max_inputs=state.limits.max_inputs)
    host = state.host(body.get("model") if isinstance(body.get("model"), str) else None)
    try:
        tokens = host.tokenizer.tokens(texts, name="inputs")
    except (TypeError, ValueError) as exc:
        raise bad_request(str(exc), "inputs") from exc
    return json_response([[{"id": i, "text": t, "special": s} for i, t, s in row] for row in tokens])


async def models(request: Request, state: ServerState) -> Response:
    """``GET /v1/models``."""
    return json_response({"object": "list", "data": [
        {"id": name, "object": "model", "created": 0, "owned_by": "embedrt"} for name in state.hosts]})


async def info(request: Request, state: ServerState) -> Response:
    """``GET /info``: every model's variant, provider, threads, budgets, limits and digest."""
    return json_response({"version": __version__, "loading": state.loading,
                          "models": [host.info() for host in state.hosts.values()]})


async def health(request: Request, state: ServerState) -> Response:
    """``GET /health``: the process answers."""
    return json_response({"status": "ok"})


async def ready(request: Request, state: ServerState) -> Response:
    """``GET /ready``: every model warmed up and its recent batches succeeding; 503 otherwise (and while
    loading or draining), saying which and why."""
    problems = {name: host.batcher.stats.last_error or "warming up" for name, host in state.hosts.items()
                if not host.ready}
    reason = ("loading" if state.loading else "draining" if state.draining else
              f"load failed: {state.load_error}" if state.load_error else None)
    if reason is None and not problems:
        return json_response({"status": "ready"})
    return json_response({"status": "not ready", "reason": reason, "models": problems}, status=503)


async def metrics_route(request: Request, state: ServerState) -> Response:
    """``GET /metrics``: Prometheus text format."""
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


Handler = Callable[[Request, ServerState], Awaitable[Response]]


def _endpoint(state: ServerState, route: str, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """``handler`` with what every route shares: drain, auth, errors, metrics, access log."""
    open_route = route in _OPEN

    async def endpoint(request: Request) -> Response:
        started = time.perf_counter()
        request.state.model = ""
        outcome, response = "ok", None
        state.in_flight += 1
        try:
            if state.draining and not open_route:
                raise APIError(503, "the server is shutting down", type="server_error", code="draining",
                               retry_after=1)
            if state.api_key is not None and not open_route:
                given = request.headers.get("authorization", "")
                if not hmac.compare_digest(given.encode(), f"Bearer {state.api_key}".encode()):
                    raise APIError(401, "missing or wrong API key (Authorization: Bearer ...)",
                                   type="authentication_error", code="invalid_api_key")
            response = await handler(request, state)
        except APIError as exc:
            outcome = exc.code or str(exc.status)
            headers = exc.headers()
            if exc.status == 401:
                headers["WWW-Authenticate"] = "Bearer"
            if exc.code == "draining":
                headers["Connection"] = "close"
            response = json_response(exc.body(), exc.status, headers)
        except ClientDisconnect:
            outcome, response = "client_disconnected", Response(status_code=499)
        except Exception as exc:  # a bug: logged with its traceback, answered in the error shape
            logger.exception("%s failed", route)
            outcome = "internal_error"
            response = json_response(APIError(500, f"internal error ({type(exc).__name__})", type="server_error",
                                              code="internal_error").body(), 500)
        finally:
            state.in_flight -= 1
        seconds = time.perf_counter() - started
        model = request.state.model
        if not open_route:
            state.metrics.requests.labels(model, route, outcome).inc()
            state.metrics.duration.labels(model, route).observe(seconds)
            if access_log.isEnabledFor(logging.INFO):
                access_log.info(orjson.dumps({
                    "time": round(time.time(), 3), "client": request.client.host if request.client else None,
                    "method": request.method, "path": route, "status": response.status_code, "model": model,
                    "outcome": outcome, "ms": round(seconds * 1e3, 2)}).decode())
        return response

    return endpoint


ROUTES: tuple[tuple[str, str, Handler], ...] = (
    ("POST", "/v1/embeddings", openai_embeddings), ("POST", "/embeddings", openai_embeddings),
    ("POST", "/embed", tei_embed), ("POST", "/similarity", similarity), ("POST", "/v1/similarity", similarity),
    ("POST", "/tokenize", tokenize), ("GET", "/v1/models", models), ("GET", "/models", models),
    ("GET", "/info", info), ("GET", "/health", health), ("GET", "/ready", ready), ("GET", "/metrics", metrics_route),
)


def create_app(state: ServerState, *, cors_origins: list[str] | None = None,
               lifespan: Any = None) -> Starlette:
    """The ASGI app over ``state``; CORS stays closed unless origins are given."""
    middleware = [Middleware(CORSMiddleware, allow_origins=cors_origins, allow_methods=["GET", "POST"],
                             allow_headers=["Authorization", "Content-Type"])] if cors_origins else []
    routes = [Route(path, _endpoint(state, path, handler), methods=[method]) for method, path, handler in ROUTES]

    async def not_routed(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 404)
        message = f"no route {request.method} {request.url.path}" if status == 404 else \
            f"{request.method} is not allowed on {request.url.path}"
        return json_response(APIError(status, message, code="not_found" if status == 404 else
                                      "method_not_allowed").body(), status)

    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan,
                    exception_handlers={404: not_routed, 405: not_routed})
    app.state.server = state
    return app
