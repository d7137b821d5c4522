"""Tiny random-weight twins of every transformer family and head type match sentence-transformers."""

from __future__ import annotations

import embedrt
import onnx
import pytest
from embedrt_dev import twins
from embedrt_export import SourceError, export, variants
from embedrt_export.variants import optimize
from embedrt_export.verify import measure, probe_texts
from sentence_transformers import SentenceTransformer as STModel


@pytest.mark.parametrize("twin_id", sorted(twins.TWIN_MATRIX))
def test_twin_parity(twin_id, twin_assets, tmp_path_factory, add_variants):
    family, head = twins.TWIN_MATRIX[twin_id]
    root = tmp_path_factory.mktemp("twins")
    src = twins.build_twin(root / "src", family, head, twin_assets)
    manifest = export(src, root / "artifact", name=twin_id, variants=())
    reference = STModel(str(src), device="cpu", local_files_only=True)
    ours = embedrt.SentenceTransformer(root / "artifact")

    assert ours.get_sentence_embedding_dimension() == reference.get_embedding_dimension()
    assert manifest.normalized == head.normalize
    texts = probe_texts(ours.max_seq_length) + ["Hello world", "a  b\t\tc\nd  ", "[CLS] literal [SEP]"]
    parity = measure(reference, ours, texts, batch_size=4)
    assert parity.max_one_minus_cos <= 1e-6, parity
    assert parity.token_max_abs <= 1e-4, parity
    if head.default_prompt_name:
        # The default prompt is applied, as sentence-transformers applies it.
        assert ours.default_prompt_name == reference.default_prompt_name

    # fp32_fused, its layers on packed rows (padding never computed), is as close to sentence-transformers.
    facts = optimize.ArchFacts.from_config(reference[0].auto_model.config)
    fused = list(variants.build_text_variants((root / "artifact" / "text" / "model.onnx").read_bytes(), facts,
                                              ["fp32_fused"]))
    assert fused[0].note == ""
    assert not _expanded_biases(fused[0].onnx_bytes)
    add_variants(root / "artifact", fused)
    ours = embedrt.SentenceTransformer(root / "artifact", variant="fp32_fused")
    parity = measure(reference, ours, texts, batch_size=4)
    assert parity.max_one_minus_cos <= 1e-6, parity
    assert parity.token_max_abs <= 1e-4, parity


def _expanded_biases(onnx_bytes: bytes) -> list[str]:
    """The score biases a graph's attentions read from an Expand to more than (1, 1, 1, 1), directly or
    through a Where: a padding mask copied over the queries, MPNet's position bias copied over the batch."""
    graph = onnx.load_from_string(onnx_bytes).graph
    producer = {o: n for n in graph.node for o in n.output}
    ones = {i.name for i in graph.initializer if list(i.dims) == [4] and
            onnx.numpy_helper.to_array(i).tolist() == [1, 1, 1, 1]}
    found = []
    for bias in {b for n in graph.node if n.op_type == "PackedAttention" for b in n.input[7:]}:
        node = producer.get(bias)
        if node is not None and node.op_type == "Where":
            node = producer.get(node.input[0])
        if node is not None and node.op_type == "Expand" and node.input[1] not in ones:
            found.append(bias)
    return found


def test_pooling_without_prompt_is_refused(twin_assets, tmp_path):
    head = twins.HeadSpec(pooling="mean", include_prompt=False, prompts=(("query", "query: "),),
                          default_prompt_name="query")
    src = twins.build_twin(tmp_path / "src", "bert", head, twin_assets)
    with pytest.raises(SourceError, match="include_prompt"):
        export(src, tmp_path / "out", variants=())
    assert not (tmp_path / "out").exists()
