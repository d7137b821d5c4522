"""Published-layout fixtures: for each catalogue model, a twin folder laid out file by file like its download.

A twin built by sentence-transformers 6.2 writes today's configs (``similarity_fn_name`` declared, the
max length in ``tokenizer_config.json``). The catalogue's models were saved years ago, and a user's
download says things differently; this rewrites a twin's configs as the published folder has them
(:class:`embedrt.catalogue.Layout`, checked against the Hub's files):

* ``config_sentence_transformers.json`` with only ``__version__`` (no ``similarity_fn_name``), unless the
  layout declares one;
* ``sentence_bert_config.json`` as ``{"max_seq_length", "do_lower_case"}``;
* each ``2_Dense/config.json`` with ``bias`` and the activation's torch class path, the weights without a
  bias where the published layer has none;
* no ``modules.json`` and no ``1_Pooling/`` where the published folder has none (sentence-transformers then
  loads it as Transformer + mean pooling at the tokenizer's ``model_max_length``).

Widths are the twins' (:func:`.catalogue.scaled_entry`); every other fact is the published model's.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from embedrt.catalogue import Entry

from .catalogue import HIDDEN, build_word_embedding_twin, scaled_entry
from .clip import build_clip_twin
from .recipe import TWIN_RECIPE_FILE
from .spec import HeadSpec, TwinAssets
from .transformer import build_twin

LEGACY_VERSION = {"sentence_transformers": "2.0.0", "transformers": "4.6.1", "pytorch": "1.8.1"}
_ACTIVATIONS = {"identity": "torch.nn.modules.linear.Identity", "tanh": "torch.nn.modules.activation.Tanh"}
LAYOUT_FILE = "embedrt_layout.json"  # what this fixture says of itself, for reuse and for the report


def layout_facts(entry: Entry) -> dict[str, object]:
    """The published folder's facts the fixture reproduces (one report row's columns)."""
    return {"modules_json": entry.layout.modules_json,
            "declared_similarity": entry.layout.declared_similarity,
            "dense_bias": [d.bias for d in entry.dense],
            "do_lower_case": entry.do_lower_case,
            "sbert_max_seq_length": entry.layout.sbert_max_seq_length or entry.max_seq_length}


def _write(path: Path, data: object) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def _publish(out: Path, entry: Entry) -> None:
    declared = entry.layout.declared_similarity
    config = {"__version__": {**LEGACY_VERSION, "sentence_transformers": entry.layout.saved_with}}
    if declared is not None:
        config.update(prompts={}, default_prompt_name=None, similarity_fn_name=declared)
    _write(out / "config_sentence_transformers.json", config)
    if (out / "sentence_bert_config.json").is_file() or not entry.layout.modules_json:
        _write(out / "sentence_bert_config.json", {"max_seq_length": entry.layout.sbert_max_seq_length
                                                   or entry.max_seq_length, "do_lower_case": entry.do_lower_case})
    modules = json.loads((out / "modules.json").read_text(encoding="utf-8")) if (out / "modules.json").is_file() \
        else []
    dense_dirs = [m["path"] for m in modules if m["type"].endswith(".Dense")]
    for path, dense in zip(dense_dirs, scaled_entry(entry).dense):
        cfg_path = out / path / "config.json"
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        _write(cfg_path, {"in_features": cfg["in_features"], "out_features": cfg["out_features"],
                          "bias": dense.bias, "activation_function": _ACTIVATIONS[dense.activation]})
    if not entry.layout.modules_json:
        (out / "modules.json").unlink()
        for m in modules[1:]:
            shutil.rmtree(out / m["path"], ignore_errors=True)
        tokenizer_config = out / "tokenizer_config.json"
        cfg = json.loads(tokenizer_config.read_text(encoding="utf-8"))
        _write(tokenizer_config, {**cfg, "model_max_length": entry.max_seq_length})
    _write(out / LAYOUT_FILE, {"model": entry.name, **layout_facts(entry)})


def build_published(entry: Entry, out_dir: Path, assets: TwinAssets, clip_assets: Path | None = None) -> Path:
    """The twin of ``entry`` in its published layout at ``out_dir`` (rebuilt unless it is already that)."""
    marker = out_dir / LAYOUT_FILE
    if marker.is_file() and json.loads(marker.read_text(encoding="utf-8")) == {"model": entry.name,
                                                                              **layout_facts(entry)}:
        return out_dir
    shutil.rmtree(out_dir, ignore_errors=True)
    if entry.family == "word-embeddings":
        build_word_embedding_twin(entry, out_dir, assets)
    elif entry.family == "clip":
        build_clip_twin(out_dir, clip_assets, projection_dim=scaled_entry(entry).dimension)
    else:
        small = scaled_entry(entry)
        head = HeadSpec(pooling=entry.pooling, layernorm=entry.layernorm, normalize=entry.normalize,
                        dense=tuple((d.out_features, d.activation, d.bias) for d in small.dense) or None)
        build_twin(out_dir, entry.family, head, assets, max_seq_length=min(entry.max_seq_length, 512),
                   hidden=HIDDEN,
                   do_lower_case=entry.do_lower_case, similarity_fn_name=entry.layout.declared_similarity or "cosine",
                   legacy_sbert_config=True)
    (out_dir / TWIN_RECIPE_FILE).unlink(missing_ok=True)
    _publish(out_dir, entry)
    return out_dir
