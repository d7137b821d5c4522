"""Tiny random-weight sentence-transformers "twins" built offline on real tokenizers.

A twin is a complete sentence-transformers model folder (``modules.json``, ``config.json``,
``model.safetensors``, ``tokenizer.json``, ``1_Pooling/``, optional ``2_Dense/`` ...) whose transformer
has a few dozen hidden units and random weights, but whose tokenizer is the real one of its family
(BERT uncased WordPiece, GPT-2/RoBERTa byte-level BPE, XLM-R SentencePiece-Unigram, MPNet WordPiece).
The parity tests export a twin with our ONNX exporter and compare against ``SentenceTransformer.encode``,
so every family and every head module gets exercised in seconds without the Hugging Face Hub.

Design notes (the "why"):

* Weights are deliberately *not* left at the Hugging Face initialisation. With ``initializer_range=0.02``,
  unit LayerNorms and near-zero relative-attention biases, attention is almost uniform, the FFNs are
  near no-ops, MPNet's relative position buckets contribute nothing and every sentence embedding
  points roughly the same way. A broken attention mask, wrong position ids, a missing relative bias
  or a swapped pooling mode would then still pass a cosine check. :func:`_scramble` rescales
  everything so that attention logits have a standard deviation of roughly 1.5 and every parameter
  measurably matters, including the padding rows of the embedding tables.
* RoBERTa twins remap the GPT-2 vocabulary instead of appending the special tokens. RoBERTa derives
  position ids from ``pad_token_id`` (``cumsum(mask) + padding_idx``), so a ``<pad>`` appended at id
  50258 would push positions far outside any sane position table. We therefore put ``<s>``, ``<pad>``,
  ``</s>``, ``<unk>`` at ids 0..3 (exactly like real RoBERTa), shift every GPT-2 id by 4 and append
  ``<mask>`` at the end; merges are untouched, so the tokenization is GPT-2's, only the ids move.
* Tokenizers go through ``from_pretrained``/``save_pretrained`` of the transformers 5 class so the
  saved ``tokenizer.json`` is a fixed point of what sentence-transformers reloads. (transformers 5
  rebuilds the normalizer/pre-tokenizer of classes with a custom ``__init__`` from code, e.g. XLM-R
  loses the original ``Replace(' {2,}', ' ')`` normalizer and gains a ``WhitespaceSplit``; a twin built
  from the raw Hub ``tokenizer.json`` would silently disagree with sentence-transformers on
  whitespace-heavy inputs.)

Heavy imports (torch, transformers, sentence-transformers) happen inside the functions so that test
collection can read :data:`TWIN_MATRIX` without paying for them.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = [
    "ACTIVATIONS",
    "FAMILIES",
    "POOLING_MODES",
    "TWIN_MATRIX",
    "TWIN_RECIPE_FILE",
    "HeadSpec",
    "TwinAssets",
    "build_clip_twin",
    "build_twin",
    "clip_bpe_vocab",
    "default_assets",
    "default_cache_dir",
]

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

# Written into every twin folder; sentence-transformers ignores unknown files.
TWIN_RECIPE_FILE = "embedrt_twin.json"

# Bumped whenever the construction changes in a way that alters weights or files, so that
# ``build_twin(..., reuse=True)`` never hands back a stale folder.
_RECIPE_VERSION = 1

# RoBERTa-style models (RoBERTa, XLM-R, MPNet) offset positions by padding_idx + 1 = 2, so 512 usable
# positions need a 514-row table, matching the real checkpoints.
_POSITION_OFFSET = {"bert": 0, "distilbert": 0, "roberta": 2, "xlm-roberta": 2, "mpnet": 2}
_MAX_TOKENS = 512


def _check_family(family: str) -> None:
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; expected one of {FAMILIES}")


def _activation_path(name: str) -> str:
    if name.lower() in ACTIVATIONS:
        return ACTIVATIONS[name.lower()]
    # sentence-transformers only instantiates activations from the torch namespace without
    # trust_remote_code; anything else would reload as Tanh with a warning, a silent mismatch.
    if not name.startswith("torch."):
        raise ValueError(f"activation {name!r}: use one of {sorted(ACTIVATIONS)} or a 'torch.' class path")
    return name


def default_cache_dir() -> Path:
    """The embedrt cache root: ``$EMBEDRT_CACHE`` if set, else ``~/.cache/embedrt``."""
    env = os.environ.get("EMBEDRT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "embedrt"


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
        _check_family(family)
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
    """The asset layout the embedrt fetcher produces under ``cache`` (default :func:`default_cache_dir`).

    ``<cache>/models/all-MiniLM-L6-v2/vocab.txt``, ``<cache>/models/all-mpnet-base-v2/``,
    ``<cache>/assets/gpt2/{encoder.json,vocab.bpe}``, ``<cache>/assets/xlmr/tokenizer.json``.
    Nothing is checked here; use :meth:`TwinAssets.missing`.
    """
    root = Path(cache).expanduser() if cache is not None else default_cache_dir()
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
            _activation_path(layer[1])
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


# --------------------------------------------------------------------------------------------------
# The matrix the parity suite runs. Together it covers every family, every pooling mode, a
# multi-mode (concatenated) pooling, Dense with tanh, Dense with identity, a stacked Dense (also with
# a bias-free layer), LayerNorm, Normalize and include_prompt=False with a default prompt.
# --------------------------------------------------------------------------------------------------
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
    _check_family(family)
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
        "head": _head_to_json(head),
        "assets": {k: _fingerprint(v) for k, v in assets.required(family).items()},
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
    if _reusable(out, recipe, reuse, overwrite):
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
            tok_info = _tokenizer_files(family, assets)
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
                _strip_leading_lowercase(out / "tokenizer.json")
        else:
            # sentence-transformers 6.2 bakes Lowercase into tokenizer.json but does not persist the
            # flag, and transformers 5 rebuilds the normalizer from code on reload, so the reloaded
            # model would silently stop lowercasing. Persisting the flag keeps the twin faithful.
            cfg["do_lower_case"] = True
        cfg_path.write_text(json.dumps(cfg, indent=4), encoding="utf-8")
    (out / TWIN_RECIPE_FILE).write_text(json.dumps(recipe, indent=2, sort_keys=True), encoding="utf-8")
    return out


# --------------------------------------------------------------------------------------------------
# internals
# --------------------------------------------------------------------------------------------------


def _strip_leading_lowercase(tokenizer_json: Path) -> None:
    data = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    norm = data.get("normalizer")
    if isinstance(norm, dict) and norm.get("type") == "Lowercase":
        data["normalizer"] = None
    elif isinstance(norm, dict) and norm.get("type") == "Sequence":
        rest = list(norm.get("normalizers") or [])
        if rest and rest[0].get("type") == "Lowercase":
            rest = rest[1:]
        data["normalizer"] = None if not rest else rest[0] if len(rest) == 1 else {**norm, "normalizers": rest}
    else:
        return
    tokenizer_json.write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")


def _make_activation(name: str) -> torch.nn.Module:
    import importlib

    module_name, _, cls_name = _activation_path(name).rpartition(".")
    return getattr(importlib.import_module(module_name), cls_name)()


def _head_to_json(head: HeadSpec) -> dict[str, Any]:
    data = asdict(head)
    data["pooling"] = list(head.pooling_modes)
    data["dense"] = [list(layer) for layer in head.dense]
    data["prompts"] = [list(p) for p in head.prompts]
    return data


def _fingerprint(path: Path | None) -> str | None:
    if path is None:
        return None
    st = path.stat()
    return f"{path.resolve()}:{st.st_size}:{int(st.st_mtime)}"


def _reusable(out: Path, recipe: dict[str, Any], reuse: bool, overwrite: bool) -> bool:
    """True when ``out`` already holds a twin built from ``recipe`` and ``reuse`` allows it; otherwise
    clear a non-empty ``out`` (only with ``overwrite`` or ``reuse``) and return False."""
    if out.exists() and any(out.iterdir()):
        if reuse and _read_recipe(out) == recipe:
            return True
        if not (overwrite or reuse):
            raise FileExistsError(f"{out} is not empty (pass overwrite=True or reuse=True)")
        shutil.rmtree(out)
    return False


def _read_recipe(out: Path) -> dict[str, Any] | None:
    try:
        return json.loads((out / TWIN_RECIPE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


# Tokenizer construction dominates build time for XLM-R (a 17 MB tokenizer.json, ~2 s), so each
# family's tokenizer is built once per process and its saved files are copied into every twin.
_TOKENIZER_CACHE: dict[tuple[str, tuple[str | None, ...]], dict[str, Any]] = {}
_CACHE_ROOT: list[Path] = []


def _cache_root() -> Path:
    if not _CACHE_ROOT:
        root = Path(tempfile.mkdtemp(prefix="embedrt-twin-tok-"))
        atexit.register(shutil.rmtree, root, True)
        _CACHE_ROOT.append(root)
    return _CACHE_ROOT[0]


def _tokenizer_files(family: str, assets: TwinAssets) -> dict[str, Any]:
    key = (family, tuple(_fingerprint(p) for p in assets.required(family).values()))
    cached = _TOKENIZER_CACHE.get(key)
    if cached is not None and Path(cached["dir"]).is_dir():
        return cached

    tok = _load_tokenizer(family, assets)
    digest = hashlib.sha1(repr(key).encode()).hexdigest()[:12]
    target = _cache_root() / f"{family}-{digest}"
    if target.exists():
        shutil.rmtree(target)
    tok.save_pretrained(str(target))
    info = {
        "dir": target,
        "vocab_size": len(tok),
        "pad_token_id": tok.pad_token_id,
        "bos_token_id": tok.bos_token_id if tok.bos_token_id is not None else tok.cls_token_id,
        "eos_token_id": tok.eos_token_id if tok.eos_token_id is not None else tok.sep_token_id,
    }
    _TOKENIZER_CACHE[key] = info
    return info


def _load_tokenizer(family: str, assets: TwinAssets) -> Any:
    if family in ("bert", "distilbert"):
        from transformers import BertTokenizerFast, DistilBertTokenizerFast

        cls = BertTokenizerFast if family == "bert" else DistilBertTokenizerFast
        # transformers 5 takes the path as ``vocab=``; ``vocab_file=`` is silently ignored there and
        # yields a 5-token vocabulary, so check the size instead of trusting either spelling.
        tok = cls(vocab=str(assets.bert_vocab), do_lower_case=True)
        if len(tok) < 1000:
            tok = cls(vocab_file=str(assets.bert_vocab), do_lower_case=True)
        return _checked(tok, family, min_vocab=1000)

    if family == "mpnet":
        from transformers import MPNetTokenizerFast

        return _checked(MPNetTokenizerFast.from_pretrained(str(assets.mpnet_tokenizer_dir)), family, 1000)

    if family == "xlm-roberta":
        from transformers import XLMRobertaTokenizerFast

        # Through from_pretrained (not tokenizer_file=) so the backend is rebuilt exactly the way it
        # is when sentence-transformers reloads the twin; see the module docstring.
        with tempfile.TemporaryDirectory(prefix="embedrt-xlmr-") as tmp:
            shutil.copy(assets.xlmr_tokenizer, Path(tmp) / "tokenizer.json")
            tok = XLMRobertaTokenizerFast.from_pretrained(tmp)
        return _checked(tok, family, min_vocab=200_000)

    from transformers import RobertaTokenizerFast

    encoder = json.loads(Path(assets.gpt2_encoder).read_text(encoding="utf-8"))
    specials = ["<s>", "<pad>", "</s>", "<unk>"]
    vocab: dict[str, int] = {tok: i for i, tok in enumerate(specials)}
    for token, idx in sorted(encoder.items(), key=lambda kv: kv[1]):
        vocab[token] = idx + len(specials)
    vocab["<mask>"] = len(vocab)
    merges = []
    for line in Path(assets.gpt2_merges).read_text(encoding="utf-8").splitlines():
        if line.startswith("#version") or not line.strip():
            continue
        a, b = line.split(" ")
        merges.append((a, b))
    tok = RobertaTokenizerFast(vocab=vocab, merges=merges)
    return _checked(tok, family, min_vocab=50_000)


def _checked(tok: Any, family: str, min_vocab: int) -> Any:
    if len(tok) < min_vocab or tok.pad_token_id is None:
        raise RuntimeError(
            f"{family} tokenizer looks wrong (vocab {len(tok)}, pad id {tok.pad_token_id}); "
            "the transformers tokenizer API may have changed"
        )
    return tok


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
    _scramble(model, torch.Generator().manual_seed(seed))
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


def _scramble(model: torch.nn.Module, gen: torch.Generator) -> None:
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


# --------------------------------------------------------------------------------------------------
# CLIP twin (sentence-transformers' clip-ViT-B-32 shape)
# --------------------------------------------------------------------------------------------------

CLIP_BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
_CLIP_RECIPE_VERSION = 1
_CLIP_SPECIALS = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
                  "unk_token": "<|endoftext|>"}
# openai/CLIP's simple_tokenizer keeps the first 49152 - 256 - 2 merges of the file, so that the 256
# byte symbols, their 256 end-of-word forms, the merges and the two specials make 49,408 ids.
_CLIP_N_MERGES = 49152 - 256 - 2


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte → printable-character table (openai/CLIP ``simple_tokenizer``)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars)))


def clip_bpe_vocab(bpe_gz: str | os.PathLike[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """CLIP's vocabulary and merges from ``bpe_simple_vocab_16e6.txt.gz``, built as openai/CLIP does.

    Returns ``(token -> id, merges)``: the same 49,408 ids as the Hub's ``vocab.json`` /
    ``merges.txt`` of ``openai/clip-vit-base-patch32``.
    """
    import gzip

    lines = gzip.decompress(Path(bpe_gz).read_bytes()).decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1:_CLIP_N_MERGES + 1]]  # line 0 is the "#version" header
    if len(merges) != _CLIP_N_MERGES or any(len(m) != 2 for m in merges):
        raise ValueError(f"{bpe_gz}: not CLIP's BPE merges file ({len(merges)} merges read)")
    symbols = list(_bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    tokens += [_CLIP_SPECIALS["bos_token"], _CLIP_SPECIALS["eos_token"]]
    return {tok: i for i, tok in enumerate(tokens)}, merges  # type: ignore[return-value]


def build_clip_twin(
    out_dir: str | os.PathLike[str],
    assets_clip_dir: str | os.PathLike[str] | None = None,
    *,
    seed: int = 0,
    hidden: int = 32,
    layers: int = 2,
    heads: int = 2,
    projection_dim: int = 24,
    legacy_layout: bool = True,
    reuse: bool = False,
    overwrite: bool = False,
) -> Path:
    """Build a tiny random-weight sentence-transformers CLIP folder (``clip-ViT-B-32`` shape) and return it.

    The transformers ``CLIPModel`` has ``hidden``-wide text and vision towers of ``layers`` layers
    (quick-GELU, 77 text positions, 224-pixel images in 32-pixel patches, legacy ``eos_token_id=2``
    so the text pooling takes the arg-max token like the real checkpoint) and scrambled weights (see
    :func:`_scramble`). The tokenizer is the real CLIP BPE (49,408 ids) and the image processor has the
    real CLIP settings (shortest edge 224 bicubic, centre crop 224, OpenAI mean/std).

    Args:
        out_dir: target folder; same ``reuse``/``overwrite`` rules as :func:`build_twin`.
        assets_clip_dir: folder holding ``bpe_simple_vocab_16e6.txt.gz`` (default
            ``<default_cache_dir()>/assets/clip``).
        seed: weights are a pure function of the arguments and seed.
        hidden, layers, heads: size of both towers; ``projection_dim`` is the joint embedding width.
        legacy_layout: write the folder as the Hub's ``clip-ViT-B-32`` is laid out (``modules.json`` type
            ``sentence_transformers.models.CLIPModel``, files under ``0_CLIPModel/`` with ``vocab.json``,
            ``merges.txt`` and ``preprocessor_config.json``); ``False`` saves the model with
            sentence-transformers 6 itself (files in the root, ``tokenizer.json``, ``processor_config.json``).
        reuse: return ``out_dir`` untouched if it holds a twin built from the same recipe.
        overwrite: delete a non-empty ``out_dir`` first.

    Returns:
        ``Path(out_dir)``, loadable with ``SentenceTransformer(str(path))``.
    """
    assets_dir = Path(assets_clip_dir) if assets_clip_dir is not None else default_cache_dir() / "assets" / "clip"
    bpe = assets_dir / CLIP_BPE_FILE
    if not bpe.is_file():
        raise FileNotFoundError(f"cannot build the CLIP twin: {bpe} does not exist")
    if hidden % heads:
        raise ValueError(f"hidden ({hidden}) must be divisible by heads ({heads})")
    out = Path(out_dir)
    recipe = {"recipe_version": _CLIP_RECIPE_VERSION, "family": "clip", "bpe": _fingerprint(bpe), "seed": seed,
              "hidden": hidden, "layers": layers, "heads": heads, "projection_dim": projection_dim,
              "legacy_layout": legacy_layout}
    if _reusable(out, recipe, reuse, overwrite):
        return out

    import torch
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPProcessor, CLIPTokenizer
    from transformers.utils import logging as hf_logging

    vocab, merges = clip_bpe_vocab(bpe)
    tower = {"hidden_size": hidden, "intermediate_size": 2 * hidden, "num_hidden_layers": layers,
             "num_attention_heads": heads, "hidden_act": "quick_gelu", "attention_dropout": 0.0}
    config = CLIPConfig(
        text_config={**tower, "vocab_size": len(vocab), "max_position_embeddings": 77,
                     "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1},
        vision_config={**tower, "image_size": 224, "patch_size": 32, "num_channels": 3},
        projection_dim=projection_dim,
    )
    # The PIL backend is what sentence-transformers runs where torchvision is absent, and what embedrt
    # reproduces; it saves itself under the plain CLIPImageProcessor name.
    image_processor = CLIPImageProcessorPil()
    bars_were_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = CLIPModel(config)
        _scramble_clip(model, torch.Generator().manual_seed(seed))
        model.eval()
        if legacy_layout:
            hf_dir = out / "0_CLIPModel"
            model.save_pretrained(str(hf_dir))
            image_processor.save_pretrained(str(hf_dir))
            (hf_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
            (hf_dir / "merges.txt").write_text(
                "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
            (hf_dir / "tokenizer_config.json").write_text(json.dumps(
                {**_CLIP_SPECIALS, "model_max_length": 77, "tokenizer_class": "CLIPTokenizer"}, indent=2),
                encoding="utf-8")
            (out / "modules.json").write_text(json.dumps(
                [{"idx": 0, "name": "0", "path": "0_CLIPModel", "type": "sentence_transformers.models.CLIPModel"}],
                indent=2), encoding="utf-8")
        else:
            from sentence_transformers import SentenceTransformer
            from sentence_transformers.sentence_transformer.modules import CLIPModel as STCLIPModel

            tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77, **_CLIP_SPECIALS)
            with tempfile.TemporaryDirectory(prefix="embedrt-clip-twin-") as tmp:
                model.save_pretrained(tmp)
                CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(tmp)
                st_model = SentenceTransformer(modules=[STCLIPModel(tmp, _from_auto_load=True)], device="cpu")
                st_model.save(str(out), create_model_card=False)
    finally:
        if bars_were_on:
            hf_logging.enable_progress_bar()
    (out / TWIN_RECIPE_FILE).write_text(json.dumps(recipe, indent=2, sort_keys=True), encoding="utf-8")
    return out


def _scramble_clip(model: torch.nn.Module, gen: torch.Generator) -> None:
    """:func:`_scramble`, then give CLIP's own embedding parameters scales that make them matter.

    ``_scramble`` leaves the patch convolution and the class embedding at N(0, 0.1): with a
    3×32×32 fan-in the patches would then dwarf the position embeddings, and a one-pixel shift of
    the crop would barely move the output. Unit-gain patches and unit-scale tokens keep content,
    position and crop all visible in the embeddings.
    """
    import torch

    _scramble(model, gen)
    with torch.no_grad():
        patch = model.vision_model.embeddings.patch_embedding.weight
        patch.normal_(0.0, 1.25 / math.sqrt(patch[0].numel()), generator=gen)
        model.vision_model.embeddings.class_embedding.normal_(0.0, 1.0, generator=gen)
        model.text_model.embeddings.token_embedding.weight.normal_(0.0, 1.0, generator=gen)
