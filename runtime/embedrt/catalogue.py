"""The sentence-transformers pretrained catalogue as data: what each model is and how it must behave.

Figures and module stacks are those of the upstream model cards and of the published folders' saved
configs (``modules.json``, ``1_Pooling/config.json``, ``2_Dense/config.json``, ``sentence_bert_config.json``,
``config_sentence_transformers.json``), checked file by file. The exporter checks a source folder against
its entry, so a wrong or incomplete download (e.g. a Dense layer missing) is refused instead of producing
768-d vectors for a 512-d model. :class:`Layout` says how the published folder states each fact, which
is not always how sentence-transformers uses it (a folder without ``modules.json``; a dot-product model
whose folder declares no similarity function).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Dense:
    """A Dense module: ``in_features → out_features`` with an activation, with or without a bias."""

    in_features: int
    out_features: int
    activation: str  # "tanh" or "identity"
    bias: bool = True


@dataclass(frozen=True)
class Layout:
    """How the published folder states the model (what a user's download holds).

    ``modules_json``: without it, sentence-transformers loads the folder as Transformer + mean pooling,
    with the tokenizer's ``model_max_length`` (it then reads no ``sentence_bert_config.json``).
    ``declared_similarity``: ``similarity_fn_name`` in ``config_sentence_transformers.json``; ``None``
    when the folder declares none (saved before sentence-transformers 3), and sentence-transformers then
    reports cosine whatever the model was trained for. ``sbert_max_seq_length``: the
    ``sentence_bert_config.json`` value where it is not the one sentence-transformers uses.
    """

    modules_json: bool = True
    declared_similarity: str | None = None
    sbert_max_seq_length: int | None = None
    saved_with: str = "2.0.0"


@dataclass(frozen=True)
class Entry:
    """One catalogue model."""

    name: str
    hub_id: str
    family: str  # bert, distilbert, roberta, xlm-roberta, mpnet, clip, word-embeddings
    task: str
    pooling: str  # cls, mean, ...; "clip" for CLIP's own projection
    max_seq_length: int
    similarity: str  # cosine or dot
    dimension: int
    dense: tuple[Dense, ...] = ()
    layernorm: bool = False
    normalize: bool = False
    inputs: tuple[str, ...] = ("text",)  # "text", "pair" ([title, text]), "image"
    languages: str = "en"
    metric: str = ""
    notes: str = ""
    tokenizer: str = "wordpiece"  # wordpiece, bpe, sentencepiece, clip-bpe, whitespace
    do_lower_case: bool = False  # sentence-transformers lower-cases the text before tokenizing it
    layout: Layout = Layout()
    extra: dict[str, str] = field(default_factory=dict)

    def module_stack(self) -> list[str]:
        """Human-readable module chain, e.g. ``['DistilBERT', 'Pooling(mean)', 'Dense(768→512, tanh)']``."""
        stack = [self.family, f"Pooling({self.pooling})"] if self.pooling != "clip" else [self.family]
        stack += [f"Dense({d.in_features}→{d.out_features}, {d.activation}{'' if d.bias else ', no bias'})"
                  for d in self.dense]
        stack += ["LayerNorm"] * self.layernorm + ["Normalize"] * self.normalize
        return stack


_ST = "sentence-transformers/"
_MULTI = "50+ languages"
_TANH_768_512 = (Dense(768, 512, "tanh"),)


def _e(name: str, family: str, task: str, pooling: str, max_seq_length: int, similarity: str = "cosine",
       dimension: int = 768, hub_id: str | None = None, tokenizer: str | None = None, **kw) -> Entry:
    default_tok = {"bert": "wordpiece", "distilbert": "wordpiece", "mpnet": "wordpiece", "roberta": "bpe",
                   "xlm-roberta": "sentencepiece", "clip": "clip-bpe", "word-embeddings": "whitespace"}[family]
    return Entry(name=name, hub_id=hub_id or _ST + name, family=family, task=task, pooling=pooling,
                 max_seq_length=max_seq_length, similarity=similarity, dimension=dimension,
                 tokenizer=tokenizer or default_tok, **kw)


ENTRIES: tuple[Entry, ...] = (
    _e("paraphrase-distilroberta-base-v1", "roberta", "paraphrase", "mean", 128,
       notes="DistilRoBERTa"),
    _e("paraphrase-xlm-r-multilingual-v1", "xlm-roberta", "paraphrase", "mean", 128, languages=_MULTI,
       notes="student of paraphrase-distilroberta-base-v1"),
    _e("stsb-mpnet-base-v2", "mpnet", "sts", "mean", 75, metric="STSb 88.57"),
    _e("stsb-roberta-base-v2", "roberta", "sts", "mean", 75, metric="STSb 87.21"),
    _e("stsb-distilroberta-base-v2", "roberta", "sts", "mean", 75, metric="STSb 86.41", notes="DistilRoBERTa"),
    _e("nli-mpnet-base-v2", "mpnet", "sts", "mean", 75, metric="STSb 86.53"),
    _e("nli-roberta-base-v2", "roberta", "sts", "mean", 75, metric="STSb 85.54"),
    _e("nli-distilroberta-base-v2", "roberta", "sts", "mean", 75, metric="STSb 84.38", notes="DistilRoBERTa"),
    _e("quora-distilbert-base", "distilbert", "duplicate-questions", "mean", 128),
    _e("quora-distilbert-multilingual", "distilbert", "duplicate-questions", "mean", 128, languages=_MULTI,
       notes="multilingual cased vocabulary"),
    _e("msmarco-distilbert-base-v3", "distilbert", "retrieval", "mean", 510, metric="MRR@10 33.13 (MS MARCO dev)"),
    _e("msmarco-distilbert-base-dot-prod-v3", "distilbert", "retrieval", "mean", 512, similarity="dot",
       dense=(Dense(768, 768, "identity", bias=False),), metric="MRR@10 33.04 (MS MARCO dev)"),
    _e("msmarco-distilbert-base-tas-b", "distilbert", "retrieval", "cls", 512, similarity="dot",
       metric="MRR@10 34.43 (MS MARCO dev)"),
    _e("msmarco-roberta-base-ance-firstp", "roberta", "retrieval", "cls", 512, similarity="dot",
       dense=(Dense(768, 768, "identity"),), layernorm=True, do_lower_case=True,
       metric="MRR@10 33.01 (MS MARCO dev)", notes="lower-cases its input, on a cased RoBERTa BPE"),
    _e("nq-distilbert-base-v1", "distilbert", "retrieval", "mean", 384, inputs=("text", "pair"),
       metric="MRR@10 72.36 (NQ dev, small)", notes="passages are [title, text] pairs"),
    _e("facebook-dpr-ctx_encoder-single-nq-base", "bert", "retrieval", "cls", 509, similarity="dot",
       notes="passages as 'title [SEP] text'"),
    _e("facebook-dpr-question_encoder-single-nq-base", "bert", "retrieval", "cls", 509, similarity="dot"),
    _e("facebook-dpr-ctx_encoder-multiset-base", "bert", "retrieval", "cls", 100, similarity="dot",
       notes="passages as 'title [SEP] text'"),
    _e("facebook-dpr-question_encoder-multiset-base", "bert", "retrieval", "cls", 509, similarity="dot"),
    _e("distiluse-base-multilingual-cased-v1", "distilbert", "multilingual-sts", "mean", 128, dimension=512,
       dense=_TANH_768_512, languages="15 languages", notes="distilled from multilingual USE"),
    _e("distiluse-base-multilingual-cased-v2", "distilbert", "multilingual-sts", "mean", 128, dimension=512,
       dense=_TANH_768_512, languages=_MULTI, notes="distilled from multilingual USE"),
    _e("stsb-xlm-r-multilingual", "xlm-roberta", "multilingual-sts", "mean", 128, languages=_MULTI,
       notes="student of stsb-bert-base"),
    _e("cross-en-de-roberta-sentence-transformer", "xlm-roberta", "multilingual-sts", "mean", 512,
       hub_id="T-Systems-onsite/cross-en-de-roberta-sentence-transformer", languages="en, de",
       layout=Layout(modules_json=False, sbert_max_seq_length=128),
       notes="no modules.json: loaded as Transformer + mean pooling at the tokenizer's 512 tokens"),
    _e("LaBSE", "bert", "bitext-mining", "cls", 256, dense=(Dense(768, 768, "tanh"),), normalize=True,
       languages="109 languages", notes="501k-token WordPiece vocabulary"),
    _e("allenai-specter", "bert", "scientific-papers", "cls", 512, notes="papers as 'title[SEP]abstract'"),
    _e("average_word_embeddings_glove.6B.300d", "word-embeddings", "fast-baseline", "mean", 1_000_000,
       dimension=300, notes="400k-word GloVe vocabulary"),
    _e("average_word_embeddings_komninos", "word-embeddings", "fast-baseline", "mean", 1_000_000, dimension=300),
    _e("average_word_embeddings_levy_dependency", "word-embeddings", "fast-baseline", "mean", 1_000_000,
       dimension=300),
    _e("average_word_embeddings_glove.840B.300d", "word-embeddings", "fast-baseline", "mean", 1_000_000,
       dimension=300, notes="2.2M-word cased GloVe vocabulary"),
    _e("clip-ViT-B-32", "clip", "image-text", "clip", 77, dimension=512, inputs=("text", "image"),
       notes="separate text and vision graphs"),
    _e("clip-ViT-B-32-multilingual-v1", "distilbert", "image-text", "mean", 128, dimension=512,
       dense=(Dense(768, 512, "identity", bias=False),), languages=_MULTI,
       notes="multilingual text tower for clip-ViT-B-32 image embeddings"),
)

_BY_NAME = {e.name: e for e in ENTRIES} | {e.hub_id: e for e in ENTRIES}


class UnknownModelError(ValueError):
    """A name that is not in the catalogue; the message lists close matches."""


def get(name: str) -> Entry:
    """Look a model up by name or Hub id; an unknown name raises :class:`UnknownModelError`."""
    if name in _BY_NAME:
        return _BY_NAME[name]
    close = difflib.get_close_matches(name, list(_BY_NAME), n=5, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; `embedrt models` lists all {len(ENTRIES)}"
    raise UnknownModelError(f"{name!r} is not in the embedrt catalogue{hint}")


def find(task: str | None = None) -> list[Entry]:
    """Entries, optionally only those whose task contains ``task``."""
    return [e for e in ENTRIES if task is None or task in e.task]
