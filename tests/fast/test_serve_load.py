"""``embedrt serve`` under load and in operation: 429 and recovery, auth, SIGTERM drain, client disconnects;
and the batcher on a failing engine (one bad batch fails no one else; readiness turns off and back on)."""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from concurrent.futures import Future
from dataclasses import replace

import embedrt
import httpx
import numpy as np
import pytest
import serving
import tiny
from embedrt.serve.batcher import FAILURES_BEFORE_UNREADY, Batcher
from embedrt.serve.errors import APIError
from embedrt.serve.metrics import Metrics

LONG = "the quick brown fox " * 10  # 32 tokens after truncation


@pytest.fixture(scope="module")
def slow_artifact(tmp_path_factory):
    """The tiny model with 8 wide layers: ~1 MFLOP a token, so a 2,048-text request keeps a server busy."""
    return tiny.build(tmp_path_factory.mktemp("slow") / "slow", name="slow", layers=8)


def test_a_flood_gets_429_with_retry_after_and_the_server_recovers(tiny_artifact):
    async def flood(url):
        async with httpx.AsyncClient(base_url=url, timeout=30, limits=httpx.Limits(max_connections=300)) as client:
            return await asyncio.gather(*[client.post("/v1/embeddings", json={"model": "tiny", "input": [LONG] * 2})
                                          for _ in range(300)])

    with serving.running(str(tiny_artifact), args=("--max-queue-tokens", "128")) as server:
        responses = asyncio.run(flood(server.url))
        statuses = [r.status_code for r in responses]
        assert set(statuses) <= {200, 429} and statuses.count(429) > 0 and statuses.count(200) > 0
        refused = next(r for r in responses if r.status_code == 429)
        assert int(refused.headers["retry-after"]) >= 1 and refused.headers["x-should-retry"] == "true"
        assert refused.json()["error"]["type"] == "rate_limit_error" and refused.json()["error"]["code"] == "overloaded"
        again = httpx.post(f"{server.url}/v1/embeddings", json={"model": "tiny", "input": [LONG] * 2})
        assert again.status_code == 200
        too_big = httpx.post(f"{server.url}/v1/embeddings", json={"model": "tiny", "input": [LONG] * 5})
        assert too_big.status_code == 413 and too_big.json()["error"]["code"] == "request_too_large"


def test_openai_client_backs_off_on_429_and_succeeds(tiny_artifact):
    from openai import OpenAI

    with serving.running(str(tiny_artifact), args=("--max-queue-tokens", "128")) as server:
        client = OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=5)

        async def hammer():
            async with httpx.AsyncClient(base_url=server.url, timeout=30) as raw:
                return await asyncio.gather(*[raw.post("/v1/embeddings", json={"model": "tiny", "input": [LONG] * 3})
                                              for _ in range(100)])
        asyncio.run(hammer())
        assert len(client.embeddings.create(model="tiny", input=[LONG] * 3).data) == 3


def test_api_key_guards_every_route_but_health_ready_metrics(tiny_artifact):
    from openai import AuthenticationError, OpenAI

    with serving.running(str(tiny_artifact), args=("--api-key", "s3cret")) as server:
        anonymous = httpx.post(f"{server.url}/v1/embeddings", json={"model": "tiny", "input": "x"})
        assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"] == "Bearer"
        assert anonymous.json()["error"]["type"] == "authentication_error"
        assert httpx.get(f"{server.url}/info", headers={"Authorization": "Bearer wrong"}).status_code == 401
        for path in ("/health", "/ready", "/metrics"):
            assert httpx.get(f"{server.url}{path}").status_code == 200, path
        wrong = OpenAI(base_url=f"{server.url}/v1", api_key="wrong", max_retries=0)
        with pytest.raises(AuthenticationError):
            wrong.embeddings.create(model="tiny", input="x")
        good = OpenAI(base_url=f"{server.url}/v1", api_key="s3cret").embeddings.create(model="tiny", input="x")
        assert len(good.data[0].embedding) == 8


def test_cors_opens_only_for_the_origins_given(tiny_artifact):
    with serving.running(str(tiny_artifact), args=("--cors-allow-origin", "https://app.example")) as server:
        preflight = {"Access-Control-Request-Method": "POST"}
        ok = httpx.options(f"{server.url}/v1/embeddings", headers={**preflight, "Origin": "https://app.example"})
        assert ok.headers["access-control-allow-origin"] == "https://app.example"
        other = httpx.options(f"{server.url}/v1/embeddings", headers={**preflight, "Origin": "https://evil.example"})
        assert other.headers.get("access-control-allow-origin") != "https://evil.example"


