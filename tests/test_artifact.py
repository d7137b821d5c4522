"""A damaged or malformed artifact is refused with the file name, never used."""

from __future__ import annotations

import json
import shutil

import embedrt
import pytest
from embedrt.artifact import Artifact
from embedrt.manifest import ArtifactError


@pytest.fixture()
def copy(minilm_artifact, tmp_path):
    dst = tmp_path / "artifact"
    shutil.copytree(minilm_artifact, dst)
    return dst


def _edit_manifest(folder, change):
    path = folder / "manifest.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_intact_artifact_loads(copy):
    Artifact(copy).verify_all()
    assert embedrt.SentenceTransformer(copy).encode("ok").shape == (384,)


def test_missing_graph_names_file_and_hash(copy):
    (copy / "text" / "model.onnx").unlink()
    with pytest.raises(ArtifactError, match=r"model\.onnx: missing \(expected sha256 [0-9a-f]{64}\)"):
        embedrt.SentenceTransformer(copy)


def test_truncated_graph_is_refused(copy):
    graph = copy / "text" / "model.onnx"
    graph.write_bytes(graph.read_bytes()[:-1000])
    with pytest.raises(ArtifactError, match=r"model\.onnx: size .* expected sha256"):
        embedrt.SentenceTransformer(copy)


def test_altered_graph_is_refused(copy):
    graph = copy / "text" / "model.onnx"
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one flipped byte in the weights
    graph.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"model\.onnx: sha256 [0-9a-f]{64} does not match expected"):
        embedrt.SentenceTransformer(copy)


@pytest.mark.parametrize("how", ["replaced", "rewritten"])
def test_graph_changed_while_loading_is_refused(copy, monkeypatch, how):
    """The graph is hashed, then ONNX Runtime loads it from its path: a file swapped or rewritten in
    between is refused by name, not used."""
    import os

    import embedrt.loader

    graph = copy / "text" / "model.onnx"
    real = embedrt.loader.create_session

    def tamper_then_load(path, *args, **kwargs):
        data = bytearray(graph.read_bytes())
        data[len(data) // 2] ^= 0xFF
        if how == "replaced":
            (copy / "swap.onnx").write_bytes(bytes(data))
            os.replace(copy / "swap.onnx", graph)
        else:
            stat = graph.stat()
            graph.write_bytes(bytes(data))
            os.utime(graph, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))  # coarse clocks: force a new mtime
        return real(path, *args, **kwargs)

    monkeypatch.setattr(embedrt.loader, "create_session", tamper_then_load)
    with pytest.raises(ArtifactError, match=r"model\.onnx: changed while it was being loaded"):
        embedrt.SentenceTransformer(copy)


def test_altered_tokenizer_is_refused(copy):
    tok = copy / "tokenizer.json"
    tok.write_text(tok.read_text().replace('"[UNK]"', '"[UNX]"', 1))
    with pytest.raises(ArtifactError, match="tokenizer.json"):
        embedrt.SentenceTransformer(copy)


def test_missing_manifest(copy):
    (copy / "manifest.json").unlink()
    with pytest.raises(ArtifactError, match="manifest.json: missing"):
        embedrt.SentenceTransformer(copy)


def test_not_a_folder(tmp_path):
    with pytest.raises(ArtifactError, match="no embedrt artifact for .*nope.*embedrt export"):
        embedrt.SentenceTransformer(tmp_path / "nope")
    with pytest.raises(ArtifactError, match="not found"):
        Artifact(tmp_path / "nope")


def test_name_resolves_from_local_artifact_store(minilm_artifact, tmp_path, monkeypatch):
    import shutil

    shutil.copytree(minilm_artifact, tmp_path / "artifacts" / "all-MiniLM-L6-v2")
    monkeypatch.setenv("EMBEDRT_CACHE", str(tmp_path))
    model = embedrt.SentenceTransformer("sentence-transformers/all-MiniLM-L6-v2")
    assert model.encode("by name").shape == (384,)


def test_manifest_not_json(copy):
    (copy / "manifest.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        Artifact(copy)


def test_wrong_schema(copy):
    _edit_manifest(copy, lambda d: d.update(schema="embedrt.artifact/999"))
    with pytest.raises(ArtifactError, match="unsupported schema"):
        Artifact(copy)


def test_path_escaping_folder_is_refused(copy):
    def escape(d):
        d["files"]["../../etc/passwd"] = {"sha256": "0" * 64, "size": 1}
    _edit_manifest(copy, escape)
    with pytest.raises(ArtifactError, match="outside the artifact folder"):
        Artifact(copy)


def test_graph_without_hash_entry_is_refused(copy):
    _edit_manifest(copy, lambda d: d["files"].pop("text/model.onnx"))
    with pytest.raises(ArtifactError, match="no sha256 entry"):
        Artifact(copy)


@pytest.mark.parametrize(("location", "message"), [
    ("elsewhere/model.onnx.data", "must sit beside its graph"),
    ("text/model.onnx.data", "is used but has no sha256 entry"),
])
def test_external_data_must_be_listed_beside_its_graph(copy, location, message):
    _edit_manifest(copy, lambda d: d["towers"]["text"]["variants"]["fp32"].update(external_data=location))
    with pytest.raises(ArtifactError, match=message):
        Artifact(copy)


def test_unknown_variant(copy):
    with pytest.raises(ValueError, match="variant 'int8' not in artifact"):
        embedrt.SentenceTransformer(copy, variant="int8")
