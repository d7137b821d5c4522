"""Average-word-embedding models (GloVe & co.): whitespace tokenizer, graph and pooling match sentence-transformers."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import embedrt
import numpy as np
import pytest
import torch
from embedrt import ArtifactError
from embedrt.whitespace import WhitespaceTokenizer
from embedrt_dev.corpora import sample_records
from embedrt_dev.fetch.items import corpus_path
from embedrt_export import SourceError, export
from embedrt_export.builders import wordembed
from embedrt_export.fidelity import one_minus_cos
from scipy.stats import pearsonr
from sentence_transformers import SentenceTransformer as STModel
from sentence_transformers.sentence_transformer.modules import Dense, LayerNorm, Normalize, Pooling, WordEmbeddings
from sentence_transformers.sentence_transformer.modules.tokenizer import WhitespaceTokenizer as STWhitespace

GLOVE = "average_word_embeddings_glove.6B.50d"
# Texts where word-level rules decide everything: nothing left, stop words only, unknown words only,
# punctuation only, case variants, punctuation glued to words, Unicode whitespace, the padding word itself.
EDGE_TEXTS = [
    "",
    "   \t\n ",
    "the and of a to in is it",
    "The AND Of",
    "zzqxv blorptangle qqqwww",
    "!!! ?! ,,, ;:",
    "...",
    "Hello, WORLD!!! (quoted) \"words\" -- it's",
    "non\u00a0breaking\u2003em\u3000ideographic spaces",
    "PADDING_TOKEN",
    "我们今天去公园散步",
]


@pytest.fixture(scope="module")
def glove(model_path, tmp_path_factory):
    """``(artifact_dir, manifest, export_seconds)`` of the real GloVe 6B 50-d model."""
    out = tmp_path_factory.mktemp("glove") / GLOVE
    start = time.perf_counter()
    manifest = export(model_path(GLOVE), out, name=GLOVE)
    return out, manifest, time.perf_counter() - start


@pytest.fixture(scope="module")
def glove_pair(glove, reference_model):
    """sentence-transformers' GloVe model and embedrt's, loaded from the exported artifact."""
    return reference_model(GLOVE), embedrt.SentenceTransformer(glove[0])


def _as_numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _assert_parity(reference, ours, texts: list[str]) -> tuple[float, float]:
    """Sentence and token embeddings agree; returns (max 1-cos, max abs difference over finite rows).

    A text with no known word (or only the padding word) pools to zeros, or -inf under max pooling,
    where cosine is meaningless, so every row is also compared element-wise.
    """
    ref = reference.encode(texts, batch_size=16, convert_to_numpy=True)
    got = ours.encode(texts, batch_size=16)
    assert got.dtype == np.float32 and got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    regular = np.isfinite(ref).all(1) & ref.any(1)
    assert regular.any()
    worst = float(one_minus_cos(ref[regular], got[regular]).max())
    assert worst <= 1e-6, f"max 1-cos {worst:.3g}"
    ref_tok = reference.encode(texts, batch_size=16, output_value="token_embeddings")
    got_tok = ours.encode(texts, batch_size=16, output_value="token_embeddings")
    for text, r, g in zip(texts, ref_tok, got_tok):
        r = _as_numpy(r)
        assert g.shape == r.shape, f"{text[:40]!r}: token embeddings {g.shape} != sentence-transformers {r.shape}"
        np.testing.assert_allclose(g, r, rtol=0, atol=0, err_msg=text[:40])  # a lookup: must be exact
    finite = np.isfinite(ref).all(1)
    return worst, float(np.abs(got[finite] - ref[finite]).max())


# -- the real GloVe model ---------------------------------------------------------------------------


def test_whitespace_tokenizer_ids_match_sentence_transformers(glove_pair, fortunes):
    reference, ours = glove_pair
    texts = sample_records(fortunes, 10_000)
    assert len(texts) == 10_000
    st_tokenizer = reference[0].tokenizer
    expected = [st_tokenizer.tokenize(t)[:reference.max_seq_length] for t in texts]
    got = ours.tokenizer.encode(texts).ids
    identical = sum(list(g) == e for g, e in zip(got, expected))
    lengths = [len(e) for e in expected]
    print(f"\n{GLOVE}: identical token ids on {identical}/{len(texts)} fortunes texts "
          f"({sum(lengths)} ids; {lengths.count(0)} texts keep no word)")
    mismatches = [t for g, e, t in zip(got, expected, texts) if list(g) != e]
    assert not mismatches, f"{len(mismatches)} texts differ, first: {mismatches[0][:200]!r}"
    # The sample is not degenerate: many words kept, yet stop words and unknown words do get dropped.
    assert sum(lengths) > 50_000 and 0 < lengths.count(0) < len(texts) // 2


def test_truncation_matches_sentence_transformers(glove_pair, corpus_1000):
    reference, ours = glove_pair
    default = reference.max_seq_length
    assert ours.max_seq_length == default
    try:
        reference.max_seq_length = ours.max_seq_length = 7
        lengths = ours.tokenizer.encode(corpus_1000).lengths()
        assert lengths.max() == 7 and (lengths == 7).sum() >= 100
        features = reference[0].preprocess(corpus_1000[:64])
        ids = [row[mask.bool()].tolist() for row, mask in zip(features["input_ids"], features["attention_mask"])]
        assert ids == [list(x) for x in ours.tokenizer.encode(corpus_1000[:64]).ids]
        _assert_parity(reference, ours, corpus_1000[:200])
    finally:
        reference.max_seq_length = ours.max_seq_length = default


def test_glove_encode_matches_sentence_transformers(glove, glove_pair, corpus_1000):
    artifact, manifest, seconds = glove
    reference, ours = glove_pair
    assert ours.get_sentence_embedding_dimension() == reference.get_embedding_dimension() == 50
    assert ours.similarity_fn_name == reference.similarity_fn_name
    assert manifest.tokenizer.kind == "whitespace" and manifest.tokenizer.pad_token_id == 0
    worst, max_abs = _assert_parity(reference, ours, corpus_1000)
    assert max_abs <= 1e-5, f"max abs {max_abs:.3g}"
    recorded = manifest.towers["text"].variants["fp32"].parity
    assert recorded["max_one_minus_cos"] <= 1e-6
    size = sum(f.stat().st_size for f in Path(artifact).rglob("*") if f.is_file())
    print(f"\n{GLOVE}: export {seconds:.1f} s ({size / 2**20:.0f} MiB); 1000 texts max 1-cos {worst:.3g}, "
          f"max abs {max_abs:.3g}; export probe parity {recorded}")


def test_lee_benchmark_correlation_matches_sentence_transformers(glove_pair):
    reference, ours = glove_pair
    lee = corpus_path("lee")
    # Read as gensim's test_lee does: latin-1 documents, one per line; the upper triangle of the
    # 50×50 human similarity matrix gives the 1,225 document pairs.
    documents = (lee / "lee.cor").read_text(encoding="latin-1").splitlines()
    human_matrix = np.loadtxt(lee / "similarities0-1.txt")
    pairs = np.triu_indices(human_matrix.shape[0], 1)
    human = human_matrix[pairs]
    assert len(documents) == human_matrix.shape[0] == 50 and len(human) == 1225

    ref = reference.encode(documents, convert_to_tensor=True)
    ours_sim = ours.similarity(ours.encode(documents), ours.encode(documents))[pairs]
    ref_sim = reference.similarity(ref, ref).numpy()[pairs]
    ours_r, ref_r = pearsonr(ours_sim, human)[0], pearsonr(ref_sim, human)[0]
    print(f"\nLee 1,225 pairs, Pearson vs human: embedrt {ours_r:.6f}, sentence-transformers {ref_r:.6f}")
    assert abs(ours_r - ref_r) <= 0.002


def test_edge_cases_match_sentence_transformers(glove_pair):
    reference, ours = glove_pair
    _assert_parity(reference, ours, EDGE_TEXTS)
    for text in EDGE_TEXTS:  # one at a time too: a batch of one is padded differently
        np.testing.assert_allclose(ours.encode(text), reference.encode(text), rtol=1e-5, atol=1e-6, err_msg=text)
    assert reference.encode([], convert_to_numpy=True).shape == ours.encode([]).shape == (0,)


# -- tiny random twins --------------------------------------------------------------------------------


def _twin_vocab(fortunes) -> list[str]:
    """Frequent raw and stripped English words, so case, punctuation and stop-word rules all matter."""
    counts = Counter(w for r in fortunes if r["lang"] == "en" for w in r["text"].split())
    raw = [w for w, _ in counts.most_common(600)]
    stripped = [w.strip("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~").lower() for w in raw]
    vocab = ["PADDING_TOKEN", ""]  # "" is matched by punctuation-only tokens in sentence-transformers
    for w in raw + stripped + [",", ".", "...", "!", "The", "I", "You"]:
        if w and w not in vocab:
            vocab.append(w)
    return vocab


def _build_twin(path: Path, vocab: list[str], *, lower: bool, pooling, heads: str = "", seed: int = 0) -> Path:
    torch.manual_seed(seed)
    weights = np.random.default_rng(seed).standard_normal((len(vocab) + 3, 12)).astype(np.float32)
    tokenizer = STWhitespace(vocab, stop_words=["the", "a", "of", "The", "and", "is"], do_lower_case=lower)
    modules = [WordEmbeddings(tokenizer, weights), Pooling(12, pooling_mode=pooling)]
    dim = modules[-1].get_embedding_dimension()
    if "dense" in heads:
        modules.append(Dense(dim, 8, activation_function=torch.nn.Tanh()))
        dim = 8
    if "residual" in heads:
        modules.append(Dense(dim, dim, bias=False, activation_function=torch.nn.ReLU(), use_residual=True))
    if "layernorm" in heads:
        modules.append(LayerNorm(dim))
        with torch.no_grad():
            modules[-1].norm.weight.normal_()
            modules[-1].norm.bias.normal_()
    if "normalize" in heads:
        modules.append(Normalize())
    if "gelu" in heads:
        modules.append(Dense(dim, 4, activation_function=torch.nn.GELU()))
    STModel(modules=modules, device="cpu").save(str(path))
    return path


TWINS = {
    "mean-lower": dict(lower=True, pooling="mean"),
    "mean-cased": dict(lower=False, pooling="mean"),
    "max-cased": dict(lower=False, pooling="max"),
    "sqrt-lower": dict(lower=True, pooling="mean_sqrt_len_tokens"),
    "weightedmean-cased": dict(lower=False, pooling="weightedmean"),
    "lasttoken-lower": dict(lower=True, pooling="lasttoken"),
    "mean+max-cased": dict(lower=False, pooling=("mean", "max")),
    "dense-layernorm-normalize": dict(lower=True, pooling="mean", heads="dense layernorm normalize"),
    "residual-normalize": dict(lower=False, pooling="weightedmean", heads="residual normalize"),
}


@pytest.fixture(scope="module")
def twin_texts(fortunes) -> list[str]:
    return sample_records(fortunes, 300, n_long=10) + EDGE_TEXTS


@pytest.mark.parametrize("twin_id", sorted(TWINS))
def test_twin_parity(twin_id, fortunes, twin_texts, tmp_path):
    vocab = _twin_vocab(fortunes)
    src = _build_twin(tmp_path / "src", vocab, **TWINS[twin_id])
    manifest = export(src, tmp_path / "artifact", name=twin_id)
    reference = STModel(str(src), device="cpu", local_files_only=True)
    ours = embedrt.SentenceTransformer(tmp_path / "artifact")
    assert ours.get_sentence_embedding_dimension() == reference.get_embedding_dimension()
    assert manifest.normalized == ("normalize" in TWINS[twin_id].get("heads", ""))
    expected = [reference[0].tokenizer.tokenize(t) for t in twin_texts]
    assert [list(x) for x in ours.tokenizer.encode(twin_texts).ids] == expected
    assert any(vocab.index("") in ids for ids in expected)  # the punctuation-only quirk is exercised
    worst, max_abs = _assert_parity(reference, ours, twin_texts)
    print(f"\ntwin {twin_id}: max 1-cos {worst:.3g}, max abs {max_abs:.3g}")


# -- refusals and bad input ------------------------------------------------------------------------------


def test_cls_pooling_is_refused(fortunes, tmp_path):
    src = _build_twin(tmp_path / "src", _twin_vocab(fortunes), lower=True, pooling="cls")
    with pytest.raises(SourceError, match="'cls'"):
        export(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_matrix_over_protobuf_limit_is_stored_beside_the_graph(fortunes, twin_texts, tmp_path, monkeypatch,
                                                              capsys):
    """glove.840B's matrix (2.6 GB) cannot sit inside an ONNX graph: past the limit (lowered here) it is
    written as external data, listed and hashed in the manifest, verified at load, and the embeddings
    still match sentence-transformers'."""
    src = _build_twin(tmp_path / "src", _twin_vocab(fortunes), lower=True, pooling="mean")
    monkeypatch.setattr(wordembed, "MAX_INITIALIZER_BYTES", 1000)
    manifest = export(src, tmp_path / "out")
    variant = manifest.towers["text"].variants["fp32"]
    assert variant.external_data == wordembed.DATA_FILE and wordembed.DATA_FILE in manifest.files
    data = tmp_path / "out" / wordembed.DATA_FILE
    assert (tmp_path / "out" / variant.file).stat().st_size < 10_000 < data.stat().st_size
    reference = STModel(str(src), device="cpu", local_files_only=True)
    _assert_parity(reference, embedrt.SentenceTransformer(tmp_path / "out"), twin_texts)
    from embedrt.cli import main

    assert main(["info", str(tmp_path / "out"), "--verify"]) == 0
    assert "text/model.onnx + text/model.onnx.data" in capsys.readouterr().out

    damaged = bytearray(data.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    data.write_bytes(bytes(damaged))
    with pytest.raises(ArtifactError, match=r"model\.onnx\.data: sha256 [0-9a-f]{64} does not match"):
        embedrt.SentenceTransformer(tmp_path / "out")


def test_unsupported_dense_activation_is_refused(fortunes, tmp_path):
    src = _build_twin(tmp_path / "src", _twin_vocab(fortunes), lower=True, pooling="mean", heads="gelu")
    with pytest.raises(SourceError, match="GELU"):
        export(src, tmp_path / "out")


@pytest.mark.parametrize(("text", "message"), [
    (b"{not json", "not valid JSON"),
    (b'{"format": "other"}', "format"),
    (b'{"format": "embedrt.whitespace_tokenizer/1", "vocab": "abc", "stop_words": [], "do_lower_case": false}',
     "'vocab' must be a list"),
    (b'{"format": "embedrt.whitespace_tokenizer/1", "vocab": ["a", 3], "stop_words": [], "do_lower_case": false}',
     r"vocab\[1\]"),
    (b'{"format": "embedrt.whitespace_tokenizer/1", "vocab": [], "stop_words": [], "do_lower_case": "yes"}',
     "do_lower_case"),
])
def test_malformed_tokenizer_file_is_refused(text, message):
    with pytest.raises(ArtifactError, match=message):
        WhitespaceTokenizer.from_json(text, max_seq_length=10, origin="tok.json")


def test_tokenizer_rejects_bad_input():
    tokenizer = WhitespaceTokenizer(["PADDING_TOKEN", "hello"], [], do_lower_case=True, max_seq_length=5)
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        tokenizer.encode(["hello", ("hello", "pair")])
    for bad in (0, -1, 2.5, True, None):
        with pytest.raises(ValueError, match="max_seq_length"):
            tokenizer.max_seq_length = bad
    assert tokenizer.encode(["HELLO hello"]).ids[0].tolist() == [1, 1]


def test_glove_artifact_encodes_where_torch_cannot_be_imported(glove, glove_pair):
    script = textwrap.dedent(f"""
        import importlib.abc, sys
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "transformers", "optimum", "sentence_transformers"):
                    raise ImportError(f"blocked import of {{name}}")
        sys.meta_path.insert(0, Block())
        import embedrt
        model = embedrt.SentenceTransformer({str(glove[0])!r})
        sys.stdout.buffer.write(model.encode(["a torch-free sentence", ""]).tobytes())
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": ""})
    assert result.returncode == 0, result.stderr.decode()
    got = np.frombuffer(result.stdout, dtype=np.float32).reshape(2, -1)
    np.testing.assert_array_equal(got, glove_pair[1].encode(["a torch-free sentence", ""]))
