"""``encode`` behaves like sentence-transformers' on shapes, dtypes, options and bad input."""

from __future__ import annotations

import embedrt
import numpy as np
import pytest
from embedrt_export.fidelity import one_minus_cos
from sentence_transformers.util import quantize_embeddings as st_quantize

NAME = "all-MiniLM-L6-v2"
TEXTS = ["A man is eating food.", "A man is eating a piece of bread.", "The girl is carrying a baby.",
         "Ein Mann isst.", "", "Кошка спит на диване.", "猫在沙发上睡觉。"]


@pytest.fixture(scope="module")
def pair(minilm_artifact, reference_model):
    return embedrt.SentenceTransformer(minilm_artifact), reference_model(NAME)


def test_shapes_and_types_match(pair):
    ours, ref = pair
    for kwargs in ({}, {"convert_to_numpy": False}, {"convert_to_tensor": True}, {"normalize_embeddings": True}):
        a, b = ours.encode(TEXTS, **kwargs), ref.encode(TEXTS, **kwargs)
        if isinstance(b, list):
            assert isinstance(a, list) and len(a) == len(b)
            assert all(x.shape == tuple(y.shape) for x, y in zip(a, b))
            a, b = np.stack(a), np.stack([y.numpy() for y in b])
        b = b.numpy() if hasattr(b, "numpy") else b
        assert a.shape == b.shape and a.dtype == np.float32
        assert one_minus_cos(a, b).max() <= 1e-6

    single = ours.encode("A man is eating food.")
    assert single.shape == ref.encode("A man is eating food.").shape == (384,)


def test_empty_input_matches(pair):
    ours, ref = pair
    a, b = ours.encode([]), ref.encode([])
    assert isinstance(a, np.ndarray) and a.shape == b.shape


def test_order_is_preserved_across_batches(pair):
    ours, _ = pair
    texts = [f"sentence number {i} " * (i % 13 + 1) for i in range(70)]
    together = ours.encode(texts, batch_size=8)
    one_by_one = np.stack([ours.encode(t) for t in texts])
    assert one_minus_cos(together, one_by_one).max() <= 1e-6


def test_token_embeddings_and_output_none(pair):
    ours, ref = pair
    a = ours.encode(TEXTS, output_value="token_embeddings")
    b = ref.encode(TEXTS, output_value="token_embeddings")
    assert [x.shape for x in a] == [tuple(y.shape) for y in b]
    assert max(float(np.abs(x - y.numpy()).max()) for x, y in zip(a, b)) <= 1e-4
    full = ours.encode(TEXTS, output_value=None)
    assert isinstance(full, list) and set(full[0]) >= {"sentence_embedding", "token_embeddings", "input_ids"}
    assert full[0]["token_embeddings"].shape[0] == len(full[0]["input_ids"])


@pytest.mark.parametrize("precision", ["int8", "uint8", "binary", "ubinary"])
def test_precision_matches_sentence_transformers(pair, precision):
    ours, ref = pair
    a = ours.encode(TEXTS, precision=precision)
    b = st_quantize(ours.encode(TEXTS), precision=precision)
    assert a.dtype == b.dtype and a.shape == b.shape
    assert np.array_equal(a, b)
    assert ref.encode(TEXTS, precision=precision).dtype == a.dtype


def test_max_seq_length_is_settable(pair):
    ours, ref = pair
    long_text = "word " * 400
    try:
        ours.max_seq_length = ref.max_seq_length = 32
        a, b = ours.encode([long_text, "short"]), ref.encode([long_text, "short"])
        assert one_minus_cos(a, b).max() <= 1e-6
        assert ours.tokenizer.encode([long_text]).lengths()[0] == 32
    finally:
        ours.max_seq_length = ref.max_seq_length = 256
    with pytest.raises(ValueError, match="position limit"):
        ours.max_seq_length = 10_000


def test_similarity_and_dimension(pair):
    ours, ref = pair
    emb = ours.encode(TEXTS)
    assert ours.similarity_fn_name == ref.similarity_fn_name == "cosine"
    assert np.allclose(ours.similarity(emb, emb), ref.similarity(emb, emb).numpy(), atol=1e-6)
    assert ours.get_sentence_embedding_dimension() == ref.get_embedding_dimension() == 384
    ours.similarity_fn_name = "dot"
    try:
        assert np.allclose(ours.similarity(emb, emb), emb @ emb.T, atol=1e-6)
    finally:
        ours.similarity_fn_name = "cosine"


def test_truncate_dim(pair):
    ours, ref = pair
    a = ours.encode(TEXTS, truncate_dim=64, normalize_embeddings=True)
    b = ref.encode(TEXTS, truncate_dim=64, normalize_embeddings=True)
    assert a.shape == b.shape == (len(TEXTS), 64)
    assert one_minus_cos(a, b).max() <= 1e-6


@pytest.mark.parametrize("bad, where", [
    ([None], r"sentences\[0\]"),
    (["ok", 3], r"sentences\[1\]"),
    (["ok", "fine", b"bytes"], r"sentences\[2\]"),
    (["ok", ["nested", "list"]], r"sentences\[1\]"),
    (None, "sentences must be"),
    (42, "sentences must be"),
    (b"raw bytes", "sentences must be"),
])
def test_bad_input_raises_type_error_naming_the_index(pair, bad, where):
    ours, _ = pair
    with pytest.raises(TypeError, match=where):
        ours.encode(bad)


@pytest.mark.parametrize("kwargs, message", [
    ({"batch_size": 0}, "batch_size"),
    ({"output_value": "pooler"}, "output_value"),
    ({"precision": "float16"}, "precision"),
    ({"prompt_name": "no-such-prompt"}, "prompt_name"),
    ({"device": "cuda"}, "device"),
])
def test_bad_options_raise_value_error(pair, kwargs, message):
    ours, _ = pair
    with pytest.raises(ValueError, match=message):
        ours.encode(["text"], **kwargs)


def test_prompt_is_prepended(pair):
    ours, ref = pair
    a = ours.encode(["what is the capital of France?"], prompt="query: ")
    b = ref.encode(["what is the capital of France?"], prompt="query: ")
    assert one_minus_cos(a, b).max() <= 1e-6


def test_progress_bar_and_threads(minilm_artifact, capsys):
    model = embedrt.SentenceTransformer(minilm_artifact, threads=1)
    model.encode(TEXTS, show_progress_bar=True)
    assert "Encoding" in capsys.readouterr().err
    assert model.providers["active"] == ["CPUExecutionProvider"]
    with pytest.raises(ValueError, match="threads"):
        embedrt.SentenceTransformer(minilm_artifact, threads=0)


def test_image_given_to_text_model_is_refused(pair):
    from PIL import Image

    ours, _ = pair
    with pytest.raises(TypeError, match=r"sentences\[1\] is an image \(Image\), but this model is text-only"):
        ours.encode(["text", Image.new("RGB", (4, 4))])
