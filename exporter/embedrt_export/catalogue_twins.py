"""A tiny random-weight twin for every catalogue entry, with the entry's module stack scaled down.

The twin keeps what decides whether an export is faithful — transformer class, tokenizer type,
pooling mode, Dense activations, LayerNorm, Normalize, similarity function, max_seq_length,
input kinds — and shrinks only the widths. :func:`scaled_entry` gives the catalogue entry as the
twin realizes it, so the exporter's stack check runs on twins exactly as on real models.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from embedrt.catalogue import Dense, Entry

from . import twins

HIDDEN = 32
_TRANSFORMER_FAMILIES = {"bert", "distilbert", "roberta", "xlm-roberta", "mpnet"}


def _scaled_dense(entry: Entry) -> tuple[Dense, ...]:
    width = HIDDEN
    layers = []
    for d in entry.dense:
        out = width if d.out_features == d.in_features else max(8, round(width * d.out_features / d.in_features))
        layers.append(Dense(width, out, d.activation))
        width = out
    return tuple(layers)


def scaled_entry(entry: Entry) -> Entry:
    """The entry with widths shrunk to the twin's (stack, lengths and semantics unchanged)."""
    if entry.family not in _TRANSFORMER_FAMILIES:
        return entry
    dense = _scaled_dense(entry)
    return replace(entry, dense=dense, dimension=dense[-1].out_features if dense else HIDDEN)


def build(entry: Entry, out_dir: Path, assets: twins.TwinAssets) -> Path:
    """Build the twin of a transformer-family catalogue entry into ``out_dir``."""
    if entry.family not in _TRANSFORMER_FAMILIES:
        raise ValueError(f"{entry.name}: family {entry.family!r} has its own twin builder")
    small = scaled_entry(entry)
    head = twins.HeadSpec(
        pooling=entry.pooling,
        dense=tuple((d.out_features, d.activation) for d in small.dense) or None,
        layernorm=entry.layernorm,
        normalize=entry.normalize,
    )
    return twins.build_twin(out_dir, entry.family, head, assets, max_seq_length=entry.max_seq_length,
                            hidden=HIDDEN, similarity_fn_name=entry.similarity, reuse=True)


def supported(entry: Entry) -> bool:
    """Whether this module builds the entry's twin (CLIP and word-embedding twins live elsewhere)."""
    return entry.family in _TRANSFORMER_FAMILIES
