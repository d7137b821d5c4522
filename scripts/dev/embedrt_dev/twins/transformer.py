"""Transformer twins: a tiny random-weight model of one family on its real tokenizer, with any head.

Weights are deliberately *not* left at the Hugging Face initialisation. With ``initializer_range=0.02``,
unit LayerNorms and near-zero relative-attention biases, attention is almost uniform, the FFNs are
near no-ops, MPNet's relative position buckets contribute nothing and every sentence embedding
points roughly the same way. A broken attention mask, wrong position ids, a missing relative bias
or a swapped pooling mode would then still pass a cosine check. :func:`~embedrt_dev.twins.transformer.scramble` rescales
everything so that attention logits have a standard deviation of roughly 1.5 and every parameter
measurably matters, including the padding rows of the embedding tables.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .recipe import TWIN_RECIPE_FILE, fingerprint, head_to_json, reusable
from .spec import HeadSpec, TwinAssets, activation_path, check_family
from .tokenizers import strip_leading_lowercase, tokenizer_files

if TYPE_CHECKING:
    import torch

# Bumped whenever the construction changes in a way that alters weights or files, so that
# ``build_twin(..., reuse=True)`` never hands back a stale folder.
_RECIPE_VERSION = 1

# RoBERTa-style models (RoBERTa, XLM-R, MPNet) offset positions by padding_idx + 1 = 2, so 512 usable
# positions need a 514-row table, matching the real checkpoints.
_POSITION_OFFSET = {"bert": 0, "distilbert": 0, "roberta": 2, "xlm-roberta": 2, "mpnet": 2}
_MAX_TOKENS = 512


def build_twin(
    out_dir: str | os.PathLike[str],
    family: str,
    head: HeadSpec,
    assets: TwinAssets | Mapping[str, str | os.PathLike[str] | None],
    *,
    max_seq_length: int = 64,
    hidden: int = 32,
    layers: int = 2,
    heads: int = 2,
    intermediate: int | None = None,
    seed: int = 0,
    do_lower_case: bool = False,
    similarity_fn_name: str = "cosine",
    legacy_sbert_config: bool = False,
    reuse: bool = False,
    overwrite: bool = False,
) -> Path:
    """Build a tiny random-weight sentence-transformers model folder and return its path.

    Args:
        out_dir: target folder. Must be absent or empty unless ``overwrite`` (then it is replaced) or
            ``reuse`` (then an identical earlier build is returned untouched).
        family: one of :data:`FAMILIES`.
        head: pooling/Dense/LayerNorm/Normalize/prompt configuration.
        assets: tokenizer file locations (:class:`TwinAssets` or a mapping of its field names).
        max_seq_length: truncation length; sentence-transformers 6.2 persists it as
            ``model_max_length`` in ``tokenizer_config.json`` (not in ``sentence_bert_config.json``).
        hidden, layers, heads: transformer size; ``hidden`` must be divisible by ``heads``.
        intermediate: FFN width, default ``2 * hidden``.
        seed: everything (weights, Dense, LayerNorm) is a pure function of the arguments and seed.
        do_lower_case: sentence-transformers' ``Transformer(do_lower_case=...)``. 6.2 prepends a
            ``Lowercase`` normalizer that ends up in ``tokenizer.json`` but does not persist the flag,
            and on reload transformers 5 rebuilds the normalizer from code, dropping it. We therefore
            also write ``"do_lower_case": true`` into ``sentence_bert_config.json`` so the reloaded
            twin lowercases like the built one. Only observable on the cased families (roberta,
            xlm-roberta); bert, distilbert and mpnet lowercase anyway.
        similarity_fn_name: stored in ``config_sentence_transformers.json``.
        legacy_sbert_config: make the folder look like one saved by sentence-transformers < 6
            (i.e. nearly every Hub checkpoint): ``max_seq_length`` and ``do_lower_case`` go into
            ``sentence_bert_config.json`` and, with ``do_lower_case``, the ``Lowercase`` normalizer is
            stripped from ``tokenizer.json`` again, so the flag is the only carrier of lowercasing.
        reuse: return ``out_dir`` as-is if it holds a twin built from the same recipe.
        overwrite: delete a non-empty ``out_dir`` first.

    Returns:
        ``Path(out_dir)``, loadable with ``SentenceTransformer(str(path))``.
    """
    check_family(family)
    if not isinstance(head, HeadSpec):
        raise TypeError(f"head must be a HeadSpec, got {type(head).__name__}")
    if not isinstance(assets, TwinAssets):
        assets = TwinAssets.from_mapping(assets)
    missing = assets.missing(family)
    if missing:
        raise FileNotFoundError(f"cannot build a {family} twin, missing assets: {'; '.join(missing)}")
    if hidden % heads:
        raise ValueError(f"hidden ({hidden}) must be divisible by heads ({heads})")
    if not 1 <= max_seq_length <= _MAX_TOKENS:
        raise ValueError(f"max_seq_length must be in [1, {_MAX_TOKENS}], got {max_seq_length}")
    intermediate = intermediate if intermediate is not None else 2 * hidden

    out = Path(out_dir)
    recipe = {
        "recipe_version": _RECIPE_VERSION,
        "family": family,
        "head": head_to_json(head),
        "assets": {k: fingerprint(v) for k, v in assets.required(family).items()},
        "max_seq_length": max_seq_length,
        "hidden": hidden,
        "layers": layers,
        "heads": heads,
        "intermediate": intermediate,
        "seed": seed,
        "do_lower_case": do_lower_case,
        "similarity_fn_name": similarity_fn_name,
        "legacy_sbert_config": legacy_sbert_config,
    }
    if reusable(out, recipe, reuse, overwrite):
        return out

    import torch
    from transformers.utils import logging as hf_logging

    # transformers 5 draws "Loading weights"/"Writing model shards" bars for every save/load; a
    # twelve-twin fixture would bury the test log in them.
    bars_were_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        # fork_rng: module constructors draw from the global RNG; the caller's stream stays untouched.
        with torch.random.fork_rng(devices=[]), tempfile.TemporaryDirectory(prefix="embedrt-twin-") as tmp:
            torch.manual_seed(seed)
            hf_dir = Path(tmp) / "hf"
            tok_info = tokenizer_files(family, assets)
            shutil.copytree(tok_info["dir"], hf_dir)
            _write_hf_model(hf_dir, family, tok_info, hidden, layers, heads, intermediate, seed)
            model = _assemble(hf_dir, head, hidden, max_seq_length, do_lower_case, similarity_fn_name, seed)
            model.save(str(out), create_model_card=False)
    finally:
        if bars_were_on:
            hf_logging.enable_progress_bar()

    if legacy_sbert_config or do_lower_case:
        cfg_path = out / "sentence_bert_config.json"
        cfg = json.loads(cfg_path.read_text(encoding="utf-8")) if cfg_path.exists() else {}
        if legacy_sbert_config:
            cfg = {"max_seq_length": max_seq_length, "do_lower_case": do_lower_case, **cfg}
            if do_lower_case:
                # sentence-transformers < 6 lowercased the text in Python and never touched
                # tokenizer.json; make the folder look like that so only the flag carries it.
                strip_leading_lowercase(out / "tokenizer.json")
        else:
            # sentence-transformers 6.2 bakes Lowercase into tokenizer.json but does not persist the
            # flag, and transformers 5 rebuilds the normalizer from code on reload, so the reloaded
            # model would silently stop lowercasing. Persisting the flag keeps the twin faithful.
            cfg["do_lower_case"] = True
        cfg_path.write_text(json.dumps(cfg, indent=4), encoding="utf-8")
    (out / TWIN_RECIPE_FILE).write_text(json.dumps(recipe, indent=2, sort_keys=True), encoding="utf-8")
    return out


def _make_activation(name: str) -> torch.nn.Module:
    import importlib

    module_name, _, cls_name = activation_path(name).rpartition(".")
    return getattr(importlib.import_module(module_name), cls_name)()


def _hf_config(family: str, tok: dict[str, Any], hidden: int, layers: int, heads: int, intermediate: int) -> Any:
    import transformers as tf

    positions = _MAX_TOKENS + _POSITION_OFFSET[family]
    no_dropout = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    common = {
        "vocab_size": tok["vocab_size"],
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "intermediate_size": intermediate,
        "max_position_embeddings": positions,
        "pad_token_id": tok["pad_token_id"],
        **no_dropout,
    }
    if family == "bert":
        return tf.BertConfig(type_vocab_size=2, **common)
    if family == "roberta":
        return tf.RobertaConfig(type_vocab_size=1, bos_token_id=0, eos_token_id=2, **common)
    if family == "xlm-roberta":
        return tf.XLMRobertaConfig(type_vocab_size=1, bos_token_id=0, eos_token_id=2, **common)
    if family == "mpnet":
        return tf.MPNetConfig(
            relative_attention_num_buckets=32,
            bos_token_id=tok["bos_token_id"],
            eos_token_id=tok["eos_token_id"],
            **common,
        )
    return tf.DistilBertConfig(
        vocab_size=tok["vocab_size"],
        dim=hidden,
        n_layers=layers,
        n_heads=heads,
        hidden_dim=intermediate,
        max_position_embeddings=positions,
        pad_token_id=tok["pad_token_id"],
        dropout=0.0,
        attention_dropout=0.0,
    )


def _write_hf_model(
    hf_dir: Path,
    family: str,
    tok: dict[str, Any],
    hidden: int,
    layers: int,
    heads: int,
    intermediate: int,
    seed: int,
) -> None:
    import torch
    from transformers import AutoModel

    config = _hf_config(family, tok, hidden, layers, heads, intermediate)
    if family in ("roberta", "xlm-roberta", "mpnet") and config.pad_token_id != 1:
        # Position ids are cumsum(mask) + padding_idx: any other pad id shifts every position.
        raise RuntimeError(f"{family} twin needs pad_token_id 1, tokenizer gave {config.pad_token_id}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModel.from_config(config)
    scramble(model, torch.Generator().manual_seed(seed))
    model.eval()
    model.save_pretrained(str(hf_dir))


# Embedding scales relative to each other matter (they are summed before the first LayerNorm);
# words dominate so that different sentences really differ, positions/types are strong enough
# that feeding wrong position or token-type ids changes the output.
_EMBEDDING_STD = {
    "word_embeddings": 1.0,
    "position_embeddings": 0.5,
    "token_type_embeddings": 0.5,
    # MPNet relative position bias, [buckets, heads], added straight to attention logits.
    "relative_attention_bias": 1.0,
}


def scramble(model: torch.nn.Module, gen: torch.Generator) -> None:
    """Give every parameter a scale at which it measurably matters (see the module docstring)."""
    import torch
    from torch import nn

    touched: set[int] = set()
    with torch.no_grad():
        for name, module in model.named_modules():
            leaf = name.rsplit(".", 1)[-1]
            if isinstance(module, nn.Embedding):
                module.weight.normal_(0.0, _EMBEDDING_STD.get(leaf, 0.5), generator=gen)
                touched.add(id(module.weight))
            elif isinstance(module, nn.LayerNorm):
                if module.weight is not None:
                    module.weight.uniform_(0.6, 1.4, generator=gen)
                    touched.add(id(module.weight))
                if module.bias is not None:
                    module.bias.normal_(0.0, 0.2, generator=gen)
                    touched.add(id(module.bias))
            elif isinstance(module, nn.Linear):
                # gain 1.25 / sqrt(fan_in): unit-variance in -> ~1.25 out; gives attention logits of
                # std ~1.5 (peaked but not saturated) for any head size.
                module.weight.normal_(0.0, 1.25 / math.sqrt(module.in_features), generator=gen)
                touched.add(id(module.weight))
                if module.bias is not None:
                    module.bias.normal_(0.0, 0.1, generator=gen)
                    touched.add(id(module.bias))
        for param in model.parameters():
            if id(param) not in touched:
                param.normal_(0.0, 0.1, generator=gen)


def _assemble(
    hf_dir: Path,
    head: HeadSpec,
    hidden: int,
    max_seq_length: int,
    do_lower_case: bool,
    similarity_fn_name: str,
    seed: int,
) -> Any:
    import torch
    from sentence_transformers import SentenceTransformer

    try:  # sentence-transformers >= 5.4 layout; the old ``models`` alias warns on import
        from sentence_transformers.sentence_transformer.modules import (
            Dense,
            LayerNorm,
            Normalize,
            Pooling,
            Transformer,
        )
    except ImportError:  # pragma: no cover - older sentence-transformers
        from sentence_transformers.models import Dense, LayerNorm, Normalize, Pooling, Transformer

    gen = torch.Generator().manual_seed(seed + 1)
    transformer = Transformer(str(hf_dir), max_seq_length=max_seq_length, do_lower_case=do_lower_case)
    if transformer.get_embedding_dimension() != hidden:
        raise RuntimeError(f"transformer width {transformer.get_embedding_dimension()} != {hidden}")
    pooling = Pooling(hidden, pooling_mode=head.pooling, include_prompt=head.include_prompt)
    modules: list[torch.nn.Module] = [transformer, pooling]

    dim = pooling.get_embedding_dimension()
    for layer in head.dense:
        out_features, activation = layer[0], layer[1]
        bias = bool(layer[2]) if len(layer) > 2 else True
        # ~N(0, 1.5/sqrt(fan_in)) keeps tanh in its non-linear range instead of its linear middle.
        weight = torch.randn(out_features, dim, generator=gen) * (1.5 / math.sqrt(dim))
        modules.append(
            Dense(
                dim,
                out_features,
                bias=bias,
                activation_function=_make_activation(activation),
                init_weight=weight,
                init_bias=torch.randn(out_features, generator=gen) * 0.3 if bias else None,
            )
        )
        dim = out_features

    if head.layernorm:
        ln = LayerNorm(dim)
        with torch.no_grad():
            ln.norm.weight.uniform_(0.5, 1.5, generator=gen)
            ln.norm.bias.normal_(0.0, 0.3, generator=gen)
        modules.append(ln)
    if head.normalize:
        modules.append(Normalize())

    return SentenceTransformer(
        modules=modules,
        device="cpu",
        prompts=dict(head.prompts) or None,
        default_prompt_name=head.default_prompt_name,
        similarity_fn_name=similarity_fn_name,
    )