def test_sigterm_finishes_work_in_flight_refuses_new_work_then_exits(slow_artifact):
    texts = [LONG] * 2048
    with serving.running(str(slow_artifact), args=("--max-queue-tokens", "400000")) as server:
        model = embedrt.SentenceTransformer(slow_artifact)
        want = model.encode(texts[:1])

        async def scenario():
            async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
                work = [asyncio.ensure_future(client.post("/v1/embeddings", json={"model": "slow", "input": texts}))
                        for _ in range(3)]
                await asyncio.sleep(0.3)  # the requests are queued and running
                server.process.send_signal(signal.SIGTERM)
                await asyncio.sleep(0.1)
                try:
                    late = await client.post("/v1/embeddings", json={"model": "slow", "input": ["late"]})
                    late_status = late.status_code
                except httpx.TransportError:  # already closed: refused, as good as a 503
                    late_status = 503
                return await asyncio.gather(*work), late_status

        finished, late_status = asyncio.run(scenario())
        assert [r.status_code for r in finished] == [200, 200, 200]
        for response in finished:
            assert np.array_equal(np.array(response.json()["data"][0]["embedding"], dtype=np.float32), want[0])
        assert late_status == 503
        assert server.process.wait(30) == 0


def test_a_client_that_leaves_has_its_queued_inputs_dropped(slow_artifact):
    body = ('{"model": "slow", "input": [' + ",".join([f'"{LONG}"'] * 2048) + "]}").encode()
    with serving.running(str(slow_artifact), args=("--max-queue-tokens", "400000")) as server:
        port = int(server.url.rsplit(":", 1)[1])

        async def scenario():
            async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
                busy = asyncio.ensure_future(client.post("/v1/embeddings", content=body,
                                                         headers={"content-type": "application/json"}))
                await asyncio.sleep(0.2)
                with socket.create_connection(("127.0.0.1", port)) as leaver:
                    leaver.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                   b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
                    time.sleep(0.3)  # queued behind the busy request
                return (await busy).status_code

        assert asyncio.run(scenario()) == 200
        time.sleep(0.5)
        metrics = httpx.get(f"{server.url}/metrics").text

        def total(name: str) -> float:
            return sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines() if line.startswith(name))

        assert 'outcome="client_disconnected"' in metrics
        # Only the request that stayed was computed: the other's inputs were dropped, whether the client left
        # while they were being tokenized or while they waited in the queue.
        assert total("embedrt_batch_size_sum") == total("embedrt_inputs_total") == 2048


# -- the batcher alone ------------------------------------------------------------------------------------
class _FlakyEngine:
    """An engine whose batches fail while ``broken``, and whose single text ``poison`` always fails."""

    def __init__(self, real, poison: int) -> None:
        self.real, self.poison, self.broken = real, poison, False
        self.info, self.workers = real.info, 1

    def submit(self, batch):
        future: Future = Future()
        if self.broken or any(int(ids[1]) == self.poison for ids in batch.ids):
            future.set_exception(RuntimeError("engine failure"))
        else:
            future.set_result(self.real.run_batch(batch))
        return future


def test_a_failing_batch_fails_only_the_input_that_fails_and_readiness_follows(tiny_artifact):
    tokenizer = embedrt.load_tokenizer(tiny_artifact)
    real = embedrt.load_engine(tiny_artifact)
    poison = int(tokenizer.encode(["cat"]).ids[0][1])
    engine = _FlakyEngine(real, poison)

    async def scenario():
        batcher = Batcher(engine, "tiny", Metrics(), max_queue_tokens=10_000)
        batcher.start()
        good = [batcher.embed(tokenizer.encode([t])) for t in ("hello", "dog", "the fox")]
        results = await asyncio.gather(*good, batcher.embed(tokenizer.encode(["cat"])), return_exceptions=True)
        assert [isinstance(r, APIError) for r in results] == [False, False, False, True]
        assert results[3].status == 500 and results[3].code == "inference_failed"
        for (vectors, _, _), text in zip(results[:3], ("hello", "dog", "the fox")):
            assert np.array_equal(vectors, real.run_batch(tokenizer.encode([text])).sentence_embedding)
        engine.broken = True
        for _ in range(FAILURES_BEFORE_UNREADY):
            with pytest.raises(APIError):
                await batcher.embed(tokenizer.encode(["hello"]))
        assert not batcher.ready and "engine failure" in batcher.stats.last_error
        engine.broken = False
        await batcher.embed(tokenizer.encode(["hello"]))
        assert batcher.ready

    asyncio.run(scenario())


def test_many_one_text_requests_become_few_batches(tiny_artifact):
    tokenizer = embedrt.load_tokenizer(tiny_artifact)
    engine = embedrt.load_engine(tiny_artifact)
    sizes = []

    class Counting:
        info, workers = replace(engine.info, max_batch_tokens=1024), 1

        def submit(self, batch):
            sizes.append(len(batch))
            return engine.submit(batch)

    async def scenario():
        batcher = Batcher(Counting(), "tiny", Metrics(), max_queue_tokens=100_000)
        batcher.start()
        await asyncio.gather(*[batcher.embed(tokenizer.encode([f"text {i}"])) for i in range(500)])

    asyncio.run(scenario())
    assert sum(sizes) == 500 and len(sizes) < 25, sizes
