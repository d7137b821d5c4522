"""Starting ``embedrt serve`` for a test: a subprocess on a free loopback port, ready or failed, always stopped."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx


def free_port() -> int:
    """A TCP port nothing listens on now (loopback)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    """A running server: its base URL and process."""

    url: str
    process: subprocess.Popen

    def output(self) -> str:
        """What the server printed so far (after it stopped)."""
        return self.process.stdout.read() if self.process.stdout else ""


@contextlib.contextmanager
def running(*models: str, args: tuple[str, ...] = (), ready_s: float = 60.0) -> Iterator[Server]:
    """``embedrt serve MODELS ARGS`` until the block ends; stopped by its own pid even if the test fails."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "embedrt.cli", "serve", *models, "--port", str(port), *args],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    server = Server(f"http://127.0.0.1:{port}", process)
    try:
        deadline = time.monotonic() + ready_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"embedrt serve exited {process.returncode}:\n{server.output()[-3000:]}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{server.url}/ready", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError(f"embedrt serve not ready after {ready_s} s")
            time.sleep(0.05)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(15)
