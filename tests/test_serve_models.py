"""``embedrt serve`` on real weights: every variant's embeddings are ``model.encode``'s, bit for bit, whatever
the requests were batched with; SIGTERM loses no request in flight."""

from __future__ import annotations

import asyncio
import base64
import signal

import embedrt
import httpx
import numpy as np
import pytest

from tests.fast import serving


@pytest.mark.parametrize("variant", ["fp32", "fp32_fused", "int8_rowwise_fused"])
def test_concurrent_requests_equal_encode_bit_for_bit(l3_with_fused, corpus_1000, variant):
    texts = corpus_1000[:300]
    want = embedrt.SentenceTransformer(l3_with_fused, variant=variant).encode(texts)

    async def fire(url):
        async with httpx.AsyncClient(base_url=url, timeout=120) as client:
            one_by_one = [client.post("/v1/embeddings", json={"model": "l3", "input": [t], "encoding_format": "base64"})
                          for t in texts[:150]]
            in_groups = [client.post("/v1/embeddings", json={"model": "l3", "input": texts[i:i + 25]})
                         for i in range(150, 300, 25)]
            return await asyncio.gather(*one_by_one, *in_groups)

    with serving.running(str(l3_with_fused), args=("--name", "l3", "--variant", variant)) as server:
        responses = asyncio.run(fire(server.url))
    rows = []
    for response in responses:
        assert response.status_code == 200, response.text
        for item in response.json()["data"]:
            value = item["embedding"]
            rows.append(np.frombuffer(base64.b64decode(value), dtype="<f4") if isinstance(value, str)
                        else np.array(value, dtype=np.float32))
    assert np.array_equal(np.stack(rows), want)


def test_sigterm_drains_real_model_requests(l3_with_fused, corpus_1000):
    texts = corpus_1000[:200]
    want = embedrt.SentenceTransformer(l3_with_fused).encode(texts)
    with serving.running(str(l3_with_fused), args=("--name", "l3")) as server:
        async def scenario():
            async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
                work = [asyncio.ensure_future(client.post("/v1/embeddings", json={"model": "l3", "input": texts}))
                        for _ in range(4)]
                await asyncio.sleep(0.2)
                server.process.send_signal(signal.SIGTERM)
                return await asyncio.gather(*work)

        responses = asyncio.run(scenario())
        assert server.process.wait(60) == 0
    for response in responses:
        assert response.status_code == 200
        assert np.array_equal(np.array([d["embedding"] for d in response.json()["data"]], dtype=np.float32), want)
