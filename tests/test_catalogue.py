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
    with pytest.raises(SourceError, match=r"Dense modules \[\], catalogue says \[\(32, 21, 'tanh', True\)\]"):
        export(src, tmp_path / "out", expect=catalogue_twins.scaled_entry(entry), variants=())
    assert not (tmp_path / "out").exists()


def _json(path):
    import json

    return json.loads(path.read_text(encoding="utf-8"))


def test_fixtures_are_laid_out_like_the_published_folders(report):
    """The facts of the published folders (checked against the Hub), file by file, in the twins the catalogue
    is checked on."""
    src = {name: row["source"] for name, row in report.items()}
    for name in ("msmarco-distilbert-base-tas-b", "msmarco-roberta-base-ance-firstp",
                 "msmarco-distilbert-base-dot-prod-v3", "facebook-dpr-question_encoder-single-nq-base"):
        assert "similarity_fn_name" not in _json(src[name] / "config_sentence_transformers.json"), name
    assert _json(src["msmarco-distilbert-base-v3"] / "sentence_bert_config.json") == {
        "max_seq_length": 510, "do_lower_case": False}
    assert _json(src["facebook-dpr-ctx_encoder-multiset-base"] / "sentence_bert_config.json")["max_seq_length"] == 100
    assert _json(src["msmarco-roberta-base-ance-firstp"] / "sentence_bert_config.json") == {
        "max_seq_length": 512, "do_lower_case": True}
    for name in ("msmarco-distilbert-base-dot-prod-v3", "clip-ViT-B-32-multilingual-v1"):
        dense = _json(src[name] / "2_Dense" / "config.json")
        assert dense["bias"] is False and dense["activation_function"] == "torch.nn.modules.linear.Identity", name
    assert _json(src["msmarco-roberta-base-ance-firstp"] / "2_Dense" / "config.json")["bias"] is True
    t_systems = src["cross-en-de-roberta-sentence-transformer"]
    assert not (t_systems / "modules.json").exists() and not (t_systems / "1_Pooling").exists()
    assert _json(t_systems / "sentence_bert_config.json")["max_seq_length"] == 128


def test_old_catalogue_facts_are_refused_by_the_published_layouts(report):
    """The cases the published folders broke: with the facts the catalogue had before, the stack check
    refuses the download; with the corrected ones (the report above), it exports with parity."""
    import dataclasses

    from embedrt_export.builders.base import load_sentence_transformer
    from embedrt_export.resolve import check_stack
    from embedrt_export.source import read_source

    def old(name, **facts):
        return dataclasses.replace(catalogue_twins.scaled_entry(catalogue.get(name)), **facts)

    dense_with_bias = lambda name: tuple(dataclasses.replace(d, bias=True)  # noqa: E731
                                         for d in catalogue_twins.scaled_entry(catalogue.get(name)).dense)
    cases = {
        "msmarco-distilbert-base-v3": (old("msmarco-distilbert-base-v3", max_seq_length=512), "max_seq_length 510"),
        "facebook-dpr-ctx_encoder-multiset-base": (old("facebook-dpr-ctx_encoder-multiset-base", max_seq_length=509),
                                                   "max_seq_length 100"),
        "cross-en-de-roberta-sentence-transformer": (old("cross-en-de-roberta-sentence-transformer",
                                                         max_seq_length=128), "max_seq_length 512"),
        "msmarco-distilbert-base-dot-prod-v3": (old("msmarco-distilbert-base-dot-prod-v3",
                                                    dense=dense_with_bias("msmarco-distilbert-base-dot-prod-v3")),
                                                "Dense modules"),
        "clip-ViT-B-32-multilingual-v1": (old("clip-ViT-B-32-multilingual-v1",
                                              dense=dense_with_bias("clip-ViT-B-32-multilingual-v1")), "Dense modules"),
        "msmarco-roberta-base-ance-firstp": (old("msmarco-roberta-base-ance-firstp", do_lower_case=False),
                                             "do_lower_case True"),
    }
    for name, (entry, message) in cases.items():
        source = read_source(report[name]["source"])
        with pytest.raises(SourceError, match=message):
            check_stack(entry, source, load_sentence_transformer(str(source.path)))
    # The dot-product models whose folders declare no similarity: sentence-transformers reports cosine for
    # them (the old check compared that with the catalogue's dot and refused); the export takes the
    # catalogue's dot and says where it came from.
    for name in ("msmarco-distilbert-base-tas-b", "msmarco-roberta-base-ance-firstp",
                 "msmarco-distilbert-base-dot-prod-v3", "facebook-dpr-ctx_encoder-single-nq-base",
                 "facebook-dpr-question_encoder-single-nq-base", "facebook-dpr-ctx_encoder-multiset-base",
                 "facebook-dpr-question_encoder-multiset-base"):
        assert STModel(str(report[name]["source"]), device="cpu").similarity_fn_name == "cosine"
        manifest = embedrt.SentenceTransformer(report[name]["artifact"]).manifest
        assert (manifest.similarity_fn_name, manifest.similarity_source) == ("dot", "catalogue"), name


def test_info_says_where_the_similarity_came_from(report, capsys):
    from embedrt.cli import main

    assert main(["info", str(report["msmarco-distilbert-base-tas-b"]["artifact"])]) == 0
    assert "similarity          dot (the catalogue's, the model's documented use; the folder declares none, " \
           "so sentence-transformers would report cosine)" in capsys.readouterr().out
