"""What a twin is made of: the families, pooling modes and activations, the real tokenizer assets, the
head spec, and the matrix of twins the parity suite runs."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from embedrt.paths import cache_dir

FAMILIES: tuple[str, ...] = ("bert", "distilbert", "roberta", "xlm-roberta", "mpnet")

# Same spelling and order as sentence_transformers' Pooling.POOLING_MODES.
POOLING_MODES: tuple[str, ...] = ("cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")

# Short activation names accepted in HeadSpec.dense, mapped to the dotted name sentence-transformers
# writes into ``N_Dense/config.json`` (it stores ``fullname(module)``, i.e. the *defining* module, which
# is why Identity lives under ``linear`` and not ``activation``).
ACTIVATIONS: dict[str, str] = {
    "tanh": "torch.nn.modules.activation.Tanh",
    "identity": "torch.nn.modules.linear.Identity",
    "relu": "torch.nn.modules.activation.ReLU",
    "gelu": "torch.nn.modules.activation.GELU",
    "sigmoid": "torch.nn.modules.activation.Sigmoid",
    "silu": "torch.nn.modules.activation.SiLU",
}


def check_family(family: str) -> None:
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; expected one of {FAMILIES}")


def activation_path(name: str) -> str:
    if name.lower() in ACTIVATIONS:
        return ACTIVATIONS[name.lower()]
    # sentence-transformers only instantiates activations from the torch namespace without
    # trust_remote_code; anything else would reload as Tanh with a warning, a silent mismatch.
    if not name.startswith("torch."):
        raise ValueError(f"activation {name!r}: use one of {sorted(ACTIVATIONS)} or a 'torch.' class path")
    return name


@dataclass(frozen=True)
class TwinAssets:
    """Locations of the real tokenizer files the twins are built on.

    Any field may be ``None`` (or point to a missing file); only the families that need it become
    unavailable, see :meth:`missing`.

    Attributes:
        bert_vocab: BERT uncased WordPiece ``vocab.txt`` (bert and distilbert twins).
        mpnet_tokenizer_dir: folder holding MPNet's ``tokenizer.json`` + ``tokenizer_config.json``.
        gpt2_encoder: GPT-2 ``encoder.json`` (token -> id).
        gpt2_merges: GPT-2 ``vocab.bpe`` (merge list).
        xlmr_tokenizer: XLM-R SentencePiece-Unigram ``tokenizer.json`` (250,002 pieces).
    """

    bert_vocab: Path | None = None
    mpnet_tokenizer_dir: Path | None = None
    gpt2_encoder: Path | None = None
    gpt2_merges: Path | None = None
    xlmr_tokenizer: Path | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None and not isinstance(value, Path):
                object.__setattr__(self, f.name, Path(value))

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, str | os.PathLike[str] | None]) -> TwinAssets:
        """Build from a ``{field_name: path}`` mapping; unknown keys are an error (catches typos)."""
        known = {f.name for f in fields(cls)}
        unknown = set(mapping) - known
        if unknown:
            raise KeyError(f"unknown TwinAssets keys {sorted(unknown)}; expected some of {sorted(known)}")
        return cls(**{k: (Path(v) if v is not None else None) for k, v in mapping.items()})

    def required(self, family: str) -> dict[str, Path | None]:
        """The files ``family`` needs, keyed by a descriptive name (the field name where there is one)."""
        check_family(family)
        if family in ("bert", "distilbert"):
            return {"bert_vocab": self.bert_vocab}
        if family == "roberta":
            return {"gpt2_encoder": self.gpt2_encoder, "gpt2_merges": self.gpt2_merges}
        if family == "xlm-roberta":
            return {"xlmr_tokenizer": self.xlmr_tokenizer}
        return {
            "mpnet_tokenizer_dir": self.mpnet_tokenizer_dir,
            "mpnet_tokenizer.json": None
            if self.mpnet_tokenizer_dir is None
            else self.mpnet_tokenizer_dir / "tokenizer.json",
        }

    def missing(self, family: str) -> list[str]:
        """Human-readable descriptions of what is absent for ``family``; empty when buildable."""
        out = []
        for name, path in self.required(family).items():
            if path is None:
                out.append(f"{name}: not configured")
            elif not path.exists():
                out.append(f"{name}: {path} does not exist")
        return out

    def available(self, family: str) -> bool:
        """Whether every file ``family`` needs is present (handy for ``pytest.skip``)."""
        return not self.missing(family)


def default_assets(cache: str | os.PathLike[str] | None = None) -> TwinAssets:
    """The asset layout the embedrt fetcher produces under ``cache`` (default :func:`embedrt.paths.cache_dir`).

    ``<cache>/models/all-MiniLM-L6-v2/vocab.txt``, ``<cache>/models/all-mpnet-base-v2/``,
    ``<cache>/assets/gpt2/{encoder.json,vocab.bpe}``, ``<cache>/assets/xlmr/tokenizer.json``.
    Nothing is checked here; use :meth:`TwinAssets.missing`.
    """
    root = Path(cache).expanduser() if cache is not None else cache_dir()
    return TwinAssets(
        bert_vocab=root / "models" / "all-MiniLM-L6-v2" / "vocab.txt",
        mpnet_tokenizer_dir=root / "models" / "all-mpnet-base-v2",
        gpt2_encoder=root / "assets" / "gpt2" / "encoder.json",
        gpt2_merges=root / "assets" / "gpt2" / "vocab.bpe",
        xlmr_tokenizer=root / "assets" / "xlmr" / "tokenizer.json",
    )


DenseLayer = tuple[int, str] | tuple[int, str, bool]


@dataclass(frozen=True)
class HeadSpec:
    """Everything after the transformer: pooling, optional Dense stack, LayerNorm, Normalize, prompts.

    Module order in the built model is Transformer -> Pooling -> Dense* -> LayerNorm -> Normalize,
    the order sentence-transformers checkpoints use in practice.

    Attributes:
        pooling: one of :data:`POOLING_MODES`, or a tuple of them, which sentence-transformers
            concatenates (in the given order) into a ``len(modes) * hidden`` vector.
        dense: ``None``, one layer ``(out_features, activation)`` or a tuple of such layers (stacked
            Dense). ``activation`` is a short name from :data:`ACTIVATIONS` or a dotted ``torch.``
            class path as sentence-transformers stores it (``"torch.nn.modules.activation.Tanh"``).
            A layer may carry a third element ``bias: bool`` (default True). After construction the
            field is always normalised to a tuple of layer tuples, possibly empty.
        layernorm: append a ``LayerNorm`` module (with randomised affine parameters).
        normalize: append a ``Normalize`` module (L2).
        include_prompt: ``Pooling(include_prompt=...)``; ``False`` drops the prompt tokens (and the
            leading special token) from pooling, like INSTRUCTOR models. Only observable when a prompt
            is used, so pair it with ``prompts``/``default_prompt_name``.
        prompts: ``((name, text), ...)`` stored in ``config_sentence_transformers.json``.
        default_prompt_name: prompt applied by a plain ``encode()``; must name one of ``prompts``.
    """

    pooling: str | tuple[str, ...] = "mean"
    dense: DenseLayer | tuple[DenseLayer, ...] | None = None
    layernorm: bool = False
    normalize: bool = False
    include_prompt: bool = True
    prompts: tuple[tuple[str, str], ...] = ()
    default_prompt_name: str | None = None

    def __post_init__(self) -> None:
        modes = (self.pooling,) if isinstance(self.pooling, str) else tuple(self.pooling)
        if not modes or any(m not in POOLING_MODES for m in modes):
            raise ValueError(f"pooling {self.pooling!r}: every mode must be one of {POOLING_MODES}")
        object.__setattr__(self, "pooling", modes[0] if len(modes) == 1 else modes)

        dense = self.dense
        if dense is None:
            layers: tuple[tuple[Any, ...], ...] = ()
        elif len(dense) in (2, 3) and isinstance(dense[0], int):
            layers = (tuple(dense),)
        else:
            layers = tuple(tuple(layer) for layer in dense)
        for layer in layers:
            if len(layer) not in (2, 3) or not isinstance(layer[0], int) or layer[0] <= 0:
                raise ValueError(f"dense layer {layer!r} must be (out_features > 0, activation[, bias])")
            activation_path(layer[1])
        object.__setattr__(self, "dense", layers)

        prompts = tuple((str(k), str(v)) for k, v in (dict(self.prompts) if self.prompts else {}).items())
        object.__setattr__(self, "prompts", prompts)
        if self.default_prompt_name is not None and self.default_prompt_name not in dict(prompts):
            raise ValueError(f"default_prompt_name {self.default_prompt_name!r} is not among the prompts")

    @property
    def pooling_modes(self) -> tuple[str, ...]:
        """``pooling`` as a tuple, whether one mode or several."""
        return (self.pooling,) if isinstance(self.pooling, str) else tuple(self.pooling)

    def output_dim(self, hidden: int) -> int:
        """Embedding dimension of a twin with this head on a ``hidden``-wide transformer."""
        return self.dense[-1][0] if self.dense else hidden * len(self.pooling_modes)


# The matrix the parity suite runs. Together it covers every family, every pooling mode, a
# multi-mode (concatenated) pooling, Dense with tanh, Dense with identity, a stacked Dense (also with
# a bias-free layer), LayerNorm, Normalize and include_prompt=False with a default prompt.
TWIN_MATRIX: dict[str, tuple[str, HeadSpec]] = {
    # all-MiniLM-L6-v2 shape
    "bert-mean-norm": ("bert", HeadSpec(pooling="mean", normalize=True)),
    "bert-cls-tanh": ("bert", HeadSpec(pooling="cls", dense=(24, "tanh"))),
    "bert-max": ("bert", HeadSpec(pooling="max")),
    # prompts stored in the model, one applied by default
    "bert-prompt": (
        "bert",
        HeadSpec(
            pooling="mean",
            prompts=(("query", "Represent this query: "), ("passage", "passage: ")),
            default_prompt_name="query",
        ),
    ),
    # distiluse-base-multilingual shape: mean -> Dense(tanh)
    "distilbert-mean-tanh": ("distilbert", HeadSpec(pooling="mean", dense=(48, "tanh"))),
    "distilbert-cls-mean-max": (
        "distilbert",
        HeadSpec(pooling=("cls", "mean", "max"), dense=(32, "identity"), normalize=True),
    ),
    "roberta-sqrtlen": ("roberta", HeadSpec(pooling="mean_sqrt_len_tokens")),
    "roberta-wmean-ln": ("roberta", HeadSpec(pooling="weightedmean", layernorm=True)),
    # paraphrase-multilingual-* shape
    "xlmr-mean-norm": ("xlm-roberta", HeadSpec(pooling="mean", normalize=True)),
    "xlmr-last-dense2": (
        "xlm-roberta",
        HeadSpec(pooling="lasttoken", dense=((48, "tanh"), (16, "identity", False)), normalize=True),
    ),
    # all-mpnet-base-v2 shape
    "mpnet-mean-norm": ("mpnet", HeadSpec(pooling="mean", normalize=True)),
    "mpnet-cls-id-ln": (
        "mpnet",
        HeadSpec(pooling="cls", dense=(32, "torch.nn.modules.linear.Identity"), layernorm=True),
    ),
}

