"""``embedrt serve`` on the tiny artifact, through real HTTP: the official openai client and httpx."""

from __future__ import annotations

import asyncio
import base64
import json

import embedrt
import httpx
import numpy as np
import pytest
import serving
import tiny

TEXTS = ["hello world", "the quick brown fox", "", "a dog and a cat", "the man is eating food " * 30]


@pytest.fixture(scope="module")
def served(tiny_artifact, tmp_path_factory):
    dot = tiny.build(tmp_path_factory.mktemp("dot") / "tiny-dot", name="tiny-dot", similarity="dot")
    with serving.running(str(tiny_artifact), str(dot), args=("--max-inputs", "64", "--max-body-mb", "0.05")) as s:
        yield s


@pytest.fixture(scope="module")
def model(tiny_artifact):
    return embedrt.SentenceTransformer(tiny_artifact)


def _post(served, path, body, **kwargs):
    return httpx.post(f"{served.url}{path}", content=body if isinstance(body, (bytes, str)) else json.dumps(body),
                      headers={"content-type": "application/json"}, timeout=30, **kwargs)


def test_openai_client_base64_and_float_equal_encode_bit_for_bit(served, model):
    from openai import OpenAI

    client = OpenAI(base_url=f"{served.url}/v1", api_key="unused", max_retries=0)
    want = model.encode(TEXTS)
    default = client.embeddings.create(model="tiny", input=TEXTS)  # the client asks for base64 itself
    floats = client.embeddings.create(model="tiny", input=TEXTS, encoding_format="float")
    for response in (default, floats):
        got = np.array([d.embedding for d in response.data], dtype=np.float32)
        assert np.array_equal(got, want)
        assert [d.index for d in response.data] == list(range(len(TEXTS))) and response.model == "tiny"
    tokens = int(sum(len(ids) for ids in model.tokenizer.encode(TEXTS).ids))
    assert default.usage.prompt_tokens == default.usage.total_tokens == tokens
    one = client.embeddings.create(model="tiny", input="hello world", dimensions=8)
    assert np.array_equal(np.array(one.data[0].embedding, dtype=np.float32), want[0])


def test_raw_base64_is_little_endian_float32(served, model):
    body = _post(served, "/v1/embeddings", {"model": "tiny", "input": ["hello world"], "encoding_format": "base64"})
    raw = base64.b64decode(body.json()["data"][0]["embedding"])
    assert np.array_equal(np.frombuffer(raw, dtype="<f4"), model.encode("hello world"))


def test_token_id_inputs_embed_as_their_text(served, model):
    tokens = _post(served, "/tokenize", {"model": "tiny", "inputs": ["hello world", "the cat"]}).json()
    ids = [[t["id"] for t in row] for row in tokens]
    assert tokens[0][0] == {"id": ids[0][0], "text": "[CLS]", "special": True}
    want = model.encode(["hello world", "the cat"])
    several = _post(served, "/v1/embeddings", {"model": "tiny", "input": ids}).json()
    assert np.array_equal(np.array([d["embedding"] for d in several["data"]], dtype=np.float32), want)
    single = _post(served, "/v1/embeddings", {"model": "tiny", "input": ids[1]}).json()
    assert np.array_equal(np.array(single["data"][0]["embedding"], dtype=np.float32), want[1])


def test_tei_embed_normalizes_by_default_and_can_refuse_to_truncate(served, model):
    raw = model.encode(["the cat"])
    normalized = np.array(_post(served, "/embed", {"model": "tiny", "inputs": "the cat"}).json(), dtype=np.float32)
    np.testing.assert_allclose(normalized, raw / np.linalg.norm(raw), rtol=1e-6)
    plain = _post(served, "/embed", {"model": "tiny", "inputs": ["the cat"], "normalize": False}).json()
    assert np.array_equal(np.array(plain, dtype=np.float32), raw)
    long = "the man is eating food " * 30
    assert _post(served, "/embed", {"model": "tiny", "inputs": [long]}).status_code == 200  # truncated
    refused = _post(served, "/embed", {"model": "tiny", "inputs": ["ok", long], "truncate": False})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "inputs[1]"
    assert "max_seq_length" in refused.json()["error"]["message"]


def test_similarity_uses_the_models_own_function(served, model, tiny_artifact):
    for name, fn in (("tiny", embedrt.util.cos_sim), ("tiny-dot", embedrt.util.dot_score)):
        body = {"model": name, "inputs": {"source_sentence": "the cat", "sentences": ["a dog", "the cat"]}}
        scores = np.array(_post(served, "/similarity", body).json())
        want = fn(model.encode(["the cat"]), model.encode(["a dog", "the cat"]))[0]
        np.testing.assert_allclose(scores, want, rtol=1e-6)


