"""``embedrt serve``: load the models, run the app under uvicorn, drain on SIGTERM.

The port opens at once (``/health`` answers, ``/ready`` says "loading"); the models load and warm up on
a thread, then their batchers start and ``/ready`` turns 200. On SIGTERM the server stops taking work
(503 with ``Retry-After`` on new requests), finishes what is in flight, then exits; a second SIGTERM or
a SIGINT exits at once (uvicorn's graceful close).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import uvicorn

from ..providers import share_cpu_threads
from .app import Limits, ServerState, create_app
from .host import ImageFetch, ModelHost
from .metrics import Metrics

logger = logging.getLogger("embedrt.serve")


class _DrainingServer(uvicorn.Server):
    """uvicorn's server, with SIGTERM first draining in-flight work."""

    def __init__(self, config: uvicorn.Config, state: ServerState, drain_timeout: float) -> None:
        super().__init__(config)
        self.state = state
        self.drain_timeout = drain_timeout

    def handle_exit(self, sig: int, frame: Any) -> None:
        if sig == signal.SIGTERM and not self.state.draining:
            self.state.draining = True
            logger.info("SIGTERM: draining %d requests in flight, then exiting", self.state.in_flight)
            threading.Thread(target=self._exit_when_drained, name="embedrt-drain", daemon=True).start()
            return
        super().handle_exit(sig, frame)

    def _exit_when_drained(self) -> None:
        deadline = time.monotonic() + self.drain_timeout
        while self.state.in_flight > 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        self.should_exit = True


def _load(args: argparse.Namespace, state: ServerState) -> dict[str, ModelHost]:
    names = list(args.name or [])
    if len(names) > len(args.models):
        raise ValueError(f"--name given {len(names)} times for {len(args.models)} models")
    fetch = ImageFetch(hosts=frozenset(args.allow_image_url_host or ()))
    hosts: dict[str, ModelHost] = {}
    for i, source in enumerate(args.models):
        started = time.perf_counter()
        host = ModelHost(names[i] if i < len(names) else None, source, state.metrics,
                         max_queue_tokens=args.max_queue_tokens, device=args.device, variant=args.variant,
                         threads=args.threads, workers=args.workers, image_fetch=fetch)
        if host.name in hosts:
            raise ValueError(f"two models are named {host.name!r}; give them names with --name")
        host.warmup()
        hosts[host.name] = host
        info = host.engine.info
        logger.info("model %s ready in %.2f s: %s, variant %s on %s, %s threads x %d workers, digest %s", host.name,
                    time.perf_counter() - started, source, info.variant, info.provider, info.threads, info.workers,
                    info.digest)
    return hosts


def build_state(args: argparse.Namespace) -> ServerState:
    """The shared state the app serves, from the command's arguments."""
    api_key = args.api_key or os.environ.get("EMBEDRT_API_KEY") or None
    return ServerState(metrics=Metrics(), limits=Limits(max_inputs=args.max_inputs,
                                                        max_body_bytes=int(args.max_body_mb * (1 << 20))),
                       api_key=api_key)


def make_lifespan(args: argparse.Namespace, state: ServerState) -> Any:
    """Load the models on a thread once the loop runs; start their batchers when they are warm."""
    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        import asyncio

        loop = asyncio.get_running_loop()

        def load() -> None:
            try:
                hosts = _load(args, state)
            except Exception as exc:  # the server stays up, not ready, saying why
                logger.exception("loading the models failed")
                loop.call_soon_threadsafe(_failed, f"{type(exc).__name__}: {exc}")
                return
            loop.call_soon_threadsafe(_started, hosts)

        def _started(hosts: dict[str, ModelHost]) -> None:
            for host in hosts.values():
                host.batcher.start()
            state.hosts = hosts
            state.loading = False
            logger.info("ready: %s on http://%s:%d", ", ".join(hosts), args.host, args.port)

        def _failed(reason: str) -> None:
            state.load_error = reason
            state.loading = False

        threading.Thread(target=load, name="embedrt-load", daemon=True).start()
        yield

    return lifespan


def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM/SIGINT; the ``embedrt serve`` command."""
    logging.basicConfig(level=getattr(logging, args.log_level.upper()), stream=sys.stdout,
                        format="%(message)s" if args.log_level.upper() == "INFO" else "%(levelname)s %(name)s: "
                        "%(message)s")
    if len(args.models) > 1:
        share_cpu_threads(args.threads)  # one pool: idle sessions' spinning workers would take the cores
    state = build_state(args)
    app = create_app(state, cors_origins=args.cors_allow_origin, lifespan=make_lifespan(args, state))
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="warning", access_log=False,
                            lifespan="on", timeout_graceful_shutdown=int(args.drain_timeout),
                            loop="auto", http="auto", server_header=False, date_header=False)
    _DrainingServer(config, state, args.drain_timeout).run()
    return 0
