"""Every catalogue entry: its twin exports, passes the catalogue's stack check and matches sentence-transformers."""

from __future__ import annotations

import embedrt
import numpy as np
import pytest
from embedrt import catalogue
from embedrt_dev import catalogue_report, twins
from embedrt_dev.twins import catalogue as catalogue_twins
from embedrt_export import SourceError, export
from embedrt_export.fidelity import one_minus_cos
from sentence_transformers import SentenceTransformer as STModel


def test_catalogue_lists_every_seed_model():
    names = {e.name for e in catalogue.ENTRIES}
    assert len(names) == len(catalogue.ENTRIES) == 31
    for name in ("LaBSE", "allenai-specter", "clip-ViT-B-32", "average_word_embeddings_komninos",
                 "msmarco-distilbert-base-tas-b", "cross-en-de-roberta-sentence-transformer"):
        assert name in names
    assert catalogue.get("sentence-transformers/LaBSE").name == "LaBSE"
    dot = {e.name for e in catalogue.ENTRIES if e.similarity == "dot"}
    assert all(not catalogue.get(n).normalize for n in dot)


def test_unknown_name_lists_close_matches():
    with pytest.raises(ValueError, match="did you mean msmarco-distilbert-base-v3"):
        catalogue.get("msmarco-distilbert-base-v4")


@pytest.fixture(scope="session")
def report(tmp_path_factory):
    """The catalogue report over every entry, computed once: {name: row}."""
    table = catalogue_report.rows([e.name for e in catalogue.ENTRIES], tmp_path_factory.mktemp("catalogue"))
    print("\n" + catalogue_report.markdown(table))
    return {row["model"]: row for row in table}


def built(report, name):
    row = report[name]
    assert row["ok"], row
    return row["source"], row["artifact"], embedrt.SentenceTransformer(row["artifact"]).manifest


def test_report_passes_every_row(report):
    assert len(report) == len(catalogue.ENTRIES)
    failed = [name for name, row in report.items() if not row["ok"]]
    assert not failed, [report[n] for n in failed]


@pytest.mark.parametrize("name", [e.name for e in catalogue.ENTRIES])
def test_catalogue_twin_matches_sentence_transformers(name, report):
    entry = catalogue.get(name)
    src, artifact, manifest = built(report, name)
    for tower in manifest.towers.values():
        assert tower.variants["fp32"].parity["max_one_minus_cos"] <= 1e-6
    assert manifest.similarity_fn_name == entry.similarity
    assert manifest.normalized == entry.normalize
    assert manifest.input_kinds == tuple(entry.inputs)
    if entry.family != "word-embeddings":
        assert manifest.tokenizer.max_seq_length == entry.max_seq_length
    ours = embedrt.SentenceTransformer(artifact)
    ref = STModel(str(src), device="cpu", local_files_only=True)
    texts = ["How big is London?", "Wie groß ist Berlin?", "Сколько людей живёт в Москве?", "东京有多少人？",
             "the of and", "Emoji 🙂 and punctuation!?"]
    a, b = ours.encode(texts), ref.encode(texts)
    assert a.shape == b.shape and one_minus_cos(a, b).max() <= 1e-6
    if entry.similarity == "dot":
        # dot-product models are never normalized: the norms carry the score
        assert not np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-3)
        assert np.allclose(ours.similarity(a, a), a @ a.T, atol=1e-4)


def test_pairs_encode_like_sentence_transformers(report):
    src, artifact, _ = built(report, "nq-distilbert-base-v1")
    ours = embedrt.SentenceTransformer(artifact)
    ref = STModel(str(src), device="cpu", local_files_only=True)
    passages = [["London", "London has 9,787,426 inhabitants at the 2011 census."], ["Paris", "Paris is big."]]
    a, b = ours.encode(passages), ref.encode(passages)
    assert a.shape == (2, ours.get_sentence_embedding_dimension())
    assert one_minus_cos(a, b).max() <= 1e-6
    # a pair is not the same as its text alone
    assert one_minus_cos(a[:1], ours.encode([passages[0][1]])).max() > 1e-4


def test_pair_given_to_single_text_model_is_refused(report):
    _, artifact, _ = built(report, "msmarco-distilbert-base-tas-b")
    with pytest.raises(TypeError, match=r"sentences\[1\] is a pair"):
        embedrt.SentenceTransformer(artifact).encode(["fine", ["title", "text"]])


def test_stack_mismatch_is_refused(tmp_path, twin_assets):
    entry = catalogue.get("distiluse-base-multilingual-cased-v2")
    # the failure users hit elsewhere: the Dense layer left out, 768 instead of 512 dims
    src = twins.build_twin(tmp_path / "src", "distilbert", twins.HeadSpec(pooling="mean"), twin_assets,
                           max_seq_length=entry.max_seq_length)
    with pytest.raises(SourceError, match=r"Dense modules \[\], catalogue says \[\(32, 21, 'tanh'\)\]"):
        export(src, tmp_path / "out", expect=catalogue_twins.scaled_entry(entry))
    assert not (tmp_path / "out").exists()