def test_models_info_health_ready(served):
    assert [m["id"] for m in httpx.get(f"{served.url}/v1/models").json()["data"]] == ["tiny", "tiny-dot"]
    info = httpx.get(f"{served.url}/info").json()["models"][0]
    for key in ("variant", "provider", "threads", "max_batch_tokens", "max_seq_length", "dimension", "similarity",
                "digest"):
        assert info[key] is not None, key
    assert info["dimension"] == 8 and info["max_seq_length"] == 32 and info["similarity"] == "cosine"
    assert httpx.get(f"{served.url}/health").json() == {"status": "ok"}
    assert httpx.get(f"{served.url}/ready").json() == {"status": "ready"}


@pytest.mark.parametrize(("path", "body", "status", "param", "code"), [
    ("/v1/embeddings", b"{not json", 400, None, "invalid_json"),
    ("/v1/embeddings", [1, 2], 400, None, "invalid_value"),
    ("/v1/embeddings", {"model": "tiny"}, 400, "input", "missing_required_parameter"),
    ("/v1/embeddings", {"model": "nope", "input": "x"}, 404, "model", "model_not_found"),
    ("/v1/embeddings", {"model": "tiny", "input": ["ok", 3]}, 400, "input[1]", "invalid_value"),
    ("/v1/embeddings", {"model": "tiny", "input": ["ok", ["a"]]}, 400, "input[1][0]", "invalid_value"),
    ("/v1/embeddings", {"model": "tiny", "input": [[5, 10 ** 9]]}, 400, "input", "invalid_value"),
    ("/v1/embeddings", {"model": "tiny", "input": []}, 400, "input", "invalid_value"),
    ("/v1/embeddings", {"model": "tiny", "input": "x", "dimensions": 4}, 400, "dimensions", "invalid_value"),
    ("/v1/embeddings", {"model": "tiny", "input": "x", "encoding_format": "int8"}, 400, "encoding_format",
     "invalid_value"),
    ("/v1/embeddings", {"model": "tiny", "input": ["x"] * 65}, 413, "input", "too_many_inputs"),
    ("/v1/embeddings", {"model": "tiny", "input": "x" * 60000}, 413, None, "body_too_large"),
    ("/v1/embeddings", b'{"model": "tiny", "input": ["ok", "\\ud800"]}', 400, None, "invalid_json"),
    ("/embed", {"inputs": "x"}, 400, "model", "missing_required_parameter"),
    ("/v1/embeddings", {"model": "tiny", "input": ["data:image/png;base64,AAAA"]}, 400, "input[0]",
     "invalid_value"),
])
def test_errors_have_openais_shape_status_and_param(served, path, body, status, param, code):
    response = _post(served, path, body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert (error["param"], error["code"]) == (param, code)


def test_unknown_routes_and_methods_answer_in_the_same_shape(served):
    missing = httpx.get(f"{served.url}/v2/nothing")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    wrong = httpx.get(f"{served.url}/v1/embeddings")
    assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "method_not_allowed"


def test_cors_is_closed_by_default(served):
    preflight = httpx.options(f"{served.url}/v1/embeddings", headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in preflight.headers


def test_a_bad_request_never_fails_the_good_ones_beside_it(served, model):
    async def run():
        async with httpx.AsyncClient(base_url=served.url, timeout=30) as client:
            good = [client.post("/v1/embeddings", json={"model": "tiny", "input": [t]}) for t in TEXTS * 4]
            bad = [client.post("/v1/embeddings", json={"model": "tiny", "input": [[1, 10 ** 9]]})] * 3
            return await asyncio.gather(*good, *bad)

    responses = asyncio.run(run())
    assert [r.status_code for r in responses] == [200] * len(TEXTS) * 4 + [400] * 3
    got = np.array([r.json()["data"][0]["embedding"] for r in responses[:len(TEXTS)]], dtype=np.float32)
    assert np.array_equal(got, model.encode(TEXTS))


def test_metrics_move_with_requests(served):
    def counter(text: str, name: str) -> float:
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith(name) and 'model="tiny"' in line)

    before = httpx.get(f"{served.url}/metrics").text
    _post(served, "/v1/embeddings", {"model": "tiny", "input": ["one", "two", "three"]})
    _post(served, "/v1/embeddings", {"model": "tiny", "input": [[1, 10 ** 9]]})
    after = httpx.get(f"{served.url}/metrics").text
    assert counter(after, "embedrt_inputs_total") - counter(before, "embedrt_inputs_total") == 3
    assert counter(after, 'embedrt_requests_total{model="tiny",outcome="ok"') >= 1
    assert 'outcome="invalid_value"' in after and "embedrt_batch_size_bucket" in after
    assert "embedrt_request_queue_seconds_bucket" in after and "embedrt_queue_tokens" in after
