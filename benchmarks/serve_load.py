"""The pieces of ``benchmarks/serve.py``: servers as subprocesses on loopback, and an asyncio load generator.

The load generator is aiohttp on one event loop (cheaper per request than httpx, and it shares the two
cores with the server); each of ``concurrency`` workers posts OpenAI embedding requests back to back
until the cell's time or request budget is spent. Every process it starts is stopped by its own pid.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


def free_port() -> int:
    """A loopback TCP port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds ``pid`` has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Process:
    """A server under test."""

    label: str
    url: str
    popen: subprocess.Popen
    ready_s: float
    log: Path


@contextlib.contextmanager
def started(label: str, command: list[str], ready_path: str, log: Path, *, cwd: str | None = None,
            env: dict[str, str] | None = None, timeout_s: float = 300.0, port: int | None = None) -> Iterator[Process]:
    """Run ``command`` (with ``{port}`` filled in) until ``GET ready_path`` answers 200; stop it afterwards."""
    import urllib.request

    port = port or free_port()
    started_at = time.perf_counter()
    with open(log, "w") as out:
        popen = subprocess.Popen([c.format(port=port) for c in command], stdout=out, stderr=subprocess.STDOUT,
                                 cwd=cwd, env={**os.environ, **(env or {})}, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        while True:
            if popen.poll() is not None:
                raise RuntimeError(f"{label} exited {popen.returncode}: {log.read_text()[-2000:]}")
            with contextlib.suppress(OSError):
                if urllib.request.urlopen(url + ready_path, timeout=2).status == 200:
                    break
            if time.perf_counter() - started_at > timeout_s:
                raise TimeoutError(f"{label} not ready after {timeout_s} s; see {log}")
            time.sleep(0.05)
        yield Process(label, url, popen, time.perf_counter() - started_at, log)
    finally:
        if popen.poll() is None:
            os.killpg(popen.pid, signal.SIGTERM)
            try:
                popen.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(popen.pid, signal.SIGKILL)
                popen.wait(30)


@dataclass
class Cell:
    """One load setting's outcome."""

    concurrency: int
    per_request: int
    seconds: float = 0.0
    texts: int = 0
    tokens: int = 0
    latencies: list[float] = field(default_factory=list)
    status: dict[int, int] = field(default_factory=dict)
    transport_errors: int = 0
    client_cpu_s: float = 0.0
    server_cpu_s: float = 0.0
    rss_mb: list[tuple[float, float]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """The row of the report."""
        lat = np.asarray(self.latencies) * 1e3 if self.latencies else np.asarray([np.nan])
        return {"concurrency": self.concurrency, "texts_per_request": self.per_request,
                "seconds": round(self.seconds, 2), "texts_per_s": self.texts / self.seconds if self.seconds else 0.0,
                "tokens_per_s": self.tokens / self.seconds if self.seconds else 0.0,
                "p50_ms": float(np.percentile(lat, 50)), "p95_ms": float(np.percentile(lat, 95)),
                "p99_ms": float(np.percentile(lat, 99)), "requests_ok": len(self.latencies),
                "deliberate_429": self.status.get(429, 0),
                "errors": sum(n for s, n in self.status.items() if s not in (200, 429)) + self.transport_errors,
                "client_cpu_cores": self.client_cpu_s / self.seconds if self.seconds else 0.0,
                "server_cpu_cores": self.server_cpu_s / self.seconds if self.seconds else 0.0,
                "rss_mb": self.rss_mb}


def _sample_rss(pid: int, cell: Cell, stop: threading.Event, started_at: float) -> None:
    while not stop.wait(1.0):
        with contextlib.suppress(OSError):
            cell.rss_mb.append((round(time.perf_counter() - started_at, 1), round(rss_mb(pid), 1)))


async def _load(url: str, model: str, texts: list[str], cell: Cell, duration_s: float, max_requests: int) -> None:
    import aiohttp

    stop_at = time.perf_counter() + duration_s
    sent = 0
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        async def worker(offset: int) -> None:
            nonlocal sent
            position = offset
            while time.perf_counter() < stop_at and sent < max_requests:
                sent += 1
                batch = [texts[(position + k) % len(texts)] for k in range(cell.per_request)]
                position += cell.per_request * cell.concurrency
                began = time.perf_counter()
                try:
                    async with session.post(f"{url}/v1/embeddings", json={
                            "model": model, "input": batch, "encoding_format": "base64"}) as response:
                        body = await response.json(content_type=None)
                        cell.status[response.status] = cell.status.get(response.status, 0) + 1
                        if response.status == 200:
                            cell.latencies.append(time.perf_counter() - began)
                            cell.texts += len(batch)
                            cell.tokens += int((body.get("usage") or {}).get("prompt_tokens") or 0)
                        elif response.status == 429:
                            await asyncio.sleep(float(response.headers.get("retry-after", "1")))
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    cell.transport_errors += 1

        await asyncio.gather(*[worker(i * cell.per_request) for i in range(cell.concurrency)])


def run_cell(url: str, model: str, pid: int, texts: list[str], concurrency: int, per_request: int,
             duration_s: float, max_requests: int) -> Cell:
    """Drive ``url`` at ``concurrency`` with ``per_request``-text requests; measure both sides' CPU and RSS."""
    cell = Cell(concurrency, per_request)
    stop = threading.Event()
    began = time.perf_counter()
    sampler = threading.Thread(target=_sample_rss, args=(pid, cell, stop, began), daemon=True)
    sampler.start()
    usage, server_cpu = resource.getrusage(resource.RUSAGE_SELF), cpu_seconds(pid)
    asyncio.run(_load(url, model, texts, cell, duration_s, max_requests))
    cell.seconds = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_SELF)
    cell.client_cpu_s = after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime
    cell.server_cpu_s = cpu_seconds(pid) - server_cpu
    stop.set()
    sampler.join()
    return cell
