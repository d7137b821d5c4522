"""The standing adversarial suite: generated texts over every Unicode category (surrogates included),
containers and argument values. Hypothesis profiles (tests/conftest.py): ``full`` (the default, over
5,000 cases in all) and ``fast`` (``--hypothesis-profile=fast``, a few hundred)."""

from __future__ import annotations

import embedrt
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

ALL_CATEGORIES = ("L", "M", "N", "P", "S", "Z", "C")  # C includes Cs (lone surrogates), Co, Cn, Cc, Cf
TEXT = st.text(st.characters(categories=ALL_CATEGORIES), max_size=120)
PLAIN = st.text(st.characters(exclude_categories=("Cs",)), max_size=120)  # every category but Cs


@pytest.fixture(scope="module")
def model(tiny_artifact):
    return embedrt.SentenceTransformer(tiny_artifact)


def _first_invalid(texts: list[str]) -> int | None:
    for i, text in enumerate(texts):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return i
    return None


@given(st.lists(TEXT, max_size=12))
def test_any_texts_embed_or_name_the_invalid_one(model, texts):
    bad = _first_invalid(texts)
    if bad is not None:
        with pytest.raises(ValueError, match=rf"sentences\[{bad}\] is not valid Unicode"):
            model.encode(texts)
        return
    got = model.encode(texts)
    if not texts:  # as sentence-transformers: an empty array
        assert got.shape == (0,)
        return
    assert got.shape == (len(texts), 8) and got.dtype == np.float32 and np.isfinite(got).all()


@given(st.lists(PLAIN, min_size=1, max_size=10), st.integers(1, 12))
def test_an_embedding_does_not_depend_on_its_batch(model, texts, batch_size):
    together = model.encode(texts, batch_size=batch_size)
    alone = np.stack([model.encode(t) for t in texts])
    assert np.array_equal(together, alone)  # bit for bit: the pooling sum is one GEMM per text


CONTAINERS = st.sampled_from(["list", "tuple", "numpy", "generator", "stream"])


@given(st.lists(PLAIN, max_size=8), CONTAINERS)
def test_containers_give_the_list_result(model, texts, kind):
    want = model.encode(list(texts))
    if kind == "stream":  # other chunks, so other batches: the same bits all the same
        parts = list(model.encode_stream(iter(texts), chunk_size=3))
        assert np.array_equal(np.concatenate(parts) if parts else np.array([]), want)
        return
    given_as = {"list": list, "tuple": tuple, "numpy": lambda t: np.array(t, dtype=object),
                "generator": lambda t: (x for x in t)}[kind](texts)
    assert np.array_equal(model.encode(given_as), want)


ANY = st.one_of(st.none(), st.booleans(), st.integers(-3, 70), st.floats(allow_nan=True), st.text(max_size=4),
                st.just(np.int64(4)), st.just(np.float32(2.0)), st.lists(st.integers(), max_size=2))


@given(batch_size=ANY, normalize=ANY, precision=ANY, output_value=ANY, truncate_dim=ANY)
def test_any_argument_values_work_or_raise_a_clear_error(model, batch_size, normalize, precision, output_value,
                                                         truncate_dim):
    try:
        out = model.encode(["the cat", "a dog"], batch_size=batch_size, normalize_embeddings=normalize,
                           precision=precision, output_value=output_value, truncate_dim=truncate_dim)
    except (TypeError, ValueError) as exc:
        assert str(exc)
        return
    assert out is not None


@given(chunk_size=ANY, batch_size=ANY)
def test_encode_stream_arguments_are_checked_at_call_time(model, chunk_size, batch_size):
    pulled = []

    def source():
        for i in range(50):
            pulled.append(i)
            yield "text"
    try:
        stream = model.encode_stream(source(), chunk_size=chunk_size, batch_size=batch_size)
    except (TypeError, ValueError):
        assert not pulled
        return
    size = model.chunk_size if chunk_size is None else int(chunk_size)
    first = next(stream)
    assert len(first) == min(50, size) and len(pulled) <= 3 * size + 1
