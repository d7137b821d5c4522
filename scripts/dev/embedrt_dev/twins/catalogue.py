"""A tiny random-weight twin for every catalogue entry, and the per-entry check the report and tests share.

The twin keeps what decides whether an export is faithful — model class, tokenizer type, pooling
mode, Dense activations, LayerNorm, Normalize, similarity function, max_seq_length, input kinds —
and shrinks only the widths. :func:`scaled_entry` gives the catalogue entry as the twin realizes
it, so the exporter's stack check runs on twins exactly as on real models.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from embedrt.catalogue import Dense, Entry
from embedrt_export.export import export

from .clip import build_clip_twin
from .spec import HeadSpec, TwinAssets
from .transformer import build_twin

HIDDEN = 32
WORD_DIM = 16
CLIP_DIM = 24


def _scaled_dense(entry: Entry) -> tuple[Dense, ...]:
    width = HIDDEN
    layers = []
    for d in entry.dense:
        out = width if d.out_features == d.in_features else max(8, round(width * d.out_features / d.in_features))
        layers.append(Dense(width, out, d.activation, d.bias))
        width = out
    return tuple(layers)


def scaled_entry(entry: Entry) -> Entry:
    """The entry with widths shrunk to the twin's (stack, lengths and semantics unchanged)."""
    if entry.family == "word-embeddings":
        return replace(entry, dimension=WORD_DIM)
    if entry.family == "clip":
        return replace(entry, dimension=CLIP_DIM)
    dense = _scaled_dense(entry)
    return replace(entry, dense=dense, dimension=dense[-1].out_features if dense else HIDDEN)


def _word_vocab(assets: TwinAssets) -> list[str]:
    # Whole words of a real WordPiece vocabulary: real English words, no subword pieces.
    words = [w for w in assets.bert_vocab.read_text(encoding="utf-8").split("\n")
             if w and not w.startswith(("##", "[")) and not w.startswith("[unused")]
    return ["PADDING_TOKEN", *words]


def build_word_embedding_twin(entry: Entry, out_dir: Path, assets: TwinAssets, seed: int = 0) -> Path:
    """WordEmbeddings + WhitespaceTokenizer + Pooling(mean) with random vectors over real words."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, WordEmbeddings
    from sentence_transformers.sentence_transformer.modules.tokenizer import WhitespaceTokenizer

    if (out_dir / "modules.json").is_file():
        return out_dir
    vocab = _word_vocab(assets)
    weights = np.random.default_rng(seed).standard_normal((len(vocab), WORD_DIM)).astype(np.float32)
    weights[0] = 0.0  # sentence-transformers' padding row
    tokenizer = WhitespaceTokenizer(vocab, do_lower_case=False)  # its default English stop words
    modules = [WordEmbeddings(tokenizer, weights), Pooling(WORD_DIM, pooling_mode=entry.pooling)]
    SentenceTransformer(modules=modules, device="cpu", similarity_fn_name=entry.similarity).save(str(out_dir))
    return out_dir


def build(entry: Entry, out_dir: Path, assets: TwinAssets, clip_assets: Path | None = None) -> Path:
    """Build the twin of any catalogue entry into ``out_dir`` (reused when already there)."""
    if entry.family == "word-embeddings":
        return build_word_embedding_twin(entry, out_dir, assets)
    if entry.family == "clip":
        return build_clip_twin(out_dir, clip_assets, projection_dim=CLIP_DIM, reuse=True)
    small = scaled_entry(entry)
    head = HeadSpec(
        pooling=entry.pooling,
        dense=tuple((d.out_features, d.activation) for d in small.dense) or None,
        layernorm=entry.layernorm,
        normalize=entry.normalize,
    )
    return build_twin(out_dir, entry.family, head, assets, max_seq_length=entry.max_seq_length,
                            hidden=HIDDEN, similarity_fn_name=entry.similarity, reuse=True)


@dataclass(frozen=True)
class CheckResult:
    """One catalogue row: the twin's export parity per tower, and where it lives."""

    entry: Entry
    parity: dict[str, float]  # tower -> max 1-cos vs sentence-transformers
    source: Path
    artifact: Path
    similarity_source: str

    @property
    def worst(self) -> float:
        """Largest 1-cos over the towers."""
        return max(self.parity.values())


def check(entry: Entry, workdir: Path, assets: TwinAssets, clip_assets: Path | None = None) -> CheckResult:
    """Build the entry's twin in its published layout under ``workdir/models``, resolve the catalogue name to
    it as ``embedrt export NAME`` does, export it against the scaled entry, and return the measured parity.

    The export itself refuses (raises) when the stack differs from the catalogue or parity misses.
    """
    from embedrt_export.resolve import resolve

    from .published import build_published

    build_published(entry, workdir / "models" / entry.name, assets, clip_assets)
    src, found = resolve(entry.name, models_dir=workdir / "models")
    assert found == entry, (found, entry)
    artifact = workdir / "artifact"
    manifest = export(src, artifact, name=entry.name, expect=scaled_entry(entry), overwrite=True, variants=())
    parity = {name: tower.variants["fp32"].parity["max_one_minus_cos"] for name, tower in manifest.towers.items()}
    return CheckResult(entry=entry, parity=parity, source=src, artifact=artifact,
                       similarity_source=manifest.similarity_source)
