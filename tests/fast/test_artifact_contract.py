"""The manifest contract: checked whole at load (a field-naming ArtifactError, never a raw exception or a
wrong embedding), and the artifact digest that pins an artifact against a rewritten manifest."""

from __future__ import annotations

import json
import os
import random
import shutil

import embedrt
import numpy as np
import pytest
from embedrt.artifact import Artifact, sha256_bytes
from embedrt.cli import main
from embedrt.manifest import ArtifactError

PROBES = ["hello world", "the cat", "a dog!", ""]  # shorter than any max_seq_length a bit flip can reach


def _edit(folder, change) -> None:
    path = folder / "manifest.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def _variant(data, **fields):
    data["towers"]["text"]["variants"]["fp32"].update(fields)


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d.pop("towers"), "field \\(top level\\): 'towers' is a required property"),
    (lambda d: d["towers"].pop("text"), "field towers: 'text' is a required property"),
    (lambda d: d.update(surprise=1), "Additional properties are not allowed \\('surprise'"),
    (lambda d: d["tokenizer"].update(surprise=1), "field tokenizer: Additional properties"),
    (lambda d: _variant(d, surprise=1), "field towers.text.variants.fp32: Additional properties"),
    (lambda d: d["tokenizer"].update(pad_token_id=1_000_000_000), "pad_token_id 1000000000 is outside the vocab"),
    (lambda d: d["tokenizer"].update(pad_token_id=-1), "field tokenizer.pad_token_id"),
    (lambda d: d["tokenizer"].update(max_seq_length=65), "max_seq_length 65 exceeds tokenizer.model_max_length 64"),
    (lambda d: d["tokenizer"].update(max_seq_length="32"), "field tokenizer.max_seq_length: '32' is not"),
    (lambda d: d["tokenizer"].update(kind="sentencepiece"), "field tokenizer.kind"),
    (lambda d: d.update(embedding_dimension=9), "output is \\['batch', 8\\], but manifest.json says embedding_dim"),
    (lambda d: d.update(similarity_fn_name="jaccard"), "field similarity_fn_name"),
    (lambda d: d.update(default_prompt_name="doc"), "default_prompt_name 'doc' is not one of prompts"),
    (lambda d: d["towers"]["text"]["variants"].update(fp32_fused=d["towers"]["text"]["variants"]["fp32"]),
     "fp32_fused.custom_ops must list 'ai.embedrt'"),
    (lambda d: d["towers"]["text"]["variants"].update(int4=d["towers"]["text"]["variants"]["fp32"]),
     "field towers.text.variants: 'int4' is not one of"),
    (lambda d: _variant(d, custom_ops=["com.example"]), "custom_ops"),
    (lambda d: _variant(d, file="/etc/passwd"), "field towers.text.variants.fp32.file"),
    (lambda d: d["files"]["text/model.onnx"].update(sha256="XYZ"), "sha256"),
    (lambda d: d.update(input_kinds=["text", "image"]), "go together"),
    (lambda d: d.update(schema="embedrt.artifact/1"), "unsupported schema 'embedrt.artifact/1'.*re-export"),
    (lambda d: d.clear(), "unsupported schema None"),
])
def test_malformed_manifest_is_refused_naming_the_field(tiny_copy, change, message):
    _edit(tiny_copy, change)
    with pytest.raises(ArtifactError, match=message):
        embedrt.SentenceTransformer(tiny_copy)


@pytest.mark.parametrize("text", ["[]", "null", "3", '"x"', "[" * 100000])
def test_manifest_that_is_not_an_object_is_refused(tiny_copy, text):
    (tiny_copy / "manifest.json").write_text(text)
    with pytest.raises(ArtifactError, match="manifest.json"):
        Artifact(tiny_copy)


def test_unreadable_manifest_is_refused_by_name(tiny_copy):
    if os.geteuid() == 0:
        (tiny_copy / "manifest.json").unlink()
        (tiny_copy / "manifest.json").mkdir()  # root reads any file: a folder in its place is unreadable
    else:
        (tiny_copy / "manifest.json").chmod(0)
    with pytest.raises(ArtifactError, match="manifest.json"):
        Artifact(tiny_copy)


# -- the digest ---------------------------------------------------------------------------------------
def test_a_rewritten_manifest_passes_the_file_hashes_but_not_the_digest(tiny_artifact, tiny_copy, tmp_path):
    """Swapping the graph and updating its sha256 in the manifest passes the per-file checks (that is
    all they can do); pinning the artifact's digest refuses it."""
    import tiny

    pinned = Artifact(tiny_artifact).digest
    other = tiny.graph(vocab_size=200, seed=1)
    (tiny_copy / "text" / "model.onnx").write_bytes(other)
    _edit(tiny_copy, lambda d: d["files"]["text/model.onnx"].update(sha256=sha256_bytes(other), size=len(other)))
    swapped = embedrt.SentenceTransformer(tiny_copy)  # loads: the manifest vouches for the new graph
    assert not np.allclose(swapped.encode(PROBES), embedrt.SentenceTransformer(tiny_artifact).encode(PROBES))
    with pytest.raises(ArtifactError, match=f"is not the expected {pinned}"):
        embedrt.SentenceTransformer(tiny_copy, expected_digest=pinned)
    assert embedrt.SentenceTransformer(tiny_artifact, expected_digest=pinned.upper()).encode("ok").shape == (8,)
    with pytest.raises(ArtifactError, match="not the expected"):
        embedrt.load_engine(tiny_copy, expected_digest=pinned)


def test_cli_prints_and_checks_the_digest(tiny_artifact, tiny_copy, capsys):
    digest = Artifact(tiny_artifact).digest
    assert main(["info", str(tiny_artifact)]) == 0
    assert f"digest              {digest}" in capsys.readouterr().out
    assert main(["info", str(tiny_artifact), "--verify", "--digest", digest]) == 0
    _edit(tiny_copy, lambda d: d.update(name="renamed"))
    assert main(["info", str(tiny_copy), "--verify", "--digest", digest]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "manifest.json: artifact digest" in err and "is not the expected" in err


# -- every bit flip ------------------------------------------------------------------------------------
def _flips(data: bytes, cases: int | None) -> list[int]:
    bits = list(range(len(data) * 8))
    return bits if cases is None or cases >= len(bits) else random.Random(0).sample(bits, cases)


def test_every_manifest_bit_flip_is_refused_or_harmless(tiny_artifact, tmp_path, request):
    """A manifest with one bit flipped loads to the same embeddings or is refused with an ArtifactError;
    never a raw exception, never a wrong embedding. The full tier flips every bit; the fast tier a sample."""
    folder = tmp_path / "flip"
    shutil.copytree(tiny_artifact, folder)
    original = (folder / "manifest.json").read_bytes()
    want = embedrt.SentenceTransformer(tiny_artifact).encode(PROBES)
    cases = None if request.config.getoption("--hypothesis-profile", None) != "fast" else 400
    outcomes = {"refused": 0, "same": 0}
    for bit in _flips(original, cases):
        data = bytearray(original)
        data[bit // 8] ^= 1 << (bit % 8)
        (folder / "manifest.json").write_bytes(bytes(data))
        try:
            model = embedrt.SentenceTransformer(folder)
        except ArtifactError:
            outcomes["refused"] += 1
            continue
        got = model.encode(PROBES)
        assert np.array_equal(got, want), f"bit {bit}: {bytes(data[bit // 8 - 20: bit // 8 + 20])!r}"
        outcomes["same"] += 1
    assert outcomes["refused"] > outcomes["same"] > 0, outcomes
